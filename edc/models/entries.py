"""Case-form entries (one JSON document of values each), the form-status table, and queries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edc.models.base import Base, IdMixin, TimestampMixin
from edc.models.subjects import Subject
from edc.models.types import JSONDocument

ENTRY_STATUSES = ("draft", "complete")
FORM_STATES = ("draft", "complete")
QUERY_STATES = ("open", "answered", "closed", "cancelled")
SUBJECT_LOG_KEY = ""  # the event key of an entry in a subject-level log (adverse events, medications)


class FormVersion(Base):
    """A released form version and the hash of its content: a released version never changes."""

    __tablename__ = "form_versions"

    form_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    released_at: Mapped[datetime]


class Entry(IdMixin, TimestampMixin, Base):
    """One filled-in case form. Encrypted items hold AES-GCM envelopes bound to this row."""

    __tablename__ = "entries"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {ENTRY_STATUSES!r}", name="status"),
        # Non-repeating forms have one slot per event instance; repeating ones leave it NULL.
        sa.UniqueConstraint("subject_id", "unique_slot"),
        sa.Index("ix_entries_subject_form", "subject_id", "form_id"),
        # Study-wide reads of one form (safety summaries, data cuts, exports) without a full scan.
        sa.Index("ix_entries_form_subject", "form_id", "subject_id"),
    )

    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"))
    event_key: Mapped[str] = mapped_column(sa.String(64))  # "<event>/<instance>", or SUBJECT_LOG_KEY
    form_id: Mapped[str] = mapped_column(sa.String(64))
    form_version: Mapped[str] = mapped_column(sa.String(16))
    unique_slot: Mapped[str | None] = mapped_column(sa.String(160))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument())
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    ever_completed: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    updated_by: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[int] = mapped_column(default=1)
    # Locked by a data manager, or frozen by a data cut: read-only until a data manager unlocks it.
    locked_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(sa.String(64))
    frozen_by_cut: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("data_cuts.id"))

    subject: Mapped[Subject] = relationship()

    __mapper_args__ = {"version_id_col": version}


class FormStatus(Base):
    """Subject × event instance × form: what casebooks and reports read instead of scanning entries."""

    __tablename__ = "form_status"

    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"), primary_key=True)
    event_key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    form_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"), index=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    entries: Mapped[int] = mapped_column(default=0)
    open_queries: Mapped[int] = mapped_column(default=0)
    verified: Mapped[bool] = mapped_column(default=False)
    entries_verified: Mapped[int] = mapped_column(default=0)   # entries with an active whole-entry SDV mark
    items_verified: Mapped[int] = mapped_column(default=0)     # active item SDV marks of its entries
    signed: Mapped[bool] = mapped_column(default=False)
    locked: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime]


class Query(IdMixin, Base):
    """A data query on an entry or one of its items. Automatic ones come from warnings."""

    __tablename__ = "queries"
    __table_args__ = (
        sa.CheckConstraint(f"state IN {QUERY_STATES!r}", name="state"),
        sa.Index("ix_queries_site_state", "site_id", "state"),
        sa.Index("ix_queries_entry_state", "entry_id", "state"),
        sa.Index("ix_queries_state_opened", "state", "opened_at"),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("entries.id"))
    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"))
    form_id: Mapped[str] = mapped_column(sa.String(64))
    item_id: Mapped[str | None] = mapped_column(sa.String(64))
    origin: Mapped[str] = mapped_column(sa.String(16))  # "auto" | "manual"
    check_id: Mapped[str | None] = mapped_column(sa.String(64))
    rule_kind: Mapped[str | None] = mapped_column(sa.String(16))  # soft_range | check | cross_form
    message: Mapped[str] = mapped_column(sa.Text)
    critical: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(sa.String(16), default="open")
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(sa.String(64))
    answered_at: Mapped[datetime | None]
    # The audit record of the change that answered it (automatic queries: the fixing save).
    answered_by_change: Mapped[uuid.UUID | None]
    first_answered_at: Mapped[datetime | None]  # for the time-to-answer report; kept across re-opens
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(sa.String(64))
    cancelled_at: Mapped[datetime | None]
    # Who acts next: "site" while open (site staff answer), the monitor once answered.
    assignee_role: Mapped[str] = mapped_column(sa.String(16), default="site", server_default="site")
    version: Mapped[int] = mapped_column(default=1)

    entry: Mapped["Entry"] = relationship()

    __mapper_args__ = {"version_id_col": version}
