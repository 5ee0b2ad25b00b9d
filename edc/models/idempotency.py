"""Idempotency keys: a POST that creates something, sent with an Idempotency-Key, and the answer it got."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base, IdMixin
from edc.models.types import JSONDocument


class IdempotentRequest(IdMixin, Base):
    """One account's request under one key: claimed (no status yet) while it runs, then the answer committed
    with its writes (encrypted: it holds clinical values). Kept 24 h."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "key"),
        sa.Index("ix_idempotent_requests_created_at", "created_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))  # SHA-256 of method, path, query and body
    created_at: Mapped[datetime]  # when claimed; a claim older than the stale limit without an answer is taken over
    status: Mapped[int | None]
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument())  # encrypted {"headers", "body"}
