#!/usr/bin/env bash
# LocalStack natively (PyPI, no Docker) for the end-to-end Kinesis pipeline test
# and the "Run it against LocalStack" README section.
#
#   localstack.sh install        venv under tests/.work/localstack/venv (Python 3.13 from pyenv),
#                                LocalStack pinned, its bundled kinesis-local pre-installed and
#                                patched to bind 127.0.0.1 (idempotent)
#   localstack.sh start [DIR]    start on 127.0.0.1:<free port> (or $LOCALSTACK_PORT) with
#                                SERVICES=kinesis,s3; state/log/pid in DIR (default
#                                tests/.work/localstack/run); prints KEY=VALUE lines:
#                                  SLUICE_TEST_LOCALSTACK_ENDPOINT=http://127.0.0.1:PORT
#                                  LOCALSTACK_PID=PID
#   localstack.sh stop [DIR]     stop it by PID, and its kinesis-local child (which runs in its
#                                own session) by following parent/child PIDs; SIGKILL after a grace
#
# Why the patch: LocalStack starts its own kinesis-local (0.5.2) on the first Kinesis call, and
# that binds 0.0.0.0 hard-coded; everything here stays on loopback.
# KEY=VALUE lines go to stdout, everything else to stderr (tests/scripts/services contract).
set -euo pipefail

LS_VERSION="${LOCALSTACK_VERSION:-2026.3.0}"
LS_PRIOR_TO="${LOCALSTACK_UPLOADED_PRIOR_TO:-2026-04-01T00:00:00Z}"
KL_VERSION="0.5.2"   # the kinesis-local LocalStack $LS_VERSION installs itself
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BASE="$REPO_ROOT/tests/.work/localstack"
VENV="$BASE/venv"
FS_ROOT="$BASE/fs"

say() { printf 'localstack: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

python313() {
    local p
    for p in "${LOCALSTACK_PYTHON:-}" "$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python" \
        "$HOME/.pyenv/versions/3.13.0/bin/python" "$(command -v python3.13 || true)"; do
        [[ -n "$p" && -x "$p" ]] && { echo "$p"; return 0; }
    done
    return 1
}

kl_dir() { echo "$FS_ROOT/var/lib/localstack/lib/kinesis-local/$KL_VERSION"; }

# The bundled kinesis-local, installed the way LocalStack does (npm into its lib dir),
# then its bind address patched in place: LocalStack runs `node main.js` from there.
patch_kinesis_local() {
    local dir main
    dir="$(kl_dir)"
    main="$dir/node_modules/kinesis-local/main.js"
    if [[ ! -f "$main" ]]; then
        command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
        say "installing kinesis-local@$KL_VERSION into $dir"
        mkdir -p "$dir"
        (cd "$dir" && npm install --no-audit --no-fund --no-save --loglevel=error --prefix "$dir" \
            "kinesis-local@$KL_VERSION" >&2) || die "npm install kinesis-local@$KL_VERSION failed"
    fi
    # The one all-interfaces address literal is the host both servers (plain and TLS) bind; its
    # minified wrapper differs between versions (0.5.2: Ce(the all-interfaces address), 0.6.2: em(...)).
    if grep -q '"0\.0\.0\.0"' "$main"; then
        [[ "$(grep -o '"0\.0\.0\.0"' "$main" | wc -l)" == 1 ]] || die "several 0.0.0.0 literals in $main (version changed?)"
        sed -i 's/("0\.0\.0\.0")/("127.0.0.1")/' "$main"
        ! grep -q '"0\.0\.0\.0"' "$main" || die "could not patch the bind address in $main"
        say "patched $main to bind 127.0.0.1"
    fi
}

install() {
    mkdir -p "$BASE"
    exec 9>"$BASE/.install.lock"
    flock 9
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('localstack-core') != '$LS_VERSION')" 2>/dev/null; then
        local py
        py="$(python313)" || die "Python 3.13 not found (pyenv install 3.13.0, or set LOCALSTACK_PYTHON)"
        say "creating $VENV with $py"
        "$py" -m venv "$VENV" >&2 || die "venv creation failed"
        # A fresh 3.13 venv has pip 24.2, which lacks --uploaded-prior-to.
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || die "pip upgrade failed"
        say "installing localstack-core[runtime]==$LS_VERSION (packages uploaded before $LS_PRIOR_TO)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --uploaded-prior-to "$LS_PRIOR_TO" \
            "localstack-core[runtime]==$LS_VERSION" service_identity >&2 || die "pip install localstack-core failed"
    fi
    patch_kinesis_local
    flock -u 9
    exec 9>&-
}

# All descendants of $1 (children first listed after their parent).
descendants() {
    local kids k
    kids="$(ps -o pid= --ppid "$1" 2>/dev/null || true)"
    for k in $kids; do
        echo "$k"
        descendants "$k"
    done
}

launch() {
    port="${LOCALSTACK_PORT:-$(free_port)}"
    (
        cd "$dir"
        OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$FS_ROOT" GATEWAY_LISTEN="127.0.0.1:$port" \
            GATEWAY_SERVER=hypercorn DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
            SERVICES=kinesis,s3 LOCALSTACK_HOST="127.0.0.1:$port" \
            exec "$VENV/bin/python" -m localstack.runtime.main >"$dir/log" 2>&1 </dev/null
    ) &
    SERVER_PID=$!
}

# Ready when its health check says Kinesis is up.
ready() {
    "$VENV/bin/python" - "http://127.0.0.1:$port/_localstack/health" <<'PY' 2>/dev/null
import json, sys, urllib.request
h = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
sys.exit(0 if h.get("services", {}).get("kinesis") in ("available", "running") else 1)
PY
}

start() {
    local dir="${1:-$BASE/run}" port
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # Up to 120 s a try: the first start of a fresh install is slow.
    start_server "$dir" launch ready 600 stop
    say "ready on 127.0.0.1:$port (pid $SERVER_PID, log $dir/log)"
    echo "SLUICE_TEST_LOCALSTACK_ENDPOINT=http://127.0.0.1:$port"
    echo "LOCALSTACK_PID=$SERVER_PID"
}

stop() {
    local dir="${1:-$BASE/run}"
    [[ -f "$dir/pid" ]] || { say "nothing to stop in $dir"; return 0; }
    local pid pids i p
    pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        # Collect the tree first: kinesis-local is reparented once LocalStack exits.
        pids="$pid $(descendants "$pid" | tr '\n' ' ')"
        kill $pids 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            local alive=0
            for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.2
        done
        kill -9 $pids 2>/dev/null || true
        say "stopped pids $pids"
    fi
    rm -f "$dir/pid"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR]" >&2; exit 2 ;;
esac
