"""What an export reads: the selected subjects' casebooks, streamed a batch of subjects at a time.

Every writer (CSV, ODM, FHIR) reads the study through this module only, so the selection rules
(sites, forms, subject statuses, changes since a time, a named data cut) are applied in one place,
memory stays bounded by one batch whatever the study's size, and two runs over the same data read
the same rows in the same order (subject number, then entry creation time and id).

Entry records carry the attribute names of `edc.models.Entry` (id, version, created_at, ...), so the
FHIR mapper builds from either. A data cut's entries are its snapshot: values and version as they
stood at the cut-off (the subject row itself is read as it is now).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc import runtime
from edc.models.entries import Entry
from edc.models.monitoring import DataCut, DataCutEntry, Signature
from edc.models.subjects import Subject
from edc.services import audit
from edc.services.sealing import StoredDocument, unseal

SUBJECTS_PER_BATCH = 100


@dataclass(frozen=True)
class Selection:
    """Which data an export covers. None means no restriction."""

    site_ids: frozenset[uuid.UUID] | None = None
    forms: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    since: datetime | None = None  # only subjects changed after this instant, and only their changed entries
    whole_casebooks: bool = False  # with `since`: every entry of a changed subject (FHIR builds from the whole book)
    cut_id: uuid.UUID | None = None  # read this data cut's snapshot instead of the live entries


@dataclass
class EntryRecord:
    """One entry with its values opened (identifying items still present: writers drop them)."""

    id: uuid.UUID
    subject_id: uuid.UUID
    event_key: str
    form_id: str
    form_version: str
    version: int
    status: str
    created_at: datetime
    updated_at: datetime | None
    values: dict[str, Any]

    @property
    def changed_at(self) -> datetime:
        return self.updated_at or self.created_at


@dataclass
class Casebook:
    """A subject (with its site loaded) and its selected entries, oldest first."""

    subject: Subject
    entries: list[EntryRecord] = field(default_factory=list)


def _subject_filter(selection: Selection) -> list[Any]:
    where: list[Any] = []
    if selection.site_ids is not None:
        where.append(Subject.site_id.in_(selection.site_ids))
    if selection.statuses is not None:
        where.append(Subject.status.in_(selection.statuses))
    if selection.since is not None:
        changed_entry = sa.select(Entry.id).where(Entry.subject_id == Subject.id, Entry.updated_at > selection.since)
        where.append(sa.or_(Subject.updated_at > selection.since, changed_entry.exists()))
    if selection.cut_id is not None:
        in_cut = sa.select(DataCutEntry.entry_id).where(DataCutEntry.cut_id == selection.cut_id,
                                                        DataCutEntry.subject_id == Subject.id)
        where.append(in_cut.exists())
    return where


def subject_ids(session: Session, selection: Selection) -> list[uuid.UUID]:
    """The selected subjects' ids in export order (by study number)."""
    return list(session.scalars(sa.select(Subject.id).where(*_subject_filter(selection)).order_by(Subject.number)))


def casebooks(session: Session, selection: Selection, *, batch: int = SUBJECTS_PER_BATCH) -> Iterator[Casebook]:
    """Stream the selected casebooks in study-number order; each batch's rows leave the session after use."""
    ids = subject_ids(session, selection)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        subjects = session.scalars(sa.select(Subject).options(joinedload(Subject.site))
                                   .where(Subject.id.in_(chunk)).order_by(Subject.number)).all()
        books = {subject.id: Casebook(subject) for subject in subjects}
        for record in _entries(session, selection, chunk):
            books[record.subject_id].entries.append(record)
        yield from books.values()
        for subject in subjects:
            session.expunge(subject)


def _entries(session: Session, selection: Selection, chunk: list[uuid.UUID]) -> Iterator[EntryRecord]:
    study = runtime.of(session).study
    if selection.cut_id is None:
        stmt = (sa.select(Entry.id, Entry.subject_id, Entry.event_key, Entry.form_id, Entry.form_version, Entry.version,
                          Entry.status, Entry.created_at, Entry.updated_at, Entry.data)
                .where(Entry.subject_id.in_(chunk)))
        if selection.since is not None and not selection.whole_casebooks:
            stmt = stmt.where(Entry.updated_at > selection.since)
        form_column = Entry.form_id
    else:
        cutoff = session.scalar(sa.select(DataCut.cutoff_at).where(DataCut.id == selection.cut_id))
        changed = sa.case((Entry.updated_at > cutoff, sa.literal(cutoff, Entry.updated_at.type)), else_=Entry.updated_at)
        stmt = (sa.select(DataCutEntry.entry_id, DataCutEntry.subject_id, DataCutEntry.event_key, DataCutEntry.form_id,
                          DataCutEntry.form_version, DataCutEntry.entry_version, DataCutEntry.status, Entry.created_at,
                          changed, DataCutEntry.data)
                .join(Entry, Entry.id == DataCutEntry.entry_id)
                .where(DataCutEntry.cut_id == selection.cut_id, DataCutEntry.subject_id.in_(chunk)))
        form_column = DataCutEntry.form_id
    if selection.forms is not None:
        stmt = stmt.where(form_column.in_(selection.forms))
    stmt = stmt.order_by(Entry.created_at, Entry.id)
    for row in session.execute(stmt):
        entry_id, subject_id, event_key, form_id, form_version, version, status, created_at, updated_at, data = row
        # Rows of a Core select are this loop's own: opened in place, no deep copy per entry.
        values = unseal(session, study.form(form_id, form_version), StoredDocument(entry_id, data), in_place=True)
        yield EntryRecord(entry_id, subject_id, event_key, form_id, form_version, version, status, created_at,
                          updated_at, values)


