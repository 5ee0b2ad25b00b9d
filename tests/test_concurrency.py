"""Simultaneous writers through the WSGI app: each thread has its own client, request context and database
connection, and a barrier releases them together. One writer wins, every other gets a 4xx, never a 5xx."""

import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from conftest import BACKEND, PASSWORD, bearer, make_app, count_rows, login, problem, project_root
from edc import runtime
from edc.database import migration_heads
from edc.extensions import db
from edc.models import ExportJob, Site, Subject
from edc.services import exports, locking
from edc.models import AuditRecord, LoginThrottle

WRITERS = 8
SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
VITALS = {"VSDAT": "2026-11-10", "TEMP": 37.2, "HR": 110, "SBP": 100, "DBP": 60, "SPO2": 98}


def at_once(app, send, n=WRITERS) -> list:
    """Send n requests together, send(client, i) each from its own thread; their responses in order."""
    barrier = threading.Barrier(n)
    responses: list = [None] * n

    def run(i):
        client = app.test_client()
        barrier.wait()
        try:
            responses[i] = send(client, i)
        except Exception as exc:  # noqa: BLE001 - an exception escaping the app is a failure to report
            responses[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses


def statuses(responses) -> Counter:
    return Counter(getattr(r, "status_code", repr(r)) for r in responses)


def one_winner(responses, winner: int, loser: int) -> None:
    assert statuses(responses) == Counter({winner: 1, loser: len(responses) - 1}), statuses(responses)
    for response in responses:
        if response.status_code == loser:
            problem(response, loser)


def audit_count(session, action: str) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == action))


@pytest.fixture
def inv(client, staff):
    return bearer(login(client, staff["investigator"]))


@pytest.fixture
def number(client, inv):
    return client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]


# ------------------------------------------------------------------------------ versioned resources


def test_simultaneous_saves_of_one_entry_one_wins_the_rest_get_412(app, client, inv, number, session):
    created = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                          json={"form": "vitals", "event": "SCR", "data": VITALS, "complete": True})
    entry, etag = created.get_json()["id"], created.headers["ETag"]

    def save(c, i):
        return c.put(f"/api/v1/entries/{entry}", headers={**inv, "If-Match": etag},
                     json={"data": {**VITALS, "HR": 90 + i}, "complete": True, "reason": "transcription error"})

    one_winner(at_once(app, save), 200, 412)
    assert audit_count(session, "entry_updated") == 1


def test_a_write_that_misses_the_row_lock_still_answers_412_never_500(app, client, inv, number, session, monkeypatch):
    # The backstop: should a write path compare a version read before its row lock, the versioned UPDATE
    # that matches no row (StaleDataError) answers like a stale If-Match.
    monkeypatch.setattr(locking, "lock_current", lambda session, record: None)
    test_simultaneous_saves_of_one_entry_one_wins_the_rest_get_412(app, client, inv, number, session)


def test_simultaneous_status_changes_of_one_subject_one_wins_the_rest_get_412(app, client, inv, number, session):
    etag = client.get(f"/api/v1/subjects/{number}", headers=inv).headers["ETag"]

    def change(c, i):
        return c.post(f"/api/v1/subjects/{number}/status", json={"status": "enrolled"}, headers={**inv, "If-Match": etag})

    one_winner(at_once(app, change), 200, 412)
    assert audit_count(session, "subject_status_changed") == 1


def test_simultaneous_site_changes_one_wins_the_rest_get_412(app, client, staff, session):
    admin = bearer(login(client, staff["admin"]))
    etag = client.get("/api/v1/sites/ES01", headers=admin).headers["ETag"]

    def rename(c, i):
        return c.patch("/api/v1/sites/ES01", json={"name": f"Hospital {i}"}, headers={**admin, "If-Match": etag})

    one_winner(at_once(app, rename), 200, 412)
    assert audit_count(session, "site_updated") == 1


def test_simultaneous_disables_of_one_account_disable_it_once(app, client, staff, session):
    admin = bearer(login(client, staff["admin"]))

    def disable(c, i):
        return c.post(f"/api/v1/users/{staff['monitor']}/disable", json={"reason": "left the trial"}, headers=admin)

    one_winner(at_once(app, disable), 200, 409)
    assert audit_count(session, "user_disabled") == 1


