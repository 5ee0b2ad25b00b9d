"""The append-only, hash-chained audit trail. One record per change event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base, IdMixin
from edc.models.types import JSONDocument

SECURITY_CHAIN = "security"


class AuditRecord(IdMixin, Base):
    """An audit event. Never updated or deleted (a database trigger refuses both)."""

    __tablename__ = "audit_records"
    __table_args__ = (sa.UniqueConstraint("chain", "seq"),)

    chain: Mapped[str] = mapped_column(sa.String(64))
    seq: Mapped[int]
    occurred_at: Mapped[datetime]
    actor_id: Mapped[uuid.UUID | None]
    actor_username: Mapped[str] = mapped_column(sa.String(64))
    actor_name: Mapped[str] = mapped_column(sa.String(200))
    actor_role: Mapped[str | None] = mapped_column(sa.String(32))
    site_code: Mapped[str | None] = mapped_column(sa.String(8))
    action: Mapped[str] = mapped_column(sa.String(64))
    entity_type: Mapped[str] = mapped_column(sa.String(32))
    entity_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    client_address: Mapped[str | None] = mapped_column(sa.String(64))
    changes: Mapped[list[Any]] = mapped_column(JSONDocument())
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditChainHead(Base):
    """The latest record of each chain; appending locks only this row."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditValue(IdMixin, Base):
    """The ciphertext of one encrypted old or new value of an audit record.

    Kept apart so key rotation can re-encrypt it while audit_records stays immutable; the
    record's hash covers a keyed digest of the plaintext, so re-encryption changes no hash,
    and a swapped ciphertext fails to open (it is bound to this row) or to match the digest.
    """

    __tablename__ = "audit_values"

    record_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("audit_records.id"), index=True)
    field: Mapped[str] = mapped_column(sa.String(200))
    side: Mapped[str] = mapped_column(sa.String(3))  # "old" | "new"
    envelope: Mapped[dict[str, Any]] = mapped_column(JSONDocument())
    key_id: Mapped[int]
