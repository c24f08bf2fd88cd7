"""Kinesis → validate → enrich → Parquet + DLQ through the real binary:
`sluice produce` a generated file with corrupt rows into a 4-shard stream on
kinesis-local, `sluice run` until caught up, read the output back."""

from __future__ import annotations

import re

import pytest

from sluice_e2e import assert_duckdb_agrees, assert_values, read_parquet
from kinesis_support import AWS_ENV, assert_exactly_once_kinesis, pipeline, produce

ROWS = 4000          # ~1000 records per shard: the emulator slows down as shards fill
SOURCE_TAG = "sluice-kinesis-test"


def produce_ok(sluice, kinesis, stream, ds, *args):
    r = produce(sluice, stream, kinesis.endpoint, ds.path, *args)
    assert r.returncode == 0, r.describe()
    m = re.search(r"sent (\d+), retried \d+, failed (\d+) \((\d+) read, (\d+) Kinesis records", r.output)
    assert m, "no closing report from produce\n" + r.describe()
    sent, failed, read, kinesis_records = map(int, m.groups())
    assert (sent, failed, read) == (ds.rows, 0, ds.rows), r.describe()
    return kinesis_records


def run_ok(sluice, kinesis, stream, tmp_path, mode="polling"):
    out = tmp_path / f"out-{stream}"
    out.mkdir()
    p = pipeline(tmp_path / f"{stream}.toml", stream=stream, endpoint=kinesis.endpoint, out=out, mode=mode)
    r = sluice.run(p, env=AWS_ENV)
    nodes = r.summary["nodes"]
    assert nodes["sources.trips"]["records_out"] > 0, r.describe()
    return out, nodes


@pytest.mark.parametrize("mode", ["polling", "efo"])
def test_every_record_exactly_once(sluice, kinesis, datasets, tmp_path, mode):
    ds = datasets(ROWS, seed=11, bad=0.05)
    stream = kinesis.create(4)
    assert produce_ok(sluice, kinesis, stream, ds) == ROWS
    out, nodes = run_ok(sluice, kinesis, stream, tmp_path, mode)

    got = assert_exactly_once_kinesis(ds, out)
    assert got["codes"]["malformed"] > 0, f"the dataset should hold malformed rows: {got}"
    assert nodes["sources.trips"]["records_out"] == ROWS
    assert nodes["stages.validate"]["rejected"] == len(ds.bad)
    table = read_parquet(out / "trips")
    assert_values(table, ds.good_rows(), SOURCE_TAG)
    assert_duckdb_agrees(out / "trips", table)
    if mode == "efo":
        consumers = kinesis.client.list_stream_consumers(
            StreamARN=kinesis.client.describe_stream_summary(StreamName=stream)
            ["StreamDescriptionSummary"]["StreamARN"])["Consumers"]
        assert consumers, "mode = efo registered no stream consumer"


def test_aggregated_records_give_the_same_output(sluice, kinesis, datasets, tmp_path):
    ds = datasets(ROWS, seed=12, bad=0.05)
    plain, packed = kinesis.create(4), kinesis.create(4)
    assert produce_ok(sluice, kinesis, plain, ds) == ROWS
    aggregates = produce_ok(sluice, kinesis, packed, ds, "--aggregate")
    assert aggregates < ROWS / 4, f"--aggregate put {aggregates} Kinesis records for {ROWS} rows: not aggregated"

    out_plain, _ = run_ok(sluice, kinesis, plain, tmp_path)
    out_packed, nodes = run_ok(sluice, kinesis, packed, tmp_path)
    assert nodes["sources.trips"]["records_out"] == ROWS, "de-aggregation lost or added records"
    assert_exactly_once_kinesis(ds, out_packed)
    a, b = read_parquet(out_plain / "trips"), read_parquet(out_packed / "trips")
    assert a.num_rows == b.num_rows == len(ds.good_ids)
    assert a.equals(b), "aggregated and plain records gave different Parquet rows"
