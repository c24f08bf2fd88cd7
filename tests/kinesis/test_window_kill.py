"""kill -9 at random moments while an aggregate stage on a 3-shard stream has
windows open, restart until the run completes: the outputs equal those of an
uninterrupted run over the same stream (same ids, same counts), nothing is
emitted twice, and both equal what was put. The file-source counterpart is
tests/integration/test_windows.py.

Each shard's event times increase, so with per-shard watermarks no record is
ever late whatever the interleaving of shards after a restart: any record in
the DLQ, any count that differs, is a fault of the restart."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

from sluice_e2e import kill_after_checkpoints, read_dlq
from kinesis_support import AWS_ENV, ShardWriter, window_count_pipeline

SHARDS = 3
PER_SHARD = 1500  # event times 0 .. 15 s, 10 ms apart (putting into kinesis-local costs ~2 ms a record)
KILLS = 4
SEED = int(os.environ.get("SLUICE_TEST_KILL_SEED", "11"))


def counts(out) -> list[dict]:
    p = out / "counts.ndjson"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def by_id(rows: list[dict]) -> dict[str, tuple]:
    return {r["id"]: (r["windowStartMs"], r["key"], r["count"]) for r in rows}


def test_kill9_with_windows_open_on_kinesis_then_resume_equals_an_uninterrupted_run(sluice, kinesis, tmp_path):
    name = kinesis.create(SHARDS)
    writer = ShardWriter(kinesis, name)
    for s in range(SHARDS):
        writer.put(s, [i * 10 + s for i in range(PER_SHARD)])

    def run_dir(label: str):
        out = tmp_path / label
        out.mkdir()
        p = window_count_pipeline(tmp_path / f"{label}.toml", name=f"window-kill-{label}", stream=name,
                                  endpoint=kinesis.endpoint, out=out, interval="100ms",
                                  source_extra='stop_when_idle = "2s"\npoll_limit = 100')
        return out, p

    clean, p = run_dir("clean")
    res = sluice.run(p, env=AWS_ENV)
    assert res.returncode == 0, res.describe()
    reference = counts(clean)
    assert {(r["windowStartMs"], r["key"]): r["count"] for r in reference} == dict(writer.sent)

    rng = random.Random(SEED)
    out, p = run_dir("killed")
    final, kills, moments = kill_after_checkpoints(sluice, p, env=AWS_ENV, checkpoint=out / "checkpoint" / "checkpoint.json",
                                                   kills=KILLS, rng=rng, max_delay=0.3)
    ctx = f"(SLUICE_TEST_KILL_SEED={SEED}; kills: {moments})"
    assert final is not None and kills >= 2, f"only {kills} kills landed {ctx}"
    got = counts(out)
    doubled = [i for i, c in Counter(r["id"] for r in got).items() if c > 1]
    assert not doubled, f"ids emitted twice after kill -9: {doubled[:5]} {ctx}"
    assert by_id(got) == by_id(reference), f"outputs differ from the uninterrupted run {ctx}"
    dead = Counter(e["code"] for e in read_dlq(out / "dlq.ndjson"))
    assert dead == Counter(), f"dead letters after kills: {dict(dead)} {ctx}"
