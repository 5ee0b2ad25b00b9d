"""Column helpers shared by the models."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column

from edc import clock


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.utcnow())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.utcnow(), onupdate=lambda: clock.utcnow())
