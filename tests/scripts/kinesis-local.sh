#!/usr/bin/env bash
# kinesis-local (npm, the Scala.js build of kinesis-mock) for the Kinesis tests.
#
#   kinesis-local.sh install          install into tests/.work/kinesis-local (idempotent), print main.js path
#   kinesis-local.sh start [DIR]      start on 127.0.0.1 with free ports; state/log/pid in DIR
#                                     (default tests/.work/kinesis-local/run); prints KEY=VALUE lines:
#                                       SLUICE_TEST_KINESIS_ENDPOINT=http://127.0.0.1:PORT
#                                       KINESIS_LOCAL_PID=PID
#   kinesis-local.sh stop [DIR]       stop the instance started with DIR, by its PID
#
# Why a loopback copy of main.js: kinesis-local binds 0.0.0.0 (hard-coded) and
# tests must stay on loopback. Why our own certificate path: it exits when it
# cannot find `server.json` in the current directory.
# KEY=VALUE lines go to stdout, everything else to stderr (tests/scripts/services contract).
set -euo pipefail

VERSION="${KINESIS_LOCAL_VERSION:-0.6.2}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BASE="$REPO_ROOT/tests/.work/kinesis-local"
PKG="$BASE/node_modules/kinesis-local"

say() { printf 'kinesis-local: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install() {
    npm_install_pinned kinesis-local "$VERSION" "$BASE"
    local loop="$PKG/main-loopback.js"
    if [[ ! -f "$loop" || "$PKG/main.js" -nt "$loop" ]]; then
        # Both servers (plain and TLS) take their host from this one literal.
        sed 's/em("0\.0\.0\.0")/em("127.0.0.1")/' "$PKG/main.js" >"$loop.tmp"
        grep -q 'em("127.0.0.1")' "$loop.tmp" || { rm -f "$loop.tmp"; die "bind address literal not found in main.js (version changed?)"; }
        mv "$loop.tmp" "$loop"
    fi
    flock -u 9
    exec 9>&-
    echo "$loop"
}

launch() {
    plain="$(free_port)"
    tls="$(free_port)"
    while [[ "$plain" == "$tls" ]]; do tls="$(free_port)"; done
    # Its own copy of the certificate: it reads server.json from the current directory by default.
    cp "$PKG/server.json" "$dir/server.json"
    (
        cd "$dir"
        KINESIS_MOCK_PLAIN_PORT="$plain" KINESIS_MOCK_TLS_PORT="$tls" KINESIS_MOCK_CERT_PATH="$dir/server.json" \
            SHOULD_PERSIST_DATA=false LOG_LEVEL="${KINESIS_LOCAL_LOG_LEVEL:-WARN}" \
            CREATE_STREAM_DURATION=200ms SPLIT_SHARD_DURATION=200ms MERGE_SHARDS_DURATION=200ms \
            UPDATE_SHARD_COUNT_DURATION=200ms REGISTER_STREAM_CONSUMER_DURATION=200ms \
            DEREGISTER_STREAM_CONSUMER_DURATION=200ms \
            exec setsid node "$loop" >"$dir/log" 2>&1 </dev/null
    ) &
    SERVER_PID=$!
}

# Ready when the plain port answers HTTP (any status).
ready() {
    node -e "require('http').get('http://127.0.0.1:$plain/',r=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null
}

start() {
    local dir="${1:-$BASE/run}" loop plain tls
    loop="$(install)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    start_server "$dir" launch ready
    say "ready on 127.0.0.1:$plain (tls $tls), pid $SERVER_PID, log $dir/log"
    echo "SLUICE_TEST_KINESIS_ENDPOINT=http://127.0.0.1:$plain"
    echo "KINESIS_LOCAL_PID=$SERVER_PID"
    echo "KINESIS_LOCAL_DIR=$dir"
}

stop() {
    stop_pidfile "${1:-$BASE/run}"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR]" >&2; exit 2 ;;
esac
