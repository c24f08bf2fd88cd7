"""Helpers for the end-to-end tests: running the binary, generated datasets,
and reading the outputs back with pyarrow and DuckDB."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SLUICE = Path(os.environ.get("SLUICE_BIN", REPO / "target/release/sluice"))
PLUGINS = Path(os.environ.get("SLUICE_TEST_PLUGINS", REPO / "plugins/target/wasm32-wasip2/release"))
FIXTURES = REPO / "tests/fixtures"
TEST_PIPELINES = REPO / "tests/pipelines"
TAXI_LOCAL = REPO / "pipelines/taxi-local.toml"

REJECTION_CODES = {"malformed", "missing_field", "not_numeric", "bad_timestamp", "out_of_bounds",
                   "bad_duration", "bad_passenger_count"}
DLQ_KEYS = {"stage", "code", "message", "source", "partition", "seq", "sub", "record", "time"}
PARQUET_FILE = re.compile(r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/vendorId=\d+/part-[^/]+\.parquet$")

# Default per-run limit; a run that takes longer is hung, not slow.
RUN_TIMEOUT = float(os.environ.get("SLUICE_TEST_RUN_TIMEOUT", "300"))


def sample(xs, n=10):
    xs = sorted(xs, key=str)
    more = f" … ({len(xs)} in all)" if len(xs) > n else ""
    return f"{xs[:n]}{more}"


# --- running the binary ---------------------------------------------------------------------------

@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    summary: dict | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        tail = lambda s: "\n".join(s.splitlines()[-40:])  # noqa: E731
        return (f"$ {' '.join(self.args)}\nexit {self.returncode}\n--- stdout (tail)\n{tail(self.stdout)}"
                f"\n--- stderr (tail)\n{tail(self.stderr)}")


def base_env(extra: dict | None = None) -> dict:
    """The caller's environment without any SLUICE_* knob (so the developer's
    shell cannot change a test), plus the plugin and fixture directories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_PLUGINS"] = str(PLUGINS)
    env["SLUICE_FIXTURES"] = str(FIXTURES)
    env.setdefault("RUST_BACKTRACE", "1")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


