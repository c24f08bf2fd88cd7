"""Parquet files are rolled by size, age and the cap on open files, not by
checkpoints.

- ~200 MiB of incompressible CSV into five partitions with a 2 s checkpoint
  interval and `max_file_bytes = "32MiB"`: each partition gets about
  bytes / 32 MiB files, every one but the last at least 32 MiB, although far
  more checkpoints happened; every row exactly once (pyarrow and DuckDB).
- The same on the S3 backend (moto; `SLUICE_TEST_S3_ENDPOINT`), at half the
  input and half the file size: files per partition by size, not one per
  checkpoint, every row once, no chunk object or multipart upload left.
- The same input killed with SIGKILL at random moments and resumed: every
  row exactly once, no staged file or chunk left, and the files still about
  32 MiB (a crash does not cut files short: the resumed run goes on writing
  the files the checkpoint lists as open).
- A near-unique partition column (50k rows) with `max_open_files`: the run
  completes, the summary says at most that many files were ever open and how
  many were finished early, and every row is there exactly once."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from sluice_e2e import inprogress_files, kill_after_checkpoints, parquet_files
from test_s3_sink import MOTO, aws_env, download, incomplete_uploads, new_bucket, objects

MIB = 1 << 20
MAX_FILE = 32 * MIB
PARTS = 5
INPUT_MIB = int(os.environ.get("SLUICE_TEST_ROLLING_MIB", "200"))
# The S3 run (moto): the local runs' shape at about half the scale (96 MiB,
# 16 MiB files: two per partition, the first in several multipart parts), so
# that it adds ~20 s rather than ~60 s; the env knobs restore the full size.
S3_INPUT_MIB = int(os.environ.get("SLUICE_TEST_S3_ROLLING_MIB", "96"))
S3_MAX_FILE = int(os.environ.get("SLUICE_TEST_S3_ROLLING_FILE_MIB", "16")) * MIB
S3_INTERVAL = os.environ.get("SLUICE_TEST_S3_ROLLING_INTERVAL", "200ms")
SEED = int(os.environ.get("SLUICE_TEST_KILL_SEED", str(int(time.time()))))


def write_pipeline(path: Path, out: Path, source: Path, *, partition_by: str, extra: str = "",
                   interval: str = "2s", lake: str | None = None, source_extra: str = "") -> Path:
    path.write_text(f"""[pipeline]
name = "rolling"

[checkpoint]
dir = "{out}/checkpoint"
interval = "{interval}"

[dlq]
path = "{out}/dlq.ndjson"

[sources.rows]
type = "file"
path = "{source}"
{source_extra}

