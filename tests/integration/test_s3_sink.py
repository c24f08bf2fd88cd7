"""The Parquet sink writing to S3 (moto, and LocalStack when it runs): the
taxi pipeline's Hive-partitioned table read back from the bucket with
pyarrow (S3 through the endpoint) and DuckDB, exactly once against the
generated input; the seed's analytical queries agree with the same queries
over the input; kill -9 during uploads; S3 faults through a loopback
fault-injecting proxy; a wrong bucket and denied access; and fencing: an
instance paused past its lease writes nothing visible after it resumes.

Needs SLUICE_TEST_S3_ENDPOINT (tests/scripts/services/moto.sh);
SLUICE_TEST_LOCALSTACK_ENDPOINT adds the LocalStack run."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from s3_fault_proxy import FaultProxy
from sluice_e2e import (TEST_PIPELINES, assert_duckdb_agrees, assert_exactly_once, assert_parquet_layout,
                        assert_values, ledger, read_parquet, wait_for)

MOTO = os.environ.get("SLUICE_TEST_S3_ENDPOINT")
LOCALSTACK = os.environ.get("SLUICE_TEST_LOCALSTACK_ENDPOINT")
PIPELINE = TEST_PIPELINES / "taxi-s3.toml"
ROWS = int(os.environ.get("SLUICE_TEST_S3_ROWS", "30000"))

pytestmark = pytest.mark.skipif(not MOTO, reason="SLUICE_TEST_S3_ENDPOINT is not set (tests/scripts/services/moto.sh)")


def s3(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test", config=Config(s3={"addressing_style": "path"}))


def new_bucket(endpoint: str) -> str:
    name = f"sluice-{uuid.uuid4().hex[:16]}"
    s3(endpoint).create_bucket(Bucket=name)
    return name


def aws_env(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": None,
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


def run_env(endpoint: str, bucket: str, ds, tmp: Path, **extra) -> dict:
    env = aws_env(endpoint)
    env.update({"SLUICE_INPUT": ds.path, "SLUICE_TABLE": f"s3://{bucket}/trips",
                "SLUICE_CHECKPOINT": f"s3://{bucket}/checkpoint", "SLUICE_DLQ": tmp / "dlq.ndjson",
                "SLUICE_CHECKPOINT_INTERVAL": "2s"})
    env.update(extra)
    return env


def objects(endpoint: str, bucket: str, prefix: str) -> dict[str, str]:
    """Key → ETag of every object under `prefix`."""
    c = s3(endpoint)
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["ETag"]
    return out


def incomplete_uploads(endpoint: str, bucket: str) -> list[str]:
    r = s3(endpoint).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in r.get("Uploads", [])]


def checkpoint_epoch(endpoint: str, bucket: str) -> int:
    try:
        body = s3(endpoint).get_object(Bucket=bucket, Key="checkpoint/checkpoint.json")["Body"].read()
        return json.loads(body).get("epoch", 0)
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def download(endpoint: str, bucket: str, prefix: str, dest: Path) -> Path:
    c = s3(endpoint)
    for key in objects(endpoint, bucket, prefix):
        p = dest / key
        p.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(bucket, key, str(p))
    return dest / prefix


def read_from_s3(endpoint: str, bucket: str, prefix: str):
    """The table straight from the bucket with pyarrow's S3 filesystem (hive partitioning)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    host = endpoint.split("://", 1)[1]
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="test", secret_key="test",
                           region="us-east-1")
    return pads.dataset(f"{bucket}/{prefix}", filesystem=fs, format="parquet", partitioning="hive",
                        exclude_invalid_files=False, ignore_prefixes=[".", "_"]).to_table()


