"""Windowed aggregation end to end, checked against an independent computation.

- The generic `aggregate` plugin on sensor readings (not taxi data) whose
  arrival order is out of event-time order within the allowed lateness:
  tumbling, sliding and session windows give exactly the groups, windows and
  values DuckDB computes with the same window arithmetic (half-open
  [start, end); sliding windows start at epoch multiples of the slide;
  sessions split where two readings of a station are `gap` or more apart).
  Readings far later than the allowed lateness, and (sessions) readings
  that would reach into a session already closed, are in the DLQ with code
  `late` and in no window; readings without a time or with a non-number are
  in the DLQ with their codes.
- `trip-stats` in pipelines/taxi-stats-local.toml on generated trips equals
  a DuckDB computation over the pipeline's own Parquet branch (the enriched
  trips): counts, sums, averages, peak hour, masked location, anomaly score.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import trip_stats_expect
from sluice_e2e import PLUGINS, REPO, read_dlq

STAGE = "stages.agg"
GAP_MS = 30_000
LATENESS = "1m"


def need_plugins(*names):
    missing = [n for n in names if not (PLUGINS / f"{n}.wasm").is_file()]
    if missing:
        pytest.fail(f"plugins missing in {PLUGINS}: {missing}; run tests/scripts/build.sh")


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch_ms(s: str) -> int:
    return round(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


# --- the sensor data -------------------------------------------------------------------------------

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z


def readings(seed: int = 11, reaching: bool = False):
    """(arrival-ordered lines, on-time readings, late readings, refused lines with their codes).

    Four stations emit bursts: mostly 0.2-6 s apart, sometimes 10-90 s (so
    sessions split and merge), sometimes exactly GAP_MS (the boundary: a new
    session), and some exactly on a minute (a window boundary). Arrival order
    is event time plus up to 8 s of jitter (well within the 1-minute
    lateness); after 25 minutes of stream, a few readings arrive 15 minutes
    late (in windows that closed long before).

    `reaching` (session windows): after 10 minutes, some readings arrive 1 ms
    before the end of a session of their station that has just closed (ended
    60-89 s before the largest time seen): late, though a session of their
    own would still be open. Joining would change a final result; a second
    session overlapping the closed one would be two results for one."""
    rng = random.Random(seed)
    good = []
    for s in range(4):
        t = T0 + rng.randrange(0, 20_000)
        while t < T0 + 40 * 60_000:
            good.append({"station": f"st-{s}", "ts": t, "temp_c": round(rng.uniform(-5, 30), 2),
                         "humidity": rng.randrange(20, 100)})
            r = rng.random()
            t += GAP_MS if r < 0.03 else rng.randrange(10_000, 90_000) if r < 0.12 else rng.randrange(200, 6_000)
            if rng.random() < 0.04:
                t = (t // 60_000 + 1) * 60_000  # on a window boundary: it belongs to the window it starts
    arrival = sorted(good, key=lambda g: g["ts"] + rng.randrange(0, 8_000))
    lines, late, refused = [], [], []
    max_seen = 0
    seen = {f"st-{s}": [] for s in range(4)}
    for g in arrival:
        max_seen = max(max_seen, g["ts"])
        doc = {"station": g["station"], "ts": iso_ms(g["ts"]), "temp_c": g["temp_c"], "humidity": g["humidity"]}
        lines.append(doc)
        seen[g["station"]].append(g["ts"])
        if reaching and max_seen > T0 + 10 * 60_000 and rng.random() < 0.02:
            # Every reading of a session that ended by max_seen - 60 s has
            # arrived: those still to come are at most 8 s behind max_seen.
            st = f"st-{rng.randrange(4)}"
            ends = [a + GAP_MS for a, b in zip(sorted(seen[st]), sorted(seen[st])[1:] + [None])
                    if b is None or b - a >= GAP_MS]
            closed = [e for e in ends if max_seen - 89_000 < e <= max_seen - 60_000]
            if closed:
                late.append({"station": st, "ts": iso_ms(closed[-1] - 1), "temp_c": 98.5, "humidity": 1,
                             "reaching": True})
                lines.append(late[-1])
        if max_seen > T0 + 25 * 60_000 and rng.random() < 0.01:
            lt = max_seen - 15 * 60_000 - rng.randrange(0, 60_000)
            late.append({"station": f"st-{rng.randrange(4)}", "ts": iso_ms(lt), "temp_c": 99.5, "humidity": 1,
                         "late": True})
            lines.append(late[-1])
        if rng.random() < 0.005:
            bad = rng.choice([
                ({"station": "st-0", "temp_c": 1.0, "humidity": 2}, "missing_field"),
                ({"station": "st-0", "ts": "soon", "temp_c": 1.0, "humidity": 2}, "bad_timestamp"),
                ({"station": "st-1", "ts": doc["ts"], "temp_c": "warm", "humidity": 2}, "not_numeric"),
                ({"station": "st-1", "ts": doc["ts"], "humidity": 2}, "missing_field"),
            ])
            refused.append(bad)
            lines.append(bad[0])
    return lines, good, late, refused


PIPELINE = """
[pipeline]
name = "windows-{kind}"
[checkpoint]
dir = "{out}/checkpoint"
[batch]
max_records = 64
[dlq]
path = "{out}/dlq.ndjson"
[sources.readings]
type = "file"
path = "{input}"
[stages.agg]
inputs = ["readings"]
plugin = "{plugins}/aggregate.wasm"
config = {{ time_field = "ts", group_by = ["station"], metrics = [{{ op = "count" }}, {{ op = "sum", field = "temp_c" }}, {{ op = "avg", field = "temp_c" }}, {{ op = "min", field = "temp_c" }}, {{ op = "max", field = "temp_c" }}, {{ op = "max", field = "humidity", as = "peak_humidity" }}] }}
[stages.agg.window]
{window}
allowed_lateness = "{lateness}"
idle_timeout = "5s"
[sinks.out]
type = "file"
inputs = ["agg"]
path = "{out}/windows.ndjson"
"""

WINDOWS = {
    "tumbling": 'tumbling = "1m"',
    "sliding": 'sliding = { size = "2m", slide = "30s" }',
    "session": 'session = { gap = "30s" }',
}

# (station, ts, temp_c, humidity) → (station, window start, window end), per window kind.
ASSIGN = {
    "tumbling": """
        SELECT station, (ts // 60000) * 60000 AS ws, (ts // 60000) * 60000 + 60000 AS we, temp_c, humidity FROM r""",
    "sliding": """
        SELECT station, k * 30000 AS ws, k * 30000 + 120000 AS we, temp_c, humidity
        FROM r, range((ts - 120000) // 30000 + 1, ts // 30000 + 1) AS s(k)""",
    "session": f"""
        WITH o AS (SELECT *, CASE WHEN ts - lag(ts) OVER w >= {GAP_MS} OR lag(ts) OVER w IS NULL THEN 1 ELSE 0 END
                             AS new FROM r WINDOW w AS (PARTITION BY station ORDER BY ts)),
             n AS (SELECT *, sum(new) OVER (PARTITION BY station ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM o)
        SELECT station, min(ts) OVER s AS ws, max(ts) OVER s + {GAP_MS} AS we, temp_c, humidity
        FROM n WINDOW s AS (PARTITION BY station, sid)""",
}


