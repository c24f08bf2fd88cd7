"""Fan-in (two sources into one stage) and fan-out (one stage into two
sinks), and `sluice bench` as a smoke test."""

from __future__ import annotations

import json
import re
from collections import Counter

from sluice_e2e import TEST_PIPELINES, parquet_ids, read_dlq, sample

PIPELINE = TEST_PIPELINES / "fan-in-out.toml"


def test_fan_in_and_fan_out(sluice, datasets, out_dir):
    ds = datasets(20000, seed=9, bad=0.05)
    r = sluice.run(PIPELINE, env={"SLUICE_INPUT": ds.path, "SLUICE_OUT": out_dir})
    good = ds.good_ids
    # Both sources read the same file: every good id twice in each sink.
    for name, ids in (("Parquet", parquet_ids(out_dir / "trips")),
                      ("NDJSON", [json.loads(l)["id"] for l in (out_dir / "trips.ndjson").read_text().splitlines()])):
        counts = Counter(ids)
        wrong = {i: c for i, c in counts.items() if c != 2}
        assert not wrong, f"{name}: ids not exactly twice: {sample(wrong.items())}"
        assert set(counts) == good, f"{name}: missing {sample(good - set(counts))}, extra {sample(set(counts) - good)}"
    # The DLQ keeps which source a rejected record came from.
    by_line = ds.by_line
    seen = Counter((e["source"], by_line[int(e["seq"])]["id"]) for e in read_dlq(out_dir / "dlq.ndjson"))
    want = {(s, i) for s in ("left", "right") for i in ds.bad}
    assert set(seen) == want, f"DLQ (source, id): missing {sample(want - set(seen))}, extra {sample(set(seen) - want)}"
    assert max(seen.values()) == 1, f"DLQ duplicates: {sample(k for k, c in seen.items() if c > 1)}"
    nodes = r.summary["nodes"]
    assert nodes["sinks.lake"]["records_in"] == nodes["sinks.copy"]["records_in"] == 2 * len(good), nodes


def test_bench_smoke(sluice):
    r = sluice.cmd("bench", "--rows", "10000", timeout=300)
    assert r.returncode == 0, r.describe()
    out = r.output
    assert re.search(r"wasm/native\s+\d+\.\d+", out), r.describe()
    assert re.search(r"end to end arrow.*rec/s", out) and re.search(r"end to end json.*rec/s", out), r.describe()
    assert "peak RSS" in out, r.describe()
    # The aggregate stage alone and its state, with every window result out of trip-stats.
    assert re.search(r"trip-stats \(Arrow, 1m tumbling\):\s+\d+ rec/s per core.* [1-9]\d* window results, 0 dead letters", out), r.describe()
    assert re.search(r"10000 keys open:\s+\d+ rec/s per core; state \d+ MB per 1M keys", out), r.describe()
