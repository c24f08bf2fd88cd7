#!/usr/bin/env bash
# Create (or refresh) the test suite's Python venv under tests/.work/venv and
# print its python. Reinstalls only when tests/requirements.txt changes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$REPO_ROOT/tests/.work/venv"
REQ="$REPO_ROOT/tests/requirements.txt"
STAMP="$VENV/.requirements.sha256"

pick_python() {
    # 3.11 is what the pins were tested with; any 3.9+ with wheels works.
    for p in python3.11 python3.12 python3.10 python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import sys, venv; assert sys.version_info >= (3, 9)' 2>/dev/null; then
            echo "$p"; return
        fi
    done
    die "no Python 3.9+ found (need it for pytest, pyarrow and duckdb)"
}

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    py="$(pick_python)"
    log "creating the test venv ($("$py" --version)) in tests/.work/venv"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
    echo "$want" > "$STAMP"
fi
echo "$VENV/bin/python"