def test_a_signature_made_while_the_entry_is_saved_is_never_left_valid_over_old_data(app, client, inv, number, staff,
                                                                                     session):
    created = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                          json={"form": "vitals", "event": "SCR", "data": VITALS, "complete": True})
    entry, etag = created.get_json()["id"], created.headers["ETag"]

    def sign_or_save(c, i):
        if i % 2:
            return c.post(f"/api/v1/entries/{entry}/signatures", headers=inv,
                          json={"username": staff["investigator"], "password": PASSWORD, "meaning": "approval"})
        return c.put(f"/api/v1/entries/{entry}", headers={**inv, "If-Match": etag},
                     json={"data": {**VITALS, "HR": 90 + i}, "complete": True, "reason": "transcription error"})

    answers = statuses(at_once(app, sign_or_save))
    assert answers == Counter({201: WRITERS // 2, 200: 1, 412: WRITERS // 2 - 1}), answers
    version = session.scalar(sa.text("SELECT version FROM entries"))
    valid = session.execute(sa.text("SELECT entry_version FROM signatures WHERE invalidated_at IS NULL")).scalars().all()
    assert all(signed == version for signed in valid), (version, valid)


def test_simultaneous_locks_of_one_entry_lock_it_once(app, client, inv, number, staff, session):
    entry = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                        json={"form": "vitals", "event": "SCR", "data": VITALS, "complete": True}).get_json()["id"]
    manager = bearer(login(client, staff["data_manager"]))

    def lock(c, i):
        return c.post(f"/api/v1/entries/{entry}/lock", json={"reason": "reviewed"}, headers=manager)

    one_winner(at_once(app, lock), 200, 409)
    assert audit_count(session, "entry_locked") == 1


# ------------------------------------------------------------------------------ duplicate enrolment


def test_one_hospital_number_enrolled_at_once_registers_one_subject(app, inv, session):
    def enrol(c, i):
        return c.post("/api/v1/subjects", json={**SUBJECT, "hospital_number": "HN-4711"}, headers=inv)

    responses = at_once(app, enrol)
    one_winner(responses, 201, 409)
    winner = next(r for r in responses if r.status_code == 201).get_json()["number"]
    answers = {(b["detail"], b["existing"]) for b in (r.get_json() for r in responses if r.status_code == 409)}
    assert answers == {(f"This hospital number is already registered as {winner}.", winner)}
    assert count_rows(session, "subjects") == 1


def test_the_upgrade_stops_at_a_hospital_number_held_twice_and_names_the_subjects(empty_database_url, keys_dir):
    from alembic import command
    from flask_migrate import upgrade

    app = make_app(empty_database_url, keys_dir)
    with app.app_context():
        upgrade(revision="0009")
        site = Site(code="ES01", name="Hospital ES01", country="ES", time_zone="Europe/Madrid", status="active")
        db.session.add_all([site, *(Subject(site=site, seq=n, number=f"ES01-000{n}", birth_year=2016, birth_month=4,
                                            sex="F", consent_date=date(2026, 11, 2), registration_date=date(2026, 11, 2),
                                            duplicate_index="same-blind-index", created_by="tests") for n in (1, 2))])
        db.session.commit()
        with pytest.raises(RuntimeError, match="ES01-0001, ES01-0002"):
            command.upgrade(app.extensions["migrate"].migrate.get_config(), "head")
        db.session.remove()
        db.engine.dispose()


# ------------------------------------------------------------------------------ password guessing


def wrong_passwords(app, username, path="/api/v1/auth/login", headers=None, body=None):
    def guess(c, i):
        return c.post(path, json=body or {"username": username, "password": f"wrong-password-{i}"}, headers=headers or {})

    return at_once(app, guess, n=12)


def test_a_burst_of_wrong_passwords_gets_no_more_checks_than_a_sequence(app, staff, session):
    free = app.config["EDC"]["throttle_account_free_attempts"]
    responses = wrong_passwords(app, staff["auditor"])
    # A sequence: the free attempts, then the one that locks; every later one is refused unchecked.
    assert statuses(responses) == Counter({401: free + 1, 429: 12 - free - 1}), statuses(responses)
    assert audit_count(session, "login_failed") == free + 1
    assert session.get(LoginThrottle, f"user:{staff['auditor']}@127.0.0.1").failures == free + 1


def test_simultaneous_first_failures_are_all_counted_and_audited(app, staff, session, monkeypatch):
    monkeypatch.setitem(app.config["EDC"], "throttle_account_free_attempts", 50)
    responses = wrong_passwords(app, staff["auditor"])
    assert statuses(responses) == Counter({401: 12})
    assert audit_count(session, "login_failed") == 12
    assert session.get(LoginThrottle, f"user:{staff['auditor']}@127.0.0.1").failures == 12


def test_a_burst_of_wrong_current_passwords_is_throttled_like_logins(app, client, staff, session):
    free = app.config["EDC"]["throttle_account_free_attempts"]
    tokens = login(client, staff["auditor"])
    responses = wrong_passwords(app, None, "/api/v1/auth/password", bearer(tokens),
                                {"current_password": "not-the-password-1", "new_password": "a-brand-new-passphrase-42"})
    assert statuses(responses) == Counter({422: free + 1, 429: 12 - free - 1}), statuses(responses)
    assert audit_count(session, "login_failed") == free + 1


def test_a_burst_of_wrong_signing_passwords_is_throttled_like_logins(app, client, inv, number, staff, session):
    free = app.config["EDC"]["throttle_account_free_attempts"]
    entry = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                        json={"form": "vitals", "event": "SCR", "data": VITALS, "complete": True}).get_json()["id"]
    responses = wrong_passwords(app, None, f"/api/v1/entries/{entry}/signatures", inv,
                                {"username": staff["investigator"], "password": "not-my-password-1", "meaning": "approval"})
    assert statuses(responses) == Counter({401: free + 1, 429: 12 - free - 1}), statuses(responses)
    assert audit_count(session, "login_failed") == free + 1 and count_rows(session, "signatures") == 0


