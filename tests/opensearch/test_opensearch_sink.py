"""The OpenSearch sink against a real OpenSearch: exact indexing (count and
ids), declared mappings, per-item 429s, mapping errors to the DLQ, kill -9
and an outage mid-run, and clear start-up errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest

from sluice_e2e import FIXTURES, read_dlq
from os_support import Faults, FaultProxy

WEATHER = FIXTURES / "weather.csv"
FLIGHTS = FIXTURES / "flights-sample.csv"


def pipeline(tmp: Path, *, source: str, sink: str, name: str = "os", interval: str = "1s") -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(f"""
[pipeline]
name = "{name}"

[checkpoint]
dir = "{tmp}/cp"
interval = "{interval}"

[dlq]
path = "{tmp}/dlq.ndjson"

[sources.in]
{source}

[sinks.os]
type = "opensearch"
inputs = ["in"]
{sink}
""")
    return p


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected_ids(path: Path, n: int, first_line: int) -> set[str]:
    return {f"in:{path}:{first_line + i}:0:0" for i in range(n)}


def write_ndjson(path: Path, docs) -> int:
    n = 0
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps(d, separators=(",", ":")) + "\n")
            n += 1
    return n


def test_raw_records_are_indexed_exactly_with_the_declared_mapping(sluice, opensearch, index, tmp_path):
    template = tmp_path / "template.json"
    template.write_text(json.dumps({
        "index_patterns": [f"{index}*"],
        "template": {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                     "mappings": {"dynamic": "strict", "properties": {
                         "station": {"type": "keyword"}, "observed": {"type": "date"},
                         "temp_c": {"type": "float"}, "wind_kt": {"type": "integer"},
                         "precip_mm": {"type": "float"}, "conditions": {"type": "text"}}}}}))
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{WEATHER}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}"\ntemplate = "{template}"\n'
                      f'template_name = "{index}"')
    r = sluice.validate(p)
    assert r.returncode == 0, r.describe()
    assert "OpenSearch" in r.output and index in r.output, r.output
    sluice.run(p)
    rows = csv_rows(WEATHER)
    docs = opensearch.docs(index)
    assert opensearch.count(index) == len(rows) == 120
    assert set(docs) == expected_ids(WEATHER, len(rows), 2)
    # Every document is its row (the source types the cells).
    by_line = {int(k.split(":")[2]): v for k, v in docs.items()}
    for i, row in enumerate(rows):
        d = by_line[i + 2]
        assert d["station"] == row["station"] and d["observed"] == row["observed"], (row, d)
        assert d.get("conditions") == (row["conditions"] or None), (row, d)
    props = opensearch.mapping(index)[index]["mappings"]["properties"]
    assert {k: v["type"] for k, v in props.items()} == {
        "station": "keyword", "observed": "date", "temp_c": "float", "wind_kt": "integer",
        "precip_mm": "float", "conditions": "text"}
    assert not (tmp_path / "dlq.ndjson").exists() or read_dlq(tmp_path / "dlq.ndjson") == []


def test_index_from_a_date_field_and_ids_from_a_field(sluice, opensearch, index, tmp_path):
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{FLIGHTS}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}-{{date:%Y.%m}}"\n'
                      f'id_field = "flight"\nbulk_max_records = 7\nconcurrency = 3\ngzip = true')
    sluice.run(p)
    # The fixture has two rows the source refuses (a stray quote, an extra
    # field): every other line is one document, in the index of its month.
    dlq = read_dlq(tmp_path / "dlq.ndjson")
    assert {e["stage"] for e in dlq} == {"sources.in"} and len(dlq) == 2, dlq
    refused = {int(e["seq"]) for e in dlq}
    lines = FLIGHTS.read_text().splitlines()
    want = {}
    for n, line in enumerate(lines[1:], 2):
        if n not in refused:
            f = line.split(",")
            want[f[2]] = f"{index}-{f[0][:4]}.{f[0][5:7]}"
    assert len(want) == len(lines) - 1 - len(refused), "flight numbers are unique in the fixture"
    docs = opensearch.docs(f"{index}-*")
    assert {k: v["_index"] for k, v in docs.items()} == want


def test_mapping_errors_go_to_the_dlq_with_the_reason_and_the_rest_is_indexed(sluice, opensearch, index, tmp_path):
    template = tmp_path / "template.json"
    template.write_text(json.dumps({"index_patterns": [index], "template": {"mappings": {"properties": {
        "n": {"type": "long"}, "at": {"type": "date"}}}}}))
    src = tmp_path / "in.ndjson"
    bad = {7, 19, 40}
    n = write_ndjson(src, ({"n": "not a number" if i in bad else i, "at": "2024-01-01T00:00:00Z"} for i in range(50)))
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}"\ntemplate = "{template}"\n'
                      f'template_name = "{index}"')
    r = sluice.run(p)
    assert r.summary["nodes"]["sinks.os"]["rejected"] == len(bad), r.describe()
    dlq = read_dlq(tmp_path / "dlq.ndjson")
    records = [e["record"] if isinstance(e["record"], dict) else json.loads(e["record"]) for e in dlq]
    assert [r["n"] for r in records] == ["not a number"] * 3
    for e in dlq:
        assert e["code"] == "opensearch_rejected", e
        assert "mapper_parsing_exception" in e["message"] and "[n]" in e["message"], e
    docs = opensearch.docs(index)
    assert len(docs) == n - len(bad)
    assert sorted(d["n"] for d in docs.values()) == [i for i in range(50) if i not in bad]


def test_per_item_429s_are_retried_until_indexed(sluice, opensearch, index, tmp_path):
    src = tmp_path / "in.ndjson"
    n = write_ndjson(src, ({"i": i, "s": f"v{i}"} for i in range(3000)))
    with FaultProxy(opensearch.endpoint, Faults(item_429=0.3)) as proxy:
        p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                     sink=f'endpoints = ["{proxy.endpoint}"]\nindex = "{index}"\nbulk_max_records = 200\n'
                          f'max_backoff = "200ms"')
        sluice.run(p)
        assert proxy.faults.throttled > 300, proxy.faults
    docs = opensearch.docs(index)
    assert set(docs) == expected_ids(src, n, 1)
    assert sorted(d["i"] for d in docs.values()) == list(range(n))
    assert not (tmp_path / "dlq.ndjson").exists() or read_dlq(tmp_path / "dlq.ndjson") == []


def test_wrong_endpoint_and_wrong_credentials_fail_at_start_with_nothing_acknowledged(sluice, opensearch, index, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    src = tmp_path / "in.ndjson"
    write_ndjson(src, ({"i": i} for i in range(10)))
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"', sink=f'endpoints = ["{closed}"]\nindex = "{index}"')
    r = sluice.run(p, check=False, timeout=120)
    assert r.returncode != 0, r.describe()
    assert closed in r.stderr and "check endpoints" in r.stderr, r.describe()
    assert not (tmp_path / "cp" / "checkpoint.json").exists()

    with FaultProxy(opensearch.endpoint, Faults(basic="elastic:right-password")) as proxy:
        for cred in ('username = "elastic"\npassword = "wrong-password"', ""):
            p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                         sink=f'endpoints = ["{proxy.endpoint}"]\nindex = "{index}"\n{cred}')
            r = sluice.run(p, check=False, timeout=120)
            assert r.returncode != 0, r.describe()
            assert "refused the credentials" in r.stderr and proxy.endpoint in r.stderr, r.describe()
            assert "wrong-password" not in r.output, "credentials are never printed"
            assert not (tmp_path / "cp" / "checkpoint.json").exists()
        assert proxy.faults.unauthorized >= 2
        # The right password works through the same proxy.
        p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                     sink=f'endpoints = ["{proxy.endpoint}"]\nindex = "{index}"\n'
                          'username = "elastic"\npassword = "right-password"')
        sluice.run(p)
    assert opensearch.count(index) == 10


def test_validate_names_bad_keys_with_file_and_line(sluice, tmp_path):
    p = pipeline(tmp_path, source='type = "file"\npath = "x.ndjson"',
                 sink='endpoints = ["http://127.0.0.1:9"]\nindex = "Trips-{d:%Y}"')
    r = sluice.validate(p)
    assert r.returncode == 2, r.describe()
    lines = p.read_text().splitlines()
    line = next(i + 1 for i, l in enumerate(lines) if l.startswith("index ="))
    assert f"{p}:{line}: sinks.os.index:" in r.stderr and "lowercase" in r.stderr, r.describe()
    p = pipeline(tmp_path, source='type = "file"\npath = "x.ndjson"',
                 sink='endpoints = ["http://127.0.0.1:9"]\nindex = "t"\nusername = "u"')
    r = sluice.validate(p)
    assert r.returncode == 2 and "sinks.os.username: username needs a password" in r.stderr, r.describe()


def generated(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "big.ndjson"
    write_ndjson(src, ({"i": i, "pad": "x" * 40} for i in range(n)))
    return src


def wait_for(pred, timeout=120.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill9_during_indexing_then_restart_loses_and_doubles_nothing(sluice, opensearch, index, tmp_path):
    n = 60_000
    src = generated(tmp_path, n)
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}"\nbulk_max_records = 500',
                 interval="200ms")
    run = sluice.spawn(p)
    wait_for(lambda: opensearch.count(index) > 5000 or run.proc.poll() is not None, what="documents")
    assert run.kill9(), "the run ended before the kill: input too small"
    partial = opensearch.count(index)
    assert 0 < partial < n
    sluice.run(p)
    docs = opensearch.docs(index)
    assert len(docs) == n
    assert set(docs) == expected_ids(src, n, 1)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def resume(pid):
    """SIGCONT for `pid` and, first, for the `runuser` wrapper the service hook
    started it under: runuser stops itself when its child stops and, resumed,
    resumes the child; left stopped, it could not reap java at the end."""
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{ppid}/comm") as f:
        if f.read().strip() == "runuser":
            os.kill(ppid, signal.SIGCONT)
    os.kill(pid, signal.SIGCONT)


def test_opensearch_stopped_for_30s_mid_run_nothing_lost_memory_bounded(sluice, opensearch, os_pid, index, tmp_path):
    n = 100_000
    src = generated(tmp_path, n)
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}"\nbulk_max_records = 500\n'
                      f'timeout = "2s"\nmax_backoff = "2s"')
    run = sluice.spawn(p)
    wait_for(lambda: opensearch.count(index) > 2000 or run.proc.poll() is not None, what="documents")
    assert run.proc.poll() is None, "the run ended before the outage: input too small"
    before = rss_kib(run.proc.pid)
    os.kill(os_pid, signal.SIGSTOP)
    try:
        peak = before
        end = time.monotonic() + 30
        while time.monotonic() < end:
            assert run.proc.poll() is None, "the run gave up during the outage\n" + run.result().describe()
            peak = max(peak, rss_kib(run.proc.pid))
            time.sleep(0.5)
    finally:
        resume(os_pid)
    r = run.wait()
    assert r.returncode == 0, r.describe()
    assert "retrying" in r.stderr, "the outage was noticed and waited out"
    # Bounded: the source waited (backpressure) instead of buffering its input.
    assert peak - before < 64 * 1024, f"RSS grew from {before} KiB to {peak} KiB during the outage"
    docs = opensearch.docs(index)
    assert len(docs) == n
    assert set(docs) == expected_ids(src, n, 1)
