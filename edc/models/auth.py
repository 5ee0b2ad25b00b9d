"""Login sessions (refresh-token families), refresh tokens (hashed) and login throttling."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base, IdMixin


class AuthSession(IdMixin, Base):
    """One login: a family of refresh tokens. Revoking it ends its access tokens too (claim sid).

    A session opened by a FHIR registry client (SMART Backend Services) names the client and the scope it
    was granted; it has no refresh token and lasts as long as its one access token.
    """

    __tablename__ = "auth_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(64))
    client_id: Mapped[str | None] = mapped_column(sa.ForeignKey("fhir_clients.client_id"), index=True)
    scope: Mapped[str | None] = mapped_column(sa.String(1000))


class RefreshToken(IdMixin, Base):
    """A refresh token, stored only as its SHA-256. Spent once used; reuse revokes the family."""

    __tablename__ = "refresh_tokens"

    session_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("auth_sessions.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    issued_at: Mapped[datetime]
    idle_expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """Failure counters (edc/services/throttle.py): per account and address ('user:<name>@<ip>'), per
    address ('addr:<ip>') and per account from anywhere ('user:<name>'); registry clients as 'fhir-client:<id>'."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(index=True)  # forgotten rows are pruned by it
    locked_until: Mapped[datetime | None]
