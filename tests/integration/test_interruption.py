"""Interrupted runs lose nothing and duplicate nothing.

SIGTERM: the run drains, writes a final checkpoint and exits 0; re-running the
same command continues where it stopped. kill -9 at random moments (a small
checkpoint interval so many checkpoints happen in between): after each kill
the committed Parquet output holds no duplicate; resumed until done, every id
is exactly once in Parquet + DLQ and no staged `.inprogress` file is left."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from sluice_e2e import (TAXI_LOCAL, assert_exactly_once, assert_no_duplicates, inprogress_files, ledger,
                     parquet_files, parquet_ids, read_dlq, sample, wait_for)

# Big enough that one run takes a few seconds on 2 cores.
ROWS = int(os.environ.get("SLUICE_TEST_INTERRUPT_ROWS", "3000000"))
KILLS = int(os.environ.get("SLUICE_TEST_KILLS", "6"))
SEED = int(os.environ.get("SLUICE_TEST_KILL_SEED", str(int(time.time()))))


@pytest.fixture(scope="module")
def dataset(datasets):
    return datasets(ROWS, seed=21, bad=0.02)


def env_for(ds, out):
    return {"SLUICE_INPUT": ds.path, "SLUICE_OUT": out, "SLUICE_CHECKPOINT_INTERVAL": "200ms"}


def records_read(summary: dict) -> int:
    src = summary["nodes"]["sources.trips"]
    return src["records_out"] + src["rejected"]


def assert_committed_output_is_clean(ds, out, when: str):
    """What is visible at any moment is a duplicate-free subset of the good rows."""
    ids = parquet_ids(out / "trips")
    assert_no_duplicates(f"the committed Parquet output {when}", ids)
    extra = set(ids) - ds.good_ids
    assert not extra, f"{when}: Parquet holds ids that are not good rows: {sample(extra)}"


def test_sigterm_drains_and_resume_completes(sluice, dataset, out_dir):
    env = env_for(dataset, out_dir)
    run = sluice.spawn(TAXI_LOCAL, env=env)
    # Files roll by size and age, not at checkpoints: wait for a checkpoint.
    started = wait_for(lambda: checkpoint_state(out_dir) or run.proc.poll() is not None, timeout=120)
    assert started and run.proc.poll() is None, (
        f"the run ended before any checkpoint was written; input too small?\n{run.result().describe()}")
    run.signal(signal.SIGTERM)
    first = run.wait(timeout=120)
    assert first.returncode == 0, f"SIGTERM must drain and exit 0\n{first.describe()}"
    assert first.summary is not None, "no summary after SIGTERM\n" + first.describe()
    n1 = records_read(first.summary)
    assert 0 < n1 < dataset.rows, f"SIGTERM run read {n1} of {dataset.rows}: not interrupted mid-way"
    assert_committed_output_is_clean(dataset, out_dir, "after SIGTERM")
    assert not inprogress_files(out_dir), f"a drained run left staged files: {inprogress_files(out_dir)}"
    led = ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson")
    assert len(led.pq_ids) + len(led.dlq_ids) == n1, (
        f"after the drain, Parquet ({len(led.pq_ids)}) + DLQ ({len(led.dlq_ids)}) should hold every record "
        f"read ({n1})")

    second = sluice.run(TAXI_LOCAL, env=env)
    n2 = records_read(second.summary)
    assert n1 + n2 == dataset.rows, f"first run read {n1}, resumed run {n2}: {n1 + n2} != {dataset.rows}"
    assert_exactly_once(dataset, ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson"))
    assert not inprogress_files(out_dir)


def checkpoint_state(out) -> tuple:
    """Changes whenever a checkpoint is written (names, sizes, mtimes)."""
    d = out / "checkpoint"
    if not d.exists():
        return ()
    files = [p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
    # Empty files (a lock) appear at start-up, before any checkpoint.
    return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in files if (st := p.stat()).st_size > 0))


def test_kill9_at_random_moments_then_resume(sluice, dataset, out_dir):
    """Kills land at random moments after a checkpoint was written in that run
    (mid-batch, mid-prepare, mid-commit, whatever is going on), and every third
    one early, during start-up and recovery."""
    rng = random.Random(SEED)
    env = env_for(dataset, out_dir)
    kills, late_kills, moments = 0, 0, []
    final = None
    for attempt in range(KILLS + 10):
        run = sluice.spawn(TAXI_LOCAL, env=env)
        if kills < KILLS:
            early = attempt % 3 == 1
            if early:
                delay = rng.uniform(0.02, 0.3)
                time.sleep(delay)
                moment = f"{delay:.2f}s after start"
            else:
                before = checkpoint_state(out_dir)
                t0 = time.monotonic()
                wait_for(lambda: checkpoint_state(out_dir) != before or run.proc.poll() is not None,
                         timeout=180, interval=0.02)
                # Short: a whole run takes ~3.5 s here and each kill should leave input for the next.
                delay = rng.uniform(0.0, 0.35)
                time.sleep(delay)
                moment = f"{delay:.2f}s after a checkpoint ({time.monotonic() - t0:.1f}s after start)"
            if run.kill9():
                kills += 1
                late_kills += not early
                moments.append(moment)
                assert_committed_output_is_clean(dataset, out_dir, f"after kill #{kills}, {moment}")
                continue
        final = run.wait(timeout=600)
        assert final.returncode == 0, final.describe()
        break
    ctx = f"(SLUICE_TEST_KILL_SEED={SEED}; kills: {moments})"
    assert final is not None, f"the run never finished {ctx}"
    assert late_kills >= min(KILLS, 3), f"only {late_kills} kills after a checkpoint; input too small? {ctx}"
    assert final.summary.get("resumed_from", 1) > 0, f"the last run did not resume from a checkpoint {ctx}"
    led = ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson")
    try:
        assert_exactly_once(dataset, led)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{ctx}") from None
    left = inprogress_files(out_dir)
    assert not left, f"staged files left after the final run: {sample(map(str, left))} {ctx}"
    # Nothing left to read: one more run adds nothing.
    again = sluice.run(TAXI_LOCAL, env=env)
    assert records_read(again.summary) == 0, again.summary
    assert len(read_dlq(out_dir / "dlq.ndjson")) == len(led.dlq)
