"""Locks and data cuts: data managers lock entries and subjects, freeze everything entered up to a cut-off
in a named data cut (with a snapshot that never changes), and lock the whole study at the end.

Locked or frozen data are read-only: every entry write and enrolment passes through ensure_writable /
ensure_study_open before anything is written. Locks are audited on the subject's chain; cuts and the
study lock on the study chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.entries import Entry, FormStatus
from edc.models.monitoring import DataCut, DataCutEntry, StudyLock
from edc.models.sites import Site
from edc.models.subjects import Subject
from edc.problems import Conflict, NotFound, UnprocessableContent, field_error
from edc.security.permissions import Actor, require
from edc.services import audit, status_table
from edc.services.concurrency import lock_current
from edc.services.scope import get_subject
from edc.services.sealing import StoredDocument, seal, unseal

STUDY_CHAIN = "study"
ENTRY_CHANGED = "entry_updated"  # the audited event that changes an entry's data (and raises its version)


def _reason(reason: str | None, what: str) -> str:
    if not (reason or "").strip():
        raise UnprocessableContent(f"{what} needs a reason.", errors=[field_error("/reason", f"Say why ({what.lower()}).")])
    return reason.strip()


def _set_lock_flags(session: Session, entry_filter, **flags) -> None:
    """Set lock flags without touching the data version or updated_at: a lock is not a change of data (it
    must not invalidate a signature over the entry's version, nor reorder the "latest entry" rules read).
    Racing writers are kept out by the row lock ensure_writable takes, not by the version."""
    table = Entry.__table__
    session.execute(sa.update(table).where(entry_filter(table.c)).values(**flags, updated_at=table.c.updated_at))


# --- the one write guard -----------------------------------------------------------------------

def study_lock(session: Session) -> StudyLock | None:
    """The study lock in force, if any."""
    return session.scalars(sa.select(StudyLock).where(StudyLock.unlocked_at.is_(None))
                           .order_by(StudyLock.locked_at.desc()).limit(1)).first()


# The time of the study lock in force (NULL when the study is open), as a column another statement can read
# instead of a study_lock() round trip of its own (entries.get_subject_to_enter).
STUDY_LOCKED_AT = (sa.select(StudyLock.locked_at).where(StudyLock.unlocked_at.is_(None))
                   .order_by(StudyLock.locked_at.desc()).limit(1).scalar_subquery())
_UNREAD = object()


def ensure_study_open(session: Session, locked_at: datetime | None | object = _UNREAD) -> None:
    """Refuse (409) any data write or enrolment while the final study lock is in force. `locked_at`: the
    STUDY_LOCKED_AT the caller read in this transaction (None: open); by default it is read here."""
    if locked_at is _UNREAD:
        lock = study_lock(session)
        locked_at = lock.locked_at if lock is not None else None
    if locked_at is not None:
        raise Conflict(f"The study is locked (since {locked_at.isoformat()}); no data can be entered or changed.")


def ensure_writable(session: Session, subject: Subject, entry: Entry | None = None, *,
                    study_locked_at: datetime | None | object = _UNREAD) -> None:
    """Refuse (409) a write to a locked or frozen entry, to any entry of a locked subject, or while the
    study is locked (`study_locked_at`: as for ensure_study_open). Call after the scope checks (so
    out-of-scope data stay 404) and before any write."""
    ensure_study_open(session, study_locked_at)
    if entry is not None:
        # Re-read the entry under its row lock: a lock committed since it was loaded wins, and the version the
        # caller compares with the ETag is the one its write will replace.
        lock_current(session, entry)
        if entry.frozen_by_cut is not None:
            cut = session.get(DataCut, entry.frozen_by_cut)
            raise Conflict(f"This entry is frozen by data cut {cut.name if cut else entry.frozen_by_cut}; "
                           "a data manager must unlock it (with a reason) before it can change.",
                           data_cut=cut.name if cut else None)
        if entry.locked_at is not None:
            raise Conflict("This entry is locked; a data manager must unlock it (with a reason) before it can change.")
    if subject.locked_at is not None:
        raise Conflict(f"Subject {subject.number} is locked; its casebook is read-only until a data manager unlocks it.")


# --- form-status cells -------------------------------------------------------------------------

def _recount_locked(session: Session, subjects_filter) -> None:
    """Recompute form_status.locked for every cell of the selected subjects in one statement (the rule
    of status_table.refresh: the subject is locked, or the cell has entries and every one is locked or frozen)."""
    in_cell = sa.and_(Entry.subject_id == FormStatus.subject_id, Entry.event_key == FormStatus.event_key,
                      Entry.form_id == FormStatus.form_id)
    subject_locked = sa.exists().where(Subject.id == FormStatus.subject_id, Subject.locked_at.is_not(None))
    any_entry = sa.exists().where(in_cell)
    any_open = sa.exists().where(in_cell, Entry.locked_at.is_(None), Entry.frozen_by_cut.is_(None))
    session.execute(
        sa.update(FormStatus).where(FormStatus.subject_id.in_(subjects_filter))
        .values(locked=sa.or_(subject_locked, sa.and_(any_entry, ~any_open)), updated_at=clock.utcnow())
        .execution_options(synchronize_session=False)
    )


# --- entry and subject locks -----------------------------------------------------------------------

def _managed_entry(session: Session, actor: Actor, entry_id: uuid.UUID) -> Entry:
    require(actor, "locks:manage")
    entry = session.scalars(sa.select(Entry).where(Entry.id == entry_id).with_for_update()
                            .execution_options(populate_existing=True)).one_or_none()
    scope = actor.site_scope("locks:manage")
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    return entry


def _refresh_entry_cell(session: Session, entry: Entry) -> None:
    status_table.refresh(session, entry.subject, entry.event_key, entry.form_id)


def lock_entry(session: Session, actor: Actor, entry_id: uuid.UUID, *, reason: str | None = None) -> Entry:
    """Make one complete entry read-only."""
    entry = _managed_entry(session, actor, entry_id)
    if entry.status == "draft":
        raise Conflict("A draft entry cannot be locked: the site has not completed it yet.")
    if entry.locked_at is not None:
        raise Conflict(f"This entry is already locked (since {entry.locked_at.isoformat()}).")
    now = clock.utcnow()
    _set_lock_flags(session, lambda c: c.id == entry.id, locked_at=now, locked_by=actor.username)
    session.expire(entry, ["locked_at", "locked_by", "frozen_by_cut"])
    audit.record(session, actor, "entry_locked", entity_type="entry", entity_id=entry.id,
                 chain=audit.subject_chain(entry.subject_id), site_code=entry.subject.site.code,
                 reason=(reason or "").strip() or None, changes=[audit.change("@locked", None, now.isoformat())])
    _refresh_entry_cell(session, entry)
    return entry


def unlock_entry(session: Session, actor: Actor, entry_id: uuid.UUID, *, reason: str | None) -> Entry:
    """Lift an entry's lock or its data-cut freeze (the cut's snapshot stays as it was)."""
    entry = _managed_entry(session, actor, entry_id)
    reason = _reason(reason, "Unlocking")
    if entry.locked_at is None and entry.frozen_by_cut is None:
        raise Conflict("This entry is neither locked nor frozen by a data cut.")
    changes = []
    if entry.locked_at is not None:
        changes.append(audit.change("@locked", entry.locked_at.isoformat(), None))
    if entry.frozen_by_cut is not None:
        changes.append(audit.change("@frozen_by_cut", str(entry.frozen_by_cut), None))
    _set_lock_flags(session, lambda c: c.id == entry.id, locked_at=None, locked_by=None, frozen_by_cut=None)
    session.expire(entry, ["locked_at", "locked_by", "frozen_by_cut"])
    audit.record(session, actor, "entry_unlocked", entity_type="entry", entity_id=entry.id,
                 chain=audit.subject_chain(entry.subject_id), site_code=entry.subject.site.code,
                 reason=reason, changes=changes)
    _refresh_entry_cell(session, entry)
    return entry


def _managed_subject(session: Session, actor: Actor, number: str) -> Subject:
    subject = get_subject(session, actor, number, "locks:manage")
    # Lock the row (and re-read it) so two data managers cannot interleave a lock and an unlock.
    return session.scalars(sa.select(Subject).where(Subject.id == subject.id).with_for_update(of=Subject)
                           .execution_options(populate_existing=True)).one()


def lock_subject(session: Session, actor: Actor, number: str, *, reason: str | None = None) -> Subject:
    """Make a subject's whole casebook read-only, new entries included."""
    subject = _managed_subject(session, actor, number)
    if subject.locked_at is not None:
        raise Conflict(f"Subject {subject.number} is already locked (since {subject.locked_at.isoformat()}).")
    now = clock.utcnow()
    subject.locked_at, subject.locked_by = now, actor.username
    session.flush()
    audit.record(session, actor, "subject_locked", entity_type="subject", entity_id=subject.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                 reason=(reason or "").strip() or None, changes=[audit.change("@locked", None, now.isoformat())])
    session.execute(sa.update(FormStatus).where(FormStatus.subject_id == subject.id)
                    .values(locked=True, updated_at=now).execution_options(synchronize_session=False))
    return subject


