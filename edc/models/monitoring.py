"""The monitoring workflow's records: query threads, source data verification, investigator
signatures, locks and data cuts, and the notification outbox.

Reports read these through indexes (and the form-status table), never by scanning entries.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from edc.models.base import Base, IdMixin, TimestampMixin
from edc.models.types import JSONDocument

# What happened in a query's thread: the transitions, a plain comment, and the automatic ones.
QUERY_MESSAGE_ACTIONS = ("open", "answer", "close", "reopen", "cancel", "comment")
# Who is expected to act next on an open or re-opened query.
QUERY_ASSIGNEE_ROLES = ("site", "monitor", "data_manager")
SIGNATURE_MEANINGS = ("approval", "review", "responsibility", "authorship")
NOTIFICATION_KINDS = ("sae_new", "critical_query", "safety_clock_due")
# Mail to one person about their own account: the setup link of a new account or of a password reset.
ACCOUNT_MAIL_KINDS = ("account_setup", "password_reset")
OUTBOX_KINDS = NOTIFICATION_KINDS + ACCOUNT_MAIL_KINDS
OUTBOX_STATES = ("pending", "sent", "failed")

_ACTIVE = sa.text("cleared_at IS NULL")
_VALID = sa.text("invalidated_at IS NULL")
_PENDING = sa.text("status = 'pending'")


class QueryMessage(IdMixin, Base):
    """One message of a query's thread, with who wrote it and when; transitions are messages too."""

    __tablename__ = "query_messages"
    __table_args__ = (
        sa.CheckConstraint(f"action IN {QUERY_MESSAGE_ACTIONS!r}", name="action"),
        sa.Index("ix_query_messages_query_created", "query_id", "created_at"),
    )

    query_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("queries.id"))
    action: Mapped[str] = mapped_column(sa.String(16))
    body: Mapped[str] = mapped_column(sa.Text)
    author_username: Mapped[str] = mapped_column(sa.String(64))
    author_name: Mapped[str] = mapped_column(sa.String(200))
    author_role: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime]
    # The audit record of the data change that answered the query, when the answer was a correction.
    change_id: Mapped[uuid.UUID | None]


class SdvMark(IdMixin, Base):
    """A monitor's verification of one item of an entry against source (item NULL: the whole entry).

    A later change to the item clears the mark (cleared_at, with the change linked); cleared marks
    stay as history, and only active ones (cleared_at NULL) count.
    """

    __tablename__ = "sdv_marks"
    __table_args__ = (
        sa.Index("ix_sdv_marks_active_entry", "entry_id", sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
        sa.Index("ix_sdv_marks_site_form", "site_id", "form_id"),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("entries.id"))
    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"))
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"))
    form_id: Mapped[str] = mapped_column(sa.String(64))
    item_id: Mapped[str | None] = mapped_column(sa.String(64))
    entry_version: Mapped[int]
    verified_by: Mapped[str] = mapped_column(sa.String(64))
    verified_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    cleared_by_change: Mapped[uuid.UUID | None]


class Signature(IdMixin, Base):
    """An investigator's electronic signature of one entry, or of a subject's casebook (entry NULL).

    The digest is a keyed HMAC over the canonical JSON (RFC 8785) of what was signed, so a row
    copied onto another entry, or data changed underneath it, no longer matches.
    """

    __tablename__ = "signatures"
    __table_args__ = (
        sa.CheckConstraint(f"meaning IN {SIGNATURE_MEANINGS!r}", name="meaning"),
        sa.Index("ix_signatures_valid_entry", "entry_id", sqlite_where=_VALID, postgresql_where=_VALID),
        sa.Index("ix_signatures_subject", "subject_id"),
    )

    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"))
    site_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sites.id"))
    entry_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("entries.id"))
    entry_version: Mapped[int | None]
    signer_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"))
    signer_username: Mapped[str] = mapped_column(sa.String(64))
    printed_name: Mapped[str] = mapped_column(sa.String(200))
    meaning: Mapped[str] = mapped_column(sa.String(32))
    signed_at: Mapped[datetime]
    digest: Mapped[str] = mapped_column(sa.String(64))
    key_id: Mapped[int]
    invalidated_at: Mapped[datetime | None]
    invalidated_by_change: Mapped[uuid.UUID | None]


class DataCut(IdMixin, Base):
    """A named analysis cut: every entry created up to cutoff_at is frozen and snapshotted."""

    __tablename__ = "data_cuts"

    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    cutoff_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(64))
    entry_count: Mapped[int] = mapped_column(default=0)


class DataCutEntry(Base):
    """An entry as it stood when the cut was made (values as stored: still sealed to the entry)."""

    __tablename__ = "data_cut_entries"
    __table_args__ = (sa.Index("ix_data_cut_entries_subject", "cut_id", "subject_id"),)

    cut_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("data_cuts.id"), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("entries.id"), primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("subjects.id"))
    event_key: Mapped[str] = mapped_column(sa.String(64))
    form_id: Mapped[str] = mapped_column(sa.String(64))
    form_version: Mapped[str] = mapped_column(sa.String(16))
    entry_version: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument())


class StudyLock(IdMixin, Base):
    """The final study lock (after the last follow-up), and its lifting, each with a reason."""

    __tablename__ = "study_locks"

    locked_at: Mapped[datetime]
    locked_by: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.Text)
    unlocked_at: Mapped[datetime | None]
    unlocked_by: Mapped[str | None] = mapped_column(sa.String(64))
    unlock_reason: Mapped[str | None] = mapped_column(sa.Text)


class OutboxMessage(IdMixin, TimestampMixin, Base):
    """A notification to deliver: type, site, subject number and due time only, never clinical values.

    Written in the transaction of the event it reports; the mailer delivers it and marks it sent.
    dedupe_key keeps one notification per event (e.g. one per clock and kind).

    An account mail goes to one recipient and carries a secret (the setup link), kept only as an
    AES-GCM envelope bound to this row (sealed_secret): the listing never shows it, only the mailer
    opens it to send, and it is erased once the record is sent or has failed for good.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        sa.CheckConstraint(f"kind IN {OUTBOX_KINDS!r}", name="kind"),
        sa.CheckConstraint(f"status IN {OUTBOX_STATES!r}", name="status"),
        sa.Index("ix_outbox_pending_next", "next_attempt_at", sqlite_where=_PENDING, postgresql_where=_PENDING),
    )

    kind: Mapped[str] = mapped_column(sa.String(32))
    dedupe_key: Mapped[str] = mapped_column(sa.String(128), unique=True)
    site_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("sites.id"))
    subject_number: Mapped[str | None] = mapped_column(sa.String(16))
    due_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    recipient: Mapped[str | None] = mapped_column(sa.String(254))
    sealed_secret: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument())