def form_versions(session: Session, selection: Selection) -> dict[str, list[str]]:
    """Form id -> the versions the selected entries use (sorted): the manifest's and ODM's metadata."""
    if selection.cut_id is None:
        stmt = sa.select(Entry.form_id, Entry.form_version).join(Subject, Subject.id == Entry.subject_id)
        if selection.since is not None:
            stmt = stmt.where(Entry.updated_at > selection.since)
        form_column = Entry.form_id
    else:
        stmt = (sa.select(DataCutEntry.form_id, DataCutEntry.form_version)
                .join(Subject, Subject.id == DataCutEntry.subject_id).where(DataCutEntry.cut_id == selection.cut_id))
        form_column = DataCutEntry.form_id
    stmt = stmt.where(*[w for w in _subject_filter(Selection(site_ids=selection.site_ids, statuses=selection.statuses))])
    if selection.forms is not None:
        stmt = stmt.where(form_column.in_(selection.forms))
    found: dict[str, set[str]] = {}
    for form_id, version in session.execute(stmt.distinct()):
        found.setdefault(form_id, set()).add(version)
    return {form_id: sorted(found[form_id], key=_version_key) for form_id in sorted(found)}


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in version.split("."))


def subject_audit_trail(session: Session, subject_id: uuid.UUID) -> list[dict[str, Any]]:
    """A subject's audit chain (enrolment, entries, queries, signatures), oldest first, encrypted values opened.
    The caller has checked the reader may export this subject."""
    return audit.history(session, chain=audit.subject_chain(subject_id), limit=1_000_000)


def cutoff(session: Session, selection: Selection) -> datetime | None:
    """A data cut's cut-off (UTC): its export shows the audit records and signatures up to it. None: live data."""
    if selection.cut_id is None:
        return None
    return utc(session.scalar(sa.select(DataCut.cutoff_at).where(DataCut.id == selection.cut_id)))


@dataclass(frozen=True)
class SignatureRecord:
    """A signature as it stood at the export's cut-off; the entry fields are None for a casebook signature."""

    entry_id: uuid.UUID | None
    entry_version: int | None
    event_key: str | None
    form_id: str | None
    site_id: uuid.UUID
    signer_username: str
    printed_name: str
    meaning: str
    signed_at: datetime
    invalidated_at: datetime | None

    @property
    def valid(self) -> bool:
        return self.invalidated_at is None


def subject_signatures(session: Session, subject_id: uuid.UUID, *, until: datetime | None = None) -> list[SignatureRecord]:
    """A subject's signatures, oldest first, times in UTC. With `until` (a cut-off): those made after it are left
    out, and an invalidation after it is ignored (the signature still stood at the cut-off)."""
    stmt = (sa.select(Signature.entry_id, Signature.entry_version, Entry.event_key, Entry.form_id, Signature.site_id,
                      Signature.signer_username, Signature.printed_name, Signature.meaning, Signature.signed_at,
                      Signature.invalidated_at)
            .outerjoin(Entry, Entry.id == Signature.entry_id)
            .where(Signature.subject_id == subject_id)
            .order_by(Signature.signed_at, Signature.id))
    found = []
    for row in session.execute(stmt):
        signed_at = utc(row.signed_at)
        invalidated_at = row.invalidated_at and utc(row.invalidated_at)
        if until is not None and signed_at > until:
            continue
        if until is not None and invalidated_at is not None and invalidated_at > until:
            invalidated_at = None
        found.append(SignatureRecord(row.entry_id, row.entry_version, row.event_key, row.form_id, row.site_id,
                                     row.signer_username, row.printed_name, row.meaning, signed_at, invalidated_at))
    return found


def utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime."""
    if moment.tzinfo is None:  # SQLite gives naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
