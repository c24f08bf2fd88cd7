"""A plugin that traps, loops forever, allocates without bound or returns an
error is contained: the run finishes (exit 0), bisection sends exactly the
records that make it fail to the DLQ with a plugin_* code and a message
naming the plugin and the stage, and every other record still reaches the
Parquet output."""

from __future__ import annotations

import pytest

from sluice_e2e import TEST_PIPELINES, assert_exactly_once, inprogress_files, ledger, sample

PIPELINE = TEST_PIPELINES / "faulty.toml"
STAGE = "stages.chaos"
MAX_BATCH = 500  # [batch] max_records in faulty.toml

CASES = {
    # mode: (DLQ code, extra environment)
    "trap": ("plugin_trap", {}),
    "error": ("plugin_error", {}),
    "loop": ("plugin_timeout", {"SLUICE_FAULTY_TIMEOUT": "200ms"}),
    "oom": ("plugin_memory", {"SLUICE_FAULTY_MEMORY": "32MiB"}),
}


@pytest.fixture(scope="module")
def dataset(datasets):
    return datasets(20000, seed=3, bad=0.05)


def unique_good_id(dataset, start: float) -> str:
    """A good record from `start` (a fraction of the input) on whose id occurs in no other line."""
    good = [lab for lab in dataset.labels if lab["code"] is None]
    text = dataset.path.read_text()
    for lab in good[int(len(good) * start):]:
        if text.count(lab["id"]) == 1:
            return lab["id"]
    pytest.fail("no good id that is unique as a substring of the input")


@pytest.fixture(scope="module")
def trigger(dataset):
    """A good record in the middle of the input whose id occurs in no other line."""
    return unique_good_id(dataset, 0.5)


@pytest.fixture(scope="module")
def triggers(dataset):
    """Two such records thousands of lines apart (so in different batches)."""
    return [unique_good_id(dataset, 0.2), unique_good_id(dataset, 0.7)]


def run_faulty(sluice, dataset, out_dir, mode, when, extra=None):
    env = {"SLUICE_INPUT": dataset.path, "SLUICE_OUT": out_dir, "SLUICE_FAULTY_MODE": mode,
           "SLUICE_FAULTY_WHEN": when, **(extra or {})}
    return sluice.run(PIPELINE, env=env, timeout=240)


def test_ok_mode_passes_everything(sluice, dataset, out_dir):
    run_faulty(sluice, dataset, out_dir, "ok", "always")
    led = ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson")
    assert_exactly_once(dataset, led)


@pytest.mark.parametrize("mode", list(CASES))
def test_one_bad_batch_is_quarantined(mode, sluice, dataset, trigger, out_dir):
    code, extra = CASES[mode]
    r = run_faulty(sluice, dataset, out_dir, mode, trigger, extra)
    led = ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson")
    chaos = [(e, i) for e, i in zip(led.dlq, led.dlq_ids) if e["stage"] == STAGE]
    quarantined = {i for _, i in chaos}
    # Bisection isolates the one record that makes the plugin fail: the rest
    # of its batch (up to MAX_BATCH records) goes on.
    assert [i for _, i in chaos] == [trigger], \
        f"want exactly the triggering record {trigger} quarantined, got {sample(quarantined)}\n{r.describe()}"
    wrong_code = [(i, e["code"]) for e, i in chaos if e["code"] != code]
    assert not wrong_code, f"want code {code}: {sample(wrong_code)}"
    vague = [e["message"] for e, _ in chaos if "chaos" not in e["message"] or "faulty" not in e["message"]]
    assert not vague, f"messages must name the stage (chaos) and the plugin (faulty): {vague[:3]}"
    not_good = quarantined - dataset.good_ids
    assert not not_good, f"records validate rejected reached the chaos stage: {sample(not_good)}"
    for e, i in chaos:
        rec = e["record"]
        assert isinstance(rec, dict) and rec.get("id") == i, f"DLQ record is not the original record: {e}"
    assert_exactly_once(dataset, led, quarantined={i: STAGE for i in quarantined})
    assert r.summary["nodes"][STAGE]["failed_batches"] >= 1, r.summary["nodes"][STAGE]
    assert not inprogress_files(out_dir)


def test_poison_records_in_several_batches_are_quarantined_exactly(sluice, dataset, triggers, out_dir):
    r = run_faulty(sluice, dataset, out_dir, "trap", "|".join(triggers))
    led = ledger(dataset, out_dir / "trips", out_dir / "dlq.ndjson")
    chaos = sorted(i for e, i in zip(led.dlq, led.dlq_ids) if e["stage"] == STAGE)
    assert chaos == sorted(triggers), f"want exactly {sorted(triggers)} quarantined, got {sample(chaos)}\n{r.describe()}"
    assert_exactly_once(dataset, led, quarantined={i: STAGE for i in triggers})
    assert r.summary["nodes"][STAGE]["failed_batches"] == 2, r.summary["nodes"][STAGE]


def test_a_plugin_failing_on_every_batch_does_not_stop_the_run(sluice, datasets, out_dir):
    ds = datasets(3000, seed=4, bad=0.05)
    r = run_faulty(sluice, ds, out_dir, "trap", "always")
    led = ledger(ds, out_dir / "trips", out_dir / "dlq.ndjson")
    assert led.pq_ids == [], f"{len(led.pq_ids)} records got past a stage that always traps"
    assert_exactly_once(ds, led, quarantined={i: STAGE for i in ds.good_ids})
    codes = {e["code"] for e in led.dlq if e["stage"] == STAGE}
    assert codes == {"plugin_trap"}, codes
    assert r.summary["nodes"][STAGE]["failed_batches"] >= 1
