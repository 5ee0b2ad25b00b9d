"""What /readyz checks: the database answers, is at the migration head, and protects the audit trail."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

AUDIT_TRIGGERS = {
    "postgresql": ("audit_records_no_update", "audit_records_no_delete", "audit_records_no_truncate"),
    "sqlite": ("audit_records_no_update", "audit_records_no_delete"),
}


def _present_triggers(session: Session, dialect: str) -> set[str]:
    if dialect == "postgresql":
        rows = session.execute(sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_records'::regclass AND NOT tgisinternal AND tgenabled <> 'D'"))
    else:
        rows = session.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_records'"))
    return {row[0] for row in rows}


def problems(session: Session, heads: tuple[str, ...]) -> list[str]:
    """Return what keeps the service from being ready (empty when ready)."""
    try:
        session.execute(sa.text("SELECT 1"))
        current = tuple(sorted(row[0] for row in session.execute(sa.text("SELECT version_num FROM alembic_version"))))
        dialect = session.get_bind().dialect.name
        missing = set(AUDIT_TRIGGERS.get(dialect, ())) - _present_triggers(session, dialect)
    except sa.exc.SQLAlchemyError:
        return ["database unreachable or not migrated"]
    finally:
        session.rollback()
    found = []
    if current != tuple(sorted(heads)):
        found.append("database is not at the migration head (run `flask edc init`)")
    if missing:
        found.append("audit trail protection triggers are missing")
    return found
