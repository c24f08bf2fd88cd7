#!/usr/bin/env bash
# Service hook (tests/scripts/services/README.md): ONE kinesis-local for the whole
# suite; tests create their own uniquely named streams on it. Prints
# SLUICE_TEST_KINESIS_ENDPOINT=http://127.0.0.1:PORT on start.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
DIR="$REPO_ROOT/tests/.work/kinesis-local/suite"
case "${1:-}" in
    start) exec "$REPO_ROOT/tests/scripts/kinesis-local.sh" start "$DIR" ;;
    stop) exec "$REPO_ROOT/tests/scripts/kinesis-local.sh" stop "$DIR" ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
