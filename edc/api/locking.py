"""Locks and data cuts: entry and subject locks, named data cuts with their frozen snapshot, and the
final study lock. Data managers act; locked data answer 409 to every write.

The schemas of this resource live here: they describe only these routes and change with them.
"""

from __future__ import annotations

import uuid

from flask import url_for
from marshmallow import Schema, fields, validate

from edc.api.common import current_actor, etag
from edc.api.openapi import etag_doc
from edc.api.parsing import Blueprint, multiline
from edc.api.transaction import commit_with_answer
from edc.api.schemas import required_reason
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import locking

blp = Blueprint("locking", __name__, url_prefix="/api/v1", description="Locks, data cuts and the study lock")

class LockIn(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000),
                           metadata=multiline(description="optional when locking"))


class UnlockIn(Schema):
    reason = required_reason()


class EntryLockOut(Schema):
    entry = fields.UUID()
    subject = fields.String()
    locked = fields.Boolean(metadata={"description": "locked by a data manager or frozen by a data cut"})
    locked_at = fields.DateTime(allow_none=True)
    locked_by = fields.String(allow_none=True)
    frozen_by_cut = fields.UUID(allow_none=True)
    version = fields.Integer()


class SubjectLockOut(Schema):
    subject = fields.String()
    locked = fields.Boolean()
    locked_at = fields.DateTime(allow_none=True)
    locked_by = fields.String(allow_none=True)


class CutIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    cutoff_at = fields.AwareDateTime(required=True, metadata={"description": "ISO 8601 with offset; not in the future"})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata=multiline())


class CutOut(Schema):
    id = fields.UUID()
    name = fields.String()
    cutoff_at = fields.DateTime()
    reason = fields.String()
    created_at = fields.DateTime()
    created_by = fields.String()
    entry_count = fields.Integer()
    url = fields.String()


class CutDetailOut(CutOut):
    entries_per_form = fields.Dict(keys=fields.String(), values=fields.Integer())


class StudyLockIn(Schema):
    reason = required_reason()


class StudyLockOut(Schema):
    locked = fields.Boolean()
    locked_at = fields.DateTime(allow_none=True)
    locked_by = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    unlocked_at = fields.DateTime(allow_none=True)
    unlocked_by = fields.String(allow_none=True)
    unlock_reason = fields.String(allow_none=True)


def _entry_out(entry) -> dict:
    return {"entry": entry.id, "subject": entry.subject.number,
            "locked": entry.locked_at is not None or entry.frozen_by_cut is not None,
            "locked_at": entry.locked_at, "locked_by": entry.locked_by, "frozen_by_cut": entry.frozen_by_cut,
            "version": entry.version}


def _subject_out(subject) -> dict:
    return {"subject": subject.number, "locked": subject.locked_at is not None, "locked_at": subject.locked_at,
            "locked_by": subject.locked_by}


def _cut_out(cut) -> dict:
    return {"id": cut.id, "name": cut.name, "cutoff_at": cut.cutoff_at, "reason": cut.reason, "created_at": cut.created_at,
            "created_by": cut.created_by, "entry_count": cut.entry_count, "url": url_for(".get_data_cut", cut_id=cut.id)}


def _study_lock_out(lock, *, locked: bool) -> dict:
    keys = ("locked_at", "locked_by", "reason", "unlocked_at", "unlocked_by", "unlock_reason")
    return {"locked": locked, **{key: getattr(lock, key) if lock is not None else None for key in keys}}


def _committed(body: dict, headers: dict | None = None):
    commit_with_answer()
    return body, 200, headers or {}


@blp.post("/entries/<uuid:entry_id>/lock")
@blp.doc(**etag_doc())
@requires("locks:manage")
@blp.arguments(LockIn)
@blp.response(200, EntryLockOut)
def lock_entry(data, entry_id: uuid.UUID):
    """Lock a complete entry: read-only until a data manager unlocks it."""
    entry = locking.lock_entry(db.session, current_actor(), entry_id, **data)
    return _committed(_entry_out(entry), {"ETag": etag(entry)})


@blp.post("/entries/<uuid:entry_id>/unlock")
@blp.doc(**etag_doc())
@requires("locks:manage")
@blp.arguments(UnlockIn)
@blp.response(200, EntryLockOut)
def unlock_entry(data, entry_id: uuid.UUID):
    """Lift an entry's lock or data-cut freeze (reason required; the cut's snapshot is unchanged)."""
    entry = locking.unlock_entry(db.session, current_actor(), entry_id, **data)
    return _committed(_entry_out(entry), {"ETag": etag(entry)})


@blp.post("/subjects/<number>/lock")
@requires("locks:manage")
@blp.arguments(LockIn)
@blp.response(200, SubjectLockOut)
def lock_subject(data, number: str):
    """Lock a subject's whole casebook, new entries included."""
    return _committed(_subject_out(locking.lock_subject(db.session, current_actor(), number, **data)))


@blp.post("/subjects/<number>/unlock")
@requires("locks:manage")
@blp.arguments(UnlockIn)
@blp.response(200, SubjectLockOut)
def unlock_subject(data, number: str):
    """Lift a subject lock (reason required); entries locked on their own stay locked."""
    return _committed(_subject_out(locking.unlock_subject(db.session, current_actor(), number, **data)))


@blp.post("/data-cuts")
@requires("locks:manage")
@blp.arguments(CutIn)
@blp.response(201, CutOut)
def create_data_cut(data):
    """Make a named data cut: freeze and snapshot every entry created up to the cut-off."""
    cut = locking.create_cut(db.session, current_actor(), **data)
    body = _cut_out(cut)
    commit_with_answer()
    return body, 201, {"Location": body["url"]}


@blp.get("/data-cuts")
@requires("cuts:read")
@blp.response(200, CutOut(many=True))
def list_data_cuts():
    """Every data cut, oldest first."""
    return [_cut_out(cut) for cut in locking.list_cuts(db.session, current_actor())]


@blp.get("/data-cuts/<uuid:cut_id>")
@requires("cuts:read")
@blp.response(200, CutDetailOut)
def get_data_cut(cut_id: uuid.UUID):
    """One data cut with its snapshot's entry count per form."""
    cut, per_form = locking.get_cut(db.session, current_actor(), cut_id)
    return {**_cut_out(cut), "entries_per_form": per_form}


@blp.get("/study/lock")
@requires("forms:read")
@blp.response(200, StudyLockOut)
def get_study_lock():
    """Whether the final study lock is in force, since when, by whom and why."""
    lock = locking.study_lock_state(db.session, current_actor())
    return _study_lock_out(lock, locked=lock is not None)


@blp.post("/study/lock")
@requires("locks:manage")
@blp.arguments(StudyLockIn)
@blp.response(200, StudyLockOut)
def lock_study(data):
    """Lock the study (reason required): every entry write and enrolment answers 409 until it is lifted."""
    lock = locking.lock_study(db.session, current_actor(), **data)
    return _committed(_study_lock_out(lock, locked=True))


@blp.post("/study/unlock")
@requires("locks:manage")
@blp.arguments(StudyLockIn)
@blp.response(200, StudyLockOut)
def unlock_study(data):
    """Lift the study lock (reason required)."""
    lock = locking.unlock_study(db.session, current_actor(), **data)
    return _committed(_study_lock_out(lock, locked=False))
