#!/usr/bin/env bash
# moto (PyPI, `moto[server]`) as the S3 emulator for the S3 checkpoint store tests.
#
#   moto.sh start [DIR]   install into the test venv if missing, start on 127.0.0.1 with a free port,
#                         wait until it answers; prints SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#                         (state: DIR, default tests/.work/moto: pid, log)
#   moto.sh stop [DIR]    stop the instance started with DIR, by its PID
#
# The pinned version lives in tests/requirements.txt (the venv is built by
# tests/scripts/python-env.sh; a venv made before the pin gets it here).
# KEY=VALUE lines go to stdout, everything else to stderr (tests/scripts/services contract).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
VENV="$REPO_ROOT/tests/.work/venv"
REQ="$REPO_ROOT/tests/requirements.txt"

say() { printf 'moto: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$REPO_ROOT/tests/scripts/python-env.sh" >/dev/null || die "could not create the test venv"
    fi
    if [[ ! -x "$VENV/bin/moto_server" ]]; then
        local pin
        pin="$(grep -E '^moto(\[server\])?==' "$REQ")" || die "no moto[server]==VERSION pin in $REQ"
        say "installing $pin into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$pin" >&2 || die "pip install $pin failed"
    fi
}

launch() {
    port="$(free_port)"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 </dev/null &
    SERVER_PID=$!
}

# Ready when it answers HTTP (about 1 s).
ready() {
    "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$port/moto-api/" 2>/dev/null
}

start() {
    local dir="${1:-$REPO_ROOT/tests/.work/moto}" port
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    start_server "$dir" launch ready
    say "ready on 127.0.0.1:$port (pid $SERVER_PID)"
    echo "SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
}

stop() {
    stop_pidfile "${1:-$REPO_ROOT/tests/.work/moto}"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 start|stop [DIR]" ;;
esac
