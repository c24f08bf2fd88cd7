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

# free_port: a port on 127.0.0.1 that was free a moment ago (start_server
# retries when another process takes it first).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server DIR LAUNCH READY [POLLS] [STOP]: the start-up every emulator
# script shares. Refuses a second server in DIR. Each of up to 3 tries calls
# LAUNCH (a function: picks fresh loopback port(s), starts the server in the
# background with its log in DIR/log, sets SERVER_PID), then READY (a
# function) every 0.2 s, POLLS times at most (default 150: 30 s), until it
# succeeds or the process exits (a port lost between probe and bind). A failed
# try is ended with STOP DIR (default stop_pidfile). On success DIR/pid holds
# the pid.
start_server() {
    local dir=$1 launch=$2 ready=$3 polls=${4:-150} stop=${5:-stop_pidfile} attempt i
    if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        die "already running in $dir (pid $(cat "$dir/pid")); stop it first"
    fi
    for attempt in 1 2 3; do
        "$launch"
        echo "$SERVER_PID" >"$dir/pid"
        for ((i = 0; i < polls; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            if "$ready"; then return 0; fi
            sleep 0.2
        done
        "$stop" "$dir" >/dev/null 2>&1 || true
        say "attempt $attempt failed; log:"
        tail -n 20 "$dir/log" >&2 || true
    done
    die "did not start (log: $dir/log)"
}
