"""Bad input: a nonexistent stream or an unreachable endpoint ends `sluice
run` with a non-zero exit and a message naming the stream / endpoint, within
a bounded time; `sluice produce` to a nonexistent stream fails clearly."""

from __future__ import annotations

import socket
import time

import pytest

from kinesis_support import AWS_ENV, pipeline, produce, unique

BOUND_S = 90   # the default retry policy gives up on a refused connection after ~35-42 s


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def run_fails(sluice, tmp_path, stream, endpoint, retry="", **shape):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = pipeline(tmp_path / "p.toml", stream=stream, endpoint=endpoint, out=out, extra_source=retry, **shape)
    t = time.monotonic()
    r = sluice.run(p, env=AWS_ENV, check=False, timeout=BOUND_S + 30)
    took = time.monotonic() - t
    assert r.returncode != 0, r.describe()
    assert took < BOUND_S, f"took {took:.1f}s to give up\n" + r.describe()
    assert "panicked" not in r.stderr, r.describe()
    return r


def final_error(r) -> str:
    """The closing `error: …` line (log lines before it may name things too)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in r.stderr.splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors, "no closing `error:` line\n" + r.describe()
    return errors[-1]


def test_run_nonexistent_stream(kinesis, sluice, tmp_path):
    name = unique("no-such-stream")
    r = run_fails(sluice, tmp_path, name, kinesis.endpoint)
    err = final_error(r)
    assert name in err and "not found" in err.lower(), r.describe()


@pytest.mark.parametrize("retry,shape", [
    ("", {}),
    ("retry = { max_attempts = 2 }", {}),
    # Source straight into a file sink: the runtime once lost the source's
    # error here ("every node stopped") in a race between its two channels.
    ("retry = { max_attempts = 3 }", {"sink": "file", "stages": False}),
], ids=["default-retry", "two-attempts", "two-attempts-no-stages"])
def test_run_unreachable_endpoint(sluice, tmp_path, retry, shape):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    # The default retry policy (12 attempts, <= 10 s apart) must still end in time.
    r = run_fails(sluice, tmp_path, "taxi-trips", endpoint, retry, **shape)
    assert endpoint in final_error(r), "the error does not name the endpoint\n" + r.describe()


def test_produce_nonexistent_stream(kinesis, sluice, tmp_path):
    name = unique("no-such-stream")
    f = tmp_path / "one.ndjson"
    f.write_text('{"id": "id1"}\n')
    t = time.monotonic()
    r = produce(sluice, name, kinesis.endpoint, f, timeout=BOUND_S)
    assert r.returncode != 0, r.describe()
    assert time.monotonic() - t < 30, r.describe()
    assert f"stream {name} does not exist" in r.stderr, r.describe()
