"""Registry clients of the FHIR API (SMART Backend Services) and the client assertions they have spent."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edc.models.base import Base, IdMixin
from edc.models.types import JSONDocument
from edc.models.users import User


class FhirClient(Base):
    """A system that pulls FHIR data with signed client assertions, acting as one account with the registry role.

    Only the client's public keys are kept (a JWK Set); deactivated, never deleted.
    """

    __tablename__ = "fhir_clients"

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    jwks: Mapped[dict[str, Any]] = mapped_column(JSONDocument())
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"), index=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(64))
    deactivated_at: Mapped[datetime | None]
    deactivated_by: Mapped[str | None] = mapped_column(sa.String(64))

    user: Mapped[User] = relationship()


class FhirClientAssertion(IdMixin, Base):
    """The jti of an accepted client assertion, kept until the assertion expires: none is accepted twice."""

    __tablename__ = "fhir_client_assertions"
    __table_args__ = (sa.UniqueConstraint("client_id", "jti"),)

    client_id: Mapped[str] = mapped_column(sa.ForeignKey("fhir_clients.client_id"))
    jti: Mapped[str] = mapped_column(sa.String(255))
    expires_at: Mapped[datetime]
