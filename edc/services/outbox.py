"""The notification outbox: a record written in the same transaction as the event it reports.

Records carry the kind, site, subject number and due time only, never clinical values or
identities. The mailer delivers them; dedupe_key makes enqueueing idempotent (one notification
per event, e.g. per clock and kind), so a retried transaction or a rescan never notifies twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock
from edc.models.monitoring import OUTBOX_KINDS, OutboxMessage


def enqueue(session: Session, kind: str, *, dedupe_key: str, site_id: uuid.UUID | None, subject_number: str | None,
            due_at: datetime | None = None) -> bool:
    """Add a pending notification unless one with this dedupe key exists; True if added."""
    if kind not in OUTBOX_KINDS:
        raise ValueError(f"unknown outbox kind {kind}")
    now = clock.utcnow()
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(OutboxMessage)
    result = session.execute(
        insert.values(id=uuid.uuid4(), kind=kind, dedupe_key=f"{kind}:{dedupe_key}", site_id=site_id,
                      subject_number=subject_number, due_at=due_at, status="pending", attempts=0,
                      next_attempt_at=now, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    return bool(result.rowcount)


def pending_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count(OutboxMessage.id)).where(OutboxMessage.status == "pending")) or 0
