"""Fixtures for the end-to-end tests: they drive the release `sluice` binary
the way a user does (CLI + pipeline TOML + environment) and read its output
with independent readers (pyarrow and DuckDB), never with sluice's own code.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sluice_e2e import REPO, SLUICE, PLUGINS, Dataset, Sluice, datasets, out_dir  # noqa: E402,F401


def pytest_report_header(config):
    return [f"sluice binary: {SLUICE}", f"plugins: {PLUGINS}"]


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    if not SLUICE.is_file():
        pytest.fail(f"{SLUICE} is missing: run tests/scripts/build.sh (or `make test`)")
    return SLUICE


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    missing = [n for n in ("validate", "enrich", "validate_json", "enrich_json", "faulty", "dedupe", "sandbox_probe")
               if not (PLUGINS / f"{n}.wasm").is_file()]
    if missing:
        pytest.fail(f"plugins missing in {PLUGINS}: {missing}; run tests/scripts/build.sh")
    return PLUGINS


@pytest.fixture
def sluice(sluice_bin, plugins_dir, tmp_path) -> Sluice:
    """Runs the binary with a clean environment, from the repository root."""
    return Sluice(logs=tmp_path / "logs")


@pytest.fixture
def scratch(tmp_path) -> Path:
    d = tmp_path / "scratch"
    d.mkdir()
    return d


def pytest_sessionfinish(session, exitstatus):
    # Generated datasets are large; pytest keeps only the last 3 base temps,
    # but drop ours right away when everything passed.
    if exitstatus == 0 and os.environ.get("SLUICE_KEEP_TMP") != "1":
        base = session.config._tmp_path_factory.getbasetemp()  # noqa: SLF001
        shutil.rmtree(base, ignore_errors=True)