def expected(kind: str, good: list[dict]) -> dict:
    con = duckdb.connect()
    r = pa.table({c: [g[c] for g in good] for c in ("station", "ts", "temp_c", "humidity")})  # noqa: F841 (DuckDB reads it by name)
    rows = con.execute(f"""
        SELECT station, ws, we, count(*), sum(temp_c), avg(temp_c), min(temp_c), max(temp_c), max(humidity)
        FROM ({ASSIGN[kind]}) GROUP BY ALL""").fetchall()
    return {(st, ws, we): (n, s, a, lo, hi, h) for st, ws, we, n, s, a, lo, hi, h in rows}


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
def test_generic_aggregate_matches_duckdb(kind, sluice, tmp_path, out_dir):
    need_plugins("aggregate")
    lines, good, late, refused = readings(reaching=kind == "session")
    assert late and refused and len(good) > 800
    if kind == "session":
        assert sum(1 for d in late if d.get("reaching")) >= 3
    inp = tmp_path / "readings.ndjson"
    inp.write_text("".join(json.dumps(d) + "\n" for d in lines))
    pipeline = tmp_path / f"{kind}.toml"
    pipeline.write_text(PIPELINE.format(kind=kind, out=out_dir, input=inp, plugins=PLUGINS, window=WINDOWS[kind],
                                        lateness=LATENESS))

    sluice.run(pipeline)

    out = [json.loads(x) for x in (out_dir / "windows.ndjson").read_text().splitlines()]
    got = {}
    for o in out:
        k = (o["station"], epoch_ms(o["window_start"]), epoch_ms(o["window_end"]))
        assert k not in got, f"window {k} emitted twice"
        got[k] = (o["count"], o["sum_temp_c"], o["avg_temp_c"], o["min_temp_c"], o["max_temp_c"], o["peak_humidity"])
    assert len({o["id"] for o in out}) == len(out), "ids are not unique"
    want = expected(kind, good)
    assert set(got) == set(want), (f"{kind}: windows missing {sorted(set(want) - set(got))[:5]}, "
                                   f"unexpected {sorted(set(got) - set(want))[:5]}")
    for k, w in want.items():
        g = got[k]
        assert g[0] == w[0] and g[5] == w[5], f"{kind} {k}: got {g}, want {w}"
        assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9) for a, b in zip(g[1:5], w[1:5])), \
            f"{kind} {k}: got {g}, want {w}"

    dlq = [e for e in read_dlq(out_dir / "dlq.ndjson") if e["stage"] == STAGE]
    late_got = sorted(json.dumps(e["record"], sort_keys=True) for e in dlq if e["code"] == "late")
    assert late_got == sorted(json.dumps(d, sort_keys=True) for d in late), "late readings are not exactly the DLQ's"
    assert sorted((e["code"], json.dumps(e["record"], sort_keys=True)) for e in dlq if e["code"] != "late") == \
        sorted((c, json.dumps(d, sort_keys=True)) for d, c in refused)
    # A late reading's temperature (99.5, 98.5) is in no window.
    assert all(o["max_temp_c"] < 98 for o in out)


