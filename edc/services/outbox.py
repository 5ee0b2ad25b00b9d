"""The notification outbox: a record written in the same transaction as the event it reports.

Records carry the kind, site, subject number and due time only, never clinical values or
identities. The mailer delivers them; dedupe_key makes enqueueing idempotent (one notification
per event, e.g. per clock and kind), so a retried transaction or a rescan never notifies twice.

An account mail (a setup link) goes to one recipient; its secret is stored only sealed (AES-GCM,
bound to the record's row and field), so neither the listing nor a database reader sees it: the
mailer opens it when it sends.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock
from edc.models.monitoring import ACCOUNT_MAIL_KINDS, NOTIFICATION_KINDS, OutboxMessage
from edc.models.sites import Site
from edc.security import crypto
from edc.security.permissions import Actor, require
from edc.services import keys
from edc.services.pagination import Page

SECRET_FIELD = "sealed_secret"  # the associated data of an account mail's envelope: ("outbox", id, this)


def enqueue(session: Session, kind: str, *, dedupe_key: str, site_id: uuid.UUID | None, subject_number: str | None,
            due_at: datetime | None = None) -> bool:
    """Add a pending notification unless one with this dedupe key exists; True if added."""
    if kind not in NOTIFICATION_KINDS:
        raise ValueError(f"unknown notification kind {kind}")
    now = clock.utcnow()
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(OutboxMessage)
    result = session.execute(
        insert.values(id=uuid.uuid4(), kind=kind, dedupe_key=f"{kind}:{dedupe_key}", site_id=site_id,
                      subject_number=subject_number, due_at=due_at, status="pending", attempts=0,
                      next_attempt_at=now, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    return bool(result.rowcount)


def enqueue_account_mail(session: Session, kind: str, *, user_id: uuid.UUID, recipient: str,
                         secret: dict[str, Any]) -> uuid.UUID:
    """Add a mail to one person about their account; `secret` (the setup token) is sealed to this record."""
    if kind not in ACCOUNT_MAIL_KINDS:
        raise ValueError(f"unknown account mail kind {kind}")
    now, record_id = clock.utcnow(), uuid.uuid4()
    sealed = crypto.encrypt_value(keys.ring_for_writing(session), secret, table=OutboxMessage.__tablename__,
                                  record_id=str(record_id), field=SECRET_FIELD)
    session.add(OutboxMessage(id=record_id, kind=kind, dedupe_key=f"{kind}:{user_id}:{record_id}", recipient=recipient,
                              sealed_secret=sealed, status="pending", attempts=0, next_attempt_at=now, created_at=now,
                              updated_at=now))
    return record_id


def open_secret(session: Session, record: OutboxMessage) -> dict[str, Any]:
    """The secret of an account mail, for the mailer only (crypto.DecryptionError if it does not open here)."""
    if record.sealed_secret is None:
        raise crypto.DecryptionError(f"outbox record {record.id} holds no secret (any more)")
    ring = keys.ring_for_reading(session, crypto.envelope_key_id(record.sealed_secret))
    return crypto.decrypt_value(ring, record.sealed_secret, table=OutboxMessage.__tablename__,
                                record_id=str(record.id), field=SECRET_FIELD)


def pending_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count(OutboxMessage.id)).where(OutboxMessage.status == "pending")) or 0


def list_records(session: Session, actor: Actor, *, status: str | None = None, kind: str | None = None,
                 page: int = 1, page_size: int = 50) -> Page[tuple[OutboxMessage, str | None]]:
    """Notification records of the caller's sites, newest first, each with its site code."""
    require(actor, "outbox:read")
    stmt = sa.select(OutboxMessage)
    scope = actor.site_scope("outbox:read")
    if scope is not None:
        stmt = stmt.where(OutboxMessage.site_id.in_(scope))
    if status:
        stmt = stmt.where(OutboxMessage.status == status)
    if kind:
        stmt = stmt.where(OutboxMessage.kind == kind)
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.add_columns(Site.code).outerjoin(Site, Site.id == OutboxMessage.site_id)
        .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id).limit(page_size).offset((page - 1) * page_size)
    ).all()
    return Page(items=[(row[0], row[1]) for row in rows], page=page, page_size=page_size, total=total)
