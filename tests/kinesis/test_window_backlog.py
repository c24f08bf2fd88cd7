"""An aggregate stage started on a stream whose shards already hold a backlog
over the same event-time range: every shard the source opened holds the
stage's watermark back until it delivers, so the first shard read cannot push
the watermark past the others' backlog. With `allowed_lateness` 0, nothing
is late and every window holds exactly the records put for it.

Records are put with boto3 (ExplicitHashKey) to address each shard."""

from __future__ import annotations

import json
from collections import Counter

from sluice_e2e import read_dlq
from kinesis_support import AWS_ENV, ShardWriter, window_count_pipeline

SHARDS = 3
PER_SHARD = 3000  # event times 0 .. 30 s, 10 ms apart


def test_shards_with_a_backlog_hold_the_watermark_until_they_deliver(sluice, kinesis, tmp_path):
    name = kinesis.create(SHARDS)
    writer = ShardWriter(kinesis, name)
    for s in range(SHARDS):
        writer.put(s, [i * 10 + s for i in range(PER_SHARD)])

    out = tmp_path / "out"
    out.mkdir()
    p = window_count_pipeline(tmp_path / "p.toml", name="window-backlog", stream=name, endpoint=kinesis.endpoint, out=out,
                              interval="500ms", source_extra='stop_when_idle = "2s"', window_extra='allowed_lateness = "0s"')
    res = sluice.run(p, env=AWS_ENV)
    assert res.returncode == 0, res.describe()
    dead = Counter(e["code"] for e in read_dlq(out / "dlq.ndjson"))
    assert dead == Counter(), f"dead letters: {dict(dead)}"
    rows = [json.loads(line) for line in (out / "counts.ndjson").read_text().splitlines()]
    got = {(r["windowStartMs"], r["key"]): r["count"] for r in rows}
    assert len(got) == len(rows), "one result per window and key"
    assert got == dict(writer.sent)
