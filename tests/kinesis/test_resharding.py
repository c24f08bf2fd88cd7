"""Resharding while producing: split one shard and merge two others while
`sluice produce --rate` runs, then consume: nothing lost, nothing twice, and
per partition key (the trip id) the records come out in the order they were
put. The sink is an NDJSON file fed straight from the source (it writes
records in arrival order), the input an NDJSON file where each key appears
several times with an increasing `seq`."""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict

import pytest

from sluice_e2e import SLUICE, base_env
from kinesis_support import AWS_ENV, REGION, pipeline

KEYS, PER_KEY, RATE = 500, 6, 400   # 3000 records over ~7.5 s


def write_input(path):
    # Round-robin over keys so the records of one key are far apart in time:
    # they straddle the reshards.
    with open(path, "w") as f:
        for seq in range(PER_KEY):
            for k in range(KEYS):
                f.write(json.dumps({"id": f"key{k:05d}", "seq": seq, "pad": "x" * 64}) + "\n")
    return KEYS * PER_KEY


def adjacent_pair(shards, exclude):
    ranges = sorted((int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]), s["ShardId"])
                    for s in shards if s["ShardId"] not in exclude)
    for (a0, a1, a), (b0, b1, b) in zip(ranges, ranges[1:]):
        if a1 + 1 == b0:
            return a, b
    raise AssertionError(f"no two adjacent open shards in {ranges}")


def produce_while(kinesis, tmp_path, stream, reshard, rate=RATE):
    """`sluice produce --rate` of the keyed input into `stream` while
    `reshard(client, open shards)` runs; returns the number of records."""
    src = tmp_path / "keyed.ndjson"
    total = write_input(src)
    # --concurrency 1: one PutRecords call at a time, so the stream's order per
    # key is the file's order (the thing under test is the consumer's order).
    argv = [str(SLUICE), "produce", "--stream", stream, "--file", str(src), "--endpoint", kinesis.endpoint,
            "--region", REGION, "--rate", str(rate), "--concurrency", "1", "--no-progress"]
    prod = subprocess.Popen(argv, env=base_env(AWS_ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        reshard(kinesis.client, kinesis.open_shards(stream))
        assert prod.poll() is None, "produce ended before the reshards: raise PER_KEY or lower RATE"
        out, _ = prod.communicate(timeout=120)
    finally:
        if prod.poll() is None:
            prod.kill()
            prod.wait()
    assert prod.returncode == 0, out
    assert f"sent {total}, retried" in out and "failed 0" in out, out
    return total


def consume_and_check(kinesis, sluice, tmp_path, stream, total, mode="polling"):
    """Run the source into an NDJSON file: every (key, seq) once, in order per key."""
    o = tmp_path / "out"
    o.mkdir()
    p = pipeline(tmp_path / "p.toml", stream=stream, endpoint=kinesis.endpoint, out=o, mode=mode,
                 sink="file", stages=False)
    r = sluice.run(p, env=AWS_ENV)
    recs = [json.loads(line) for line in (o / "records.ndjson").read_text().splitlines() if line.strip()]

    seen = [(d["id"], d["seq"]) for d in recs]
    dup = len(seen) - len(set(seen))
    want = {(f"key{k:05d}", s) for k in range(KEYS) for s in range(PER_KEY)}
    lost = want - set(seen)
    assert not lost and not dup and len(seen) == total, (
        f"{len(lost)} records lost (e.g. {sorted(lost)[:5]}), {dup} duplicated, {len(seen)} read of {total}")
    per_key = defaultdict(list)
    for k, s in seen:
        per_key[k].append(s)
    disorder = {k: v for k, v in per_key.items() if v != sorted(v)}
    assert not disorder, (f"{len(disorder)} keys out of order, e.g. "
                          f"{dict(list(disorder.items())[:5])}")
    assert r.summary["nodes"]["sources.trips"]["records_out"] == total


@pytest.mark.parametrize("mode", ["polling", "efo"])
def test_split_and_merge_while_producing(kinesis, sluice, tmp_path, mode):
    stream = kinesis.create(4)
    touched = {}

    def split_then_merge(c, shards):
        assert len(shards) == 4, shards
        first = shards[0]
        lo, hi = int(first["HashKeyRange"]["StartingHashKey"]), int(first["HashKeyRange"]["EndingHashKey"])
        c.split_shard(StreamName=stream, ShardToSplit=first["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
        kinesis.wait_active(stream)
        time.sleep(1.5)
        a, b = adjacent_pair(shards, exclude={first["ShardId"]})
        c.merge_shards(StreamName=stream, ShardToMerge=a, AdjacentShardToMerge=b)
        kinesis.wait_active(stream)
        touched.update(first=first["ShardId"], a=a, b=b)

    total = produce_while(kinesis, tmp_path, stream, split_then_merge)
    all_shards = kinesis.shards(stream)
    assert len(all_shards) == 4 + 2 + 1, f"expected 7 shards after a split and a merge: {all_shards}"
    parents = {s.get("ParentShardId") for s in all_shards} | {s.get("AdjacentParentShardId") for s in all_shards}
    assert set(touched.values()) <= parents
    consume_and_check(kinesis, sluice, tmp_path, stream, total, mode)


def test_update_shard_count_while_producing(kinesis, sluice, tmp_path):
    """UpdateShardCount (what on-demand streams and autoscalers do): 2 → 4,
    then 4 → 3, while producing; the service picks the splits and merges."""
    stream = kinesis.create(2)

    def scale(c, shards):
        assert len(shards) == 2, shards
        for target in (4, 3):
            c.update_shard_count(StreamName=stream, TargetShardCount=target, ScalingType="UNIFORM_SCALING")
            kinesis.wait_active(stream)
            assert len(kinesis.open_shards(stream)) == target
            time.sleep(1.5)

    # Two scalings take longer than a split and a merge: a slower rate (~12 s)
    # keeps produce running through both.
    total = produce_while(kinesis, tmp_path, stream, scale, rate=250)
    closed = [s for s in kinesis.shards(stream) if s not in kinesis.open_shards(stream)]
    assert len(closed) >= 3, f"expected the scaling to close shards: {kinesis.shards(stream)}"
    consume_and_check(kinesis, sluice, tmp_path, stream, total)
