"""Helpers for the Kinesis tests: a boto3 client on the emulator (stream
set-up and resharding only — the data path is always `sluice produce` and
`sluice run`), pipeline files, and DLQ/NDJSON readers."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

from sluice_e2e import PLUGINS, Dataset, Result, Sluice, parquet_ids, read_dlq, sample

REGION = "us-east-1"
VALIDATE_CONFIG = ('{ bbox = { min_lon = -74.3, max_lon = -73.6, min_lat = 40.45, max_lat = 41.0 }, '
                   'min_passengers = 1, max_passengers = 9, max_duration_s = 86400 }')
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": REGION,
           "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Kinesis:
    def __init__(self, endpoint: str):
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint
        self.client = boto3.client(
            "kinesis", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=5, read_timeout=60))
        self.streams: list[str] = []

    def create(self, shards: int, prefix: str = "sluice-test") -> str:
        name = unique(prefix)
        self.client.create_stream(StreamName=name, ShardCount=shards)
        self.streams.append(name)
        self.wait_active(name)
        return name

    def wait_active(self, name: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while True:
            st = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
            if st == "ACTIVE":
                return
            assert time.monotonic() < end, f"stream {name} still {st} after {timeout}s"
            time.sleep(0.2)

    def shards(self, name: str) -> list[dict]:
        out, token = [], None
        while True:
            r = (self.client.list_shards(NextToken=token) if token
                 else self.client.list_shards(StreamName=name))
            out += r["Shards"]
            token = r.get("NextToken")
            if not token:
                return out

    def open_shards(self, name: str) -> list[dict]:
        return [s for s in self.shards(name) if "EndingSequenceNumber" not in s["SequenceNumberRange"]
                or s["SequenceNumberRange"]["EndingSequenceNumber"] is None]

    def cleanup(self) -> None:
        for s in self.streams:
            try:
                self.client.delete_stream(StreamName=s, EnforceConsumerDeletion=True)
            except Exception:  # noqa: BLE001 — best effort; the emulator is per suite
                pass


def pipeline(path: Path, *, stream: str, endpoint: str, out: Path, mode: str = "polling",
             sink: str = "parquet", stages: bool = True, checkpoint_interval: str = "1s",
             stop_when_idle: str = "3s", extra_source: str = "") -> Path:
    """A Kinesis → validate → enrich → Parquet (or NDJSON file) + DLQ pipeline."""
    src_for_sink = "enrich" if stages else "trips"
    if sink == "parquet":
        sink_toml = f"""
[sinks.out]
type = "parquet"
inputs = ["{src_for_sink}"]
path = "{out}/trips"
partition_by = ["year", "month", "day", "hour", "vendorId"]
# The nyctaxitrips table (what `enrich` emits). Declared, so rows that do not
# fit it go to the DLQ instead of changing the table; without `columns` the
# sink would take the schema from the first batch.
columns = [
  {{ name = "id", type = "string", required = true }},
  {{ name = "vendorId", type = "int32", required = true }},
  {{ name = "pickupDate", type = "timestamp", required = true }},
  {{ name = "dropoffDate", type = "timestamp", required = true }},
  {{ name = "passengerCount", type = "int32", required = true }},
  {{ name = "pickupLongitude", type = "float64", required = true }},
  {{ name = "pickupLatitude", type = "float64", required = true }},
  {{ name = "dropoffLongitude", type = "float64", required = true }},
  {{ name = "dropoffLatitude", type = "float64", required = true }},
  {{ name = "storeAndFwdFlag", type = "string" }},
  {{ name = "gcDistance", type = "float64", required = true }},
  {{ name = "tripDuration", type = "int64", required = true }},
  {{ name = "googleDistance", type = "float64" }},
  {{ name = "googleDuration", type = "int64" }},
  {{ name = "source", type = "string", required = true }},
  {{ name = "year", type = "int32", required = true }},
  {{ name = "month", type = "int32", required = true }},
  {{ name = "day", type = "int32", required = true }},
  {{ name = "hour", type = "int32", required = true }},
]
"""
    else:
        sink_toml = f"""
