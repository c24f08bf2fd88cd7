"""An aggregate stage on a 4-shard stream where one shard stops receiving
records: once that shard has been idle for `idle_timeout`, the other shards'
windows fire while the pipeline keeps running (without idleness the silent
shard would hold the watermark at its last record forever). The shard's
records from before it went silent are counted in their windows.

Records are put with boto3 (ExplicitHashKey) rather than `sluice produce`:
the test needs to address shards, keeping one silent and feeding the others."""

from __future__ import annotations

import json
import signal

from sluice_e2e import wait_for
from kinesis_support import AWS_ENV, ShardWriter, window_count_pipeline


def counts(out) -> list[dict]:
    p = out / "counts.ndjson"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_an_idle_shard_stops_holding_back_the_other_shards_windows(sluice, kinesis, tmp_path):
    name = kinesis.create(4)
    writer = ShardWriter(kinesis, name)
    put, sent = writer.put, writer.sent

    # Every shard has records in [0, 1500); then shard 3 goes silent.
    for s in range(4):
        put(s, list(range(s, 1500, 50)))
    out = tmp_path / "out"
    out.mkdir()
    p = window_count_pipeline(tmp_path / "p.toml", name="window-idle", stream=name, endpoint=kinesis.endpoint, out=out,
                              interval="300ms", window_extra='idle_timeout = "2s"')
    run = sluice.spawn(p, env=AWS_ENV)
    try:
        # The other shards keep receiving, in lockstep, half a window at a time.
        t, fired = 1500, False
        while not fired and t < 60_000 and run.proc.poll() is None:
            for s in range(3):
                put(s, list(range(t + s, t + 500, 25)))
            t += 500
            fired = wait_for(lambda: any(r["windowStartMs"] >= 3000 for r in counts(out)), timeout=0.3)
        assert fired, f"no window past the silent shard's last record fired (put up to t={t})\n" + \
            run.result().describe()
    finally:
        run.signal(signal.SIGTERM)
        final = run.wait(timeout=120)
    assert final.returncode == 0, final.describe()
    got = {(r["windowStartMs"], r["key"]): r["count"] for r in counts(out)}
    # Windows that fired hold everything that was put for them, the silent
    # shard's records included; a shutdown fires nothing more.
    assert got[(1000, json.dumps("s3"))] == sent[(1000, json.dumps("s3"))]
    for w, k in got:
        assert got[(w, k)] == sent[(w, k)], f"window {w} key {k}: {got[(w, k)]} != {sent[(w, k)]}"
    assert {w for w, _ in got} >= {0, 1000, 2000, 3000}, sorted(got)
    ids = [r["id"] for r in counts(out)]
    assert len(ids) == len(set(ids))
