# Shared helpers for the scripts in tests/scripts (sourced, not executed).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Elapsed seconds since the script started, for the step timings.
elapsed() { echo $(( $(date +%s) - ${SCRIPT_START:-$(date +%s)} )); }