def unlock_subject(session: Session, actor: Actor, number: str, *, reason: str | None) -> Subject:
    """Lift a subject lock; entries locked or frozen on their own stay so."""
    subject = _managed_subject(session, actor, number)
    reason = _reason(reason, "Unlocking")
    if subject.locked_at is None:
        raise Conflict(f"Subject {subject.number} is not locked.")
    old = subject.locked_at
    subject.locked_at = subject.locked_by = None
    session.flush()
    audit.record(session, actor, "subject_unlocked", entity_type="subject", entity_id=subject.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code, reason=reason,
                 changes=[audit.change("@locked", old.isoformat(), None)])
    _recount_locked(session, [subject.id])
    return subject


# --- the final study lock --------------------------------------------------------------------------

def lock_study(session: Session, actor: Actor, *, reason: str | None) -> StudyLock:
    """The final study lock after the last follow-up: no entry or enrolment until it is lifted."""
    require(actor, "locks:manage")
    reason = _reason(reason, "Locking the study")
    if study_lock(session) is not None:
        raise Conflict("The study is already locked.")
    lock = StudyLock(id=uuid.uuid4(), locked_at=clock.utcnow(), locked_by=actor.username, reason=reason)
    session.add(lock)
    session.flush()
    audit.record(session, actor, "study_locked", entity_type="study_lock", entity_id=lock.id, chain=STUDY_CHAIN,
                 reason=reason, changes=[audit.change("@locked", None, lock.locked_at.isoformat())])
    return lock


