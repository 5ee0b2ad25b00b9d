"""The declarative base every model subclasses, and the column helpers they share.

No Flask here: the models (and the services that use them) import without the web stack, and
edc.extensions builds Flask-SQLAlchemy's `db` on this base, so `db.metadata` is `Base.metadata`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

from edc import clock
from edc.models.types import JSONDocument, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",  # every column of a composite constraint, not the first only
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The registry is declared explicitly: a class-level type_annotation_map crashes
# Flask-SQLAlchemy 3.1 (pallets-eco/flask-sqlalchemy#1361), which builds its db.Model from this base.
mapper_registry = registry(
    metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
    type_annotation_map={datetime: UTCDateTime(), uuid.UUID: sa.Uuid(), dict: JSONDocument(), list: JSONDocument()},
)


class Base(DeclarativeBase):
    registry = mapper_registry


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.utcnow())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.utcnow(), onupdate=lambda: clock.utcnow())
