"""An aggregate stage started on a stream whose shards already hold a backlog
over the same event-time range: every shard the source opened holds the
stage's watermark back until it delivers, so the first shard read cannot push
the watermark past the others' backlog. With `allowed_lateness` 0, nothing
is late and every window holds exactly the records put for it.

Records are put with boto3 (ExplicitHashKey) to address each shard."""

from __future__ import annotations

import json
from collections import Counter

from sluice_e2e import PLUGINS, read_dlq
from kinesis_support import AWS_ENV, REGION

WINDOW_MS = 1000
SHARDS = 3
PER_SHARD = 3000  # event times 0 .. 30 s, 10 ms apart


def pipeline(path, *, stream, endpoint, out):
    path.write_text(f"""[pipeline]
name = "window-backlog"

[checkpoint]
dir = "{out}/checkpoint"
interval = "500ms"

[dlq]
path = "{out}/dlq.ndjson"

[sources.events]
type = "kinesis"
stream = "{stream}"
endpoint = "{endpoint}"
region = "{REGION}"
start_position = "trim_horizon"
poll_interval = "100ms"
stop_when_idle = "2s"

[stages.count]
inputs = ["events"]
plugin = "{PLUGINS}/count_aggregate.wasm"
config = {{ key = "k", time = "t" }}

[stages.count.window]
tumbling = "1s"
allowed_lateness = "0s"

[sinks.counts]
type = "file"
inputs = ["count"]
path = "{out}/counts.ndjson"
""")
    return path


def test_shards_with_a_backlog_hold_the_watermark_until_they_deliver(sluice, kinesis, tmp_path):
    name = kinesis.create(SHARDS)
    shards = sorted(kinesis.open_shards(name), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    hash_key = [s["HashKeyRange"]["StartingHashKey"] for s in shards]
    sent = Counter()  # (window start, key) -> records put
    for s in range(SHARDS):
        times = [i * 10 + s for i in range(PER_SHARD)]
        for i in range(0, len(times), 500):
            recs = [{"Data": json.dumps({"k": f"s{s}", "t": t}).encode(), "PartitionKey": "p",
                     "ExplicitHashKey": hash_key[s]} for t in times[i:i + 500]]
            r = kinesis.client.put_records(StreamName=name, Records=recs)
            assert r.get("FailedRecordCount", 0) == 0, r
        for t in times:
            sent[(t - t % WINDOW_MS, json.dumps(f"s{s}"))] += 1

    out = tmp_path / "out"
    out.mkdir()
    res = sluice.run(pipeline(tmp_path / "p.toml", stream=name, endpoint=kinesis.endpoint, out=out), env=AWS_ENV)
    assert res.returncode == 0, res.describe()
    dead = Counter(e["code"] for e in read_dlq(out / "dlq.ndjson"))
    assert dead == Counter(), f"dead letters: {dict(dead)}"
    rows = [json.loads(line) for line in (out / "counts.ndjson").read_text().splitlines()]
    got = {(r["windowStartMs"], r["key"]): r["count"] for r in rows}
    assert len(got) == len(rows), "one result per window and key"
    assert got == dict(sent)