def unlock_study(session: Session, actor: Actor, *, reason: str | None) -> StudyLock:
    """Lift the study lock (e.g. a late correction found after database lock)."""
    require(actor, "locks:manage")
    reason = _reason(reason, "Unlocking the study")
    lock = study_lock(session)
    if lock is None:
        raise Conflict("The study is not locked.")
    lock.unlocked_at, lock.unlocked_by, lock.unlock_reason = clock.utcnow(), actor.username, reason
    session.flush()
    audit.record(session, actor, "study_unlocked", entity_type="study_lock", entity_id=lock.id, chain=STUDY_CHAIN,
                 reason=reason, changes=[audit.change("@locked", lock.locked_at.isoformat(), None)])
    return lock


def study_lock_state(session: Session, actor: Actor) -> StudyLock | None:
    """The study lock in force (None when the study is open)."""
    require(actor, "forms:read")
    return study_lock(session)


def locked_counts(session: Session, actor: Actor) -> dict[str, dict[str, int]]:
    """Per site code of the actor's sites: subjects locked, and form-status cells locked (every entry in them
    locked or frozen by a cut, or the subject locked), counted by the database in two statements."""
    require(actor, "locks:manage")
    scope = actor.site_scope("locks:manage")
    sites = sa.select(Site.id, Site.code)
    if scope is not None:
        sites = sites.where(Site.id.in_(scope))
    codes = dict(session.execute(sites).all())
    counts = {code: {"subjects": 0, "forms": 0} for code in sorted(codes.values())}
    for site_id, count in session.execute(sa.select(Subject.site_id, sa.func.count(Subject.id))
                                          .where(Subject.site_id.in_(codes), Subject.locked_at.is_not(None))
                                          .group_by(Subject.site_id)):
        counts[codes[site_id]]["subjects"] = count
    for site_id, count in session.execute(sa.select(FormStatus.site_id, sa.func.count())
                                          .where(FormStatus.site_id.in_(codes), FormStatus.locked.is_(True),
                                                 FormStatus.entries > 0)
                                          .group_by(FormStatus.site_id)):
        counts[codes[site_id]]["forms"] = count
    return counts


