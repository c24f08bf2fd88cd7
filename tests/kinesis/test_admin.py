"""The admin endpoint on a live Kinesis pipeline: `GET /metrics` (Prometheus
text) and `GET /status` answer only with the bearer token, count what the
pipeline did, and report MillisBehindLatest for every shard. The metrics also
show fan-out subscriptions renewing (every second here, 4m50s by default)
while records keep arriving: none lost, none twice."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request

from sluice_e2e import wait_for
from kinesis_support import AWS_ENV, assert_exactly_once_kinesis, pipeline, produce, produced_stream

ROWS = 1000
TOKEN = "admin-test-token-7f3a9c"


def fetch(url: str, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value, for every sample line of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def spawn_with_admin(sluice, p):
    """`sluice run p` with an [admin] table on a free loopback port; (run, base URL)."""
    p.write_text(p.read_text() + f'\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n')
    run = sluice.spawn(p, env=AWS_ENV)
    base = None

    def announced():
        nonlocal base
        m = re.search(r"admin endpoint: (http://127\.0\.0\.1:\d+)", run.result().stderr)
        base = m and m.group(1)
        return bool(base) or run.proc.poll() is not None
    if not (wait_for(announced, 60) and base):
        run.signal(signal.SIGKILL)
        raise AssertionError("no admin endpoint announced\n" + run.wait(30).describe())
    return run, base


def scrape(base: str) -> dict[str, float]:
    code, text = fetch(base + "/metrics", TOKEN)
    assert code == 200, text
    return samples(text)


def test_metrics_and_status_with_token_only(sluice, kinesis, datasets, tmp_path):
    ds = datasets(ROWS, seed=21, bad=0.05)
    stream = produced_stream(sluice, kinesis, ds, 2)
    out = tmp_path / "out"
    out.mkdir()
    # Runs until SIGTERM (no idle stop); port 0: the endpoint prints the one it got.
    p = pipeline(tmp_path / "admin.toml", stream=stream, endpoint=kinesis.endpoint, out=out, stop_when_idle="1h")
    run, base = spawn_with_admin(sluice, p)
    try:
        for path in ("/metrics", "/status"):
            assert fetch(base + path, None)[0] == 401
            assert fetch(base + path, TOKEN + "x")[0] == 401

        shards = [s["ShardId"] for s in kinesis.shards(stream)]
        seen = {}

        def caught_up():
            seen.update(scrape(base))
            return (seen.get('sluice_records_in_total{node="sources.trips"}') == ROWS
                    and seen.get("sluice_checkpoint_epoch", 0) >= 1
                    and all(f'sluice_kinesis_millis_behind_latest{{source="trips",shard="{s}"}}' in seen
                            for s in shards))
        assert wait_for(caught_up, 120, interval=0.5), f"metrics never showed {ROWS} records read:\n{seen}"
        assert seen['sluice_records_rejected_total{node="stages.validate"}'] == len(ds.bad)
        assert seen['sluice_records_out_total{node="stages.validate"}'] == ROWS - len(ds.bad)
        assert seen["sluice_checkpoints_total"] >= 1 and seen["sluice_checkpoint_last_timestamp_seconds"] > 1.7e9
        assert seen['sluice_info{pipeline="kinesis-test",version="0.1.0"}'] == 1

        code, body = fetch(base + "/status", TOKEN)
        assert code == 200
        status = json.loads(body)
        assert status["pipeline"] == "kinesis-test"
        assert status["nodes"]["sources.trips"]["records_out"] == ROWS
        assert status["checkpoint"]["epoch"] >= 1
    finally:
        run.signal(signal.SIGTERM)
        res = run.wait(120)
    assert res.returncode == 0, res.describe()
    assert_exactly_once_kinesis(ds, out)


def test_fan_out_subscriptions_renew_without_loss(sluice, kinesis, datasets, tmp_path):
    ds = datasets(600, seed=22, bad=0.0)
    stream = kinesis.create(2)
    out = tmp_path / "out"
    out.mkdir()
    p = pipeline(tmp_path / "efo.toml", stream=stream, endpoint=kinesis.endpoint, out=out, mode="efo",
                 stop_when_idle="1h", extra_source='fan_out_renew_after = "1s"')
    run, base = spawn_with_admin(sluice, p)
    try:
        # ~6 s of records arriving across several renewals of each subscription.
        r = produce(sluice, stream, kinesis.endpoint, ds.path, "--rate", "100")
        assert r.returncode == 0, r.describe()
        shards = [s["ShardId"] for s in kinesis.shards(stream)]
        seen = {}

        def done():
            seen.update(scrape(base))
            subs = [seen.get(f'sluice_kinesis_subscriptions_total{{source="trips",shard="{s}"}}', 0) for s in shards]
            return seen.get('sluice_records_in_total{node="sources.trips"}') == ds.rows and min(subs) >= 4
        assert wait_for(done, 120, interval=0.5), f"records or renewals missing:\n{seen}"
    finally:
        run.signal(signal.SIGTERM)
        res = run.wait(120)
    assert res.returncode == 0, res.describe()
    assert_exactly_once_kinesis(ds, out)
