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

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
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

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir="${1:-$REPO_ROOT/tests/.work/moto}"
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        die "already running in $dir (pid $(cat "$dir/pid")); stop it first"
    fi
    local attempt port pid i
    for attempt in 1 2 3; do
        port="$(free_port)"
        "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$dir/pid"
        # Ready when it answers HTTP (about 1 s); a lost port race shows as an early exit.
        for ((i = 0; i < 150; i++)); do
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            if "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
                "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
                say "ready on 127.0.0.1:$port (pid $pid)"
                echo "SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
        say "attempt $attempt failed; log:"
        tail -n 20 "$dir/log" >&2 || true
    done
    die "moto_server did not start"
}

stop() {
    local dir="${1:-$REPO_ROOT/tests/.work/moto}"
    [[ -f "$dir/pid" ]] || return 0
    local pid i
    pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 start|stop [DIR]" ;;
esac