# --- data cuts -------------------------------------------------------------------------------------

def _as_of_cutoff(session: Session, row, cutoff: datetime) -> tuple[dict[str, Any], str, int]:
    """An entry's stored document, status and version as they stood at the cut-off: undo, newest first,
    every audited change made after it (the audit trail holds the old values, opened)."""
    form = runtime.of(session).study.form(row.form_id, row.form_version)
    records = audit.history(session, chain=audit.subject_chain(row.subject_id), entity_type="entry",
                            entity_id=str(row.id), limit=100_000)
    later = [r for r in records if r["occurred_at"] > cutoff and r["action"] == ENTRY_CHANGED]
    version = row.version - len(later)
    if not later:  # touched since (e.g. re-encrypted) but not changed: the data as stored
        return row.data, row.status, version
    values, status = unseal(session, form, StoredDocument(row.id, row.data)), row.status
    for record in reversed(later):
        for change in record["changes"]:
            name = change["field"]
            if name == "@status":
                status = change["old"]
            elif not name.startswith("@"):
                if change["old"] is None:
                    values.pop(name, None)
                else:
                    values[name] = change["old"]
    order = {item: index for index, item in enumerate(form.top_level)}
    values = dict(sorted(values.items(), key=lambda kv: order.get(kv[0], len(order))))
    return seal(session, form, row.id, values), status, version


