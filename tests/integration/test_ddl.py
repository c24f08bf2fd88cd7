"""`sluice ddl` prints the Athena table of a Parquet sink: the columns of the
files it wrote (checked against pyarrow's reading of them), the partition
keys, the location, and with `--projection` the partition projection
properties (so Athena needs no MSCK REPAIR); errors name the sink."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

from sluice_e2e import parquet_files

HIVE = {"int64": "bigint", "string": "string", "double": "double"}


def test_ddl_matches_the_written_table(sluice, tmp_path):
    src = tmp_path / "rows.csv"
    src.write_text("id,year,month,vendor,fare\n" + "".join(
        f"{i},{2016 + i % 2},{1 + i % 12},{'ab'[i % 2]},{i * 0.5}\n" for i in range(500)))
    out = tmp_path / "out"
    p = tmp_path / "p.toml"
    p.write_text(f"""[pipeline]
name = "ddl"
[checkpoint]
dir = "{out}/checkpoint"
[dlq]
path = "{out}/dlq.ndjson"
[sources.rows]
type = "file"
path = "{src}"
[sinks.lake]
type = "parquet"
inputs = ["rows"]
path = "{out}/lake"
partition_by = ["year", "month", "vendor"]
""")
    sluice.run(p)
    r = sluice.cmd("ddl", p, "--sink", "lake", "--table", "trips", "--projection")
    assert r.returncode == 0, r.describe()
    ddl = r.stdout
    assert ddl.startswith("CREATE EXTERNAL TABLE IF NOT EXISTS `trips` (\n"), ddl
    # Data columns: exactly the files' columns, with their Hive types.
    schema = pq.read_schema(parquet_files(out / "lake")[0])
    data = re.search(r"\(\n(.*?)\n\)\nPARTITIONED BY", ddl, re.S).group(1)
    declared = [tuple(line.strip().rstrip(",").split(" ", 1)) for line in data.splitlines()]
    assert declared == [(f"`{f.name}`", HIVE[str(f.type)]) for f in schema], (declared, schema)
    assert "PARTITIONED BY (\n  `year` bigint,\n  `month` bigint,\n  `vendor` string\n)" in ddl, ddl
    assert f"LOCATION 'file://{out}/lake/'" in ddl, ddl
    for prop in ("'projection.enabled'='true'", "'projection.year.range'='2016,2017'",
                 "'projection.month.range'='1,12'", "'projection.month.digits'='2'",
                 "'projection.vendor.type'='enum'", "'projection.vendor.values'='a,b'",
                 f"'storage.location.template'='file://{out}/lake/year=${{year}}/month=${{month}}/vendor=${{vendor}}/'"):
        assert prop in ddl, f"{prop} missing:\n{ddl}"
    # The template matches the directories the sink wrote.
    dirs = {str(Path(f).parent.relative_to(out / "lake")) for f in parquet_files(out / "lake")}
    assert "year=2016/month=01/vendor=a" in dirs, sorted(dirs)[:5]

    bad = sluice.cmd("ddl", p, "--sink", "nope")
    assert bad.returncode == 2 and "no sink nope" in bad.stderr and "lake" in bad.stderr, bad.describe()
