"""Optimistic concurrency: strong ETags from record id + version, compared under the record's row lock.

A version read before the row lock may be stale by the time the write happens: two writers holding the
same ETag would both pass the comparison and the loser's UPDATE ... WHERE version = :read would match no
row (StaleDataError). Taking the row lock and re-reading the record first makes the comparison exact: the
second writer waits for the first to commit, then sees the new version and gets 412.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc.problems import PreconditionFailed

STALE = "{label} has changed since you read it; read it again and reapply your change."


def etag_of(record: Any) -> str:
    return f'"{record.id}.{record.version}"'


def lock_current(session: Session, record: Any) -> None:
    """Take the record's row lock and re-read it (SQLite: its writes are already serialised by BEGIN IMMEDIATE)."""
    model = type(record)
    session.scalars(sa.select(model).where(model.id == record.id).with_for_update(of=model)
                    .execution_options(populate_existing=True)).one()


def check_etag(session: Session, record: Any, expected_etag: str, label: str) -> None:
    """Refuse a write based on a stale read (412), comparing with the version this transaction will replace."""
    lock_current(session, record)
    check_locked_etag(record, expected_etag, label)


def check_locked_etag(record: Any, expected_etag: str, label: str) -> None:
    """check_etag for a record the caller has just locked and re-read (lock_current)."""
    if etag_of(record) != expected_etag:
        raise PreconditionFailed(STALE.format(label=label))


def unique_violation(exc: sa.exc.IntegrityError, index: str, table: str, columns: tuple[str, ...]) -> bool:
    """Is this the violation of that one unique index (not of another constraint of the statement)?"""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:  # PostgreSQL names the index
        return diag.constraint_name == index
    # SQLite names the index's columns
    return str(exc.orig) == "UNIQUE constraint failed: " + ", ".join(f"{table}.{column}" for column in columns)