def create_cut(session: Session, actor: Actor, *, name: str, cutoff_at: datetime, reason: str | None) -> DataCut:
    """Freeze every entry created up to cutoff_at and snapshot it as it stood at the cut-off."""
    require(actor, "locks:manage")
    name = (name or "").strip()
    errors = []
    if not name:
        errors.append(field_error("/name", "Name the cut (e.g. 'primary-analysis-2027')."))
    now = clock.utcnow()
    if cutoff_at > now:
        errors.append(field_error("/cutoff_at", "The cut-off must not be in the future."))
    if not (reason or "").strip():
        errors.append(field_error("/reason", "Say why the cut is made (e.g. 'primary analysis')."))
    if errors:
        raise UnprocessableContent("The data cut has invalid fields.", errors=errors)
    if session.scalar(sa.select(DataCut.id).where(DataCut.name == name)) is not None:
        raise Conflict(f"A data cut named {name} already exists.")
    cut = DataCut(id=uuid.uuid4(), name=name, cutoff_at=cutoff_at, reason=reason.strip(), created_at=now,
                  created_by=actor.username, entry_count=0)
    session.add(cut)
    session.flush()

    # Freeze first: the UPDATE waits for writers still holding an entry's row lock, so the snapshot read
    # after it sees their commits, and any later writer finds the entry frozen.
    _set_lock_flags(session, lambda c: c.created_at <= cutoff_at, frozen_by_cut=cut.id)
    columns = (Entry.id, Entry.subject_id, Entry.event_key, Entry.form_id, Entry.form_version, Entry.version,
               Entry.status, Entry.data, Entry.updated_at)
    count, batch = 0, []
    rows = session.execute(sa.select(*columns).where(Entry.frozen_by_cut == cut.id).order_by(Entry.subject_id, Entry.id)
                           .execution_options(yield_per=500))
    for row in rows:
        if row.updated_at > cutoff_at:  # possibly changed since: consult the audit trail
            data, status, version = _as_of_cutoff(session, row, cutoff_at)
        else:
            data, status, version = row.data, row.status, row.version
        batch.append({"cut_id": cut.id, "entry_id": row.id, "subject_id": row.subject_id, "event_key": row.event_key,
                      "form_id": row.form_id, "form_version": row.form_version, "entry_version": version,
                      "status": status, "data": data})
        count += 1
        if len(batch) >= 500:
            session.execute(sa.insert(DataCutEntry), batch)
            batch = []
    if batch:
        session.execute(sa.insert(DataCutEntry), batch)
    session.expire_all()
    cut = session.get(DataCut, cut.id)
    cut.entry_count = count
    session.flush()
    _recount_locked(session, sa.select(DataCutEntry.subject_id).where(DataCutEntry.cut_id == cut.id).distinct())
    audit.record(session, actor, "data_cut_created", entity_type="data_cut", entity_id=cut.id, chain=STUDY_CHAIN,
                 reason=cut.reason, changes=[audit.change("name", None, cut.name),
                                             audit.change("cutoff_at", None, cut.cutoff_at.isoformat()),
                                             audit.change("entry_count", None, count)])
    return cut


def list_cuts(session: Session, actor: Actor) -> list[DataCut]:
    require(actor, "cuts:read")
    return list(session.scalars(sa.select(DataCut).order_by(DataCut.created_at, DataCut.name)))


def get_cut(session: Session, actor: Actor, cut_id: uuid.UUID) -> tuple[DataCut, dict[str, int]]:
    """A cut and how many of its snapshot entries each form has."""
    require(actor, "cuts:read")
    cut = session.get(DataCut, cut_id)
    if cut is None:
        raise NotFound("No such data cut.")
    per_form = dict(session.execute(
        sa.select(DataCutEntry.form_id, sa.func.count()).where(DataCutEntry.cut_id == cut.id)
        .group_by(DataCutEntry.form_id).order_by(DataCutEntry.form_id)
    ).all())
    return cut, per_form


@dataclass(frozen=True)
class CutEntry:
    """One entry of a cut's snapshot, values opened."""

    entry_id: uuid.UUID
    subject: str
    site: str
    event_key: str
    form_id: str
    form_version: str
    entry_version: int
    status: str
    values: dict[str, Any]


def cut_entries(session: Session, cut_id: uuid.UUID) -> Iterator[CutEntry]:
    """Stream a cut's snapshot in a stable order (subject number, event, form, entry id) with values opened.
    For exports: the caller checks the reader's permission; the snapshot never changes after the cut."""
    study = runtime.of(session).study
    stmt = (sa.select(DataCutEntry, Subject.number, Site.code)
            .join(Subject, Subject.id == DataCutEntry.subject_id).join(Site, Site.id == Subject.site_id)
            .where(DataCutEntry.cut_id == cut_id)
            .order_by(Subject.number, DataCutEntry.event_key, DataCutEntry.form_id, DataCutEntry.entry_id)
            .execution_options(yield_per=500))
    result = session.execute(stmt)
    try:
        for snap, number, site in result:
            form = study.form(snap.form_id, snap.form_version)
            yield CutEntry(entry_id=snap.entry_id, subject=number, site=site, event_key=snap.event_key,
                           form_id=snap.form_id, form_version=snap.form_version, entry_version=snap.entry_version,
                           status=snap.status, values=unseal(session, form, StoredDocument(snap.entry_id, snap.data)))
    finally:
        result.close()
