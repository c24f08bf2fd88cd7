#!/usr/bin/env bash
# Service hook (tests/scripts/services/README.md): ONE real OpenSearch for the
# whole suite; tests create their own uniquely named indices on it.
#
#   opensearch.sh start [DIR]   fetch the min distribution from Maven Central once
#                               (mvn, into ~/.m2), unzip it once under
#                               tests/.work/opensearch, start it on 127.0.0.1 with
#                               free HTTP and transport ports as an unprivileged
#                               user, wait for yellow/green; prints
#                               SLUICE_TEST_OPENSEARCH_ENDPOINT=http://127.0.0.1:PORT
#                               and SLUICE_TEST_OPENSEARCH_PID=<java pid> (tests
#                               pause it with SIGSTOP/SIGCONT)
#   opensearch.sh stop [DIR]    stop it by the java process's own PID
#
# DIR (default tests/.work/opensearch/suite) holds the data, logs and pid; the
# data starts empty on every start. Disk watermarks are off: on a shared CI
# disk past 90% OpenSearch would otherwise block index creation (and make
# indices read-only past 95%), failing tests for a reason that is not theirs. A second `start` while it runs prints the
# same lines again. Knobs: SLUICE_OPENSEARCH_VERSION (2.19.6),
# SLUICE_OPENSEARCH_USER (sluice-opensearch), SLUICE_OPENSEARCH_HEAP (512m).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
VERSION="${SLUICE_OPENSEARCH_VERSION:-2.19.6}"
OS_USER="${SLUICE_OPENSEARCH_USER:-sluice-opensearch}"
HEAP="${SLUICE_OPENSEARCH_HEAP:-512m}"
BASE="$REPO_ROOT/tests/.work/opensearch"
DIST="$BASE/opensearch-$VERSION"

say() { printf 'opensearch: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The zip from Maven Central, unzipped once (the tree is owned by OS_USER:
# OpenSearch refuses to run as root and writes into its own config dir).
install() {
    command -v java >/dev/null || die "java (17+) is not installed"
    mkdir -p "$BASE"
    exec 8>"$BASE/.install.lock"
    flock 8
    if [[ ! -x "$DIST/bin/opensearch" ]]; then
        local zip="$HOME/.m2/repository/org/opensearch/distribution/integ-test-zip/opensearch/$VERSION/opensearch-$VERSION.zip"
        if [[ ! -f "$zip" ]]; then
            command -v mvn >/dev/null || die "mvn is not installed (apt-get install maven)"
            say "fetching opensearch $VERSION from Maven Central"
            mvn -q dependency:get -Dtransitive=false \
                "-Dartifact=org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip" >&2 \
                || die "mvn dependency:get of opensearch $VERSION failed"
        fi
        rm -rf "$DIST.tmp" && mkdir -p "$DIST.tmp"
        unzip -q "$zip" -d "$DIST.tmp" || die "cannot unzip $zip"
        mv "$DIST.tmp/opensearch-$VERSION" "$DIST" && rm -rf "$DIST.tmp"
    fi
    if ! id -u "$OS_USER" >/dev/null 2>&1; then
        if [[ $(id -u) -ne 0 ]]; then
            # Not root: run as ourselves (we are unprivileged already).
            OS_USER="$(id -un)"
        else
            say "creating the unprivileged user $OS_USER"
            useradd -M -r -s /usr/sbin/nologin "$OS_USER" || die "useradd $OS_USER failed"
        fi
    fi
    [[ $(id -u) -eq 0 ]] && chown -R "$OS_USER" "$DIST"
    flock -u 8
}

as_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

launch() {
    port="$(free_port)"
    local tport
    tport="$(free_port)"
    rm -rf "$dir/data" "$dir/logs" "$dir/java.pid"
    mkdir -p "$dir/data" "$dir/logs"
    [[ $(id -u) -eq 0 ]] && chown -R "$OS_USER" "$dir"
    local java_home
    java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    as_user env OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
        "$DIST/bin/opensearch" -p "$dir/java.pid" \
        -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 \
        -Ehttp.port="$port" -Etransport.port="$tport" \
        -Epath.data="$dir/data" -Epath.logs="$dir/logs" \
        -Ecluster.name=sluice-test -Eaction.auto_create_index=true \
        -Ecluster.routing.allocation.disk.threshold_enabled=false \
        >"$dir/log" 2>&1 </dev/null &
    SERVER_PID=$!
}

ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null \
        | grep -Eq '"status":"(green|yellow)"'
}

# The java process's own PID when it wrote one, else the runuser wrapper (a
# start that failed early).
stop_dir() {
    local dir=$1 pid i done=""
    for f in java.pid pid wrapper.pid; do
        [[ -f "$dir/$f" ]] || continue
        pid="$(cat "$dir/$f")"
        [[ -n "$pid" && "$pid" != "$done" ]] || continue
        done=$pid
        if kill -0 "$pid" 2>/dev/null; then
            kill -CONT "$pid" 2>/dev/null || true  # a test may have left it stopped
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
            say "stopped pid $pid"
        fi
    done
    rm -f "$dir/pid" "$dir/java.pid" "$dir/wrapper.pid" "$dir/env"
}

start() {
    local dir="${1:-$BASE/suite}" port
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/env" && -f "$dir/java.pid" ]] && kill -0 "$(cat "$dir/java.pid")" 2>/dev/null; then
        say "already running (pid $(cat "$dir/java.pid"))"
        cat "$dir/env"
        return 0
    fi
    install
    as_user test -x "$DIST/bin/opensearch" || die "$OS_USER cannot reach $DIST (make its parent directories traversable)"
    # 15–40 s to yellow on 2 cores: 600 polls of 0.2 s at most.
    start_server "$dir" launch ready 600 stop_dir
    local jpid
    jpid="$(cat "$dir/java.pid" 2>/dev/null || true)"
    [[ -n "$jpid" ]] || die "started but wrote no pid file ($dir/java.pid)"
    # Keep the runuser wrapper's PID too: stop ends it after java, so no
    # stopped wrapper outlives the suite holding a zombie.
    [[ -f "$dir/pid" ]] && cp "$dir/pid" "$dir/wrapper.pid"
    echo "$jpid" >"$dir/pid"
    {
        echo "SLUICE_TEST_OPENSEARCH_ENDPOINT=http://127.0.0.1:$port"
        echo "SLUICE_TEST_OPENSEARCH_PID=$jpid"
    } >"$dir/env"
    say "ready on 127.0.0.1:$port (java pid $jpid)"
    cat "$dir/env"
}

stop() {
    stop_dir "${1:-$BASE/suite}"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 start|stop [DIR]" ;;
esac
