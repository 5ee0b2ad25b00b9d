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


def install_sqlite_pragmas(engine: sa.Engine, *, transactions: bool = True) -> None:
    """SQLite: foreign keys on, WAL, and every transaction BEGIN IMMEDIATE.

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
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
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
