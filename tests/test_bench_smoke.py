"""Smoke runs of every script in bench/ at tiny sizes: each exits 0 and writes its figures. The figures are
never judged (a second of load on a shared machine says nothing); what fails here is a benchmark that no
longer runs, e.g. because the trial's forms changed under it.

The timing benchmarks and the save profile create and drop their own `*bench*` databases on a PostgreSQL server,
so they run in the PostgreSQL pass only, on the server of EDC_TEST_DATABASE_URL (its maintenance database `postgres`).
verify_exports.py reads the database the settings name: it runs in the SQLite pass, on the test's own database
(the PostgreSQL pass already exports through export_bench.py).

Whatever happens, nothing a run started outlives its test: the script cleans up on exit and on SIGTERM (sent
when it overruns), and the teardown then kills any process still carrying the run's marker in its environment
(gunicorn runs in its own session), drops the run's database and deletes the run's temporary files (its TMPDIR
is under the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import BACKEND, project_root
from test_demo_subjects import TRIAL_FORMS, invoke

BENCH = project_root() / "bench"
RUN_TIMEOUT = 240      # seconds; a tiny run takes a few, or tens on a loaded machine
MARKER = "BENCH_SMOKE_RUN"  # no EDC_ prefix: the scripts pass every other variable on to what they start
TINY = ["--clients", "1", "--seconds", "0.5", "--rounds", "1", "--warmup", "0", "--workers", "1", "--threads", "2"]
STUDY = ["--subjects", "1", "--seed", "0", "--jobs", "1"]  # the monitoring and export smoke runs share this study's cache


def maintenance_url() -> str:
    """The PostgreSQL server of the test database, as its maintenance database `postgres` (same host and user)."""
    url = sa.engine.make_url(os.environ["EDC_TEST_DATABASE_URL"])
    return url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)


def database_name() -> str:
    """A name of our own: the scripts only drop names containing `bench`; pid and random part keep runs apart."""
    return f"edc_bench_smoke_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class BenchRun:
    """Runs bench scripts as the project's interpreter would; `cleanup()` undoes whatever they left."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.marker = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.databases: list[str] = []

    def database(self) -> str:
        name = database_name()
        self.databases.append(name)
        return name

    def __call__(self, script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        tmp = self.tmp_path / "tmp"
        tmp.mkdir(exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if k != "EDC_BENCH_PG_URL"}
        environ.update(env or {})
        environ.update({"TMPDIR": str(tmp), MARKER: self.marker, "PYTHONUNBUFFERED": "1"})
        command = [sys.executable, str(BENCH / script), *args]
        proc = subprocess.Popen(command, cwd=project_root(), env=environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the script stops gunicorn and drops its database on SIGTERM
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"{script} ran over {RUN_TIMEOUT} s:\n{out[-3000:]}\n{err[-3000:]}")
        result = subprocess.CompletedProcess(command, proc.returncode, out, err)
        assert result.returncode == 0, f"{script} exited {result.returncode}:\n{out[-3000:]}\n{err[-5000:]}"
        return result

    def cleanup(self) -> None:
        self._kill_marked()
        shutil.rmtree(self.tmp_path / "tmp", ignore_errors=True)  # keys, forms copy, logs of a killed run
        if self.databases:
            import psycopg

            with psycopg.connect(maintenance_url(), autocommit=True, connect_timeout=10) as conn:
                for name in self.databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _kill_marked(self) -> None:
        """SIGKILL every process whose environment carries this run's marker (none, when the script cleaned up)."""
        needle = f"{MARKER}={self.marker}".encode()
        for attempt in range(3):
            found = []
            for entry in Path("/proc").glob("[0-9]*"):
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:  # gone, or not ours to read
                    continue
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not found:
                return
            time.sleep(0.5)


@pytest.fixture
def bench(tmp_path):
    run = BenchRun(tmp_path)
    yield run
    run.cleanup()


@pytest.fixture(scope="module")
def study_cache(tmp_path_factory) -> Iterator[Path]:
    """The monitoring benchmark's study dumps, shared by its smoke run and the export one's (built by the first)."""
    path = tmp_path_factory.mktemp("bench-cache")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def read_json(path: Path) -> dict:
    assert path.exists(), f"no results file {path}"
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------- PostgreSQL

@pytest.mark.postgresql_only
def test_http_bench_runs(bench, tmp_path):
    out = tmp_path / "http.json"
    bench("http_bench.py", *TINY, "--pg", maintenance_url(), "--db-name", bench.database(), "--json-out", str(out))
    doc = read_json(out)
    assert doc["benchmark"] == "http_bench"
    for endpoint in ("bare", "me"):
        figures = doc["results"]["1"][endpoint]
        assert figures["requests"] > 0 and figures["errors"] == 0
        assert {"throughput", "p50_ms", "p95_ms", "p99_ms"} <= set(figures)
    assert {"p50_delta_ms", "throughput_ratio"} <= set(doc["derived"]["1"])


@pytest.mark.postgresql_only
def test_entry_bench_runs(bench, tmp_path):
    out = tmp_path / "entry.json"
    bench("entry_bench.py", *TINY, "--subjects", "1", "--validation-repeats", "1", "--pg", maintenance_url(),
          "--db-name", bench.database(), "--json-out", str(out))
    doc = read_json(out)
    assert doc["benchmark"] == "entry_bench"
    for scenario in ("insert", "entry"):
        figures = doc["results"]["1"][scenario]
        assert figures["requests"] > 0 and figures["errors"] == 0
    assert {"throughput_ratio", "p50_delta_ms"} <= set(doc["derived"]["1"])
    assert doc["validation"]["validate_us"] > 0
    assert doc["rows"]["entry_rows"] > 0 and doc["rows"]["insert_rows"] > 0
    assert doc["rows"]["queries"] == 0  # the payload fires no check
    assert len(doc["targets"]) == 3


@pytest.mark.postgresql_only
def test_monitoring_bench_runs(bench, tmp_path, study_cache):
    out = tmp_path / "monitoring.json"
    bench("monitoring_bench.py", *TINY, *STUDY, "--seconds", "0.1", "--pg", maintenance_url(),
          "--db-name", bench.database(), "--cache-dir", str(study_cache), "--json-out", str(out))
    doc = read_json(out)
    assert doc["benchmark"] == "monitoring_bench"
    assert doc["rows"]["subjects"] == 1 and doc["rows"]["entries"] > 0 and doc["preparation"]["how"]
    assert set(doc["results"]) == set(doc["endpoints"]) and len(doc["endpoints"]) == 10
    for name, figures in doc["results"].items():
        assert figures["requests"] > 0 and figures["errors"] == 0, name
    assert any(study_cache.glob("monitoring-1-0-w*.dump"))  # for the export smoke run


@pytest.mark.postgresql_only
def test_export_bench_runs(bench, tmp_path, study_cache):
    out = tmp_path / "export.json"
    bench("export_bench.py", *STUDY, "--pg", maintenance_url(), "--db-name", bench.database(),
          "--cache-dir", str(study_cache), "--json-out", str(out))
    doc = read_json(out)
    assert doc["benchmark"] == "export_bench"
    assert doc["results"]["large"]["fhir"]["subjects"] == 1
    for size in ("small", "large"):
        fhir, csv = doc["results"][size]["fhir"], doc["results"][size]["csv"]
        assert fhir["resources"] > 0 and fhir["baseline"]["resources"] == fhir["resources"]
        assert fhir["ratio_to_baseline"] > 0 and fhir["peak_rss_mb"] > 0
        assert csv["item_values"] > 0 and csv["item_values_per_second"] > 0
    assert len(doc["verdicts"]) == 4


@pytest.mark.postgresql_only
def test_save_profile_runs(bench, tmp_path):
    out = tmp_path / "profile.json"
    bench("save_profile.py", "--subjects", "1", "--prior", "1", "--saves", "3", "--captures", "2", "--pg", maintenance_url(),
          "--db-name", bench.database(), "--json-out", str(out))
    doc = read_json(out)
    assert doc["benchmark"] == "save_profile"
    statements = doc["captured"]["statements"]
    assert len(statements) > 2 and statements[-1]["sql"] == "COMMIT"
    assert any(st["sql"].startswith("INSERT INTO entries") for st in statements)
    assert doc["captured"]["round_trips"] >= len(statements)  # BEGIN is a round trip of its own
    assert doc["steps"][0]["share"] == 1.0 and len(doc["steps"]) > 2
    assert doc["per_save"]["median_ms"] > 0 and doc["statement_price"]["orm_select"]["wall_ms"] > 0


# ------------------------------------------------------------------------------------------------- SQLite

@pytest.mark.skipif(BACKEND == "postgresql", reason="the PostgreSQL pass exports through export_bench.py; once is enough")
def test_verify_exports_runs(bench, app_factory, database_url, keys_dir, tmp_path):
    app = app_factory(forms_dir=TRIAL_FORMS)
    assert invoke(app, "seed-demo").exit_code == 0
    assert invoke(app, "seed-demo", "--subjects", "1").exit_code == 0
    result = bench("verify_exports.py", env={
        "EDC_ENV": "development", "EDC_DATABASE_URL": database_url, "EDC_KEYS_DIR": keys_dir,
        "EDC_FORMS_DIR": TRIAL_FORMS, "EDC_EXPORT_DIR": str(tmp_path / "exports"),
    })
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study: 1 subjects")
    for prefix in ("csv: every file parses", "odm:", "fhir:"):
        assert any(line.startswith(prefix) for line in lines), (prefix, result.stdout)
    assert lines[-1] == "all checks passed"


@pytest.mark.skipif(BACKEND == "postgresql", reason="measures SQLite only; once is enough")
def test_sqlite_sync_runs(bench, tmp_path):
    out = tmp_path / "sync.json"
    bench("sqlite_sync.py", "--subjects", "1", "--prior", "1", "--saves", "3", "--rounds", "2", "--json-out", str(out))
    doc = read_json(out)
    assert set(doc["settings"]) == {"NORMAL", "FULL"} and all(f["saves"] == 6 for f in doc["settings"].values())
    assert all(f["median_ms"] > 0 and f["bare_commit_median_ms"] > 0 for f in doc["settings"].values())


@pytest.mark.skipif(BACKEND == "postgresql", reason="builds its own SQLite study; once is enough")
def test_casebook_bench_runs(bench, tmp_path):
    out = tmp_path / "casebook.json"
    bench("casebook_bench.py", "--subjects", "1", "--renders", "1", "--json-out", str(out))
    doc = read_json(out)
    assert doc["casebook"]["pages"] > 1 and doc["archive"]["subjects"] >= 1 and doc["archive"]["csv_seconds"] > 0