[sinks.out]
type = "file"
inputs = ["{src_for_sink}"]
path = "{out}/records.ndjson"
"""
    stages_toml = f"""
[stages.validate]
inputs = ["trips"]
plugin = "{PLUGINS}/validate.wasm"
config = {VALIDATE_CONFIG}

[stages.enrich]
inputs = ["validate"]
plugin = "{PLUGINS}/enrich.wasm"
config = {{ source = "sluice-kinesis-test" }}
""" if stages else ""
    path.write_text(f"""[pipeline]
name = "kinesis-test"

[checkpoint]
dir = "{out}/checkpoint"
interval = "{checkpoint_interval}"

[batch]
max_records = 2048

[dlq]
path = "{out}/dlq.ndjson"

[sources.trips]
type = "kinesis"
stream = "{stream}"
endpoint = "{endpoint}"
region = "{REGION}"
start_position = "trim_horizon"
mode = "{mode}"
poll_interval = "200ms"
shard_discovery_interval = "1s"
stop_when_idle = "{stop_when_idle}"
{extra_source}
{stages_toml}
{sink_toml}
""")
    return path


WINDOW_MS = 1000


def window_count_pipeline(path: Path, *, name: str, stream: str, endpoint: str, out: Path, interval: str,
                          source_extra: str = "", window_extra: str = "") -> Path:
    """Kinesis → count_aggregate (1 s tumbling windows of `{k, t}` records)
    → NDJSON counts + DLQ: the windowed tests' pipeline."""
    path.write_text(f"""[pipeline]
name = "{name}"

[checkpoint]
dir = "{out}/checkpoint"
interval = "{interval}"

[dlq]
path = "{out}/dlq.ndjson"

[sources.events]
type = "kinesis"
stream = "{stream}"
endpoint = "{endpoint}"
region = "{REGION}"
start_position = "trim_horizon"
poll_interval = "100ms"
{source_extra}

[stages.count]
inputs = ["events"]
plugin = "{PLUGINS}/count_aggregate.wasm"
config = {{ key = "k", time = "t" }}

[stages.count.window]
tumbling = "1s"
{window_extra}

[sinks.counts]
type = "file"
inputs = ["count"]
path = "{out}/counts.ndjson"
""")
    return path