class Sluice:
    def __init__(self, logs: Path):
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs = 0

    def cmd(self, *args, env: dict | None = None, timeout: float = RUN_TIMEOUT, cwd: Path = REPO) -> Result:
        argv = [str(SLUICE), *map(str, args)]
        try:
            p = subprocess.run(argv, cwd=cwd, env=base_env(env), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            raise AssertionError(f"sluice did not finish within {timeout}s\n"
                                 + Result(argv, -1, out, err).describe()) from None
        return Result(argv, p.returncode, p.stdout, p.stderr)

    def run(self, pipeline: Path | str, *, env: dict | None = None, timeout: float = RUN_TIMEOUT,
            check: bool = True, extra_args: tuple = ()) -> Result:
        """`sluice run PIPELINE --summary-json F`; by default asserts exit 0."""
        self.runs += 1
        summary_path = self.logs / f"summary-{self.runs}.json"
        r = self.cmd("run", pipeline, "--summary-json", summary_path, *extra_args, env=env, timeout=timeout)
        if summary_path.exists():
            r.summary = json.loads(summary_path.read_text())
        if check:
            assert r.returncode == 0, r.describe()
            assert r.summary is not None, "no --summary-json file written\n" + r.describe()
        return r

    def spawn(self, pipeline: Path | str, *, env: dict | None = None) -> "Running":
        """Start `sluice run` in the background (for signals)."""
        self.runs += 1
        n = self.runs
        summary_path = self.logs / f"summary-{n}.json"
        out = open(self.logs / f"run-{n}.stdout", "w+")
        err = open(self.logs / f"run-{n}.stderr", "w+")
        argv = [str(SLUICE), "run", str(pipeline), "--summary-json", str(summary_path)]
        p = subprocess.Popen(argv, cwd=REPO, env=base_env(env), stdout=out, stderr=err)
        return Running(argv, p, out, err, summary_path)

    def validate(self, pipeline: Path | str, *, env: dict | None = None) -> Result:
        return self.cmd("validate", pipeline, env=env, timeout=120)


@dataclass
class Running:
    argv: list[str]
    proc: subprocess.Popen
    out: Any
    err: Any
    summary_path: Path

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = RUN_TIMEOUT) -> Result:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sluice did not exit within {timeout}s\n" + self.result().describe()) from None
        return self.result()

    def result(self) -> Result:
        self.out.seek(0)
        self.err.seek(0)
        r = Result(self.argv, self.proc.returncode if self.proc.returncode is not None else -1,
                   self.out.read(), self.err.read())
        if self.summary_path.exists():
            try:
                r.summary = json.loads(self.summary_path.read_text())
            except json.JSONDecodeError:
                r.summary = None
        return r

    def kill9(self) -> bool:
        """SIGKILL; False when the process had already exited."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return True


# --- generated input ------------------------------------------------------------------------------

@dataclass
class Dataset:
    path: Path
    labels_path: Path
    rows: int
    labels: list[dict] = field(default_factory=list)

    @classmethod
    def generate(cls, root: Path, *, rows: int, seed: int, bad: float, ext: str) -> "Dataset":
        path = root / f"taxi-{rows}-{seed}-{bad}.{ext}"
        labels_path = root / f"taxi-{rows}-{seed}-{bad}.{ext}.labels.ndjson"
        r = Sluice(root / "logs").cmd("gen", "taxi", "--rows", rows, "--seed", seed, "--bad-fraction", bad,
                                      "--out", path, "--labels", labels_path)
        assert r.returncode == 0, r.describe()
        labels = [json.loads(line) for line in labels_path.read_text().splitlines() if line.strip()]
        assert len(labels) == rows, f"{len(labels)} labels for {rows} rows"
        ids = Counter(lab["id"] for lab in labels)
        dup = [i for i, c in ids.items() if c > 1]
        assert not dup, f"the generator repeated ids: {sample(dup)}"
        bad_codes = {lab["code"] for lab in labels} - REJECTION_CODES - {None}
        assert not bad_codes, f"unknown label codes {bad_codes}"
        return cls(path, labels_path, rows, labels)

    @cached_property
    def ids(self) -> set[str]:
        return {lab["id"] for lab in self.labels}

    @cached_property
    def good_ids(self) -> set[str]:
        return {lab["id"] for lab in self.labels if lab["code"] is None}

    @cached_property
    def bad(self) -> dict[str, str]:
        return {lab["id"]: lab["code"] for lab in self.labels if lab["code"] is not None}

    @cached_property
    def by_line(self) -> dict[int, dict]:
        return {int(lab["line"]): lab for lab in self.labels}

    @cached_property
    def _good_rows(self) -> dict[str, dict]:
        return self._read_good_rows()

    def good_rows(self) -> dict[str, dict]:
        """Input rows of the good records, by id, as typed Python values."""
        return self._good_rows

    def _read_good_rows(self) -> dict[str, dict]:
        good = self.good_ids
        rows: dict[str, dict] = {}
        with open(self.path, newline="") as f:
            if self.path.suffix == ".csv":
                header = next(csv.reader([f.readline()]))
                for line in f:
                    try:
                        vals = next(csv.reader(io.StringIO(line)))
                    except (csv.Error, StopIteration):
                        continue
                    if len(vals) == len(header) and vals[0] in good:
                        rows[vals[0]] = typed_input(dict(zip(header, vals)))
            else:
                for line in f:
                    try:
                        doc = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(doc, dict) and doc.get("id") in good:
                        rows[doc["id"]] = typed_input(doc)
        assert set(rows) == good, f"could not re-read {len(good - set(rows))} good rows from {self.path}"
        return rows


def parse_ts(v: str) -> datetime:
    v = v.strip().replace("T", " ").rstrip("Z")
    return datetime.strptime(v, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def typed_input(row: dict) -> dict:
    def opt(v, conv):
        return None if v is None or v == "" else conv(v)

    return {
        "id": str(row["id"]),
        "vendorId": int(row["vendorId"]),
        "pickupDate": parse_ts(str(row["pickupDate"])),
        "dropoffDate": parse_ts(str(row["dropoffDate"])),
        "passengerCount": int(row["passengerCount"]),
        "pickupLongitude": float(row["pickupLongitude"]),
        "pickupLatitude": float(row["pickupLatitude"]),
        "dropoffLongitude": float(row["dropoffLongitude"]),
        "dropoffLatitude": float(row["dropoffLatitude"]),
        "storeAndFwdFlag": str(row["storeAndFwdFlag"]),
        "gcDistance": opt(row.get("gcDistance"), float),
        "tripDuration": opt(row.get("tripDuration"), int),
        "googleDistance": opt(row.get("googleDistance"), float),
        "googleDuration": opt(row.get("googleDuration"), int),
    }


def haversine_km(lat1, lon1, lat2, lon2) -> float:
    r = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


# --- reading the outputs --------------------------------------------------------------------------

def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def inprogress_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*") if p.is_file() and ".inprogress" in p.name)


def read_parquet(root: Path, columns: list[str] | None = None):
    """The sink's output as one pyarrow Table (Hive partitions as columns),
    sorted by id; an empty table when nothing was written."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    if not root.exists() or not parquet_files(root):
        return pa.table({"id": pa.array([], pa.string())})
    ds = pads.dataset(str(root), format="parquet", partitioning="hive")
    return ds.to_table(columns=columns).sort_by("id")


