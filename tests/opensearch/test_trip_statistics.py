"""The windowed trip statistics of a real run indexed exactly: the pipeline of
pipelines/taxi-stats-local.toml (file → validate → enrich → trip-stats with
its tumbling window) with its outputs sent to OpenSearch instead of files —
the statistics with `id_field = "id"` and the shipped trip_statistics
template, the enriched trips with provenance ids and the shipped trips
template — on a generated taxi dataset.

Checked against the generated input, never against sluice's own output: the
statistics equal DuckDB's computation over the generator's good rows with the
same window arithmetic (trip_stats_expect), the trips' `_id`s are the good
input lines, mappings are as the templates declare; and a run killed with
kill -9 in the middle and restarted indexes the same `_id`s with the same
values (nothing missing, nothing doubled)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import trip_stats_expect
from sluice_e2e import REPO, haversine_km, read_dlq, wait_for

ROWS = 20_000
WINDOW, WINDOW_MS = "10m", 600_000
# ~10 trips per vendor and 10-minute window: both published and withheld
# locations occur with the pipeline's location_min_trips = 5.
LOCATION_MIN_TRIPS = 5
OS_DIR = REPO / "pipelines/opensearch"


@pytest.fixture
def templates(opensearch, index):
    names: list[str] = []
    yield names
    for n in names:
        opensearch.delete_template(n)


def template_for(tmp: Path, shipped: str, prefix: str) -> tuple[Path, dict]:
    """The shipped template aimed at `prefix*` (this test's own indices)."""
    body = json.loads((OS_DIR / shipped).read_text())
    body["index_patterns"] = [f"{prefix}*"]
    path = tmp / f"{prefix}.template.json"
    path.write_text(json.dumps(body))
    return path, body["template"]["mappings"]["properties"]


def stats_pipeline(tmp: Path, endpoint: str, prefix: str, templates: list[str]) -> tuple[Path, dict, dict]:
    """pipelines/taxi-stats-local.toml with its two sinks replaced by
    OpenSearch sinks on `prefix`-stats-* and `prefix`-trips-*."""
    stats_t, stats_props = template_for(tmp, "trip_statistics.template.json", f"{prefix}-stats")
    trips_t, trips_props = template_for(tmp, "trips.template.json", f"{prefix}-trips")
    templates += [f"{prefix}-stats", f"{prefix}-trips"]
    text = (REPO / "pipelines/taxi-stats-local.toml").read_text()
    head, rest = text.split("[sinks.stats]", 1)
    assert "[sinks.trips_parquet]" in rest, "the shipped pipeline changed: update this test"
    # Smaller batches than the shipped 4096, so that a kill lands mid-run.
    head = head.replace("max_records = 4096", "max_records = 512")
    assert "max_records = 512" in head
    p = tmp / f"{prefix}.toml"
    p.write_text(head + f"""[sinks.stats]
type = "opensearch"
inputs = ["trip_stats"]
endpoints = ["{endpoint}"]
index = "{prefix}-stats-{{window_start:%Y.%m}}"
id_field = "id"
template = "{stats_t}"
template_name = "{prefix}-stats"

[sinks.trips_search]
type = "opensearch"
inputs = ["enrich"]
endpoints = ["{endpoint}"]
index = "{prefix}-trips-{{dropoffDate:%Y.%m}}"
template = "{trips_t}"
template_name = "{prefix}-trips"
""")
    return p, stats_props, trips_props


def input_trips(ds) -> pa.Table:
    """The generator's good rows as the trips trip-stats aggregates: the
    duration and distance from the input when it has them, else computed as
    the enrich rules say (whole seconds; haversine)."""
    rows = ds.good_rows().values()
    dur = [r["tripDuration"] if r["tripDuration"] is not None
           else int((r["dropoffDate"] - r["pickupDate"]).total_seconds()) for r in rows]
    gc = [r["gcDistance"] if r["gcDistance"] is not None
          else haversine_km(r["pickupLatitude"], r["pickupLongitude"], r["dropoffLatitude"], r["dropoffLongitude"])
          for r in rows]
    return pa.table({
        "vendorId": pa.array([r["vendorId"] for r in rows], pa.int32()),
        "pickupDate": pa.array([r["pickupDate"] for r in rows], pa.timestamp("ms", tz="UTC")),
        "passengerCount": pa.array([r["passengerCount"] for r in rows], pa.int64()),
        "tripDuration": pa.array(dur, pa.int64()),
        "gcDistance": pa.array(gc, pa.float64()),
        "pickupLatitude": pa.array([r["pickupLatitude"] for r in rows], pa.float64()),
        "pickupLongitude": pa.array([r["pickupLongitude"] for r in rows], pa.float64()),
    })


def window_id(key: tuple[str, int]) -> str:
    """The host's id of a window: stage, window start (ms), key (JSON)."""
    vendor, start = key
    return f"trip_stats/{start}/{json.dumps(int(vendor))}"


def without_index(docs: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in d.items() if f != "_index"} for k, d in docs.items()}


