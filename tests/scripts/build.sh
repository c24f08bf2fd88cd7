#!/usr/bin/env bash
# Build everything a run needs: the wasm32-wasip2 target (installed if
# missing), the plugins (their own workspace) and the release host binary.
# With SLUICE_BUILD_TESTS=1 (the test suite) also the host's test binaries,
# in the same cargo invocation as the host so one schedule keeps every core
# busy, and the plugin crates' native tests. The plugins build beside the host: each build has long stretches
# where one crate holds one core.
# Idempotent; cargo makes a second run cheap.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

command -v cargo >/dev/null || die "cargo not found; install Rust with rustup (https://rustup.rs)"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

plugins_log="$(mktemp)"
trap 'rm -f "$plugins_log"' EXIT
log "building plugins (wasm32-wasip2, release; output shown when done)"
(
    cd plugins
    cargo build --release --target wasm32-wasip2
    # The plugin crates' own tests run natively (the test suite's step 4).
    if [[ "${SLUICE_BUILD_TESTS:-0}" == 1 ]]; then
        cargo test --profile native-test --no-run --target "$(rustc -vV | sed -n 's/^host: //p')" \
            -p taxi-logic -p trip-stats -p aggregate -p sluice-plugin-sdk
    fi
) >"$plugins_log" 2>&1 &
plugins_pid=$!

host_status=0
if [[ "${SLUICE_BUILD_TESTS:-0}" == 1 ]]; then
    log "building the sluice host and its tests (release)"
    cargo test --release --workspace --no-run || host_status=$?
fi
if ((host_status == 0)); then
    log "building the sluice host (release)"
    cargo build --release || host_status=$?
fi

plugins_status=0
wait "$plugins_pid" || plugins_status=$?
if ((plugins_status != 0)); then
    cat "$plugins_log" >&2
    die "the plugins did not build"
fi
tail -n 1 "$plugins_log" >&2
((host_status == 0)) || die "the host did not build"
