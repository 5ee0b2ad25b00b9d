"""The data key every node encrypts new values under, recorded where every node reads it: the database."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base

KEY_STATE_ROW = 1


class DataKeyState(Base):
    """One row, written by `flask edc keys rotate`: no row means the newest key of the ring."""

    __tablename__ = "data_key_state"
    __table_args__ = (sa.CheckConstraint(f"id = {KEY_STATE_ROW}", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    current_key_id: Mapped[int]
    recorded_at: Mapped[datetime]