def test_signatures_refused_after_a_right_password_never_lock_the_signer(app, client, inv, number, staff):
    # Each check is counted before it is made; a right one gives its count back even when the signature is
    # then refused (here: a draft entry).
    entry = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                        json={"form": "vitals", "event": "SCR", "data": VITALS, "complete": False}).get_json()["id"]
    for _ in range(app.config["EDC"]["throttle_account_free_attempts"] + 2):
        problem(client.post(f"/api/v1/entries/{entry}/signatures", headers=inv,
                            json={"username": staff["investigator"], "password": PASSWORD, "meaning": "approval"}), 409)


# ------------------------------------------------------------------------------ nodes starting together


@pytest.fixture
def empty_database_url(tmp_path, test_database_url):
    """A database no migration has touched: a new SQLite file, or a new schema of the PostgreSQL database."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.sqlite3'}"
        return
    schema = f"init_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(test_database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield sa.make_url(test_database_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_two_inits_at_once_on_an_empty_database_both_succeed(empty_database_url, keys_dir):
    env = {**os.environ, "EDC_ENV": "testing", "EDC_DATABASE_URL": empty_database_url, "EDC_KEYS_DIR": keys_dir}
    command = [sys.executable, "-m", "flask", "--app", "edc:create_app", "edc", "init"]
    nodes = [subprocess.Popen(command, cwd=project_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=120)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [output[-2000:] for output in outputs]
    engine = sa.create_engine(empty_database_url)
    with engine.connect() as connection:
        assert tuple(connection.scalars(sa.text("SELECT version_num FROM alembic_version"))) == migration_heads()
    engine.dispose()


# ------------------------------------------------------------------------------ export workers on two hosts


def ask_export(app, staff) -> uuid.UUID:
    client = app.test_client()
    response = client.post("/api/v1/exports", json={"format": "csv"}, headers=bearer(login(client, staff["statistician"])))
    assert response.status_code == 202, response.get_json()
    return uuid.UUID(response.get_json()["id"])


def lease_runs_out(session, job_id: uuid.UUID) -> None:
    """The job's worker has been silent longer than the lease (by the lease clock)."""
    job = session.get(ExportJob, job_id, populate_existing=True)
    job.heartbeat_at -= timedelta(seconds=runtime.of(session).settings["export_lease_seconds"] + 1)
    session.commit()


def worker_session(app):
    runtime.bind(db.session, runtime.for_app(app))
    return db.session


def test_a_worker_taken_over_while_frozen_cannot_publish_over_the_newer_attempt(app_factory, staff, tmp_path,
                                                                                 monkeypatch):
    first, second = (app_factory(export_dir=str(tmp_path / host)) for host in ("host-a", "host-b"))
    job_id = ask_export(first, staff)
    manifest = exports._manifest

    def freeze_then_wake(reader, job, selection, files):
        # The first worker freezes before publishing; the lease runs out and a worker on another host takes over.
        written = manifest(reader, job, selection, files)
        db.session.commit()  # the frozen worker holds no transaction (SQLite: it would hold every writer off)
        with second.app_context():
            lease_runs_out(worker_session(second), job_id)
            assert exports.claim_next(worker_session(second)).attempts == 2
            db.session.remove()
        return written

    monkeypatch.setattr(exports, "_manifest", freeze_then_wake)
    with first.app_context():
        exports.run_job(worker_session(first), exports.claim_next(worker_session(first)))
        job = db.session.get(ExportJob, job_id, populate_existing=True)
        assert (job.state, job.attempts, job.manifest) == ("running", 2, None)
        assert not (tmp_path / "host-a" / str(job_id)).exists()
        db.session.remove()
    monkeypatch.setattr(exports, "_manifest", manifest)
    with second.app_context():
        job = db.session.get(ExportJob, job_id)
        exports.run_job(worker_session(second), job)
        assert (job.state, job.attempts) == ("completed", 2)
        db.session.remove()


@pytest.mark.postgresql_only
def test_a_worker_whose_clock_runs_fast_does_not_take_over_a_live_job(app_factory, staff, tmp_path, fake_clock):
    app = app_factory(export_dir=str(tmp_path / "exports"))
    job_id = ask_export(app, staff)
    with app.app_context():
        assert exports.claim_next(worker_session(app)).id == job_id
        fake_clock.advance(hours=1)  # another host's clock: an hour ahead of the database's
        assert exports.claim_next(worker_session(app)) is None
        db.session.remove()
