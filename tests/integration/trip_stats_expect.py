"""What the trip-stats plugin must emit, computed independently with DuckDB
over the trips it aggregates: per (vendor, tumbling window of pickup time)
the count, sums, averages, peak pickup hour, masked average location and the
anomaly score of the plugin's baseline rule. Shared by the tests that check
its output wherever it lands (an NDJSON file, OpenSearch)."""

from __future__ import annotations

import math
from datetime import datetime

# Key of a window: (vendor id as a string, window start in epoch ms).
Key = tuple[str, int]


def epoch_ms(s: str) -> int:
    return round(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def ewma_scores(rows, alpha=0.1, min_windows=5, min_sd=1.0) -> dict[Key, float]:
    """anomaly_score per (vendor, window start): the plugin's baseline rule, in window order per vendor."""
    scores, base = {}, {}
    for vendor, ws, avg in sorted(rows, key=lambda r: (r[1], r[0])):
        n, mean, var = base.get(vendor, (0, 0.0, 0.0))
        scores[(vendor, ws)] = (avg - mean) / max(math.sqrt(var), min_sd) if n >= min_windows else 0.0
        if n == 0:
            base[vendor] = (1, avg, 0.0)
        else:
            diff = avg - mean
            incr = alpha * diff
            base[vendor] = (n + 1, mean + incr, (1 - alpha) * (var + diff * incr))
    return scores


def expected(con, trips: str, window_ms: int) -> dict[Key, dict]:
    """The statistics of every window, from `trips`: a DuckDB relation (a
    table name or `read_parquet(...)`) with vendorId, pickupDate (UTC
    timestamp), passengerCount, tripDuration, gcDistance, pickupLatitude and
    pickupLongitude. Windows are half-open [start, start + window_ms) at
    epoch multiples of window_ms; the peak hour is the most frequent pickup
    hour, the earliest on a tie."""
    rows = con.execute(f"""
        WITH t AS (SELECT CAST(vendorId AS VARCHAR) AS vendor,
                          epoch_ms(pickupDate) // {window_ms} * {window_ms} AS ws,
                          passengerCount, tripDuration, gcDistance, pickupLatitude, pickupLongitude,
                          hour(pickupDate AT TIME ZONE 'UTC') AS h
                   FROM {trips}),
             hours AS (SELECT vendor, ws, h, count(*) AS c FROM t GROUP BY ALL),
             peak AS (SELECT vendor, ws, arg_max(h, c * 100 - h) AS peak FROM hours GROUP BY ALL)
        SELECT vendor, ws, count(*), sum(passengerCount), sum(tripDuration), avg(tripDuration), avg(gcDistance),
               any_value(peak.peak), avg(pickupLatitude), avg(pickupLongitude)
        FROM t JOIN peak USING (vendor, ws) GROUP BY vendor, ws""").fetchall()
    scores = ewma_scores([(v, ws, avg_d) for v, ws, _, _, _, avg_d, *_ in rows])
    return {(v, ws): {"trip_count": n, "passenger_count": p, "total_duration_s": d, "avg_duration_s": ad,
                      "avg_distance": dist, "peak_pickup_hour": peak, "lat": lat, "lon": lon,
                      "anomaly_score": scores[(v, ws)]}
            for v, ws, n, p, d, ad, dist, peak, lat, lon in rows}


def assert_matches(out: list[dict], want: dict[Key, dict], window_ms: int, *, location_min_trips: int,
                   distance_tol: float = 1e-6) -> int:
    """Every statistics document of `out` against `want`, window for window;
    returns how many windows withheld their location. `distance_tol`: the
    plugin sums distances in millimetres (1e-6 against its own input; wider
    when the distances were recomputed)."""
    assert len({o["id"] for o in out}) == len(out), "an id came out twice"
    got = {(o["vendor_id"], epoch_ms(o["window_start"])): o for o in out}
    assert len(got) == len(out), "a window came out twice"
    assert set(got) == set(want), f"windows differ: {sorted(set(got) ^ set(want))[:6]}"
    withheld = 0
    for k, w in want.items():
        o = got[k]
        assert epoch_ms(o["window_end"]) - k[1] == window_ms, f"{k}: {o}"
        assert (o["trip_count"], o["passenger_count"], o["total_duration_s"], o["peak_pickup_hour"]) == \
            (w["trip_count"], w["passenger_count"], w["total_duration_s"], w["peak_pickup_hour"]), f"{k}: {o} {w}"
        assert math.isclose(o["avg_duration_s"], w["avg_duration_s"], rel_tol=1e-12), f"{k}: {o}"
        assert math.isclose(o["avg_distance"], w["avg_distance"], rel_tol=0, abs_tol=distance_tol), f"{k}: {o} {w}"
        assert math.isclose(o["anomaly_score"], w["anomaly_score"], rel_tol=1e-9, abs_tol=1e-9), f"{k}: {o}"
        if w["trip_count"] < location_min_trips:
            assert o["pickup_location"] is None, f"{k}: {w['trip_count']} trips but a location"
            withheld += 1
        else:
            loc = o["pickup_location"]
            assert abs(loc["lat"] - w["lat"]) <= 0.005 + 1e-9 and abs(loc["lon"] - w["lon"]) <= 0.005 + 1e-9, \
                f"{k}: {o}"
            assert loc == {"lat": round(loc["lat"], 2), "lon": round(loc["lon"], 2)}
    return withheld