def types(props: dict) -> dict[str, str]:
    return {k: v["type"] for k, v in props.items()}


def test_windowed_statistics_of_a_real_run_are_indexed_exactly_also_after_kill9(
        sluice, opensearch, index, templates, datasets, tmp_path):
    ds = datasets(ROWS, seed=7, bad=0.02)
    env = {"SLUICE_INPUT": ds.path, "SLUICE_WINDOW": WINDOW}
    con = duckdb.connect()
    con.register("trips", input_trips(ds))
    want = trip_stats_expect.expected(con, "trips", WINDOW_MS)
    want_trip_ids = {f"trips:{ds.path}:{line}:0:0" for line, lab in ds.by_line.items() if lab["code"] is None}

    # An uninterrupted run.
    clean = tmp_path / "clean"
    clean.mkdir()
    p, stats_props, trips_props = stats_pipeline(clean, opensearch.endpoint, f"{index}-a", templates)
    sluice.run(p, env={**env, "SLUICE_OUT": clean})
    stats = opensearch.docs(f"{index}-a-stats-*")
    assert opensearch.count(f"{index}-a-stats-*") == len(stats) == len(want)
    assert set(stats) == {window_id(k) for k in want}, "the _ids are not the expected windows'"
    assert all(d["id"] == i for i, d in stats.items())
    withheld = trip_stats_expect.assert_matches(list(without_index(stats).values()), want, WINDOW_MS,
                                                location_min_trips=LOCATION_MIN_TRIPS, distance_tol=1e-3)
    assert 0 < withheld < len(want), "both withheld and published locations should occur"
    for idx in {d["_index"] for d in stats.values()}:
        props = opensearch.mapping(idx)[idx]["mappings"]["properties"]
        assert types(props) == types(stats_props), idx
    # The enriched trips: one document per good input line, that line's trip.
    trips = opensearch.docs(f"{index}-a-trips-*")
    assert set(trips) == want_trip_ids
    assert all(ds.by_line[int(i.rsplit(":", 3)[1])]["id"] == d["id"] for i, d in trips.items())
    for idx in {d["_index"] for d in trips.values()}:
        props = opensearch.mapping(idx)[idx]["mappings"]["properties"]
        assert set(types(props).items()) <= set(types(trips_props).items()), idx
    dlq = read_dlq(clean / "dlq.ndjson")
    assert not [e for e in dlq if e["code"] == "late"], "no trip of the generator is late with a 10-minute lateness"
    assert len(dlq) == len(ds.bad), "every bad row in the DLQ, nothing else"

    # kill -9 in the middle of a run (windows open, documents indexed), then
    # a restart from the last checkpoint: the same documents, once each.
    killed = tmp_path / "killed"
    killed.mkdir()
    p, _, _ = stats_pipeline(killed, opensearch.endpoint, f"{index}-b", templates)
    kenv = {**env, "SLUICE_OUT": killed, "SLUICE_CHECKPOINT_INTERVAL": "100ms"}
    run = sluice.spawn(p, env=kenv)
    cp = killed / "checkpoint" / "checkpoint.json"
    assert wait_for(lambda: run.proc.poll() is not None
                    or (cp.exists() and opensearch.count(f"{index}-b-stats-*") > len(want) // 4), timeout=120)
    assert run.kill9(), "the run ended before the kill: input too small"
    partial = opensearch.count(f"{index}-b-stats-*")
    assert 0 < partial < len(want), partial
    sluice.run(p, env=kenv)
    assert opensearch.count(f"{index}-b-stats-*") == len(want)
    assert without_index(opensearch.docs(f"{index}-b-stats-*")) == without_index(stats)
    assert set(opensearch.docs(f"{index}-b-trips-*")) == want_trip_ids
