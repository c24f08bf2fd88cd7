#!/usr/bin/env bash
# kinesalite (npm) for Kinesis throughput benchmarks (`sluice bench-kinesis`).
#
#   kinesalite.sh install          install into tests/.work/kinesalite (idempotent)
#   kinesalite.sh start [DIR]      start on 127.0.0.1:<free port>; pid/log in DIR
#                                  (default tests/.work/kinesalite/run); prints KEY=VALUE lines:
#                                    SLUICE_BENCH_KINESIS_ENDPOINT=http://127.0.0.1:PORT
#                                    KINESALITE_PID=PID
#   kinesalite.sh stop [DIR]       stop the instance started with DIR, by its PID
#
# Why a node wrapper instead of its cli: the cli listens on all addresses and
# keeps the default limit of 10 shards. Fast (~14k puts/s, ~36k gets/s) but no
# ON_DEMAND, EFO or ChildShards: for benchmarks, not for resharding tests.
# KEY=VALUE lines go to stdout, everything else to stderr.
set -euo pipefail

VERSION="${KINESALITE_VERSION:-3.3.3}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BASE="$REPO_ROOT/tests/.work/kinesalite"
PKG="$BASE/node_modules/kinesalite"
WRAPPER="$BASE/serve-loopback.js"

say() { printf 'kinesalite: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install() {
    npm_install_pinned kinesalite "$VERSION" "$BASE"
    # In-memory store (no path), short create/delete delays, loopback only.
    cat >"$WRAPPER.tmp" <<'JS'
const kinesalite = require('kinesalite');
const port = Number(process.argv[2] || 0);
const shardLimit = Number(process.env.KINESALITE_SHARD_LIMIT || 1000);
const server = kinesalite({ shardLimit, createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50 });
server.listen(port, '127.0.0.1', err => {
  if (err) { console.error(err); process.exit(1); }
  console.log('SLUICE_BENCH_KINESIS_ENDPOINT=http://127.0.0.1:' + server.address().port);
});
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => server.close(() => process.exit(0)));
JS
    mv "$WRAPPER.tmp" "$WRAPPER"
    flock -u 9
    exec 9>&-
}

launch() {
    # Port 0: the kernel picks a free port; the wrapper prints it.
    (cd "$BASE" && exec setsid node "$WRAPPER" 0 >"$dir/log" 2>&1 </dev/null) &
    SERVER_PID=$!
}

ready() {
    endpoint="$(sed -n 's/^SLUICE_BENCH_KINESIS_ENDPOINT=//p' "$dir/log")"
    [[ -n "$endpoint" ]]
}

start() {
    local dir="${1:-$BASE/run}" endpoint=""
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    start_server "$dir" launch ready 100
    say "ready on $endpoint, pid $SERVER_PID, log $dir/log"
    echo "SLUICE_BENCH_KINESIS_ENDPOINT=$endpoint"
    echo "KINESALITE_PID=$SERVER_PID"
    echo "KINESALITE_DIR=$dir"
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