def explain_table(endpoint: str, bucket: str, prefix: str, suspect: set[str]) -> str:
    """Where the `suspect` ids (duplicated or unexpected) are: every object
    holding one (size, rows, how many), some ids with all their objects, the
    generation markers and the checkpoint document."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    host = endpoint.split("://", 1)[1]
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="test", secret_key="test",
                           region="us-east-1")
    ds = pads.dataset(f"{bucket}/{prefix}", filesystem=fs, format="parquet", partitioning="hive",
                      exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    sizes = {k: o["Size"] for page in s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
             for o in page.get("Contents", []) for k in [o["Key"]]}
    where: dict[str, list[str]] = {}
    lines = []
    for frag in ds.get_fragments():
        key = frag.path.split("/", 1)[1]
        ids = frag.to_table(columns=["id"]).column("id").to_pylist()
        hit = [i for i in ids if i in suspect]
        for i in hit:
            where.setdefault(i, []).append(key)
        if hit:
            lines.append(f"  {key} ({sizes.get(key)} bytes, {len(ids)} rows, {len(hit)} suspect)")
    out = [f"objects holding suspect ids ({len(lines)}):", *lines[:20]]
    if len(lines) > 20:
        out.append(f"  … {len(lines) - 20} more")
    out.append("some suspect ids and their objects:")
    out += [f"  {i}: {keys}" for i, keys in list(where.items())[:5]]
    markers = [k for k in sizes if "/.sluice/generations/" in k]
    out.append(f"generation markers: {markers}")
    chunks = [k for k in sizes if "/.sluice/chunks/" in k]
    out.append(f"chunk objects left: {len(chunks)} {chunks[:5]}")
    try:
        cp = s3(endpoint).get_object(Bucket=bucket, Key="checkpoint/checkpoint.json")["Body"].read().decode()
    except Exception as e:  # noqa: BLE001 - diagnostics only
        cp = f"(unreadable: {e})"
    out.append(f"checkpoint/checkpoint.json:\n{cp[:6000]}")
    return "\n".join(out)


def assert_table(endpoint: str, bucket: str, ds, tmp: Path, *, values: bool = False, uploads: bool = True,
                 runs: list | None = None) -> None:
    """Exactly once in the bucket (pyarrow via S3 and DuckDB on a copy), no
    upload left open. When the ids are wrong the message says where they
    are and, with `runs` (Results), what every run printed."""
    direct = read_from_s3(endpoint, bucket, "trips")
    ids = direct.column("id").to_pylist()
    unique = set(ids)
    if len(ids) != len(unique) or unique != ds.good_ids:
        from collections import Counter
        suspect = {i for i, n in Counter(ids).items() if n > 1} | (unique - ds.good_ids)
        runs_text = "\n".join(f"=== run {n}\n{r.describe()}" for n, r in enumerate(runs or [], 1))
        context = f"\n{explain_table(endpoint, bucket, 'trips', suspect)}\n{runs_text}"
        assert len(ids) == len(unique), f"{len(ids) - len(unique)} duplicate ids in s3://{bucket}/trips{context}"
        assert unique == ds.good_ids, (f"ids differ: missing {len(ds.good_ids - unique)}, "
                                       f"unexpected {len(unique - ds.good_ids)}{context}")
    copy = tmp / "copy"
    if copy.exists():
        import shutil
        shutil.rmtree(copy)
    root = download(endpoint, bucket, "trips", copy)
    assert_parquet_layout(root)
    led = ledger(ds, root, tmp / "dlq.ndjson")
    assert_exactly_once(ds, led)
    if values:
        table = read_parquet(root)
        assert_values(table, ds.good_rows(), "sluice-taxi-s3")
        assert_duckdb_agrees(root, table)
        assert_seed_queries(root, ds)
    if uploads:
        assert incomplete_uploads(endpoint, bucket) == [], "multipart uploads left incomplete"


def assert_seed_queries(root: Path, ds) -> None:
    """The seed's Athena queries (top dropoff locations, average trip
    duration per day, trips by weekday and hour) over the table equal the
    same queries over the generated input's valid rows."""
    import duckdb
    import pyarrow as pa

    rows = ds.good_rows().values()
    dur = [r["tripDuration"] if r["tripDuration"] is not None
           else int((r["dropoffDate"] - r["pickupDate"]).total_seconds()) for r in rows]
    inp = pa.table({
        "pickupDate": pa.array([r["pickupDate"] for r in rows], pa.timestamp("ms", tz="UTC")),
        "dropoffLongitude": [r["dropoffLongitude"] for r in rows],
        "dropoffLatitude": [r["dropoffLatitude"] for r in rows],
        "tripDuration": dur,
    })
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("input", inp)
    con.execute(f"CREATE VIEW lake AS SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = 1)")
    queries = {
        "top dropoff locations": """SELECT round(dropoffLongitude, 3) AS lon, round(dropoffLatitude, 3) AS lat,
                                           count(*) AS n FROM {t} GROUP BY 1, 2 ORDER BY n DESC, lon, lat LIMIT 10""",
        "average trip duration per day": """SELECT CAST(pickupDate AS DATE) AS d, round(avg(tripDuration), 6) AS a,
                                                   count(*) FROM {t} GROUP BY 1 ORDER BY 1""",
        "trips by weekday and hour": """SELECT dayofweek(pickupDate) AS wd, hour(pickupDate) AS h, count(*)
                                        FROM {t} GROUP BY 1, 2 ORDER BY 1, 2""",
    }
    for name, q in queries.items():
        got = con.execute(q.format(t="lake")).fetchall()
        want = con.execute(q.format(t="input")).fetchall()
        assert got, f"{name}: no rows"
        assert got == want, f"{name} differs: lake {got[:5]} … input {want[:5]}"


