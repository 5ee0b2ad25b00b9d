"""Fixtures that make the database fail on purpose: a connection that dies right after a commit, and
locks held by another connection. Real database, real HTTP through the WSGI app: the fault is an
SQLAlchemy event hook, not a mock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from edc.extensions import db
from faults.harness import gunicorn, gunicorn_env, pg_proxy  # noqa: F401 (fixtures: a killable gunicorn, a database proxy to cut)
from monitoring.conftest import monitoring  # noqa: F401 (a fixture)


class ConnectionLost(Exception):
    """What the driver reports for a connection the database dropped."""


def _lost(statement: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError(statement, None, ConnectionLost("server closed the connection unexpectedly"))


class CommitBreaker:
    """Once armed, the next COMMIT succeeds and every later use of the app's database fails like a dead
    connection: statements raise OperationalError, and so does the ROLLBACK of the request's teardown."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.armed = False
        self.tripped = False
        self.commits_seen = 0
        self.failures: list[str] = []
        self.rollback_fails = False  # every ROLLBACK fails, whether or not a commit came first

    def install(self) -> None:
        sa.event.listen(self.engine, "commit", self._on_commit)
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.listen(self.engine, "rollback", self._on_rollback)

    def remove(self) -> None:
        sa.event.remove(self.engine, "commit", self._on_commit)
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.remove(self.engine, "rollback", self._on_rollback)

    @contextmanager
    def after_next_commit(self, *, skip: int = 0) -> Iterator[CommitBreaker]:
        """Break after the next commit, or after the one `skip` commits later (skip=1: a request that
        commits its Idempotency-Key claim first, then its writes)."""
        self.armed, self.tripped, self.failures, self.skip = True, False, [], skip
        try:
            yield self
        finally:
            self.armed = self.tripped = False

    def _on_commit(self, _connection) -> None:
        if self.armed and self.skip:
            self.skip -= 1
        elif self.armed:
            self.tripped = True
            self.commits_seen += 1

    def _on_execute(self, _connection, _cursor, statement, *_args) -> None:
        if self.tripped:
            self.failures.append(statement.split(None, 1)[0])
            raise _lost(statement)

    def _on_rollback(self, _connection) -> None:
        if self.tripped or self.rollback_fails:
            self.failures.append("ROLLBACK")
            raise _lost("ROLLBACK")


def breaker_for(app) -> CommitBreaker:
    with app.app_context():
        return CommitBreaker(db.engine)


@pytest.fixture
def commit_breaker(monitoring) -> Iterator[CommitBreaker]:  # noqa: F811
    """Breaks the connection of the monitoring fixture's app right after its next commit (when armed)."""
    breaker = breaker_for(monitoring.client.application)
    breaker.install()
    try:
        yield breaker
    finally:
        breaker.remove()


class HeldLock:
    """Another connection holding the lock every request needs: SQLite's write lock (BEGIN IMMEDIATE), or on
    PostgreSQL an exclusive lock on the accounts table (authentication reads it). Released after `seconds`
    at the latest, so code without time limits fails the test instead of hanging it."""

    def __init__(self, database_url: str, seconds: float = 8.0, table: str = "users") -> None:
        self.url, self.seconds, self.table = sa.make_url(database_url), seconds, table
        self.released = threading.Event()

    def __enter__(self) -> HeldLock:
        if self.url.get_backend_name() == "sqlite":
            self.connection = sqlite3.connect(self.url.database, isolation_level=None, check_same_thread=False)
            self.connection.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.connection = psycopg.connect(self.url.set(drivername="postgresql").render_as_string(hide_password=False))
            self.connection.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        self.timer = threading.Timer(self.seconds, self.release)
        self.timer.start()
        return self

    def release(self) -> None:
        if not self.released.is_set():
            self.released.set()
            self.connection.rollback()
            self.connection.close()

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.release()
