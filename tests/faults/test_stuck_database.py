"""A stuck database is answered 503 problem+json with Retry-After within the time limits, never a hang;
liveness (/healthz) needs no database and keeps answering. The lock is held by another real connection."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from conftest import BACKEND, bearer, login
from edc.extensions import db
from edc.settings import SettingsError, load_settings, validate
from faults.conftest import HeldLock

BOUND_SECONDS = 5  # far above the limits set here, far below the 8 s the lock is held at most


def _timed(client, path, headers):
    started = time.monotonic()
    response = client.get(path, headers=headers)
    return response, time.monotonic() - started


def _me(client, headers):
    return _timed(client, "/api/v1/me", headers)


def _unavailable(response, elapsed: float) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json" and response.get_json()["request_id"]
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < BOUND_SECONDS


LIMITS = [pytest.param({"database_lock_timeout_ms": 300}, id="lock timeout")]
if BACKEND == "postgresql":  # SQLite has no statement timeout: its one wait is for the write lock
    LIMITS.append(pytest.param({"database_lock_timeout_ms": 60000, "database_statement_timeout_ms": 300},
                               id="statement timeout"))


@pytest.mark.parametrize("limits", LIMITS)
def test_a_held_lock_is_answered_503_within_the_limit_and_liveness_still_answers(app_factory, staff, database_url, limits):
    client = app_factory(**limits).test_client()
    headers = bearer(login(client, staff["monitor"]))
    with HeldLock(database_url):
        response, elapsed = _me(client, headers)
        _unavailable(response, elapsed)
        assert client.get("/healthz").status_code == 200
    response, _ = _me(client, headers)  # the lock gone, the same process answers again
    assert response.status_code == 200


def test_no_free_pooled_connection_is_answered_503_within_the_pool_timeout(app_factory, staff):
    app = app_factory(database_pool_timeout_seconds=1)
    client = app.test_client()
    headers = bearer(login(client, staff["monitor"]))
    with app.app_context():
        engine = db.engine
    pool = engine.pool
    held = [engine.connect() for _ in range(pool.size() + pool._max_overflow)]
    try:
        assert isinstance(pool, sa.pool.QueuePool)
        response, elapsed = _me(client, headers)
        _unavailable(response, elapsed)
        assert client.get("/healthz").status_code == 200
    finally:
        for connection in held:
            connection.close()
    assert _me(client, headers)[0].status_code == 200


def test_every_connection_of_the_app_carries_the_time_limits_and_full_durability(app_factory):
    app = app_factory(database_lock_timeout_ms=1234, database_statement_timeout_ms=4321)
    with app.app_context():
        with db.engine.connect() as connection:
            if BACKEND == "postgresql":
                assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "1234ms"
                assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "4321ms"
            else:  # synchronous 2 is FULL: an answered save survives power loss, not only a crash of edc
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize("settings, message", [
    ({"sqlite_synchronous": "OFF"}, "sqlite_synchronous must be one of"),
    ({"database_connect_timeout_seconds": 0}, "at least 2"),
    ({"database_lock_timeout_ms": 0}, "database_lock_timeout_ms must be at least 1"),
    ({"database_statement_timeout_ms": 0}, "database_statement_timeout_ms must be at least 1"),
])
def test_time_limits_that_would_wait_forever_are_refused(settings, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({"env": "testing", **settings}, environ={})


def test_production_refuses_sqlite_without_full_durability():
    with pytest.raises(SettingsError, match="sqlite_synchronous NORMAL"):
        validate({**load_settings({"env": "development"}, environ={}), "env": "production", "sqlite_synchronous": "normal"})


@pytest.mark.postgresql_only
def test_reports_wait_under_their_own_longer_limit_where_a_request_gets_503(app_factory, staff, database_url):
    limits = {"database_lock_timeout_ms": 60000, "database_statement_timeout_ms": 300,
              "database_long_statement_timeout_ms": 60000}
    client = app_factory(**limits).test_client()
    headers = bearer(login(client, staff["monitor"]))
    with HeldLock(database_url, seconds=1.5, table="subjects"):
        response, elapsed = _timed(client, "/api/v1/subjects", headers)
        _unavailable(response, elapsed)
    with HeldLock(database_url, seconds=1.0, table="subjects"):  # released after 1 s: the report waits for it
        report, elapsed = _timed(client, "/api/v1/reports/enrolment", headers)
    assert report.status_code == 200, report.get_data(as_text=True)
    assert elapsed >= 0.9