def parquet_ids(root: Path) -> list[str]:
    return read_parquet(root, columns=["id"]).column("id").to_pylist()


def duckdb_stats(root: Path) -> dict:
    """Counts computed by DuckDB straight from the files (second reader)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = str(root / "**" / "*.parquet")
    row = con.execute(f"""
        SELECT count(*), count(DISTINCT id),
               count(*) FILTER (WHERE year <> year(pickupDate) OR month <> month(pickupDate)
                                   OR day <> day(pickupDate) OR hour <> hour(pickupDate)),
               count(*) FILTER (WHERE gcDistance IS NULL OR gcDistance < 0),
               count(*) FILTER (WHERE tripDuration IS NULL OR tripDuration <= 0),
               coalesce(sum(passengerCount), 0),
               count(DISTINCT vendorId)
        FROM read_parquet('{glob}', hive_partitioning = 1)
    """).fetchone()
    keys = ["rows", "distinct_ids", "partition_mismatch", "bad_gc", "bad_duration", "passengers", "vendors"]
    return dict(zip(keys, row))


def read_dlq(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AssertionError(f"{path}:{n} is not JSON ({e}): {line[:200]!r}") from None
    return out


def read_ndjson_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def dlq_id(entry: dict, by_line: dict[int, dict] | None) -> str:
    """The generated id a DLQ entry stands for: the record's own id when it
    parsed, else the label of its line (`seq` is the line number)."""
    rec = entry.get("record")
    if isinstance(rec, str):
        try:
            rec = json.loads(rec)
        except json.JSONDecodeError:
            pass
    own = str(rec["id"]) if isinstance(rec, dict) and rec.get("id") not in (None, "") else None
    if by_line is None:
        assert own is not None, f"DLQ entry without a record id: {entry}"
        return own
    seq = int(entry["seq"])
    assert seq in by_line, f"DLQ entry's seq {seq} is not a generated line: {entry}"
    # seq is the line number: where the record kept its id, both must agree.
    assert own is None or own == by_line[seq]["id"], f"DLQ seq {seq} is line of {by_line[seq]['id']}: {entry}"
    return by_line[seq]["id"]


# --- the exactly-once ledger ----------------------------------------------------------------------

@dataclass
class Ledger:
    pq_ids: list[str]
    dlq: list[dict]
    dlq_ids: list[str]


def ledger(ds: Dataset, parquet_root: Path, dlq_path: Path) -> Ledger:
    by_line = ds.by_line
    entries = read_dlq(dlq_path)
    ids = [dlq_id(e, by_line) for e in entries]
    return Ledger(parquet_ids(parquet_root), entries, ids)


def assert_no_duplicates(name: str, ids: list[str]) -> None:
    dup = [i for i, c in Counter(ids).items() if c > 1]
    assert not dup, f"{len(dup)} ids appear more than once in {name}: {sample(dup)}"


def assert_exactly_once(ds: Dataset, led: Ledger, *, source: str = "sources.trips",
                        validate: str = "stages.validate", quarantined: dict[str, str] | None = None) -> None:
    """Every generated id exactly once in Parquet or the DLQ; good ids in
    Parquet, bad ids in the DLQ with their label's code and the right stage.
    `quarantined` maps good ids expected in the DLQ to their stage instead."""
    quarantined = quarantined or {}
    assert_no_duplicates("the Parquet output", led.pq_ids)
    assert_no_duplicates("the DLQ", led.dlq_ids)
    pq, dlq = set(led.pq_ids), set(led.dlq_ids)
    both = pq & dlq
    assert not both, f"{len(both)} ids both in Parquet and in the DLQ: {sample(both)}"
    unknown = (pq | dlq) - ds.ids
    assert not unknown, f"{len(unknown)} ids that were never generated: {sample(unknown)}"
    lost = ds.ids - pq - dlq
    assert not lost, f"{len(lost)} of {ds.rows} generated ids are neither in Parquet nor the DLQ: {sample(lost)}"

    want_pq = ds.good_ids - set(quarantined)
    assert pq == want_pq, (f"Parquet ids differ from the good rows: missing {sample(want_pq - pq)}, "
                           f"unexpected {sample(pq - want_pq)}")
    bad = ds.bad
    wrong = []
    for e, i in zip(led.dlq, led.dlq_ids):
        missing = DLQ_KEYS - set(e)
        assert not missing, f"DLQ entry lacks {missing}: {e}"
        assert isinstance(e["message"], str) and e["message"], f"DLQ entry without a message: {e}"
        if i in quarantined:
            if e["stage"] != quarantined[i]:
                wrong.append((i, "stage", e["stage"], quarantined[i]))
            continue
        if e["code"] != bad.get(i):
            wrong.append((i, "code", e["code"], bad.get(i)))
        stages = {source, validate} if bad.get(i) == "malformed" else {validate}
        if e["stage"] not in stages:
            wrong.append((i, "stage", e["stage"], stages))
    assert not wrong, f"{len(wrong)} DLQ entries wrong (id, field, got, want): {sample(wrong)}"


def assert_parquet_layout(root: Path) -> None:
    import pyarrow.parquet as pq

    files = parquet_files(root)
    assert files, f"no Parquet files under {root}"
    bad = [str(f.relative_to(root)) for f in files if not PARQUET_FILE.search(f.relative_to(root).as_posix())]
    assert not bad, f"files outside the Hive layout: {sample(bad)}"
    names = set(pq.read_schema(files[0]).names)
    inside = names & {"year", "month", "day", "hour", "vendorId"}
    assert not inside, f"partition columns stored inside {files[0]}: {inside}"


def assert_values(table, inputs: dict[str, dict], source: str) -> None:
    """Every Parquet row against its input row and the enrich rules."""
    import pyarrow as pa

    ts = table.schema.field("pickupDate").type
    assert pa.types.is_timestamp(ts) and ts.tz in ("UTC", "+00:00", "Etc/UTC"), f"pickupDate is {ts}"
    # Timestamps as epoch ms: converting 10^5 tz-aware values to datetime is slow.
    ms = table
    for k in ("pickupDate", "dropoffDate"):
        ms = ms.set_column(ms.schema.get_field_index(k), k, ms.column(k).cast(pa.int64()))
    rows = ms.to_pylist()
    assert len(rows) == len(inputs), f"{len(rows)} Parquet rows for {len(inputs)} good inputs"
    errors = []
    for r in rows:
        i = inputs[r["id"]]
        for k in ("vendorId", "passengerCount", "pickupLongitude", "pickupLatitude", "dropoffLongitude",
                  "dropoffLatitude", "storeAndFwdFlag", "googleDistance", "googleDuration"):
            if r[k] != i[k]:
                errors.append((r["id"], k, r[k], i[k]))
        for k in ("pickupDate", "dropoffDate"):
            if r[k] != int(i[k].timestamp()) * 1000:
                errors.append((r["id"], k, r[k], i[k].isoformat()))
        pick = i["pickupDate"]
        for k, want in (("year", pick.year), ("month", pick.month), ("day", pick.day), ("hour", pick.hour)):
            if r[k] != want:
                errors.append((r["id"], k, r[k], want))
        if r["source"] != source:
            errors.append((r["id"], "source", r["source"], source))
        want_gc = i["gcDistance"]
        if want_gc is None:
            want_gc = haversine_km(i["pickupLatitude"], i["pickupLongitude"], i["dropoffLatitude"],
                                   i["dropoffLongitude"])
            ok = r["gcDistance"] is not None and math.isclose(r["gcDistance"], want_gc, rel_tol=1e-3, abs_tol=1e-6)
        else:
            ok = r["gcDistance"] == want_gc
        if not ok or r["gcDistance"] < 0:
            errors.append((r["id"], "gcDistance", r["gcDistance"], want_gc))
        want_dur = i["tripDuration"]
        if want_dur is None:
            want_dur = int((i["dropoffDate"] - i["pickupDate"]).total_seconds())
        if r["tripDuration"] != want_dur or want_dur <= 0:
            errors.append((r["id"], "tripDuration", r["tripDuration"], want_dur))
        if len(errors) > 20:
            break
    assert not errors, f"Parquet values differ from the input (id, column, got, want): {errors[:20]}"
    positive = sum(1 for r in rows if r["gcDistance"] > 0)
    assert positive >= 0.99 * len(rows), f"only {positive}/{len(rows)} trips have gcDistance > 0"


def assert_duckdb_agrees(root: Path, table) -> None:
    import pyarrow.compute as pc

    st = duckdb_stats(root)
    assert st["rows"] == table.num_rows, f"DuckDB reads {st['rows']} rows, pyarrow {table.num_rows}"
    assert st["distinct_ids"] == table.num_rows, f"DuckDB: {st['distinct_ids']} distinct ids in {st['rows']} rows"
    assert st["partition_mismatch"] == 0, f"DuckDB: {st['partition_mismatch']} rows in a partition not their pickupDate's"
    assert st["bad_gc"] == 0 and st["bad_duration"] == 0, f"DuckDB: {st}"
    assert st["passengers"] == pc.sum(table.column("passengerCount")).as_py(), f"DuckDB: {st}"
    assert st["vendors"] == 2, f"DuckDB: vendors {st['vendors']}"


def wait_for(pred, timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def kill_after_checkpoints(sluice: "Sluice", pipeline: Path, *, checkpoint: Path, kills: int, rng, max_delay: float,
                           env: dict | None = None, wait: float = 120, poll: float = 0.01,
                           run_timeout: float = 300) -> tuple["Result", int, list[str]]:
    """Runs `pipeline` again and again, each run killed with SIGKILL a random
    moment (up to `max_delay` s) after it wrote a checkpoint (`checkpoint`
    changed), until `kills` landed; then one run to the end, which must exit 0.
    Returns that run's result, the kills that landed (a run may end before
    its kill) and when each landed."""
    landed, moments = 0, []
    while True:
        run = sluice.spawn(pipeline, env=env)
        if landed < kills:
            before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
            wait_for(lambda: (checkpoint.exists() and checkpoint.stat().st_mtime_ns != before)
                     or run.proc.poll() is not None, timeout=wait, interval=poll)
            delay = rng.uniform(0.0, max_delay)
            time.sleep(delay)
            if run.kill9():
                landed += 1
                moments.append(f"{delay:.2f}s after a checkpoint")
                continue
        final = run.wait(timeout=run_timeout)
        assert final.returncode == 0, final.describe()
        return final, landed, moments


# Fixtures shared by every pytest folder (each conftest imports them, which
# registers them there); they use the folder's own `sluice_bin` fixture.
@pytest.fixture(scope="session")
def datasets(tmp_path_factory, sluice_bin):
    """Generated inputs, made once per session and shared (they are read-only)."""
    root = tmp_path_factory.mktemp("datasets")
    cache: dict[tuple, Dataset] = {}

    def get(rows: int, seed: int = 1, bad: float = 0.05, ext: str = "csv") -> Dataset:
        key = (rows, seed, bad, ext)
        if key not in cache:
            cache[key] = Dataset.generate(root, rows=rows, seed=seed, bad=bad, ext=ext)
        return cache[key]

    return get


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """A fresh output directory per test (SLUICE_OUT)."""
    d = tmp_path / "out"
    d.mkdir()
    return d
