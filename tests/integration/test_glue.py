"""`[sinks.X.catalog] glue`: the Parquet sink keeps its table in the Glue Data
Catalog (moto's, from tests/scripts/services/moto.sh): the table has the
declared columns and partition keys, exactly the partitions written are
registered with their directories as locations, a second run registers only
its new partition, a table with other partition keys stops the run before
anything is written, and `validate` points at a bad catalog key."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sluice_e2e import parquet_files

ENDPOINT = os.environ.get("SLUICE_TEST_S3_ENDPOINT")
# `validate` alone needs no server; a closed port stands in.
PIPELINE_ENDPOINT = ENDPOINT or "http://127.0.0.1:9"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture
def glue():
    if not ENDPOINT:
        assert os.environ.get("CI") != "true", "SLUICE_TEST_S3_ENDPOINT is not set (tests/scripts/services/moto.sh)"
        pytest.skip("SLUICE_TEST_S3_ENDPOINT is not set (start tests/scripts/services/moto.sh)")
    import boto3
    return boto3.client("glue", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def pipeline(tmp_path: Path, src: Path, db: str, partition_by: str = '["site", "day"]') -> Path:
    p = tmp_path / "p.toml"
    p.write_text(f"""[pipeline]
name = "glue"
[checkpoint]
dir = "{tmp_path}/checkpoint"
[dlq]
path = "{tmp_path}/dlq.ndjson"
[sources.readings]
type = "file"
path = "{src}"
[sinks.lake]
type = "parquet"
inputs = ["readings"]
path = "{tmp_path}/lake"
partition_by = {partition_by}
columns = [
  {{ name = "id", type = "int64", required = true }},
  {{ name = "site", type = "string" }},
  {{ name = "day", type = "date" }},
  {{ name = "value", type = "float64" }},
]
[sinks.lake.catalog]
glue = {{ database = "{db}", table = "readings", endpoint = "{PIPELINE_ENDPOINT}" }}
""")
    return p


def write_rows(path: Path, rows: list[tuple[int, str, str, float]]) -> None:
    path.write_text("".join(f'{{"id": {i}, "site": "{s}", "day": "{d}", "value": {v}}}\n' for i, s, d, v in rows))


def partitions(glue, db: str) -> dict[tuple[str, ...], str]:
    got = glue.get_partitions(DatabaseName=db, TableName="readings")["Partitions"]
    return {tuple(p["Values"]): p["StorageDescriptor"]["Location"] for p in got}


def test_table_and_partitions_registered(sluice, tmp_path, glue):
    db = f"sluice_{tmp_path.name.lower().replace('-', '_')}"[:60]
    glue.create_database(DatabaseInput={"Name": db})
    src = tmp_path / "readings.ndjson"
    rows = [(i, ["north", "south/east"][i % 2], ["2024-03-01", "2024-03-02"][i // 2 % 2], i * 0.5) for i in range(40)]
    write_rows(src, rows)
    p = pipeline(tmp_path, src, db)
    sluice.run(p, env=CREDS)
    lake = tmp_path / "lake"
    assert sum(pq.read_metadata(f).num_rows for f in parquet_files(lake)) == 40

    t = glue.get_table(DatabaseName=db, Name="readings")["Table"]
    sd = t["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [("id", "bigint"), ("value", "double")], sd["Columns"]
    assert [(c["Name"], c["Type"]) for c in t["PartitionKeys"]] == [("site", "string"), ("day", "date")]
    assert sd["Location"] == f"file://{lake}/"
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert t["TableType"] == "EXTERNAL_TABLE"

    # Exactly the directories holding files, values unescaped, locations escaped.
    dirs = {str(Path(f).parent.relative_to(lake)) for f in parquet_files(lake)}
    assert dirs == {f"site={s}/day={d}" for s in ("north", "south%2Feast") for d in ("2024-03-01", "2024-03-02")}
    want = {(s, d): f"file://{lake}/site={e}/day={d}/"
            for s, e in (("north", "north"), ("south/east", "south%2Feast")) for d in ("2024-03-01", "2024-03-02")}
    assert partitions(glue, db) == want

    # A second run with one new partition registers it, and only it (the
    # others are already there: AlreadyExists is not an error).
    write_rows(src, rows + [(100, "north", "2024-03-03", 1.0)])
    sluice.run(p, env=CREDS)
    want[("north", "2024-03-03")] = f"file://{lake}/site=north/day=2024-03-03/"
    assert partitions(glue, db) == want

    # The same table partitioned otherwise: a clear startup error, nothing written.
    other = tmp_path / "other"
    other.mkdir()
    p2 = pipeline(other, src, db, partition_by='["day"]')
    r = sluice.cmd("run", p2, env=CREDS)
    assert r.returncode != 0, r.describe()
    assert "partition keys (site string, day date)" in r.stderr and "partitioned by (day date)" in r.stderr, r.describe()
    assert not (other / "lake").exists() or parquet_files(other / "lake") == []
    assert partitions(glue, db) == want


def test_validate_points_at_the_catalog_key(sluice, tmp_path):
    src = tmp_path / "readings.ndjson"
    write_rows(src, [(1, "a", "2024-03-01", 1.0)])
    p = pipeline(tmp_path, src, "Bad-Name")
    r = sluice.validate(p)
    assert r.returncode == 2, r.describe()
    line = next(i for i, l in enumerate(p.read_text().splitlines(), 1) if l.startswith("glue = "))
    assert f"p.toml:{line}: sinks.lake.catalog.glue.database:" in r.stderr, r.describe()
    assert "lowercase" in r.stderr, r.describe()
