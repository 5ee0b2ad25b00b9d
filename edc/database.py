"""Engine set-up that both databases need, and the migration head the schema must be at."""

from __future__ import annotations

import functools
import os
import stat

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from edc.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


READ_ONLY_SNAPSHOT = "edc_read_only_snapshot"  # execution option: a transaction that only reads
SYNCHRONOUS = {"FULL": "FULL", "EXTRA": "EXTRA", "NORMAL": "NORMAL"}  # the only values ever put into the PRAGMA


def allow_long_statements(session, timeout_ms: int) -> None:
    """Give the statements of this transaction (an export, a report) the longer limit instead of the request's.

    PostgreSQL only: SQLite has no statement timeout (its one wait, for the write lock, stays bounded)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.set_config("statement_timeout", f"{int(timeout_ms)}ms", True)))


def install_sqlite_pragmas(engine: sa.Engine, *, transactions: bool = True, busy_timeout_ms: int = 5000,
                           synchronous: str = "FULL") -> None:
    """SQLite: foreign keys on, WAL with `synchronous` (FULL: a commit is on disk when it returns, so an
    answered save survives power loss), a bounded wait for the write lock, and every transaction BEGIN IMMEDIATE.

    SQLite ignores SELECT ... FOR UPDATE and a deferred transaction that later writes can
    fail with 'database is locked'; taking the write lock at BEGIN serialises writers
    instead (counters and audit chain heads stay race-free) while WAL keeps readers going.
    """
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous.upper()]}")
            restrict_to_owner(engine.url.database)
        cursor.close()

    if not transactions:  # autocommit: each statement stands alone (test inspection sessions)
        return

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A read-only snapshot (an export) must not hold the write lock: a deferred BEGIN reads one
        # WAL snapshot from its first statement and leaves writers free.
        read_only = connection.get_execution_options().get(READ_ONLY_SNAPSHOT, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def restrict_to_owner(database: str) -> None:
    """Take group and other permissions off a SQLite database and its WAL and shared-memory files.

    The umask makes new files owner-only; this also closes a file made before it, or by another tool.
    SQLite gives a new WAL file the database file's permissions."""
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)


@functools.cache
def migration_heads() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()))
