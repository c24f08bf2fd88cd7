"""`sluice bench-s3` as a smoke test on moto, with a tiny input so that it
cannot rot: it creates the missing bucket (the endpoint comes from
AWS_ENDPOINT_URL_S3), prints records/s for the local and the S3 table and
the S3/local ratio line, both tables hold the same bytes, and it leaves no
object behind."""

from __future__ import annotations

import re
import uuid

import pytest

from sluice_e2e import PLUGINS
from test_s3_sink import MOTO, aws_env, objects, s3

pytestmark = pytest.mark.skipif(not MOTO, reason="SLUICE_TEST_S3_ENDPOINT is not set (tests/scripts/services/moto.sh)")


def test_bench_s3_smoke(sluice):
    bucket = f"sluice-bench-{uuid.uuid4().hex[:12]}"
    r = sluice.cmd("bench-s3", "--bucket", bucket, "--rows", "3000", "--repeat", "1", "--plugins", PLUGINS,
                   env=aws_env(MOTO), timeout=300)
    assert r.returncode == 0, r.describe()
    out = r.stdout
    assert re.search(r"local disk\s*:\s+\d+ rec/s", out), r.describe()
    assert re.search(r"S3\s*:\s+\d+ rec/s", out), r.describe()
    m = re.search(r"s3/local: records/s (\d+\.\d+), bytes written (\d+\.\d+)", out)
    assert m, r.describe()
    # The same input through the same pipeline: the same Parquet bytes.
    assert 0.95 <= float(m.group(2)) <= 1.05, r.describe()
    s3(MOTO).head_bucket(Bucket=bucket)
    assert objects(MOTO, bucket, "") == {}, "the bench left objects behind"
