"""Case-form entries: create, read, replace (If-Match), list, and their audit history."""

from __future__ import annotations

import uuid

from flask import url_for

from edc.api.common import current_actor, etag, if_match
from edc.api.idempotency import idempotent
from edc.api.openapi import etag_doc, if_match_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import AuditRecordOut, EntryIn, EntryListArgs, EntryOut, EntryPutIn
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import audit, entries, queries

blp = Blueprint("entries", __name__, url_prefix="/api/v1", description="Case-form entries")


def _out(entry, values, outcome=None) -> dict:
    event, _, instance = entry.event_key.partition("/")
    body = {
        "id": entry.id, "subject": entry.subject.number, "event": event or None, "event_instance": int(instance) if instance else None,
        "form": entry.form_id, "form_version": entry.form_version, "status": entry.status, "data": values,
        "version": entry.version, "created_at": entry.created_at, "created_by": entry.created_by,
        "updated_at": entry.updated_at, "updated_by": entry.updated_by,
        "queries": outcome.queries if outcome is not None else queries.for_entry(db.session, entry.id),
    }
    if outcome is not None:
        body.update(warnings=outcome.warnings, queries_opened=outcome.opened, queries_answered=outcome.answered)
    return body


@blp.post("/subjects/<number>/entries")
@blp.doc(**etag_doc(create=True))
@requires("entries:write")
@idempotent
@blp.arguments(EntryIn)
@blp.response(201, EntryOut)
def create_entry(data, number):
    """Enter a form for a subject (at an event, or in a subject-level log)."""
    outcome = entries.create_entry(db.session, current_actor(), number, **data)
    entry = outcome.entry
    body, headers = _out(entry, outcome.values, outcome), {"Location": url_for(".get_entry", entry_id=entry.id), "ETag": etag(entry)}
    commit_with_answer()
    return body, 201, headers


@blp.get("/subjects/<number>/entries")
@requires("entries:read")
@blp.arguments(EntryListArgs, location="query")
@blp.response(200, EntryOut(many=True))
def list_entries(args, number):
    """A subject's entries, by event and form."""
    return [_out(e, v) for e, v in entries.list_entries(db.session, current_actor(), number, **args)]


@blp.get("/entries/<uuid:entry_id>")
@blp.doc(**etag_doc())
@requires("entries:read")
@blp.response(200, EntryOut)
def get_entry(entry_id: uuid.UUID):
    """One entry with its values (decrypted for you) and queries."""
    entry, values = entries.get_entry(db.session, current_actor(), entry_id)
    return _out(entry, values), 200, {"ETag": etag(entry)}


@blp.put("/entries/<uuid:entry_id>")
@blp.doc(**if_match_doc())
@requires("entries:write")
@blp.arguments(EntryPutIn)
@blp.response(200, EntryOut)
def replace_entry(data, entry_id: uuid.UUID):
    """Replace an entry's full item set (If-Match; changes to a completed entry need a reason)."""
    outcome = entries.update_entry(db.session, current_actor(), entry_id, expected_etag=if_match(), **data)
    body, headers = _out(outcome.entry, outcome.values, outcome), {"ETag": etag(outcome.entry)}
    commit_with_answer()
    return body, 200, headers


@blp.get("/entries/<uuid:entry_id>/audit")
@requires("clinical_audit:read")
@blp.response(200, AuditRecordOut(many=True))
def get_entry_audit(entry_id: uuid.UUID):
    """The entry's audit trail, oldest first."""
    return audit.entry_history(db.session, current_actor(), entry_id)
