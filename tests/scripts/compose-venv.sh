#!/usr/bin/env bash
# A Python 3.9 venv with docker-compose 1.29.2 under tests/.work/compose-venv, so the suite can
# check docker-compose.yml with `docker-compose config` on a machine without a container engine.
# Idempotent; prints the path of the docker-compose executable.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VENV="$REPO_ROOT/tests/.work/compose-venv"
EXE="$VENV/bin/docker-compose"
if [[ ! -x "$EXE" ]]; then
    py=""
    for p in "$(pyenv root 2>/dev/null)/versions/3.9.18/bin/python" python3.9; do
        if [[ -x "$p" ]] || command -v "$p" >/dev/null 2>&1; then py="$p"; break; fi
    done
    [[ -n "$py" ]] || die "no Python 3.9 (docker-compose 1.29.2 does not install on newer ones)"
    log "creating $VENV with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'docker-compose==1.29.2' >&2
fi
echo "$EXE"
