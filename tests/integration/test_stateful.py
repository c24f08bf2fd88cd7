"""A stateful stage (plugins/dedupe: the first record of each key passes,
the set of seen keys is host-owned state) under failure and restart:

- a record that makes the plugin trap *after* it wrote the batch's keys is
  quarantined alone, and every other new key still comes out exactly once
  (a failed call's state writes never reach the retry, the bisection or the
  checkpoint);
- state survives a restart, and the plugin's `init` sees it (it refuses a
  changed key field over existing state);
- state survives kill -9 at random moments: no key passes twice or never."""

from __future__ import annotations

import json
import random
import time

from sluice_e2e import TEST_PIPELINES, read_dlq, wait_for

PIPELINE = TEST_PIPELINES / "dedupe.toml"
STAGE = "stages.dedupe"


def write_events(path, events, mode="w"):
    with open(path, mode) as f:
        for e in events:
            f.write(json.dumps(e) + "\n")


def unique_ids(out):
    p = out / "unique.ndjson"
    return [json.loads(line)["id"] for line in p.read_text().splitlines()] if p.exists() else []


def test_a_trap_after_state_writes_quarantines_only_the_poison(sluice, tmp_path, out_dir):
    rng = random.Random(7)
    keys = [f"k{i:04d}" for i in range(600)]
    events = [{"id": rng.choice(keys), "n": n} for n in range(1000)]
    poison_at = 437
    events[poison_at] = {"id": "poison-key", "n": poison_at, "note": "POISON"}
    inp = tmp_path / "events.ndjson"
    write_events(inp, events)

    r = sluice.run(PIPELINE, env={"SLUICE_INPUT": inp, "SLUICE_OUT": out_dir, "SLUICE_DEDUPE_TRAP": "POISON"})

    first = []
    for e in events:
        if e["id"] != "poison-key" and e["id"] not in first:
            first.append(e["id"])
    got = unique_ids(out_dir)
    assert len(got) == len(set(got)), f"a key came out twice: {len(got) - len(set(got))} duplicates"
    assert set(got) == set(first), (f"missing: {sorted(set(first) - set(got))[:10]}, "
                                    f"unexpected: {sorted(set(got) - set(first))[:10]}")
    dlq = [e for e in read_dlq(out_dir / "dlq.ndjson") if e["stage"] == STAGE]
    assert [(e["code"], e["record"]) for e in dlq] == [("plugin_trap", events[poison_at])], dlq
    assert r.summary["nodes"][STAGE]["failed_batches"] == 1, r.summary["nodes"][STAGE]


def test_state_survives_a_restart_and_init_sees_it(sluice, tmp_path, out_dir):
    inp = tmp_path / "events.ndjson"
    write_events(inp, [{"id": "a", "other": 1}, {"id": "b", "other": 1}, {"id": "a", "other": 2}])
    env = {"SLUICE_INPUT": inp, "SLUICE_OUT": out_dir}
    sluice.run(PIPELINE, env=env)
    assert unique_ids(out_dir) == ["a", "b"]

    # New lines in the same file: the restart resumes after the old ones, and
    # keys seen before the restart are still seen.
    write_events(inp, [{"id": "b", "other": 3}, {"id": "c", "other": 3}], mode="a")
    r = sluice.run(PIPELINE, env=env)
    assert unique_ids(out_dir) == ["a", "b", "c"], r.describe()

    # `init` runs against the restored state: keying the same state on another
    # field is refused before any record is read.
    write_events(inp, [{"id": "d", "other": 4}], mode="a")
    r = sluice.run(PIPELINE, env={**env, "SLUICE_DEDUPE_KEY": "other"}, check=False)
    assert r.returncode == 1, r.describe()
    assert 'holds keys of field "id" but key is now "other"' in r.stderr, r.describe()
    assert unique_ids(out_dir) == ["a", "b", "c"]


def test_state_survives_kill9_at_random_moments(sluice, tmp_path, out_dir):
    """Keys seen before a kill -9 are still seen after it: were the state
    lost (or ahead of the positions), a key would pass twice (or never)."""
    rng = random.Random(11)
    keys = [f"k{i:05d}" for i in range(20_000)]
    events = [{"id": rng.choice(keys), "n": n} for n in range(150_000)]
    inp = tmp_path / "events.ndjson"
    write_events(inp, events)
    env = {"SLUICE_INPUT": inp, "SLUICE_OUT": out_dir, "SLUICE_CHECKPOINT_INTERVAL": "50ms"}
    cp = out_dir / "checkpoint" / "checkpoint.json"
    kills = 0
    for _ in range(12):
        run = sluice.spawn(PIPELINE, env=env)
        if kills < 4:
            before = cp.stat().st_mtime_ns if cp.exists() else 0
            wait_for(lambda: (cp.exists() and cp.stat().st_mtime_ns != before) or run.proc.poll() is not None,
                     timeout=60, interval=0.005)
            time.sleep(rng.uniform(0.0, 0.1))
            if run.kill9():
                kills += 1
                continue
        final = run.wait(timeout=300)
        assert final.returncode == 0, final.describe()
        break
    assert kills >= 2, f"only {kills} kills landed before the run finished; input too small?"
    got = unique_ids(out_dir)
    first = list(dict.fromkeys(e["id"] for e in events))
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} keys passed twice after kill -9"
    assert got == first, f"missing: {sorted(set(first) - set(got))[:10]}"
