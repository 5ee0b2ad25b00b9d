"""Export jobs: asked for over the API (or the FHIR Bulk Data kick-off), run by the worker."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base, IdMixin
from edc.models.types import JSONDocument

EXPORT_FORMATS = ("csv", "odm", "fhir")  # what POST /exports asks for
ARCHIVE_FORMAT = "archive"  # a site archive at study close (POST /sites/{code}/archive)
JOB_FORMATS = (*EXPORT_FORMATS, ARCHIVE_FORMAT)
# queued -> running -> completed | failed | cancelled; a running job whose worker stopped heartbeating is
# queued again (or failed once out of attempts). `deleted` hides a cancelled or finished job and its files.
EXPORT_STATES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
_ACTIVE = sa.text("state IN ('queued', 'running')")


class ExportJob(IdMixin, Base):
    """One export: what was asked and by whom, its progress, and once complete, its manifest."""

    __tablename__ = "export_jobs"
    __table_args__ = (
        sa.CheckConstraint(f"format IN {JOB_FORMATS!r}", name="format"),
        sa.CheckConstraint(f"state IN {EXPORT_STATES!r}", name="state"),
        sa.Index("ix_export_jobs_active", "state", "requested_at", sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
        sa.Index("ix_export_jobs_requester", "requested_by_id", "state"),
    )

    format: Mapped[str] = mapped_column(sa.String(8))
    bulk: Mapped[bool] = mapped_column(default=False)  # a FHIR Bulk Data kick-off (its own status and manifest shape)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDocument())  # the request, as validated
    site_ids: Mapped[list[Any] | None] = mapped_column(JSONDocument())  # the sites covered (None: all)
    requested_by_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"))
    requested_by: Mapped[str] = mapped_column(sa.String(64))
    requested_role: Mapped[str] = mapped_column(sa.String(32))
    requested_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(sa.String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    subjects_total: Mapped[int | None]
    subjects_done: Mapped[int] = mapped_column(default=0)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument())
    error: Mapped[str | None] = mapped_column(sa.Text)
    deleted_at: Mapped[datetime | None]