@pytest.fixture(scope="module")
def dataset(datasets):
    return datasets(ROWS, seed=21, bad=0.05)


@pytest.fixture(scope="module")
def small(datasets):
    """For the fault tests: every request goes through a Python proxy."""
    return datasets(4000, seed=22, bad=0.05)


ENDPOINTS = [pytest.param(MOTO, id="moto")] + (
    [pytest.param(LOCALSTACK, id="localstack")] if LOCALSTACK else [])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_taxi_to_s3_exactly_once_and_seed_queries(endpoint, dataset, sluice, tmp_path):
    bucket = new_bucket(endpoint)
    r = sluice.run(PIPELINE, env=run_env(endpoint, bucket, dataset, tmp_path))
    assert r.summary["nodes"]["sinks.trips_parquet"]["outputs"] > 0, r.describe()
    assert_table(endpoint, bucket, dataset, tmp_path, values=True)
    # SSE and tags as configured, the generation marker hidden from readers.
    c = s3(endpoint)
    keys = [k for k in objects(endpoint, bucket, "trips/") if k.endswith(".parquet")]
    head = c.head_object(Bucket=bucket, Key=keys[0])
    assert head.get("ServerSideEncryption") == "AES256", head
    tags = c.get_object_tagging(Bucket=bucket, Key=keys[0])["TagSet"]
    assert {"Key": "pipeline", "Value": "taxi-s3"} in tags, tags
    assert any("/.sluice/generations/" in k for k in objects(endpoint, bucket, "trips/"))