# --- trip-stats on taxi trips ----------------------------------------------------------------------

def test_trip_stats_matches_duckdb_over_the_enriched_trips(sluice, tmp_path, out_dir):
    need_plugins("validate", "enrich", "trip_stats")
    csv = tmp_path / "taxi.csv"
    r = sluice.cmd("gen", "taxi", "--rows", 20000, "--seed", 5, "--bad-fraction", 0.02, "--out", csv)
    assert r.returncode == 0, r.describe()
    # 3-hour windows: ~180 trips per vendor and window, so peak hours and
    # withheld locations both occur... with location_min_trips raised to 150.
    env = {"SLUICE_INPUT": csv, "SLUICE_OUT": out_dir, "SLUICE_WINDOW": "3h"}
    text = (REPO / "pipelines/taxi-stats-local.toml").read_text().replace("location_min_trips = 5",
                                                                         "location_min_trips = 150")
    pipeline = tmp_path / "taxi-stats.toml"
    pipeline.write_text(text)
    sluice.run(pipeline, env=env)

    out = [json.loads(x) for x in (out_dir / "trip-stats.ndjson").read_text().splitlines()]
    assert out, "no statistics"
    want = trip_stats_expect.expected(duckdb.connect(), f"read_parquet('{out_dir}/trips/**/*.parquet', "
                                      "hive_partitioning = 1)", 3 * 3600_000)
    withheld = trip_stats_expect.assert_matches(out, want, 3 * 3600_000, location_min_trips=150)
    assert 0 < withheld < len(want), "both withheld and published locations should occur"
    assert any(o["anomaly_score"] != 0 for o in out)
    late = [e for e in read_dlq(out_dir / "dlq.ndjson") if e["code"] == "late"]
    assert not late, f"{len(late)} trips late with a 10-minute lateness: {late[:2]}"
