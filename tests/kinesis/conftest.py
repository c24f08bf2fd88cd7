"""Fixtures for the Kinesis end-to-end tests: the release `sluice` binary
against kinesis-local (one instance for the suite, started by
tests/scripts/services/kinesis-local.sh) and LocalStack; each test makes its
own uniquely named stream. Outputs are read with pyarrow/DuckDB (the helpers of
tests/integration)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).parent))

from sluice_e2e import PLUGINS, SLUICE, Dataset, Sluice, datasets, out_dir  # noqa: E402,F401
from kinesis_support import Kinesis  # noqa: E402


def _service(var: str, what: str) -> str:
    v = os.environ.get(var)
    if v:
        return v
    msg = f"{var} is not set: {what} is not running (tests/scripts/test.sh starts it through tests/scripts/services/)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    if not SLUICE.is_file():
        pytest.fail(f"{SLUICE} is missing: run tests/scripts/build.sh (or `make test`)")
    missing = [n for n in ("validate", "enrich") if not (PLUGINS / f"{n}.wasm").is_file()]
    if missing:
        pytest.fail(f"plugins missing in {PLUGINS}: {missing}; run tests/scripts/build.sh")
    return SLUICE


@pytest.fixture(scope="session")
def kinesis_endpoint() -> str:
    return _service("SLUICE_TEST_KINESIS_ENDPOINT", "kinesis-local")


@pytest.fixture
def kinesis(kinesis_endpoint):
    """boto3 Kinesis client on kinesis-local; deletes the streams a test made."""
    k = Kinesis(kinesis_endpoint)
    yield k
    k.cleanup()


@pytest.fixture
def sluice(sluice_bin, tmp_path) -> Sluice:
    return Sluice(logs=tmp_path / "logs")


