#!/usr/bin/env bash
# Build everything a run needs: the wasm32-wasip2 target (installed if
# missing), the plugins (their own workspace) and the release host binary.
# Idempotent; cargo makes a second run cheap.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

command -v cargo >/dev/null || die "cargo not found; install Rust with rustup (https://rustup.rs)"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

log "building plugins (wasm32-wasip2, release)"
(cd plugins && cargo build --release --target wasm32-wasip2)

log "building the sluice host (release)"
cargo build --release
