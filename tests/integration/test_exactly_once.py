"""Every generated record ends up exactly once in the Parquet output or in the
DLQ, with the right rejection code and stage, on the Arrow plugins
(pipelines/taxi-local.toml), the JSON plugins and a mix of both; the three
write identical rows. Outputs are read back with pyarrow and DuckDB."""

from __future__ import annotations

import os

import pytest

from sluice_e2e import (REJECTION_CODES, TAXI_LOCAL, TEST_PIPELINES, Sluice, assert_duckdb_agrees,
                     assert_exactly_once, assert_parquet_layout, assert_values, inprogress_files, ledger,
                     parquet_files, read_parquet)

ROWS = int(os.environ.get("SLUICE_TEST_ROWS", "200000"))
SOURCE_NAME = "sluice-taxi-local"

PIPELINES = {
    "arrow": TAXI_LOCAL,
    "json": TEST_PIPELINES / "taxi-json.toml",
    "mixed": TEST_PIPELINES / "mixed-formats.toml",
}


@pytest.fixture(scope="module")
def dataset(datasets):
    return datasets(ROWS, seed=11, bad=0.05)


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory, plugins_dir):
    """One run of each pipeline on the same input (module-scoped: the runs
    are the expensive part, the tests below only read their outputs)."""
    done = {}

    def get(kind: str):
        if kind not in done:
            root = tmp_path_factory.mktemp(f"run-{kind}")
            out = root / "out"
            s = Sluice(root / "logs")
            r = s.run(PIPELINES[kind], env={"SLUICE_INPUT": dataset.path, "SLUICE_OUT": out})
            done[kind] = (out, r, s)
        return done[kind]

    return get


@pytest.mark.parametrize("kind", ["arrow", "json", "mixed"])
def test_every_record_exactly_once(kind, dataset, runs):
    out, r, _ = runs(kind)
    led = ledger(dataset, out / "trips", out / "dlq.ndjson")
    assert_exactly_once(dataset, led)
    assert not inprogress_files(out), f"uncommitted files left: {inprogress_files(out)}"


@pytest.mark.parametrize("kind", ["arrow", "json"])
def test_parquet_layout_and_values(kind, dataset, runs):
    out, _, _ = runs(kind)
    assert_parquet_layout(out / "trips")
    table = read_parquet(out / "trips")
    assert_values(table, dataset.good_rows(), SOURCE_NAME)
    assert_duckdb_agrees(out / "trips", table)


def test_every_rejection_kind_is_covered(dataset, runs):
    """The generator makes every kind of corrupt row and each is rejected
    with its own code (the ledger test checks them row by row)."""
    generated = {lab["code"] for lab in dataset.labels} - {None}
    assert generated == REJECTION_CODES, f"generator never makes {REJECTION_CODES - generated}"
    out, _, _ = runs("arrow")
    led = ledger(dataset, out / "trips", out / "dlq.ndjson")
    assert {e["code"] for e in led.dlq} == REJECTION_CODES


def test_json_and_mixed_paths_write_the_rows_of_the_arrow_path(runs):
    tables = {k: read_parquet(runs(k)[0] / "trips") for k in ("arrow", "json", "mixed")}
    base = tables["arrow"]
    for kind in ("json", "mixed"):
        t = tables[kind]
        assert t.schema.equals(base.schema), f"{kind} schema:\n{t.schema}\narrow schema:\n{base.schema}"
        assert t.num_rows == base.num_rows
        if not t.equals(base):
            a, b = base.to_pylist(), t.to_pylist()
            diffs = [(x["id"], k, x[k], y[k]) for x, y in zip(a, b) for k in x if x[k] != y.get(k)]
            pytest.fail(f"{kind} rows differ from arrow rows (id, column, arrow, {kind}): {diffs[:10]}")


def test_summary_matches_the_outputs(dataset, runs):
    out, r, _ = runs("arrow")
    s = r.summary
    assert s["pipeline"] == "taxi-local"
    nodes = s["nodes"]
    for n in ("sources.trips", "stages.validate", "stages.enrich", "sinks.trips_parquet", "dlq"):
        assert n in nodes, f"summary lacks {n}: {sorted(nodes)}"
        for k in ("records_in", "records_out", "rejected", "batches", "failed_batches", "outputs", "busy_ms"):
            assert k in nodes[n], f"summary {n} lacks {k}: {nodes[n]}"
    led = ledger(dataset, out / "trips", out / "dlq.ndjson")
    by_stage = {st: sum(1 for e in led.dlq if e["stage"] == st) for st in ("sources.trips", "stages.validate")}
    src, val, enr = nodes["sources.trips"], nodes["stages.validate"], nodes["stages.enrich"]
    sink = nodes["sinks.trips_parquet"]
    assert src["records_out"] + src["rejected"] == dataset.rows, src
    assert src["rejected"] == by_stage["sources.trips"], (src, by_stage)
    assert val["records_in"] == src["records_out"], (src, val)
    assert val["rejected"] == by_stage["stages.validate"], (val, by_stage)
    assert val["records_out"] == enr["records_in"] == len(dataset.good_ids), (val, enr)
    assert sink["records_in"] == len(led.pq_ids), sink
    assert sink["outputs"] == len(parquet_files(out / "trips")), sink
    assert nodes["dlq"]["records_in"] == len(led.dlq), nodes["dlq"]
    assert all(n["failed_batches"] == 0 for n in nodes.values()), nodes


def test_rerun_after_the_end_reads_nothing_new(dataset, runs):
    """Re-running the finished command resumes at the end of the file, and
    so does the run after that one (a run that read nothing must still
    checkpoint where the input ends)."""
    out, _, s = runs("arrow")
    before = (parquet_files(out / "trips"), (out / "dlq.ndjson").read_bytes())
    for _ in range(2):
        r = s.run(TAXI_LOCAL, env={"SLUICE_INPUT": dataset.path, "SLUICE_OUT": out})
        assert r.summary["nodes"]["sources.trips"]["records_out"] == 0, r.summary
        assert r.summary["nodes"]["sinks.trips_parquet"]["records_in"] == 0, r.summary
        after = (parquet_files(out / "trips"), (out / "dlq.ndjson").read_bytes())
        assert after == before, "a resumed finished run changed the output"


def test_ndjson_input(datasets, sluice, out_dir):
    ds = datasets(20000, seed=5, bad=0.05, ext="ndjson")
    sluice.run(TAXI_LOCAL, env={"SLUICE_INPUT": ds.path, "SLUICE_OUT": out_dir})
    led = ledger(ds, out_dir / "trips", out_dir / "dlq.ndjson")
    assert_exactly_once(ds, led)
    table = read_parquet(out_dir / "trips")
    assert_values(table, ds.good_rows(), SOURCE_NAME)
    assert_duckdb_agrees(out_dir / "trips", table)
