"""Running a pipeline again and again, as a user iterating on a plugin does:
the reject-rate verdict at the end of a run, `sluice reset` and
`run --from-scratch`, and per-pipeline default state (checkpoint + DLQ)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from sluice_e2e import FIXTURES, PLUGINS

SAMPLE = FIXTURES / "taxi-sample.csv"
BBOX = "{ min_lon = -74.3, max_lon = -73.6, min_lat = 40.45, max_lat = 41.0 }"


def sample_rows() -> int:
    """Data lines of the sample (some are malformed on purpose)."""
    return sum(1 for l in SAMPLE.read_text().splitlines()[1:] if l.strip())


def strict_pipeline(dir: Path, *, name: str = "strict", extra: str = "", state: bool = True) -> Path:
    """validate_json with min_passengers = 5: most rows of the sample are
    rejected (to the DLQ), the rest go to an NDJSON file."""
    state_keys = f'[checkpoint]\ndir = "{dir}/checkpoint"\n\n[dlq]\npath = "{dir}/dlq.ndjson"\n' if state else ""
    text = f"""
[pipeline]
name = "{name}"
{extra}
{state_keys}
[sources.trips]
type = "file"
path = "{SAMPLE}"

[stages.validate]
inputs = ["trips"]
plugin = "{PLUGINS}/validate_json.wasm"
config = {{ bbox = {BBOX}, min_passengers = 5, max_passengers = 9, max_duration_s = 86400 }}

[sinks.valid]
type = "file"
inputs = ["validate"]
path = "{dir}/valid.ndjson"
"""
    p = dir / f"{name}.toml"
    p.write_text(text)
    return p


def read_ndjson(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def accounted(out: list[dict], dlq: list[dict]) -> list[str]:
    """Every input line once: output records by id, dead letters by the
    source position they came from."""
    keys = [f"id:{r['id']}" for r in out] + [f"dlq:{e['source']}:{e['seq']}:{e['sub']}" for e in dlq]
    assert len(set(keys)) == len(keys), "a record appears twice"
    return sorted(keys)


def assert_every_record_once(dir: Path):
    out, dlq = read_ndjson(dir / "valid.ndjson"), read_ndjson(dir / "dlq.ndjson")
    keys = accounted(out, dlq)
    assert len(keys) == sample_rows(), f"output ({len(out)}) + DLQ ({len(dlq)}) != input ({sample_rows()})"
    assert len(out) < len(dlq), "the strict config should reject most rows"
    return keys


def test_a_run_rejecting_most_records_warns_and_exits_0_by_default(sluice, scratch):
    r = sluice.run(strict_pipeline(scratch))
    assert r.returncode == 0, r.describe()
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning:") and "stages.validate" in l]
    assert warnings, f"no reject-rate warning\n{r.describe()}"
    assert str(scratch / "dlq.ndjson") in warnings[0], warnings[0]
    assert re.search(r"rejected \d+ of \d+ records \(\d+\.\d%\)", warnings[0]), warnings[0]
    assert_every_record_once(scratch)


def test_max_reject_rate_fails_the_run_after_its_final_checkpoint(sluice, scratch):
    r = sluice.run(strict_pipeline(scratch), check=False, extra_args=("--max-reject-rate", "0.5"))
    assert r.returncode == 1, f"want exit 1\n{r.describe()}"
    assert "max_reject_rate" in r.stderr, r.describe()
    assert r.summary is not None, "the summary is still written"
    assert_every_record_once(scratch)
    # Nothing lost and nothing left to do: the checkpoint covers every record.
    again = sluice.run(strict_pipeline(scratch), check=False, extra_args=("--max-reject-rate", "0.5"))
    assert again.returncode == 0, again.describe()
    assert again.summary["nodes"]["sources.trips"]["records_in"] == 0, again.describe()
    assert_every_record_once(scratch)


def test_the_pipeline_key_sets_the_limit_and_the_flag_wins(sluice, scratch):
    a = scratch / "a"
    a.mkdir()
    r = sluice.run(strict_pipeline(a, extra="max_reject_rate = 0.2"), check=False)
    assert r.returncode == 1, r.describe()
    assert_every_record_once(a)
    b = scratch / "b"
    b.mkdir()
    r = sluice.run(strict_pipeline(b, extra="max_reject_rate = 0.2"), check=False,
                   extra_args=("--max-reject-rate", "1"))
    assert r.returncode == 0, r.describe()
    r = sluice.cmd("run", strict_pipeline(b), "--max-reject-rate", "1.5")
    assert r.returncode == 2 and "fraction" in r.stderr, r.describe()


def test_reset_removes_checkpoint_and_outputs_then_a_run_starts_over(sluice, scratch):
    pipeline = strict_pipeline(scratch)
    keep = scratch / "notes.txt"
    keep.write_text("mine")
    sluice.run(pipeline)
    first = assert_every_record_once(scratch)
    again = sluice.run(pipeline)
    assert again.summary["nodes"]["sources.trips"]["records_in"] == 0, "a re-run resumes and reads nothing"

    refused = sluice.cmd("reset", pipeline)  # stdin is not a terminal and no --yes
    assert refused.returncode == 1 and "--yes" in refused.stderr, refused.describe()
    assert (scratch / "valid.ndjson").exists() and (scratch / "checkpoint/checkpoint.json").exists()

    r = sluice.cmd("reset", pipeline, "--yes")
    assert r.returncode == 0, r.describe()
    for gone in ("valid.ndjson", "dlq.ndjson", "checkpoint"):
        assert not (scratch / gone).exists(), f"{gone} survived the reset\n{r.describe()}"
    assert keep.read_text() == "mine" and pipeline.exists(), "reset removed something it does not own"

    r = sluice.run(pipeline)
    assert r.summary["nodes"]["sources.trips"]["records_in"] == sample_rows(), r.describe()
    assert assert_every_record_once(scratch) == first


def test_run_from_scratch_resets_first(sluice, scratch):
    pipeline = strict_pipeline(scratch)
    sluice.run(pipeline)
    first = assert_every_record_once(scratch)
    r = sluice.run(pipeline, extra_args=("--from-scratch", "--yes"))
    assert r.summary["nodes"]["sources.trips"]["records_in"] == sample_rows(), r.describe()
    assert assert_every_record_once(scratch) == first, "output written twice or lost"


def test_default_state_and_dlq_are_per_pipeline(sluice, scratch):
    """Two pipelines run from one directory with default [checkpoint] and
    [dlq]: each keeps its own under .sluice/<name>/."""
    for name in ("one", "two"):
        d = scratch / name
        d.mkdir()
        r = sluice.cmd("run", strict_pipeline(d, name=name, state=False), cwd=scratch)
        assert r.returncode == 0, r.describe()
        assert (scratch / ".sluice" / name / "checkpoint.json").exists(), r.describe()
        dlq = read_ndjson(scratch / ".sluice" / name / "dlq.ndjson")
        out = read_ndjson(d / "valid.ndjson")
        assert len(accounted(out, dlq)) == sample_rows(), f"{name}: DLQ shared or lost"
    r = sluice.cmd("reset", scratch / "one" / "one.toml", "--yes", cwd=scratch)
    assert r.returncode == 0, r.describe()
    assert not (scratch / ".sluice" / "one").exists() and (scratch / ".sluice" / "two" / "dlq.ndjson").exists()
