"""kill -9 at a random moment of `sluice run` on a Kinesis source (checkpoint
every 200 ms), restart until a run finishes: every record exactly once in
Parquet or the DLQ."""

from __future__ import annotations

import os
import random
import time

from kinesis_support import AWS_ENV, assert_exactly_once_kinesis, pipeline, produced_stream

ROWS = 4000


def test_kill9_and_restart_until_done(kinesis, sluice, datasets, tmp_path):
    seed = int(os.environ.get("SLUICE_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    ds = datasets(ROWS, seed=21, bad=0.05)
    stream = produced_stream(sluice, kinesis, ds, 4)

    out = tmp_path / "out"
    out.mkdir()
    # poll_limit keeps each GetRecords small, so a run spans several checkpoints.
    p = pipeline(tmp_path / "p.toml", stream=stream, endpoint=kinesis.endpoint, out=out,
                 checkpoint_interval="200ms", stop_when_idle="2s", extra_source="poll_limit = 200")
    kills, history = 0, []
    for attempt in range(12):
        run = sluice.spawn(p, env=AWS_ENV)
        delay = rng.uniform(0.3, 3.0) if attempt < 8 else None
        if delay is not None:
            time.sleep(delay)
            if run.kill9():
                kills += 1
                history.append(f"killed after {delay:.2f}s")
                continue
        res = run.wait()
        assert res.returncode == 0, f"seed {seed}, {history}\n" + res.describe()
        history.append(f"finished (resumed from epoch {res.summary['resumed_from']})")
        break
    else:
        raise AssertionError(f"no run finished (seed {seed}): {history}")
    assert kills >= 1, f"seed {seed}: every run finished before its kill: {history}"
    got = assert_exactly_once_kinesis(ds, out)
    print(f"seed {seed}: {history}; {got}")
