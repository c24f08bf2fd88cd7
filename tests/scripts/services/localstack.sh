#!/usr/bin/env bash
# Service hook (tests/scripts/services/README.md): LocalStack (native, PyPI) with
# kinesis and s3 for tests/kinesis/test_localstack.py. Prints
# SLUICE_TEST_LOCALSTACK_ENDPOINT=http://127.0.0.1:PORT on start.
# SLUICE_TEST_NO_LOCALSTACK=1 skips it (the test then skips, or fails under CI).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
DIR="$REPO_ROOT/tests/.work/localstack/suite"
if [[ "${SLUICE_TEST_NO_LOCALSTACK:-0}" == 1 ]]; then
    echo "localstack: skipped (SLUICE_TEST_NO_LOCALSTACK=1)" >&2
    exit 0
fi
case "${1:-}" in
    start) exec "$REPO_ROOT/tests/scripts/localstack.sh" start "$DIR" ;;
    stop) exec "$REPO_ROOT/tests/scripts/localstack.sh" stop "$DIR" ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
