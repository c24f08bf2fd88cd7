"""pipelines/taxi-localstack.toml end to end against LocalStack (native, from
PyPI; started by tests/scripts/services/localstack.sh): create a stream,
`sluice produce` a generated file with corrupt rows, `sluice run` the shipped
pipeline: every valid record exactly once in Parquet, every corrupt one in the
DLQ with its code."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import pytest

from sluice_e2e import REPO, assert_duckdb_agrees, read_parquet
from kinesis_support import AWS_ENV, Kinesis, assert_exactly_once_kinesis, produce

PIPELINE = REPO / "pipelines/taxi-localstack.toml"


@pytest.fixture(scope="module")
def localstack_endpoint() -> str:
    v = os.environ.get("SLUICE_TEST_LOCALSTACK_ENDPOINT")
    if v:
        return v
    msg = ("SLUICE_TEST_LOCALSTACK_ENDPOINT is not set: LocalStack is not running "
           "(tests/scripts/services/localstack.sh starts it; it needs Python 3.13 and PyPI)")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def test_taxi_localstack_pipeline(localstack_endpoint, sluice, datasets, tmp_path):
    ds = datasets(3000, seed=31, bad=0.05)
    k = Kinesis(localstack_endpoint)
    try:
        stream = k.create(2, prefix="taxi-trips")
        r = produce(sluice, stream, localstack_endpoint, ds.path)
        assert r.returncode == 0, r.describe()
        assert f"sent {ds.rows}, retried" in r.output and "failed 0" in r.output, r.describe()

        out = tmp_path / "out"
        out.mkdir()
        # The table goes to S3 on the same LocalStack; read back from a copy.
        s3 = boto3.client("s3", endpoint_url=localstack_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        bucket = f"taxi-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        env = {**AWS_ENV, "SLUICE_KINESIS_ENDPOINT": localstack_endpoint, "SLUICE_STREAM": stream,
               "SLUICE_OUT": out, "SLUICE_TABLE": f"s3://{bucket}/trips", "SLUICE_STOP_WHEN_IDLE": "3s",
               "SLUICE_CHECKPOINT_INTERVAL": "1s"}
        run = sluice.run(PIPELINE, env=env)
        assert run.summary["nodes"]["sources.trips"]["records_out"] == ds.rows, run.describe()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="trips/"):
            for o in page.get("Contents", []):
                dest = out / o["Key"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, o["Key"], str(dest))
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert_exactly_once_kinesis(ds, out)
        table = read_parquet(out / "trips")
        assert set(table.column("source").to_pylist()) == {"sluice-taxi-localstack"}
        assert_duckdb_agrees(out / "trips", table)
    finally:
        k.cleanup()