[sinks.lake]
type = "parquet"
inputs = ["rows"]
path = "{lake or f'{out}/lake'}"
partition_by = ["{partition_by}"]
{extra}
""")
    return path


def write_csv(path: Path, mib: int) -> int:
    """`mib` MiB of CSV: id, part (0..4), and 400 hex digits of random
    payload that no codec shrinks much. Returns the row count."""
    rng = random.Random(7)
    payload_len = 200  # bytes → 400 hex digits
    row_bytes = 420
    rows = mib * MIB // row_bytes
    block = os.urandom(payload_len * 4096).hex()
    with path.open("w") as f:
        f.write("id,part,payload\n")
        chunk = []
        for i in range(rows):
            off = rng.randrange(0, len(block) - 2 * payload_len)
            chunk.append(f"{i},{i % PARTS},{block[off:off + 2 * payload_len]}\n")
            if len(chunk) == 10_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    return rows


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> tuple[Path, int]:
    """INPUT_MIB of CSV (`write_csv`): the path and the row count."""
    path = tmp_path_factory.mktemp("rolling-input") / "rows.csv"
    return path, write_csv(path, INPUT_MIB)


def read_lake(root: Path):
    import pyarrow.dataset as pads

    return pads.dataset(str(root), format="parquet", partitioning="hive").to_table(columns=["id", "part"])


def assert_every_row_once(root: Path, rows: int):
    import duckdb

    t = read_lake(root)
    ids = t.column("id").to_pylist()
    assert len(ids) == rows and len(set(ids)) == rows, (
        f"{len(ids)} rows, {len(set(ids))} distinct ids; expected {rows} exactly once")
    assert min(ids) == 0 and max(ids) == rows - 1
    con = duckdb.connect()
    n, distinct, bad = con.execute(
        f"SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE id % {PARTS} != part) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)").fetchone()
    assert (n, distinct, bad) == (rows, rows, 0), (n, distinct, bad)


def files_by_partition(root: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for f in parquet_files(root):
        p = root / f if not Path(f).is_absolute() else Path(f)
        out.setdefault(p.parent.name, []).append(p.stat().st_size)
    return out


def assert_sizes_follow_max_file_bytes(root: Path, max_file: int = MAX_FILE):
    by_part = files_by_partition(root)
    assert len(by_part) == PARTS, sorted(by_part)
    for part, sizes in sorted(by_part.items()):
        total = sum(sizes)
        expected = -(-total // max_file)  # ceil
        small = [s for s in sizes if s < max_file]
        assert len(small) <= 1, f"{part}: only the last file may be under {max_file >> 20} MiB: {sorted(sizes)}"
        assert expected <= len(sizes) <= expected + 1, f"{part}: {len(sizes)} files for {total} bytes: {sorted(sizes)}"


@pytest.mark.parametrize("interval", ["2s", "200ms"])
def test_files_roll_by_size_not_by_checkpoint(sluice, big_csv, tmp_path, interval):
    """2 s as Firehose users would set it; 200 ms so that a run of a few
    seconds has many more checkpoints than files. That run is paced to ~4 s
    of reading however fast the machine (unpaced, it once read everything
    in 1.1 s: 4 checkpoints, too few to tell)."""
    source, rows = big_csv
    out = tmp_path / "out"
    pace = f"max_records_per_second = {max(rows // 4, 1)}" if interval == "200ms" else ""
    p = write_pipeline(tmp_path / "p.toml", out, source, partition_by="part", extra='max_file_bytes = "32MiB"',
                       interval=interval, source_extra=pace)
    started = time.monotonic()
    r = sluice.run(p)
    took = time.monotonic() - started
    checkpoints = r.summary["epoch"]
    by_part = files_by_partition(out / "lake")
    per_part = max(len(v) for v in by_part.values())
    print(f"{INPUT_MIB} MiB, {rows} rows in {took:.1f}s, interval {interval}: {checkpoints} checkpoints, "
          f"files per partition {sorted(len(v) for v in by_part.values())}")
    assert_sizes_follow_max_file_bytes(out / "lake")
    if interval == "200ms":
        assert checkpoints > 3 * per_part, (
            f"only {checkpoints} checkpoints for {per_part} files per partition: the run was too short to show "
            "that checkpoints do not roll files")
    assert_every_row_once(out / "lake", rows)
    assert not inprogress_files(out), inprogress_files(out)


@pytest.fixture(scope="module")
def s3_csv(request, tmp_path_factory) -> tuple[Path, int]:
    """The S3 run's input: the local runs' file when the sizes agree."""
    if S3_INPUT_MIB == INPUT_MIB:
        return request.getfixturevalue("big_csv")
    path = tmp_path_factory.mktemp("rolling-s3-input") / "rows.csv"
    return path, write_csv(path, S3_INPUT_MIB)


@pytest.mark.skipif(not MOTO, reason="SLUICE_TEST_S3_ENDPOINT is not set (tests/scripts/services/moto.sh)")
@pytest.mark.parametrize("interval", [S3_INTERVAL, "1h"])
def test_files_roll_by_size_not_by_checkpoint_on_s3(sluice, s3_csv, tmp_path, interval):
    """The same on the S3 backend (moto): chunks are objects under a hidden
    prefix, joined into the final object when the file rolls. Read back
    after download: files per partition by size, every row once, no chunk
    or multipart upload left. With `1h` no checkpoint falls in the run, so
    only the size check rolls files (it once let a 16 MiB limit give one
    19 MiB file per partition: it looked only every 8192 rows). The short
    interval's run is paced to ~5 s of reading (unpaced, it once took 2.7 s:
    2 checkpoints, too few to tell)."""
    source, rows = s3_csv
    bucket = new_bucket(MOTO)
    out = tmp_path / "out"
    pace = f"max_records_per_second = {max(rows // 5, 1)}" if interval != "1h" else ""
    p = write_pipeline(tmp_path / "p.toml", out, source, partition_by="part", lake=f"s3://{bucket}/lake",
                       extra=f'max_file_bytes = "{S3_MAX_FILE >> 20}MiB"', interval=interval, source_extra=pace)
    started = time.monotonic()
    r = sluice.run(p, env=aws_env(MOTO))
    took = time.monotonic() - started
    checkpoints = r.summary["epoch"]
    keys = objects(MOTO, bucket, "lake/")
    assert [k for k in keys if "/.sluice/chunks/" in k] == [], "chunk objects left after the run"
    assert incomplete_uploads(MOTO, bucket) == [], "multipart uploads left incomplete"
    root = download(MOTO, bucket, "lake", tmp_path / "copy")
    by_part = files_by_partition(root)
    per_part = max(len(v) for v in by_part.values())
    print(f"S3: {S3_INPUT_MIB} MiB, {rows} rows in {took:.1f}s, interval {interval}, max_file_bytes "
          f"{S3_MAX_FILE >> 20} MiB: {checkpoints} checkpoints, files per partition "
          f"{sorted(len(v) for v in by_part.values())}")
    assert_sizes_follow_max_file_bytes(root, S3_MAX_FILE)
    assert per_part >= 2, f"one file per partition: {S3_INPUT_MIB} MiB is too little input to roll any"
    # Every partition gets rows in every interval: rolled at checkpoints, it
    # would have about as many files as there were checkpoints. (Not 3x as
    # locally: on moto a checkpoint, which completes the interval's chunk
    # uploads, takes about a second, so the run has fewer of them.)
    assert interval == "1h" or checkpoints >= 2 * per_part, (
        f"only {checkpoints} checkpoints for {per_part} files per partition: the run was too short to show "
        "that checkpoints do not roll files")
    assert_every_row_once(root, rows)


def test_kill9_while_rolling_keeps_every_row_once(sluice, big_csv, tmp_path):
    source, rows = big_csv
    out = tmp_path / "out"
    # Paced to ~5 s of reading however fast the machine: every kill lands
    # before the run could finish (an unpaced run on an idle machine ended
    # between two kills).
    pace = max(rows // 5, 1)
    p = write_pipeline(tmp_path / "p.toml", out, source, partition_by="part",
                       extra='max_file_bytes = "32MiB"', interval="300ms",
                       source_extra=f"max_records_per_second = {pace}")
    rng = random.Random(SEED)
    final, kills, moments = kill_after_checkpoints(sluice, p, checkpoint=out / "checkpoint" / "checkpoint.json", kills=4,
                                                   rng=rng, max_delay=0.6, wait=180, poll=0.05, run_timeout=600)
    ctx = f"(SLUICE_TEST_KILL_SEED={SEED}; kills: {moments})"
    print(f"killed {kills} times {ctx}")
    assert final is not None and kills >= 2, f"the run never finished or was hardly killed {ctx}"
    assert_every_row_once(out / "lake", rows)
    assert not inprogress_files(out), f"staged files or chunks left: {inprogress_files(out)} {ctx}"
    assert_sizes_follow_max_file_bytes(out / "lake")


def test_near_unique_partition_column_stays_under_max_open_files(sluice, tmp_path):
    rows, cap = 50_000, 500
    source = tmp_path / "coords.csv"
    rng = random.Random(3)
    with source.open("w") as f:
        f.write("id,part,lon\n")
        f.write("".join(f"{i},{i % PARTS},{-74 + rng.random():.6f}\n" for i in range(rows)))
    out = tmp_path / "out"
    p = write_pipeline(tmp_path / "p.toml", out, source, partition_by="lon", extra=f"max_open_files = {cap}")
    started = time.monotonic()
    r = sluice.run(p)
    took = time.monotonic() - started
    sink = r.summary["nodes"]["sinks.lake"]
    print(f"{rows} near-unique partitions in {took:.1f}s: peak open {sink['open_files_peak']}, "
          f"finished early {sink['files_finished_early']}")
    assert sink["open_files_peak"] == cap, sink
    assert sink["files_finished_early"] >= rows * 0.9, sink
    assert "max_open_files" in r.stderr and "lon" in r.stderr, "the cap is warned about, naming the column"
    import pyarrow.dataset as pads

    t = pads.dataset(str(out / "lake"), format="parquet", partitioning="hive").to_table(columns=["id"])
    ids = t.column("id").to_pylist()
    assert sorted(ids) == list(range(rows)), f"{len(ids)} rows, {len(set(ids))} distinct"
    assert not inprogress_files(out)
