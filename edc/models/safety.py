"""Safety-reporting clocks: one row per AE and clock family, so open and overdue clocks are
listed (and later notified) from an index, never by scanning entries."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edc.models.base import Base, IdMixin, TimestampMixin
from edc.models.entries import Entry
from edc.models.sites import Site
from edc.models.subjects import Subject

# The investigator's 24-hour SAE report, and the sponsor's expedited SUSAR report (7 or 15 days).
CLOCK_KINDS = ("sae_initial", "susar_7d", "susar_15d")
FAMILY_OF = {"sae_initial": "sae", "susar_7d": "susar", "susar_15d": "susar"}
# complete / submitted: the report was made; not_serious / not_susar: the clock no longer applies.
STOP_REASONS = ("complete", "submitted", "not_serious", "not_susar")
CANCELLED = frozenset({"not_serious", "not_susar"})

_OPEN = sa.text("stopped_at IS NULL")


class SafetyClock(IdMixin, TimestampMixin, Base):
    """A reporting deadline of one adverse event: when it started, when it is due, when it stopped."""

    __tablename__ = "safety_clocks"
    __table_args__ = (
        sa.CheckConstraint(f"kind IN {CLOCK_KINDS!r}", name="kind"),
        sa.CheckConstraint("(family = 'sae' AND kind = 'sae_initial') OR (family = 'susar' AND kind IN ('susar_7d', 'susar_15d'))",
                           name="kind_family"),
        sa.CheckConstraint(f"stop_reason IS NULL OR stop_reason IN {STOP_REASONS!r}", name="stop_reason"),
        sa.CheckConstraint("(stopped_at IS NULL) = (stop_reason IS NULL)", name="stopped_with_reason"),
        # One clock per AE and family: a SUSAR clock that turns from 15 to 7 days is the same row.
        sa.UniqueConstraint("ae_entry_id", "family"),
        # Open clocks by site and due time (listings), and by due time alone (reminders, reports).
        sa.Index("ix_safety_clocks_open_site_due", "site_id", "due_at", sqlite_where=_OPEN, postgresql_where=_OPEN),
        sa.Index("ix_safety_clocks_open_due", "due_at", sqlite_where=_OPEN, postgresql_where=_OPEN),
        sa.Index("ix_safety_clocks_subject_id", "subject_id"),
    )

    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"))
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"))
    ae_entry_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("entries.id"))
    family: Mapped[str] = mapped_column(sa.String(8))  # "sae" | "susar"
    kind: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    stop_reason: Mapped[str | None] = mapped_column(sa.String(16))

    subject: Mapped[Subject] = relationship()
    site: Mapped[Site] = relationship()
    ae_entry: Mapped[Entry] = relationship()
