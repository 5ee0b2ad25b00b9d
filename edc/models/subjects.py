"""Subjects, known only by their study number, and the per-site counters that allocate it."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edc.models.base import Base, IdMixin, TimestampMixin
from edc.models.sites import Site
from edc.models.types import JSONDocument

SUBJECT_STATUSES = ("screening", "enrolled", "screen_failed", "withdrawn", "completed", "deceased")
SEXES = ("F", "M", "U")  # female, male, unknown or undetermined
DUPLICATE_INDEX = "uq_subjects_site_duplicate_index"  # the unique index a duplicate enrolment meets


class SubjectCounter(Base):
    """The last study number given at a site; locked while the next one is allocated."""

    __tablename__ = "subject_counters"

    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"), primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)


class Subject(IdMixin, TimestampMixin, Base):
    """A pseudonymised trial subject. Birth year and month are the most that is ever stored."""

    __tablename__ = "subjects"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {SUBJECT_STATUSES!r}", name="status"),
        sa.CheckConstraint("birth_month BETWEEN 1 AND 12", name="birth_month"),
        sa.UniqueConstraint("site_id", "seq"),
        sa.Index("ix_subjects_site_status", "site_id", "status"),
        # One subject per hospital number and site, whatever the timing of two enrolments (services/subjects.py).
        sa.Index(DUPLICATE_INDEX, "site_id", "duplicate_index", unique=True),
    )

    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"))
    seq: Mapped[int]
    number: Mapped[str] = mapped_column(sa.String(16), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="screening")
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    birth_year: Mapped[int]
    birth_month: Mapped[int]
    sex: Mapped[str] = mapped_column(sa.String(1))
    consent_date: Mapped[date]
    registration_date: Mapped[date]
    planned_infusion_date: Mapped[date | None]
    day0: Mapped[date | None]
    # Truncated keyed hash of the site hospital number: finds duplicates, stores no number.
    duplicate_index: Mapped[str | None] = mapped_column(sa.String(32))
    created_by: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[int] = mapped_column(default=1)
    # A locked subject's casebook is read-only, new entries included, until a data manager unlocks it.
    locked_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(sa.String(64))

    site: Mapped[Site] = relationship()

    __mapper_args__ = {"version_id_col": version}


class SubjectSummary(Base):
    """What the monitoring reports count per subject, kept current by the writes that move it
    (edc/services/summaries.py), so a report adds up one row per subject instead of reading entries.

    Completeness holds for the days from `counted_on` up to (not including) `valid_until`, when a visit
    window of the subject next opens or closes (NULL: no window left to move); `fingerprint` names the
    schedule and counting rules it was made with, so an amended schedule makes every row outdated."""

    __tablename__ = "subject_summaries"

    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"), primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(16))
    counted_on: Mapped[date]
    valid_until: Mapped[date | None] = mapped_column(index=True)
    expected: Mapped[int] = mapped_column(default=0)
    complete: Mapped[int] = mapped_column(default=0)
    draft: Mapped[int] = mapped_column(default=0)
    missing: Mapped[int] = mapped_column(default=0)
    overdue: Mapped[int] = mapped_column(default=0)
    ae_total: Mapped[int] = mapped_column(default=0)
    sae_total: Mapped[int] = mapped_column(default=0)
    ae_by_grade: Mapped[dict[str, int]] = mapped_column(JSONDocument, default=dict)   # "1".."5", "unknown" -> count
    sae_by_grade: Mapped[dict[str, int]] = mapped_column(JSONDocument, default=dict)
    max_crs_grade: Mapped[int | None]
    max_icans_grade: Mapped[int | None]
    updated_at: Mapped[datetime]
