"""A table none of the examples knows (weather observations, CSV and NDJSON)
into a Parquet sink that declares no `columns`: the sink takes its schema from
the data, and pyarrow reads typed columns and every row back. Also: a run
without its checkpoint adds files next to committed ones instead of replacing
them, and records without their partition column are counted."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pyarrow as pa

from sluice_e2e import FIXTURES, PLUGINS, parquet_files, read_dlq

WEATHER_CSV = FIXTURES / "weather.csv"
WEATHER_NDJSON = FIXTURES / "weather.ndjson"


def weather_rows() -> list[dict]:
    return [json.loads(line) for line in WEATHER_NDJSON.read_text().splitlines()]


def write_pipeline(path: Path, out: Path, *, source: Path, template: bool, partition_by: list[str]) -> Path:
    stage = f"""
[stages.shout]
inputs = ["weather"]
plugin = "{PLUGINS}/template.wasm"
config = {{ field = "conditions" }}
""" if template else ""
    path.write_text(f"""[pipeline]
name = "weather"

[checkpoint]
dir = "{out}/checkpoint"
interval = "1s"

[batch]
# Small batches: the first one holds only integral temperatures.
max_records = 16

[dlq]
path = "{out}/dlq.ndjson"

[sources.weather]
type = "file"
path = "{source}"
{stage}
[sinks.lake]
type = "parquet"
inputs = ["{'shout' if template else 'weather'}"]
path = "{out}/weather"
partition_by = {json.dumps(partition_by)}
""")
    return path


def read_table(root: Path) -> pa.Table:
    return pads.dataset(str(root), format="parquet", partitioning="hive").to_table()


def test_ndjson_through_a_json_plugin_without_columns_writes_typed_parquet(sluice, out_dir, tmp_path):
    pipe = write_pipeline(tmp_path / "p.toml", out_dir, source=WEATHER_NDJSON, template=True, partition_by=["station"])
    r = sluice.run(pipe)
    assert r.summary["nodes"]["sinks.lake"]["rejected"] == 0, r.describe()
    assert not read_dlq(out_dir / "dlq.ndjson")
    rows = weather_rows()
    files = parquet_files(out_dir / "weather")
    assert {f.parent.name for f in files} == {f"station={s}" for s in ("KJFK", "KLGA", "KEWR", "KBOS")}
    schema = pq.read_schema(files[0])
    # JSON numbers are doubles: integral in the first batch, fractions later.
    assert schema.field("temp_c").type == pa.float64(), schema
    assert schema.field("wind_kt").type == pa.float64(), schema
    assert schema.field("conditions").type == pa.string(), schema
    t = read_table(out_dir / "weather").sort_by("observed")
    assert t.num_rows == len(rows)
    got = t.to_pylist()
    for want, row in zip(sorted(rows, key=lambda r: r["observed"]), got):
        assert row["temp_c"] == want["temp_c"]
        assert row["precip_mm"] == want.get("precip_mm")
        assert row["conditions"] == want["conditions"].upper()
        assert row["station"] == want["station"]


def test_csv_without_plugins_or_columns_writes_typed_parquet(sluice, out_dir, tmp_path):
    pipe = write_pipeline(tmp_path / "p.toml", out_dir, source=WEATHER_CSV, template=False, partition_by=["station"])
    sluice.run(pipe)
    with WEATHER_CSV.open() as f:
        rows = list(csv.DictReader(f))
    t = read_table(out_dir / "weather")
    assert t.num_rows == len(rows)
    assert sorted(t.column("station").to_pylist()) == sorted(r["station"] for r in rows)
    # Numbers arrive typed from the file source; the sink keeps their types.
    assert pa.types.is_floating(t.schema.field("temp_c").type), t.schema
    assert pa.types.is_integer(t.schema.field("wind_kt").type) or pa.types.is_floating(t.schema.field("wind_kt").type), t.schema
    assert sorted(t.column("temp_c").to_pylist()) == sorted(float(r["temp_c"]) for r in rows)


def test_a_run_without_its_checkpoint_adds_files_and_replaces_none(sluice, out_dir, tmp_path):
    pipe = write_pipeline(tmp_path / "p.toml", out_dir, source=WEATHER_NDJSON, template=True, partition_by=["station"])
    sluice.run(pipe)
    first = {f: f.read_bytes() for f in parquet_files(out_dir / "weather")}
    assert first
    shutil.rmtree(out_dir / "checkpoint")
    sluice.run(pipe)
    after = parquet_files(out_dir / "weather")
    assert set(first) < set(after), "the second run added files next to the first run's"
    for f, data in first.items():
        assert f.read_bytes() == data, f"{f} was overwritten"
    assert read_table(out_dir / "weather").num_rows == 2 * len(weather_rows())


def test_records_without_the_partition_column_are_counted(sluice, out_dir, tmp_path):
    pipe = write_pipeline(tmp_path / "p.toml", out_dir, source=WEATHER_NDJSON, template=True, partition_by=["region"])
    r = sluice.run(pipe)
    n = len(weather_rows())
    assert r.summary["nodes"]["sinks.lake"]["default_partition"] == n, r.summary
    assert "__HIVE_DEFAULT_PARTITION__" in r.stderr, r.describe()
    assert {f.parent.name for f in parquet_files(out_dir / "weather")} == {"region=__HIVE_DEFAULT_PARTITION__"}
    # Only null partition values: pyarrow cannot infer the key's type, so say it.
    part = pads.partitioning(pa.schema([("region", pa.string())]), flavor="hive")
    t = pads.dataset(str(out_dir / "weather"), format="parquet", partitioning=part).to_table()
    assert t.num_rows == n and t.column("region").null_count == n
