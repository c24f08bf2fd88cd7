"""Fixtures for the OpenSearch sink tests: the release `sluice` binary
against one real OpenSearch started by tests/scripts/services/opensearch.sh
(SLUICE_TEST_OPENSEARCH_ENDPOINT); each test uses its own indices. Documents
are read back with the REST API (os_support), never with sluice's code."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).parent))

from sluice_e2e import SLUICE, Sluice, datasets  # noqa: E402,F401
from os_support import OpenSearch  # noqa: E402


def _service(var: str) -> str:
    v = os.environ.get(var)
    if v:
        return v
    msg = f"{var} is not set: OpenSearch is not running (tests/scripts/services/opensearch.sh start prints it)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    if not SLUICE.is_file():
        pytest.fail(f"{SLUICE} is missing: run tests/scripts/build.sh (or `make test`)")
    return SLUICE


@pytest.fixture(scope="session")
def os_endpoint() -> str:
    return _service("SLUICE_TEST_OPENSEARCH_ENDPOINT")


@pytest.fixture(scope="session")
def os_pid() -> int:
    return int(_service("SLUICE_TEST_OPENSEARCH_PID"))


@pytest.fixture
def opensearch(os_endpoint) -> OpenSearch:
    return OpenSearch(os_endpoint)


@pytest.fixture
def index(opensearch):
    """A fresh index name (and pattern `NAME*`), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    opensearch.delete(f"{name}*")
    opensearch.delete_template(name)


@pytest.fixture
def sluice(sluice_bin, tmp_path) -> Sluice:
    return Sluice(logs=tmp_path / "logs")
