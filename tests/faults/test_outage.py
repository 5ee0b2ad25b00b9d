"""Database outage: edc's processes reach PostgreSQL through a TCP proxy that the test cuts (every connection
dropped, new ones refused) and restores, since the suite's PostgreSQL server is shared and cannot be stopped.

During the outage every request is answered 503 problem+json with Retry-After, quickly (never a 500, never a
hang); /readyz says not ready; after it the same server answers again without a restart. The export worker
survives an outage in the middle of an export and finishes the export on its next attempt.
"""

from __future__ import annotations

import _thread
import hashlib
import json
import signal
import threading
import time

import pytest
import sqlalchemy as sa

from conftest import PASSWORD, bearer, login, make_app
from edc.exports import csv_files
from edc.extensions import db
from faults.harness import AE as WRITER_AE
from faults.harness import WriteLoad, half_written, http_call, stored_terms

SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
AE = {**WRITER_AE, "AETERM": "Fever"}
ANSWER_WITHIN = 10.0  # seconds: far below gunicorn's 60 s worker timeout


def assert_unavailable(status, headers, body, elapsed):
    assert status == 503, (status, body)
    assert headers["Content-Type"].startswith("application/problem+json") and body["status"] == 503, (headers, body)
    assert int(headers["Retry-After"]) > 0
    assert elapsed < ANSWER_WITHIN


def timed(port, method, path, body=None, headers=None):
    started = time.monotonic()
    status, answer_headers, answer = http_call(port, method, path, body, headers, timeout=ANSWER_WITHIN + 5)
    return status, answer_headers, answer, time.monotonic() - started


@pytest.mark.postgresql_only
def test_requests_get_503_with_retry_after_during_an_outage_and_the_server_recovers(
        gunicorn, app, pg_proxy, client, staff):
    inv = bearer(login(client, staff["investigator"]))
    number, *writers = [client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"] for _ in range(5)]
    gunicorn.env["EDC_DATABASE_URL"] = pg_proxy.url
    gunicorn.env["EDC_WORKERS"] = "1"  # one connection pool: what it holds after the outage is known
    gunicorn.start()
    entries = f"/api/v1/subjects/{number}/entries"
    assert http_call(gunicorn.port, "POST", entries, {"form": "ae", "data": AE, "complete": True}, inv)[0] == 201
    load = WriteLoad(gunicorn.port, inv["Authorization"].removeprefix("Bearer "), writers)
    load.start()
    try:
        load.wait_for_saves(5)
        pg_proxy.cut()  # mid-load
        load.wait_for_answers(503, 8)
        for method, path, body, headers in [
            ("GET", "/api/v1/me", None, inv),
            ("POST", entries, {"form": "ae", "data": {**AE, "AETERM": "lost"}, "complete": True}, inv),
            ("GET", entries, None, inv),
            ("POST", "/api/v1/auth/login", {"username": staff["monitor"], "password": PASSWORD}, None),
            ("GET", "/readyz", None, None),
        ]:
            assert_unavailable(*timed(gunicorn.port, method, path, body, headers))
        assert http_call(gunicorn.port, "GET", "/healthz")[0] == 200  # alive: a restart would not help
        pg_proxy.restore()
        load.wait_for_saves(5)
    finally:
        load.stop()

    assert set(load.statuses) == {201, 503}, load.statuses  # never a 500, never a request left without an answer
    assert http_call(gunicorn.port, "GET", "/readyz")[0] == 200
    assert http_call(gunicorn.port, "GET", "/api/v1/me", headers=inv)[0] == 200
    assert http_call(gunicorn.port, "POST", entries, {"form": "ae", "data": {**AE, "AETERM": "Rash"}, "complete": True},
                     inv)[0] == 201
    status, _, listed = http_call(gunicorn.port, "GET", entries + "?form=ae", headers=inv)
    assert status == 200 and [e["data"]["AETERM"] for e in listed] == ["Fever", "Rash"]
    assert gunicorn.starts == 1 and gunicorn.process.poll() is None
    stored = {term: entry_id for term, entry_id in stored_terms(client, inv, writers)}
    assert {term: stored.get(term) for term in load.saved} == load.saved  # every 201 stored, under its id
    # A 503 does not prove the save was not stored: when the connection is lost during COMMIT, the database may
    # have committed it (docs/reliability.md). Nothing else is stored.
    assert set(stored) - set(load.saved) <= set(load.refused)
    assert set(half_written(app).values()) == {0}


@pytest.fixture
def outage_app(pg_proxy, keys_dir, tmp_path):
    """An app of the test's database reached through the proxy, taking up an abandoned export after 1 s."""
    app = make_app(pg_proxy.url, keys_dir, export_dir=str(tmp_path / "exports"), export_lease_seconds=1)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.postgresql_only
def test_export_worker_survives_an_outage_mid_export_and_finishes_the_export(
        outage_app, pg_proxy, client, staff, database_url, monkeypatch, tmp_path):
    inv = bearer(login(client, staff["investigator"]))
    number = client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]
    assert client.post(f"/api/v1/subjects/{number}/entries", json={"form": "ae", "data": AE, "complete": True},
                       headers=inv).status_code == 201
    stat = bearer(login(client, staff["statistician"]))
    job_id = client.post("/api/v1/exports", json={"format": "csv"}, headers=stat).get_json()["id"]

    real_writer, cuts = csv_files.write_csv, []

    def writer_meeting_an_outage(*args, **kwargs):  # the fault, injected once the worker is inside the export
        if not cuts:
            cuts.append(time.monotonic())
            pg_proxy.cut()
            threading.Timer(1.5, pg_proxy.restore).start()
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(csv_files, "write_csv", writer_meeting_an_outage)
    state = job_state_watcher(database_url, job_id)
    result = outage_app.test_cli_runner().invoke(args=["edc", "worker", "--interval", "1"])

    assert cuts and result.exit_code == 0, result.output
    assert state.get("final") == ("completed", 2), state  # the attempt the outage broke, then the one that finished
    exports_dir = tmp_path / "exports"
    assert sorted(p.name for p in exports_dir.iterdir()) == [job_id]  # no work directory left behind
    manifest = json.loads((exports_dir / job_id / "manifest.json").read_text())
    assert manifest["subjects"] == 1 and manifest["files"]
    for listed in manifest["files"]:  # every file whole, as hashed when it was written
        assert hashlib.sha256((exports_dir / job_id / listed["name"]).read_bytes()).hexdigest() == listed["sha256"]


def job_state_watcher(database_url: str, job_id: str, timeout: float = 45.0) -> dict:
    """Watch the job directly in the database; when it has finished (or after `timeout`), stop the worker running
    in the main thread as SIGTERM would (a no-op if no handler is installed)."""
    found: dict = {}

    def watch():
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    row = conn.execute(sa.text("SELECT state, attempts FROM export_jobs WHERE id = :id"),
                                       {"id": job_id}).one()
                if row.state in ("completed", "failed"):
                    found["final"] = (row.state, row.attempts)
                    break
                time.sleep(0.2)
        finally:
            engine.dispose()
            _thread.interrupt_main(signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    return found