def test_kill9_during_uploads_loses_and_duplicates_nothing(dataset, sluice, tmp_path):
    bucket = new_bucket(MOTO)
    env = run_env(MOTO, bucket, dataset, tmp_path, SLUICE_CHECKPOINT_INTERVAL="300ms")
    # Paced to about 5 s of reading, so the kills land mid-run however fast
    # the machine is (unpaced, an idle machine finished before the first kill).
    paced = tmp_path / "taxi-s3-paced.toml"
    paced.write_text(PIPELINE.read_text().replace(
        "infer_rows = 0", f"infer_rows = 0\nmax_records_per_second = {max(ROWS // 5, 1)}", 1))
    rnd = random.Random(5)
    kills = 0
    runs = []
    for _ in range(4):
        run = sluice.spawn(paced, env=env)
        # Random moments once a checkpoint exists and uploads are under way
        # (a run killed before its first checkpoint starts a new generation,
        # and leaves the old one's uploads to the rule for marked generations).
        wait_for(lambda: (checkpoint_epoch(MOTO, bucket) >= 1 and incomplete_uploads(MOTO, bucket))
                 or run.proc.poll() is not None, 60)
        time.sleep(rnd.uniform(0.0, 1.2))
        killed = run.kill9()
        runs.append(run.result())
        if killed:
            kills += 1
        else:
            assert runs[-1].returncode == 0, runs[-1].describe()
            break
    assert kills >= 1, "the run finished before any kill: raise SLUICE_TEST_S3_ROWS"
    # Three times: the first may finish the input; the second resumes at its
    # end and reads nothing, and the third must resume there too (not read
    # everything again).
    for _ in range(3):
        runs.append(sluice.run(paced, env=env, check=False))
        assert runs[-1].returncode == 0, runs[-1].describe()
    assert_table(MOTO, bucket, dataset, tmp_path, runs=runs)


def test_s3_faults_are_retried_and_nothing_is_lost(small, sluice, tmp_path):
    dataset = small
    bucket = new_bucket(MOTO)
    proxy = FaultProxy(MOTO)
    try:
        proxy.add("PUT", "partNumber=", "500", times=2)
        proxy.add("PUT", "partNumber=", "503", times=2)
        proxy.add("PUT", "partNumber=", "reset", times=2)
        proxy.add("POST", "uploadId=", "503", times=1)
        proxy.add("GET", "uploads", "500", times=1)
        env = run_env(MOTO, bucket, dataset, tmp_path, SLUICE_SINK_ENDPOINT=proxy.url)
        r = sluice.run(PIPELINE, env=env)
        fired = proxy.fired()
        assert fired == {"500": 3, "503": 3, "reset": 2}, f"faults fired: {fired}\n{r.describe()}"
    finally:
        proxy.close()
    assert_table(MOTO, bucket, dataset, tmp_path)


def test_wrong_bucket_and_denied_access_are_clear_startup_errors(small, sluice, tmp_path):
    dataset = small
    missing = f"sluice-missing-{uuid.uuid4().hex[:8]}"
    cp = tmp_path / "cp"
    env = run_env(MOTO, missing, dataset, tmp_path, SLUICE_CHECKPOINT=cp)
    r = sluice.run(PIPELINE, env=env, check=False)
    assert r.returncode != 0, r.describe()
    assert f"s3://{missing}/trips" in r.stderr and "does not exist" in r.stderr, r.describe()
    assert not (cp / "checkpoint.json").exists(), "a checkpoint (acknowledged input) after a failed start"

    bucket = new_bucket(MOTO)
    proxy = FaultProxy(MOTO)
    try:
        proxy.add("*", "", "403", times=10_000)
        env = run_env(MOTO, bucket, dataset, tmp_path, SLUICE_CHECKPOINT=cp, SLUICE_SINK_ENDPOINT=proxy.url)
        r = sluice.run(PIPELINE, env=env, check=False)
    finally:
        proxy.close()
    assert r.returncode != 0, r.describe()
    assert f"s3://{bucket}/trips" in r.stderr and "credentials" in r.stderr, r.describe()
    assert not (cp / "checkpoint.json").exists()
    assert objects(MOTO, bucket, "") == {}, "something was written through a denied endpoint"


