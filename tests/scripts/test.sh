#!/usr/bin/env bash
# The whole test suite (`make test`, `.ci/run`):
#   1. in the background: the Python venv for the independent Parquet readers
#      (pyarrow, DuckDB) and the service hooks: every executable
#      tests/scripts/services/*.sh is called with `start` before the tests
#      and `stop` at exit. Lines it prints as KEY=VALUE on stdout are
#      exported to the test runners (endpoints, ports). A hook that cannot
#      start its service should exit non-zero: that fails the suite rather
#      than silently skipping tests;
#   2. meanwhile, build plugins + host (release) and the host's test
#      binaries, installing the wasm target if missing;
#   3. wait for the services;
#   4. `cargo test --release --workspace` (host unit + integration tests) and
#      the shared rules crate (taxi-logic), natively;
#   5. `pytest tests/integration` (the binary end to end), plus any other
#      tests/*/ folder with test_*.py files.
# Ends with one `total: N passed, N failed, N skipped` line; exits non-zero on
# any failure, including a build failure or a runner that ran nothing.
#
# Knobs for working on the suite: SKIP_BUILD=1, SKIP_CARGO_TEST=1,
# SKIP_PYTEST=1; arguments are passed to pytest (e.g. `-k containment -x`).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
SCRIPT_START=$(date +%s)
WORK="$REPO_ROOT/tests/.work"
mkdir -p "$WORK"

passed=0 failed=0 skipped=0
steps_failed=()

