"""Extension objects, created unbound and wired to the app in create_app."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, registry

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite keeps no offset (it would return a naive wall time); PostgreSQL stores
    timestamptz. Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC timestamp")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class JSONDocument(sa.types.TypeDecorator):
    """JSON stored as JSONB on PostgreSQL and as JSON text elsewhere."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


# The registry is declared explicitly: a class-level type_annotation_map crashes
# Flask-SQLAlchemy 3.1 (pallets-eco/flask-sqlalchemy#1361).
mapper_registry = registry(
    metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
    type_annotation_map={datetime: UTCDateTime(), uuid.UUID: sa.Uuid(), dict: JSONDocument(), list: JSONDocument()},
)


class Base(DeclarativeBase):
    registry = mapper_registry


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
