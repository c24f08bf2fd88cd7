"""The file source on a non-taxi CSV (tests/fixtures/flights-sample.csv)
through a JSON plugin: cells arrive typed (numbers as numbers), and broken
rows cost one DLQ entry each."""

from __future__ import annotations

import csv
import json

import pytest

from sluice_e2e import FIXTURES, PLUGINS, TEST_PIPELINES, read_dlq

PIPELINE = TEST_PIPELINES / "flights-typed.toml"
FIXTURE = FIXTURES / "flights-sample.csv"


def fixture_rows():
    """(line number, line) of every data line of the fixture, read as text."""
    lines = FIXTURE.read_text().splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if n > 1]


def test_csv_cells_reach_a_json_plugin_typed(sluice, out_dir):
    if not (PLUGINS / "template.wasm").is_file():
        pytest.fail(f"{PLUGINS}/template.wasm is missing; build the plugins")
    r = sluice.run(PIPELINE, env={"SLUICE_OUT": out_dir})
    rows = fixture_rows()
    stray = next(n for n, line in rows if '"' in line)
    bad_cell = next(n for n, line in rows if ",n/a," in line)
    too_long = next(n for n, line in rows if len(line) > 200)
    good = {n: line for n, line in rows if n not in (stray, bad_cell, too_long)}
    assert len(good) == 30

    out = [json.loads(l) for l in (out_dir / "flights.ndjson").read_text().splitlines()]
    assert len(out) == len(good), r.describe()
    want = list(csv.DictReader([FIXTURE.read_text().splitlines()[0], *good.values()]))
    for got, w in zip(out, want):
        assert got["carrier"] == w["carrier"].upper(), got
        # Numbers as numbers (the plugin parsed and re-wrote them), zip codes
        # with leading zeros and dates as text, empty cells left out.
        assert type(got["flight"]) is int and got["flight"] == int(w["flight"]), got
        assert type(got["distance"]) is int, got
        assert type(got["cancelled"]) is bool and got["cancelled"] == (w["cancelled"] == "true"), got
        assert got["origin_zip"] == w["origin_zip"] and isinstance(got["origin_zip"], str), got
        assert got["date"] == w["date"], got
        if w["arr_delay"]:
            assert type(got["arr_delay"]) is float and got["arr_delay"] == float(w["arr_delay"]), got
            assert type(got["dep_delay"]) is int and got["dep_delay"] == int(w["dep_delay"]), got
        else:
            assert "arr_delay" not in got and "dep_delay" not in got, got

    dlq = read_dlq(out_dir / "dlq.ndjson")
    # The probe stage saw a JSON number in arr_delay for every row that has one.
    probed = [e for e in dlq if e["stage"] == "stages.probe"]
    with_delay = {n for n, line in good.items() if list(csv.reader([line]))[0][7]}
    assert {int(e["seq"]) for e in probed} == with_delay
    assert all(e["code"] == "not_a_string" for e in probed), probed[:3]
    first = next(e for e in probed if int(e["seq"]) == min(with_delay))
    assert first["message"] == f"arr_delay is not a string: {float(list(csv.reader([good[min(with_delay)]]))[0][7])}"

    source = {int(e["seq"]): e for e in dlq if e["stage"] == "sources.flights"}
    assert sorted(source) == sorted([stray, bad_cell, too_long]), dlq
    assert source[stray]["code"] == "malformed" and "unterminated quoted field" in source[stray]["message"]
    assert source[bad_cell]["message"] == 'column "arr_delay": "n/a" is not a float64'
    assert source[bad_cell]["record"] == dict(rows)[bad_cell]
    assert source[too_long]["code"] == "too_large"
    assert f"{len(dict(rows)[too_long])} bytes" in source[too_long]["message"]
    assert len(source[too_long]["record"]) <= 201
    nodes = r.summary["nodes"]
    assert nodes["sources.flights"]["records_out"] == 30 and nodes["sources.flights"]["rejected"] == 3, nodes