finish() {
    local status=0
    if ((failed > 0 || ${#steps_failed[@]} > 0)); then status=1; fi
    ((${#steps_failed[@]} > 0)) && echo "failed steps: ${steps_failed[*]}"
    echo "suite wall time: $(elapsed)s"
    # A step that failed without a test count (a build) still counts as one failure.
    local f=$failed
    if ((f == 0 && status != 0)); then f=${#steps_failed[@]}; fi
    echo "total: $passed passed, $f failed, $skipped skipped"
    exit $status
}

step_failed() { steps_failed+=("$1"); }

# --- 1. services, in the background ---------------------------------------
# The Python venv and the service hooks mostly download and wait (PyPI, npm,
# Maven, JVM start-up) while the build wants the CPU: they run side by side.
# The background job writes each started hook's name to $SERVICES/started and
# its stdout to $SERVICES/<hook>.out; a hook that fails leaves <hook>.failed.
SERVICES="$WORK/services"
rm -rf "$SERVICES"
mkdir -p "$SERVICES"
start_services() {
    local hook name
    if [[ "${SKIP_PYTEST:-0}" != 1 ]]; then
        log "python venv ($(elapsed)s)"
        tests/scripts/python-env.sh >"$SERVICES/python" || touch "$SERVICES/python-env.failed"
    fi
    for hook in tests/scripts/services/*.sh; do
        [[ -x "$hook" ]] || continue
        name="$(basename "$hook")"
        log "service hook: $hook start ($(elapsed)s)"
        # Recorded before the start so a hook interrupted half-way is still stopped.
        echo "$hook" >>"$SERVICES/started"
        if ! "$hook" start >"$SERVICES/$name.out"; then
            touch "$SERVICES/$name.failed"
        fi
    done
    log "services ready ($(elapsed)s)"
}
stop_services() {
    # Let a start under way finish first (a killed hook could leave a server
    # behind that no pid file names yet); it takes a few minutes at most.
    [[ -n "${services_pid:-}" ]] && wait "$services_pid" 2>/dev/null
    [[ -f "$SERVICES/started" ]] || return 0
    local hooks i
    mapfile -t hooks <"$SERVICES/started"
    for ((i = ${#hooks[@]} - 1; i >= 0; i--)); do
        "${hooks[$i]}" stop >/dev/null 2>&1 || true
    done
}
trap stop_services EXIT
trap 'stop_services; exit 130' INT TERM
start_services &
services_pid=$!

# --- 2. build ---------------------------------------------------------------
# With the cargo tests to run, their binaries are built in the same cargo
# invocation as the host (one schedule keeps both cores busy).
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "build ($(elapsed)s)"
    build_tests=1
    [[ "${SKIP_CARGO_TEST:-0}" == 1 ]] && build_tests=0
    if ! SLUICE_BUILD_TESTS=$build_tests tests/scripts/build.sh; then
        step_failed build
        finish
    fi
    log "build done ($(elapsed)s)"
fi

# --- 3. wait for the services ------------------------------------------------
wait "$services_pid"
services_pid=""
PYTHON=""
if [[ "${SKIP_PYTEST:-0}" != 1 ]]; then
    if [[ -f "$SERVICES/python-env.failed" ]]; then
        step_failed python-env
        finish
    fi
    PYTHON="$(cat "$SERVICES/python")"
fi
for out in "$SERVICES"/*.sh.out; do
    [[ -f "$out" ]] || continue
    name="$(basename "$out" .out)"
    if [[ -f "$SERVICES/$name.failed" ]]; then
        step_failed "$name"
        continue
    fi
    while IFS= read -r line; do
        if [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
            export "${line?}"
            echo "    exported ${line%%=*}"
        fi
    done <"$out"
done

# --- 4. cargo tests ---------------------------------------------------------
# Adds up the `test result:` lines of one cargo test run (sets $counted).
counted=0
count_cargo() {
    local logf=$1 p f i
    read -r p f i < <(awk '/^test result:/ {
            for (k = 1; k <= NF; k++) {
                if ($(k+1) ~ /^passed/) p += $k;
                if ($(k+1) ~ /^failed/) f += $k;
                if ($(k+1) ~ /^ignored/) i += $k;
            }
        } END { print p+0, f+0, i+0 }' "$logf")
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + i))
    counted=$((p + f))
}

run_cargo_test() {
    local name=$1; shift
    local logf="$WORK/$name.log"
    log "$name: $* ($(elapsed)s)"
    "$@" 2>&1 | tee "$logf"
    local rc=${PIPESTATUS[0]}
    count_cargo "$logf"
    if ((rc != 0)); then
        step_failed "$name"
    elif ((counted == 0)); then
        echo "note: $name ran no test"
    fi
}

if [[ "${SKIP_CARGO_TEST:-0}" != 1 ]]; then
    run_cargo_test cargo-test-host cargo test --release --workspace --no-fail-fast
    # The shared rules crate and the aggregate plugins' logic live in the
    # plugin workspace (which defaults to wasm32-wasip2), like the SDK: test them natively there.
    host_triple="$(rustc -vV | sed -n 's/^host: //p')"
    run_cargo_test cargo-test-taxi-logic \
        cargo test --profile native-test --no-fail-fast --manifest-path plugins/Cargo.toml --target "$host_triple" \
        -p taxi-logic -p trip-stats -p aggregate -p sluice-plugin-sdk
fi

# --- 5. pytest --------------------------------------------------------------
# tests/integration plus any other folder of tests/ holding test_*.py files
# (e.g. tests/kinesis), each run in the same pytest session.
if [[ "${SKIP_PYTEST:-0}" != 1 ]]; then
    dirs=(tests/integration)
    for d in tests/*/; do
        d=${d%/}
        [[ "$d" == tests/integration || "$d" == tests/.work ]] && continue
        compgen -G "$d/test_*.py" >/dev/null && dirs+=("$d")
    done
    log "pytest ${dirs[*]} ($(elapsed)s)"
    junit="$WORK/pytest-junit.xml"
    rm -f "$junit"
    "$PYTHON" -m pytest "${dirs[@]}" -q -rfE -p no:cacheprovider --junitxml="$junit" "$@"
    rc=$?
    if [[ -f "$junit" ]]; then
        read -r p f s < <("$PYTHON" - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
s = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - s, f, s)
PY
)
        passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    fi
    # 5 = no test collected: a suite that ran nothing is a failure here.
    if ((rc != 0)); then step_failed pytest; fi
fi

finish
