"""The plugin sandbox, proven with a plugin that tries to get out
(plugins/sandbox-probe): it reads host files, writes into a directory, reads
environment variables, opens TCP connections and resolves a name, and
reports each outcome in its output records.

Without grants every attempt fails inside the plugin and the host reports
nothing worse (exit 0, every record out, nothing in the DLQ); with
`[stages.NAME.grants]` exactly what was granted works: a granted directory is
read-only, only granted variables are visible, and a network allow-list lets
through only the addresses it names. Connections are checked on the
listener's side too (a local TCP listener counts what it accepted)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from sluice_e2e import PLUGINS, read_dlq

SECRET = "the host's secret\n"


@pytest.fixture
def probe_wasm() -> Path:
    p = PLUGINS / "sandbox_probe.wasm"
    if not p.is_file():
        pytest.fail(f"{p} is missing; run tests/scripts/build.sh")
    return p


class Listener:
    """A TCP listener on 127.0.0.1 that never accepts while the run is on:
    the kernel completes handshakes into the backlog, so `accepted()` after
    the run counts the connections that really reached it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"

    def accepted(self) -> int:
        self.sock.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self):
        self.sock.close()


@pytest.fixture
def listeners():
    ls = [Listener(), Listener()]
    yield ls
    for listener in ls:
        listener.close()


@pytest.fixture
def host_files(tmp_path) -> dict:
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "secret.txt").write_text(SECRET)
    outside = tmp_path / "outside.txt"
    outside.write_text("not granted\n")
    return {"granted": granted, "outside": outside}


def toml_str(v) -> str:
    return json.dumps(str(v))


def write_pipeline(tmp_path: Path, probe: Path, config: dict, grants: str = "") -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    records = tmp_path / "in.ndjson"
    records.write_text('{"n":1}\n{"n":2}\n')
    cfg = ", ".join(f"{k} = {json.dumps(v)}" for k, v in config.items())
    text = f"""
[pipeline]
name = "sandbox"

[checkpoint]
dir = {toml_str(out / "checkpoint")}

[dlq]
path = {toml_str(out / "dlq.ndjson")}

[sources.records]
type = "file"
path = {toml_str(records)}

[stages.probe]
inputs = ["records"]
plugin = {toml_str(probe)}
config = {{ {cfg} }}
{grants}

[sinks.results]
type = "file"
inputs = ["probe"]
path = {toml_str(out / "results.ndjson")}
"""
    path = tmp_path / "sandbox.toml"
    path.write_text(text)
    return path, out


def run_probe(sluice, pipeline: Path, out: Path, env: dict | None = None) -> dict:
    """Runs the pipeline; checks the host reported nothing worse than the
    plugin's own failed attempts; returns the probe's report."""
    r = sluice.run(pipeline, env=env)
    stage = r.summary["nodes"]["stages.probe"]
    assert stage["records_out"] == 2 and stage["rejected"] == 0 and stage["failed_batches"] == 0, \
        f"{stage}\n{r.describe()}"
    assert read_dlq(out / "dlq.ndjson") == [], r.describe()
    results = [json.loads(line) for line in (out / "results.ndjson").read_text().splitlines()]
    assert sorted(x["index"] for x in results) == [0, 1], results
    return results[0]


def ok(outcome: dict) -> bool:
    assert set(outcome) in ({"ok", "value"}, {"ok", "error"}), outcome
    return outcome["ok"]


def test_without_grants_every_attempt_fails_inside_the_plugin(sluice, tmp_path, probe_wasm, host_files, listeners):
    a, _ = listeners
    secret = host_files["granted"] / "secret.txt"
    config = {
        "read": [str(secret), "/etc/hostname", "/secret.txt"],
        "write": str(host_files["granted"] / "new.txt"),
        "env": ["PROBE_SECRET", "HOME", "PATH"],
        "connect": [a.addr, f"localhost:{a.port}"],
        "lookup": "localhost",
    }
    pipeline, out = write_pipeline(tmp_path, probe_wasm, config)
    report = run_probe(sluice, pipeline, out, env={"PROBE_SECRET": "s3cret"})
    assert not any(ok(o) for o in report["read"].values()), report["read"]
    assert not ok(report["write"]), report["write"]
    assert not (host_files["granted"] / "new.txt").exists()
    assert not any(ok(o) for o in report["env"].values()), report["env"]
    assert not any(ok(o) for o in report["connect"].values()), report["connect"]
    assert not ok(report["lookup"]), report["lookup"]
    assert a.accepted() == 0


def test_grants_allow_exactly_what_they_name(sluice, tmp_path, probe_wasm, host_files, listeners):
    a, b = listeners
    config = {
        "read": ["/data/secret.txt", str(host_files["outside"])],
        "write": "/data/new.txt",
        "env": ["PROBE_SECRET", "PROBE_OTHER"],
        "connect": [a.addr, b.addr],
        "lookup": "localhost",
    }
    grants = f"""
[stages.probe.grants]
env = ["PROBE_SECRET"]
dirs = [{{ host = {toml_str(host_files["granted"])}, guest = "/data" }}]
network = [{json.dumps(a.addr)}]
"""
    pipeline, out = write_pipeline(tmp_path, probe_wasm, config, grants)
    report = run_probe(sluice, pipeline, out, env={"PROBE_SECRET": "s3cret", "PROBE_OTHER": "other"})
    read = report["read"]
    assert ok(read["/data/secret.txt"]) and read["/data/secret.txt"]["value"] == SECRET, read
    assert not ok(read[str(host_files["outside"])]), "a file outside the granted directory was readable"
    # A granted directory is read-only.
    assert not ok(report["write"]), report["write"]
    assert not (host_files["granted"] / "new.txt").exists()
    assert report["env"]["PROBE_SECRET"] == {"ok": True, "value": "s3cret"}, report["env"]
    assert not ok(report["env"]["PROBE_OTHER"]), report["env"]
    assert ok(report["connect"][a.addr]), report["connect"]
    assert not ok(report["connect"][b.addr]), "an address outside the allow-list was reachable"
    # Only addresses are granted: no name lookup.
    assert not ok(report["lookup"]), report["lookup"]
    assert a.accepted() >= 1 and b.accepted() == 0


def test_a_host_name_pattern_allows_lookup_and_its_addresses(sluice, tmp_path, probe_wasm, listeners):
    a, b = listeners
    config = {"connect": [a.addr, f"localhost:{a.port}", b.addr], "lookup": "localhost"}
    grants = f'[stages.probe.grants]\nnetwork = ["localhost:{a.port}"]\n'
    pipeline, out = write_pipeline(tmp_path, probe_wasm, config, grants)
    report = run_probe(sluice, pipeline, out)
    assert ok(report["lookup"]) and "127.0.0.1" in report["lookup"]["value"].split(","), report["lookup"]
    assert ok(report["connect"][a.addr]), report["connect"]
    assert ok(report["connect"][f"localhost:{a.port}"]), report["connect"]
    assert not ok(report["connect"][b.addr]), report["connect"]
    assert a.accepted() >= 2 and b.accepted() == 0


def test_network_true_allows_anything(sluice, tmp_path, probe_wasm, listeners):
    a, b = listeners
    config = {"connect": [a.addr, b.addr], "lookup": "localhost"}
    pipeline, out = write_pipeline(tmp_path, probe_wasm, config, "[stages.probe.grants]\nnetwork = true\n")
    report = run_probe(sluice, pipeline, out)
    assert all(ok(o) for o in report["connect"].values()), report["connect"]
    assert ok(report["lookup"]), report["lookup"]
    assert a.accepted() >= 1 and b.accepted() >= 1