class ShardWriter:
    """Puts `{k: "s<shard>", t}` records into chosen shards of a stream
    (ExplicitHashKey: the windowed tests address shards) and counts what
    was put per (window start, key)."""

    def __init__(self, kinesis: Kinesis, stream: str):
        shards = sorted(kinesis.open_shards(stream), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        self.hash_key = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
        self.client, self.stream = kinesis.client, stream
        self.sent: Counter = Counter()

    def put(self, shard: int, times: list[int]) -> None:
        for i in range(0, len(times), 500):
            recs = [{"Data": json.dumps({"k": f"s{shard}", "t": t}).encode(), "PartitionKey": "p",
                     "ExplicitHashKey": self.hash_key[shard]} for t in times[i:i + 500]]
            r = self.client.put_records(StreamName=self.stream, Records=recs)
            assert r.get("FailedRecordCount", 0) == 0, r
        for t in times:
            self.sent[(t - t % WINDOW_MS, json.dumps(f"s{shard}"))] += 1


def produce(sluice: Sluice, stream: str, endpoint: str, file: Path, *args, timeout: float = 300) -> Result:
    return sluice.cmd("produce", "--stream", stream, "--file", file, "--endpoint", endpoint, "--region", REGION,
                      "--no-progress", *args, env=AWS_ENV, timeout=timeout)


def produced_count(r: Result) -> int | None:
    """`sent` from produce's closing report, when it prints one we can parse."""
    import re

    m = re.search(r"sent[=: ]+(\d+)", r.output)
    return int(m.group(1)) if m else None


def _times(row: dict) -> tuple:
    # The DLQ may hold the record after the JSON→Arrow conversion, with ISO
    # timestamps ("2016-03-17T15:21:06Z"); compare in the input's form.
    return tuple(str(row.get(k) or "").replace("T", " ").rstrip("Z") for k in ("pickupDate", "dropoffDate"))


def rows_without_id(ds: Dataset) -> dict[tuple, str]:
    """Generated CSV rows whose id cell is empty (a `missing_field` kind), keyed
    by (pickupDate, dropoffDate), to the id their label gives them."""
    import csv

    lines = ds.path.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    out = {}
    for lab in ds.labels:
        if lab["code"] is None:
            continue
        cells = next(csv.reader([lines[int(lab["line"]) - 1]]))
        row = dict(zip(header, cells))
        if not row.get("id"):
            out[_times(row)] = lab["id"]
    return out


def dlq_record_id(entry: dict, no_id: dict[tuple, str] | None = None) -> str:
    """The trip id of a DLQ entry: the record's own id; for a CSV row that
    produce sent as raw text because its cell count was wrong, the first cell;
    for a row generated without an id, its label's id (matched on its times)."""
    rec = entry.get("record")
    if isinstance(rec, str):
        try:
            rec = json.loads(rec)
        except json.JSONDecodeError:
            return rec.split(",", 1)[0]
    assert isinstance(rec, dict), f"DLQ entry without a record: {entry}"
    if rec.get("id") in (None, "") and no_id is not None:
        key = _times(rec)
        assert key in no_id, f"DLQ record without an id matches no generated row: {entry}"
        return no_id[key]
    assert rec.get("id"), f"DLQ entry without a record id: {entry}"
    return str(rec["id"])


def assert_exactly_once_kinesis(ds: Dataset, out: Path) -> dict:
    """Every good id exactly once in Parquet, every bad one exactly once in the
    DLQ with its label's code (from stages.validate: through produce, a CSV row
    the file source would call malformed arrives as non-JSON text, which
    validate rejects as `malformed`)."""
    pq_ids = parquet_ids(out / "trips")
    dlq = read_dlq(out / "dlq.ndjson")
    no_id = rows_without_id(ds)
    dlq_ids = [dlq_record_id(e, no_id) for e in dlq]
    for name, ids in (("the Parquet output", pq_ids), ("the DLQ", dlq_ids)):
        dup = [i for i, c in Counter(ids).items() if c > 1]
        assert not dup, f"{len(dup)} ids more than once in {name}: {sample(dup)}"
    pq, dl = set(pq_ids), set(dlq_ids)
    assert pq == ds.good_ids, (f"Parquet ids differ from the good rows: missing {len(ds.good_ids - pq)} "
                               f"{sample(ds.good_ids - pq)}, unexpected {sample(pq - ds.good_ids)}")
    bad = ds.bad
    assert dl == set(bad), (f"DLQ ids differ from the bad rows: missing {sample(set(bad) - dl)}, "
                            f"unexpected {sample(dl - set(bad))}")
    wrong = [(i, e["stage"], e["code"], bad[i]) for e, i in zip(dlq, dlq_ids)
             if e["code"] != bad[i] or e["stage"] != "stages.validate"]
    assert not wrong, f"{len(wrong)} DLQ entries with the wrong stage/code (id, stage, code, want): {sample(wrong)}"
    return {"parquet": len(pq_ids), "dlq": len(dlq_ids), "codes": Counter(e["code"] for e in dlq)}


def produced_stream(sluice: Sluice, kinesis: Kinesis, ds: Dataset, shards: int) -> str:
    """A new stream with `shards` shards holding every row of `ds` (through `sluice produce`)."""
    stream = kinesis.create(shards)
    r = produce(sluice, stream, kinesis.endpoint, ds.path)
    assert r.returncode == 0, r.describe()
    return stream
