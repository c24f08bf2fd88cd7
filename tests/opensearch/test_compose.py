"""docker-compose.yml, checked without a container engine: parsed and
checked for what `docker compose up` needs (services it depends on exist and
have the health checks or exits its conditions wait for, files it mounts and
builds from exist, ports on loopback only), the pipeline it runs passes
`sluice validate`, and — when tests/.work/compose-venv has docker-compose
1.29.2 (Python 3.9) — `docker-compose config` accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from sluice_e2e import REPO

COMPOSE = REPO / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_dependencies_mounts_and_ports():
    c = compose()
    services = c["services"]
    assert {"localstack", "localstack-init", "opensearch", "dashboards", "dashboards-init", "sluice"} <= set(services)
    for name, s in services.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"
            elif cond["condition"] == "service_completed_successfully":
                assert "command" in services[dep], f"{name} waits for {dep} to finish"
        for port in s.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (REPO / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in (c.get("volumes") or {}), f"{name} uses undeclared volume {src}"
        if "build" in s:
            assert (REPO / s["build"] / "Dockerfile").is_file()
    init = " ".join(services["dashboards-init"]["command"])
    assert "dashboards.ndjson" in init and "saved_objects/_import" in init and "trip_statistics.template.json" in init
    ls_init = " ".join(services["localstack-init"]["command"])
    assert "create-stream" in ls_init and "s3 mb" in ls_init
    assert "kinesis" in services["localstack"]["environment"]["SERVICES"]
    assert "s3" in services["localstack"]["environment"]["SERVICES"]


def test_the_pipeline_it_runs_validates(sluice, tmp_path):
    s = compose()["services"]["sluice"]
    assert s["command"][0] == "run"
    pipeline = REPO / s["command"][1]
    env = {k: v for k, v in s["environment"].items()}
    env["SLUICE_OUT"] = str(tmp_path / "out")
    env["SLUICE_PARQUET_PATH"] = str(tmp_path / "out/trips")
    r = sluice.validate(pipeline, env=env)
    assert r.returncode == 0, r.describe()
    assert "sink    trips_search" in r.output and "sink    trips_parquet" in r.output, r.output


def test_docker_compose_config_accepts_it():
    # No container engine here: docker-compose 1.29.2 (Python) parses and
    # validates the file the way the engine's client would.
    made = subprocess.run([str(REPO / "tests/scripts/compose-venv.sh")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    exe = Path(made.stdout.strip())
    r = subprocess.run([str(exe), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), "-f", str(COMPOSE), "config", "--services"], capture_output=True, text=True, cwd=REPO)
    assert set(r.stdout.split()) >= {"localstack", "opensearch", "dashboards", "sluice"}, r.stdout