def test_paused_instance_that_lost_its_lease_writes_nothing_visible(dataset, sluice, tmp_path):
    """SIGSTOP past the lease; a second instance takes over and finishes;
    SIGCONT: the first exits non-zero and the bucket is as the second left it.
    The first one reads its input at a fixed pace (`max_records_per_second`)
    and its sink talks through a proxy that slows every call, so it is paused
    mid-stream: a checkpoint written that is not the last, input left to
    read, commits pending and data staged."""
    bucket = new_bucket(MOTO)
    lines = sum(1 for _ in open(dataset.path, "rb"))  # the header and every row
    paced = tmp_path / "taxi-s3-paced.toml"
    text = PIPELINE.read_text()
    assert "infer_rows = 0\n" in text
    paced.write_text(text.replace("infer_rows = 0\n", "infer_rows = 0\nmax_records_per_second = 5000\n"))
    # The DLQ in S3 too: a local file is shared by both instances and not fenced.
    env = run_env(MOTO, bucket, dataset, tmp_path, SLUICE_CHECKPOINT_INTERVAL="300ms", SLUICE_LEASE_TTL="2s",
                  SLUICE_DLQ=f"s3://{bucket}/errors/")
    proxy = FaultProxy(MOTO)
    proxy.add("*", "", "delay:0.05", times=1_000_000)
    first = sluice.spawn(paced, env={**env, "SLUICE_SINK_ENDPOINT": proxy.url})
    cp_key = "checkpoint/checkpoint.json"

    def source_line() -> int | None:
        """Where the checkpoint's file source resumes (`None`: no checkpoint yet)."""
        try:
            doc = json.loads(s3(MOTO).get_object(Bucket=bucket, Key=cp_key)["Body"].read())
        except Exception:  # noqa: BLE001 - not there yet
            return None
        if doc.get("epoch", 0) < 1:
            return None
        return (doc["nodes"].get("sources.trips") or {}).get("line", 0)

    try:
        assert wait_for(lambda: source_line() is not None or first.proc.poll() is not None, 120)
        assert first.proc.poll() is None, "the first instance finished before it could be paused\n" + first.result().describe()
        first.signal(signal.SIGSTOP)
        try:
            at = source_line()
            assert at is not None and at < lines, (f"the first instance was paused after its last checkpoint "
                                                   f"(resumes at line {at} of {lines})")
            time.sleep(3)  # past the 2 s lease
            second = sluice.run(PIPELINE, env=env)
            assert "taking over the checkpoint lease" in second.stderr, second.describe()
            assert second.summary["nodes"]["sources.trips"]["records_out"] > 0, second.describe()
            before = {**objects(MOTO, bucket, "trips/"), **objects(MOTO, bucket, "errors/")}
        finally:
            first.signal(signal.SIGCONT)
        r = first.wait(120)
    finally:
        proxy.close()
    assert r.returncode != 0, r.describe()
    assert "lease" in r.stderr, r.describe()
    now = lambda: {**objects(MOTO, bucket, "trips/"), **objects(MOTO, bucket, "errors/")}  # noqa: E731
    # What readers see (a path segment starting with "." or "_" is hidden):
    # the first instance may still have finished chunks it was writing when
    # paused (hidden, under its own keys), never anything visible.
    shown = lambda objs: {k: v for k, v in objs.items()  # noqa: E731
                          if not any(seg.startswith((".", "_")) for seg in k.split("/"))}
    assert shown(now()) == shown(before), ("the paused instance changed the table or the DLQ after it lost its lease\n"
                                           + r.describe())
    download(MOTO, bucket, "errors", tmp_path / "errors")
    errors = sorted((tmp_path / "errors").rglob("*.ndjson"))
    assert errors, "no DLQ objects"
    layout = [p.relative_to(tmp_path / "errors" / "errors").parts for p in errors]
    assert all(len(p) == 6 and p[1].startswith("year=") and p[4].startswith("hour=") for p in layout), layout[:3]
    (tmp_path / "dlq.ndjson").write_text("".join(p.read_text() for p in errors))
    assert_table(MOTO, bucket, dataset, tmp_path, uploads=False, runs=[first.result(), second])
    # Its own uploads and chunks (written after the takeover) are removed by
    # the next recovery; a run over the finished input commits nothing new.
    sluice.run(PIPELINE, env=env)
    assert now() == before
    assert incomplete_uploads(MOTO, bucket) == []
