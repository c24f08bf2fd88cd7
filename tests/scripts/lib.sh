# Shared helpers for the scripts in tests/scripts (sourced, not executed).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Elapsed seconds since the script started, for the step timings.
elapsed() { echo $(( $(date +%s) - ${SCRIPT_START:-$(date +%s)} )); }

# npm_install_pinned NAME VERSION DIR: NAME@VERSION under DIR/node_modules,
# installed once. Locked (fd 9, held until the script exits): tests start
# emulators in parallel and npm must not run twice into one directory.
npm_install_pinned() {
    local name=$1 version=$2 dir=$3
    local pkg="$dir/node_modules/$name"
    command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm)"
    mkdir -p "$dir"
    exec 9>"$dir/.install.lock"
    flock 9
    if [[ ! -f "$pkg/package.json" ]] || ! grep -q "\"version\" *: *\"$version\"" "$pkg/package.json"; then
        command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
        printf '%s: installing %s@%s into %s\n' "$name" "$name" "$version" "$dir" >&2
        (cd "$dir" && npm install --no-audit --no-fund --no-save --loglevel=error "$name@$version" >&2) \
            || die "npm install $name@$version failed"
    fi
}

# stop_pidfile DIR: end the server whose pid is in DIR/pid (TERM, up to 5 s,
# then KILL) — only ever the process our own start wrote there.
stop_pidfile() {
    local dir=$1 pid i
    [[ -f "$dir/pid" ]] || { say "nothing to stop in $dir"; return 0; }
    pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 25; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
    say "stopped pid $pid"
}
