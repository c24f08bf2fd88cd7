"""`sluice validate` on good and malformed pipeline files.

Each file in tests/fixtures/bad-pipelines/ marks the offending line(s) with
`# <-- error` and states the expected key path and message as header
comments; validate must exit 2 and print `FILE:LINE: KEY.PATH: message`
pointing at a marked line. `sluice run` must refuse the same files without
writing anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice_e2e import FIXTURES, REPO, TAXI_LOCAL, TEST_PIPELINES

BAD = sorted((FIXTURES / "bad-pipelines").glob("*.toml"))
MARK = re.compile(r"#\s*<-- error\s*$")
ERROR_LINE = re.compile(r"^(?P<file>\S[^:]*):(?P<line>\d+): (?P<rest>.*)$")


def expectation(path: Path) -> tuple[set[int], str | None, str]:
    text = path.read_text().splitlines()
    lines = {n for n, line in enumerate(text, 1) if MARK.search(line)}
    header = dict(re.findall(r"^# expect-(path|message): (.*)$", "\n".join(text), re.M))
    assert lines and "message" in header, f"{path} lacks its `# <-- error` marker or expectations"
    return lines, header.get("path"), header["message"]


def env_for(out: Path) -> dict:
    return {"SLUICE_INPUT": FIXTURES / "taxi-sample.csv", "SLUICE_OUT": out}


def matching_errors(output: str, rel: str, lines: set[int], path_re: str | None, msg_re: str) -> list[str]:
    hits = []
    for raw in output.splitlines():
        m = ERROR_LINE.match(raw.strip())
        if not m or m["file"] != rel or int(m["line"]) not in lines:
            continue
        rest = m["rest"]
        if path_re is not None:
            pm = re.match(rf"(?:{path_re}): (?P<msg>.*)$", rest)
            if not pm:
                continue
            rest = pm["msg"]
        if re.search(msg_re, rest):
            hits.append(raw)
    return hits


def test_fixtures_cover_the_required_kinds():
    names = {p.stem for p in BAD}
    required = {"unknown-key", "missing-input", "cycle", "missing-plugin", "core-module-plugin", "not-wasm-plugin",
                "bad-duration", "bad-env", "toml-syntax",
                # What `run` would meet only when starting sinks, DLQ and checkpoint store:
                "parquet-partition-undeclared", "parquet-s3-sse", "sink-path-under-file", "dlq-path-is-dir",
                "checkpoint-dir-is-file", "checkpoint-bad-s3-url", "checkpoint-foreign",
                # Destinations that would destroy each other's data:
                "sinks-overlap", "dlq-overlaps-sink",
                # Key paths must not be doubled:
                "unknown-stage-key", "unknown-top-level-key"}
    assert required <= names, f"missing fixtures: {required - names}"


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.stem)
def test_validate_names_file_line_and_key(bad, sluice, scratch):
    lines, path_re, msg_re = expectation(bad)
    rel = bad.relative_to(REPO).as_posix()
    r = sluice.validate(rel, env=env_for(scratch / "out"))
    assert r.returncode == 2, f"want exit 2\n{r.describe()}"
    hits = matching_errors(r.output, rel, lines, path_re, msg_re)
    want = f"{rel}:{sorted(lines)}: {path_re or ''}: /{msg_re}/"
    assert hits, f"no error line like {want}\n{r.describe()}"


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.stem)
def test_run_refuses_and_writes_nothing(bad, sluice, scratch):
    lines, path_re, msg_re = expectation(bad)
    rel = bad.relative_to(REPO).as_posix()
    out = scratch / "out"
    r = sluice.run(rel, env=env_for(out), check=False, timeout=60)
    assert r.returncode != 0, f"sluice run accepted a malformed pipeline\n{r.describe()}"
    assert matching_errors(r.output, rel, lines, path_re, msg_re), r.describe()
    written = sorted(str(p) for p in out.rglob("*")) if out.exists() else []
    assert not written, f"sluice run wrote {written}"


def test_missing_plugin_hint_names_a_command_that_exists(sluice, scratch):
    rel = (FIXTURES / "bad-pipelines/missing-plugin.toml").relative_to(REPO).as_posix()
    r = sluice.validate(rel, env=env_for(scratch / "out"))
    assert r.returncode == 2, r.describe()
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for t in re.findall(r"`make ([\w-]+)`", r.stderr):
        assert t in targets, f"the hint names `make {t}`, which the Makefile lacks\n{r.describe()}"
    scripts = re.findall(r"`(tests/scripts/[\w.-]+)", r.stderr)
    assert scripts and all((REPO / s).is_file() for s in scripts), f"no runnable build command named\n{r.describe()}"


def test_run_refuses_a_locked_checkpoint_and_validate_says_so_without_writing(sluice, scratch):
    """A second process on the same checkpoint: validate reports it (run would fail on it)."""
    import fcntl
    ckpt = scratch / "ckpt"
    ckpt.mkdir()
    lock = open(ckpt / "LOCK", "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    text = (REPO / "tests/pipelines/taxi-json.toml").read_text().replace(
        '${SLUICE_OUT:-out}/checkpoint', str(ckpt))
    pipeline = scratch / "locked.toml"
    pipeline.write_text(text)
    try:
        r = sluice.validate(pipeline, env=env_for(scratch / "out"))
        assert r.returncode == 2 and "in use by another sluice process" in r.stderr, r.describe()
        assert re.search(rf"{re.escape(str(pipeline))}:\d+: checkpoint\.dir: ", r.stderr), r.describe()
        assert sorted(p.name for p in ckpt.iterdir()) == ["LOCK"] and not (scratch / "out").exists()
    finally:
        lock.close()


def test_validate_accepts_taxi_local_and_prints_the_graph(sluice, scratch):
    r = sluice.validate("pipelines/taxi-local.toml", env=env_for(scratch / "out"))
    assert r.returncode == 0, r.describe()
    for node in ("trips", "validate", "enrich", "trips_parquet"):
        assert node in r.stdout, f"graph output lacks {node}\n{r.describe()}"
    conversions = [l for l in r.stdout.splitlines() if re.search(r"(?i)conver", l) and "json" in l.lower()]
    assert not conversions, f"an all-Arrow pipeline should need no conversion: {conversions}"
    assert not (scratch / "out").exists(), "validate wrote output"


def test_validate_reports_conversions_between_json_and_arrow_neighbours(sluice, scratch):
    rel = (TEST_PIPELINES / "mixed-formats.toml").relative_to(REPO).as_posix()
    r = sluice.validate(rel, env=env_for(scratch / "out"))
    assert r.returncode == 0, r.describe()
    lines = [l.lower() for l in r.stdout.splitlines()]
    conv = [l for l in lines if "conver" in l and "json" in l and "arrow" in l]
    # validate (arrow) → enrich (json plugin) and enrich → the Parquet sink (arrow).
    assert any("validate" in l and "enrich" in l for l in conv), f"no validate→enrich conversion in\n{r.stdout}"
    assert any("enrich" in l and "trips_parquet" in l for l in conv), f"no enrich→sink conversion in\n{r.stdout}"


@pytest.mark.parametrize("pipeline", sorted(TEST_PIPELINES.glob("*.toml")) + [TAXI_LOCAL], ids=lambda p: p.stem)
def test_every_shipped_pipeline_validates(pipeline, sluice, scratch):
    r = sluice.validate(pipeline, env=env_for(scratch / "out"))
    assert r.returncode == 0, r.describe()
