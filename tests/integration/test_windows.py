"""Windowed aggregation (an aggregate stage over count-aggregate.wasm) under
kill -9, plugin upgrades, and bad timing:

- kill -9 at random moments with windows open, resumed until done: the
  output equals an uninterrupted run's (same ids, same counts, nothing
  doubled) and an independent count in Python, and records behind the
  lateness bound are in the DLQ (code `late`) and nowhere else;
- a plugin with a higher state-version migrates a checkpoint written by
  the older one; a failing migration exits non-zero, says why, and leaves
  the checkpoint byte for byte as it was; the new version's keyed state
  (written in `finish`) is checkpointed with the windows;
- a window table on a transform, or an aggregate without one, is a config
  error with file, line and key."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

from sluice_e2e import TEST_PIPELINES, kill_after_checkpoints, read_dlq, wait_for

PIPELINE = TEST_PIPELINES / "window-count.toml"
STAGE = "stages.count"
EVENTS = int(os.environ.get("SLUICE_TEST_WINDOW_EVENTS", "400000"))
KILLS = int(os.environ.get("SLUICE_TEST_KILLS", "5"))
SEED = int(os.environ.get("SLUICE_TEST_KILL_SEED", str(int(time.time()))))
WINDOW_MS, LATENESS_MS = 1000, 200


def make_events(n: int, seed: int) -> tuple[list[str], Counter, list[int]]:
    """Event times 3 ms apart with up to 150 ms of disorder (within the
    lateness bound), 40 keys, and every 5000th record 2 s behind (late).
    Returns the lines, the expected count per (window start, key), and the
    line numbers of the late records."""
    rng = random.Random(seed)
    lines, want, late = [], Counter(), []
    wm = -(1 << 62)
    for i in range(n):
        t = 1_451_606_400_000 + i * 3 + rng.randint(0, 150)
        if i % 5000 == 4999:
            t -= 2000
        k = f"v{rng.randint(0, 39)}"
        # The host's rule: late when the record's window ends at or before
        # the watermark (largest event time so far, this record included) minus the lateness.
        wm = max(wm, t)
        start = t - t % WINDOW_MS
        if start + WINDOW_MS <= wm - LATENESS_MS:
            late.append(i)
        else:
            want[(start, json.dumps(k))] += 1
        lines.append(json.dumps({"k": k, "t": t}))
    return lines, want, late


def counts(out) -> list[dict]:
    p = out / "counts.ndjson"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def as_map(rows: list[dict]) -> dict[str, tuple]:
    return {r["id"]: (r["windowStartMs"], r["key"], r["count"], r["window_start"], r["window_end"]) for r in rows}


def test_kill9_with_windows_open_then_resume_equals_an_uninterrupted_run(sluice, tmp_path):
    lines, want, late = make_events(EVENTS, seed=5)
    inp = tmp_path / "events.ndjson"
    inp.write_text("\n".join(lines) + "\n")

    clean = tmp_path / "clean"
    clean.mkdir()
    sluice.run(PIPELINE, env={"SLUICE_INPUT": inp, "SLUICE_OUT": clean})
    reference = counts(clean)
    ids = [r["id"] for r in reference]
    assert len(ids) == len(set(ids)), "an uninterrupted run emitted an id twice"
    assert {(r["windowStartMs"], r["key"]): r["count"] for r in reference} == dict(want), "counts differ from Python's"
    # DLQ `seq` is the 1-based line number.
    late = [i + 1 for i in late]
    ref_late = sorted(int(e["seq"]) for e in read_dlq(clean / "dlq.ndjson") if e["code"] == "late")
    assert ref_late == late, f"late records: {ref_late[:5]} vs {late[:5]}"

    rng = random.Random(SEED)
    out = tmp_path / "killed"
    out.mkdir()
    env = {"SLUICE_INPUT": inp, "SLUICE_OUT": out, "SLUICE_CHECKPOINT_INTERVAL": "100ms", "SLUICE_BATCH": "200"}
    # Paced to ~5 s of reading however fast the machine, so every kill lands
    # before the run could finish (unpaced, an idle machine finished the
    # input between two kills).
    paced = tmp_path / "window-count-paced.toml"
    text = PIPELINE.read_text()
    assert 'type = "file"\n' in text
    paced.write_text(text.replace('type = "file"\n', f'type = "file"\nmax_records_per_second = {max(EVENTS // 5, 1)}\n', 1))
    final, kills, moments = kill_after_checkpoints(sluice, paced, env=env, checkpoint=out / "checkpoint" / "checkpoint.json",
                                                   kills=KILLS, rng=rng, max_delay=0.3)
    ctx = f"(SLUICE_TEST_KILL_SEED={SEED}; kills: {moments})"
    assert final is not None and kills >= min(KILLS, 3), f"only {kills} kills landed; input too small? {ctx}"
    got = counts(out)
    got_ids = [r["id"] for r in got]
    doubled = [i for i, c in Counter(got_ids).items() if c > 1]
    assert not doubled, f"ids emitted twice after kill -9: {doubled[:5]} {ctx}"
    assert as_map(got) == as_map(reference), f"outputs differ from the uninterrupted run {ctx}"
    got_late = sorted(int(e["seq"]) for e in read_dlq(out / "dlq.ndjson") if e["code"] == "late")
    assert got_late == late, f"late records differ after kills {ctx}"
    for e in read_dlq(out / "dlq.ndjson"):
        assert (e["stage"], e["code"]) == (STAGE, "late") and "window [" in e["message"], e


def test_a_higher_state_version_migrates_the_checkpointed_windows(sluice, tmp_path):
    lines, want, _ = make_events(200_000, seed=9)
    inp = tmp_path / "events.ndjson"
    out = tmp_path / "out"
    out.mkdir()
    env = {"SLUICE_INPUT": inp, "SLUICE_OUT": out, "SLUICE_CHECKPOINT_INTERVAL": "50ms", "SLUICE_BATCH": "100"}
    # Run the state-version-0 plugin; kill -9 once a checkpoint holds open windows.
    inp.write_text("\n".join(lines) + "\n")
    cp = out / "checkpoint" / "checkpoint.json"
    run = sluice.spawn(PIPELINE, env=env)
    assert wait_for(lambda: open_windows(cp) > 0 or run.proc.poll() is not None, timeout=60, interval=0.005)
    assert run.kill9(), "the run ended before a checkpoint with open windows"
    v0 = json.loads(cp.read_text())["nodes"][STAGE]
    assert v0["state_version"] == 0 and v0["open_windows"] > 0

    # The checkpoint was written through contract 0.1.0 (count_aggregate is
    # built with export_aggregate_0_1!) and is migrated through 0.2.0.
    for plugin, contract in (("count_aggregate", "0.1.0"), ("count_aggregate_v2", "0.2.0")):
        r = sluice.validate(PIPELINE, env={**env, "SLUICE_COUNT_PLUGIN": plugin})
        assert r.returncode == 0 and f"contract {contract}" in r.stdout, r.describe()

    # A failing migration: non-zero exit, the reason, the checkpoint untouched.
    before = cp.read_bytes()
    r = sluice.run(PIPELINE, env={**env, "SLUICE_COUNT_PLUGIN": "count_aggregate_v2", "SLUICE_FAIL_MIGRATE": "true"},
                   check=False)
    assert r.returncode != 0, r.describe()
    assert "could not migrate" in r.stderr and "stage stages.count" in r.stderr and "fail_migrate" in r.stderr, r.describe()
    assert cp.read_bytes() == before, "a failed migration changed the checkpoint"

    # The working v2 migrates once and finishes with the right counts.
    r = sluice.run(PIPELINE, env={**env, "SLUICE_COUNT_PLUGIN": "count_aggregate_v2"})
    assert json.loads(cp.read_text())["nodes"][STAGE]["state_version"] == 1
    got = {(x["windowStartMs"], x["key"]): x["count"] for x in counts(out)}
    assert got == dict(want), "counts after the migration differ from Python's"
    assert len(counts(out)) == len(got), "an id came out twice"
    # v2 numbers the windows it finishes in the stage's keyed state (the
    # aggregator world's `state` import): 1, 2, ... in firing order, and the
    # checkpoint holds the last number.
    numbers = [x["finished"] for x in counts(out) if "finished" in x]
    assert numbers == list(range(1, len(numbers) + 1)) and numbers, numbers[:10]
    keyed = dict(json.loads(cp.read_text())["nodes"][STAGE]["keyed"])
    assert int.from_bytes(bytes.fromhex(keyed[b"finished".hex()]), "little") == numbers[-1]


def open_windows(cp) -> int:
    try:
        return json.loads(cp.read_text())["nodes"][STAGE]["open_windows"]
    except (OSError, ValueError, KeyError):
        return 0


def test_window_config_errors_name_file_line_and_key(sluice, tmp_path):
    base = PIPELINE.read_text()
    bad_agg = tmp_path / "no-window.toml"
    bad_agg.write_text(base.replace('[stages.count.window]\ntumbling = "1s"\nallowed_lateness = "200ms"\n', ""))
    r = sluice.validate(bad_agg)
    assert r.returncode == 2 and "stages.count.plugin: count_aggregate is an aggregate plugin" in r.output, r.describe()
    two = tmp_path / "two-kinds.toml"
    two.write_text(base.replace('tumbling = "1s"', 'tumbling = "1s"\nsession = { gap = "5s" }'))
    r = sluice.validate(two)
    assert r.returncode == 2 and "stages.count.window.tumbling: a window needs exactly one of" in r.output, r.describe()
    assert f"{two}:" in r.output, r.describe()
    on_transform = TEST_PIPELINES / "dedupe.toml"
    t = tmp_path / "transform-window.toml"
    t.write_text(on_transform.read_text().replace("[sinks.unique]", '[stages.dedupe.window]\ntumbling = "1m"\n\n[sinks.unique]'))
    r = sluice.validate(t)
    assert r.returncode == 2 and "stages.dedupe.window: dedupe is a transform plugin" in r.output, r.describe()
