"""Queries (discrepancy management): the listing, raising a query, its thread, and its transitions.

The schemas of this resource live here; QueryOut (schemas.py) stays the short form that entries and
casebooks embed, and QueryDetailOut extends it with the workflow fields and the thread.
"""

from __future__ import annotations

import uuid

from flask import request, url_for
from marshmallow import RAISE, Schema, fields, validate

from edc import clock
from edc.api.common import current_actor, etag, page_args
from edc.api.idempotency import idempotent
from edc.api.openapi import etag_doc, if_match_doc
from edc.api.parsing import Blueprint, multiline
from edc.api.transaction import commit_with_answer
from edc.api.schemas import SITE_CODE, PageArgs, PageOut, QueryOut
from edc.extensions import db
from edc.models.entries import QUERY_STATES
from edc.models.monitoring import QUERY_ASSIGNEE_ROLES
from edc.security.permissions import requires
from edc.services import queries

blp = Blueprint("queries", __name__, url_prefix="/api/v1/queries", description="Data queries and their threads")

MESSAGE = validate.Length(min=1, max=4000)
ITEM = validate.Regexp(r"^[A-Za-z0-9_]{1,64}(/[0-9]{1,4}/[A-Za-z0-9_]{1,64})?$",
                       error="An item id, or GROUP/<row index>/ITEM for an item of a repeating group's row.")


class QueryListArgs(PageArgs):
    site = fields.String(validate=SITE_CODE)
    subject = fields.String(validate=validate.Length(min=1, max=16))
    form = fields.String(validate=validate.Length(min=1, max=64))
    state = fields.String(validate=validate.OneOf(QUERY_STATES))
    min_age_days = fields.Integer(validate=validate.Range(min=0, max=100000),
                                  metadata={"description": "opened at least this many whole days ago"})
    max_age_days = fields.Integer(validate=validate.Range(min=0, max=100000),
                                  metadata={"description": "opened at most this many whole days ago"})
    assignee_role = fields.String(validate=validate.OneOf(QUERY_ASSIGNEE_ROLES))
    critical = fields.Boolean()


class QueryIn(Schema):
    entry_id = fields.UUID(required=True)
    item = fields.String(load_default=None, allow_none=True, validate=[ITEM, validate.Length(max=64)],  # the column's width
                         metadata={"description": "null: the query is on the whole entry"})
    message = fields.String(required=True, validate=MESSAGE, metadata=multiline())
    critical = fields.Boolean(load_default=False)


class MessageIn(Schema):
    message = fields.String(required=True, validate=MESSAGE, metadata=multiline())


class AnswerIn(MessageIn):
    change_id = fields.UUID(load_default=None, allow_none=True,
                            metadata={"description": "the audit record of the correcting change; "
                                                     "default: the latest change of the queried item since the query opened"})


class CloseIn(Schema):
    message = fields.String(load_default=None, allow_none=True, validate=MESSAGE, metadata=multiline())


class MessageOut(Schema):
    id = fields.UUID()
    action = fields.String(metadata={"description": "open | answer | close | reopen | cancel | comment"})
    body = fields.String()
    author = fields.String(attribute="author_username")
    author_name = fields.String()
    author_role = fields.String(allow_none=True)
    created_at = fields.DateTime()
    change_id = fields.UUID(allow_none=True)


class QueryListItemOut(QueryOut):
    subject = fields.String()
    site = fields.String()
    event = fields.String(allow_none=True)
    event_instance = fields.Integer(allow_none=True)
    opened_by = fields.String()
    assignee_role = fields.String()
    first_answered_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    closed_by = fields.String(allow_none=True)
    cancelled_at = fields.DateTime(allow_none=True)
    age_days = fields.Integer()
    version = fields.Integer()
    entry_url = fields.String()


class QueryDetailOut(QueryListItemOut):
    messages = fields.List(fields.Nested(MessageOut))


class QueryPage(PageOut):
    items = fields.List(fields.Nested(QueryListItemOut))


def _out(view: queries.QueryView, messages=None) -> dict:
    query = view.query
    event, _, instance = view.event_key.partition("/")
    body = {name: getattr(query, name) for name in (
        "id", "entry_id", "form_id", "item_id", "origin", "check_id", "rule_kind", "message", "critical", "state",
        "opened_at", "answered_at", "answered_by_change", "opened_by", "assignee_role", "first_answered_at",
        "closed_at", "closed_by", "cancelled_at", "version")}
    body.update(subject=view.subject, site=view.site, event=event or None, event_instance=int(instance) if instance else None,
                age_days=(clock.utcnow() - query.opened_at).days,
                entry_url=url_for("entries.get_entry", entry_id=query.entry_id))
    if messages is not None:
        body["messages"] = messages
    return body


def _detail(query) -> tuple[dict, dict]:
    [view] = queries.views(db.session, [query])
    body = _out(view, queries.thread(db.session, query.id))
    return body, {"ETag": etag(query)}


def _if_match() -> str | None:
    """Transitions take an optional If-Match: with it, a change made since your read is refused (412)."""
    value = request.headers.get("If-Match")
    return value.strip() if value else None


@blp.get("")
@requires("queries:read")
@blp.arguments(QueryListArgs, location="query", unknown=RAISE)
@blp.response(200, QueryPage)
def list_queries(args):
    """Queries of your sites, oldest first, filtered by site, subject, form, state, age, assignee and criticality."""
    filters = {name: args[name] for name in ("site", "subject", "form", "state", "min_age_days", "max_age_days",
                                             "assignee_role", "critical") if name in args}
    result = queries.list_queries(db.session, current_actor(), **filters, **page_args(args))
    return {"items": [_out(view) for view in result.items], "page": result.page, "page_size": result.page_size,
            "total": result.total}


@blp.post("")
@blp.doc(**etag_doc(create=True))
@requires("queries:manage")
@idempotent
@blp.arguments(QueryIn)
@blp.response(201, QueryDetailOut)
def open_query(data):
    """Raise a query on an item of an entry, or on the whole entry (item null)."""
    query = queries.open_query(db.session, current_actor(), **data)
    body, headers = _detail(query)
    headers["Location"] = url_for(".get_query", query_id=query.id)
    commit_with_answer()
    return body, 201, headers


@blp.get("/<uuid:query_id>")
@blp.doc(**etag_doc())
@requires("queries:read")
@blp.response(200, QueryDetailOut)
def get_query(query_id: uuid.UUID):
    """One query with its thread of messages."""
    query, _ = queries.get_query(db.session, current_actor(), query_id)
    body, headers = _detail(query)
    return body, 200, headers


@blp.post("/<uuid:query_id>/messages")
@requires("queries:message")
@blp.arguments(MessageIn)
@blp.response(201, MessageOut)
def add_message(data, query_id: uuid.UUID):
    """Comment on a query that is open or answered."""
    note = queries.comment(db.session, current_actor(), query_id, message=data["message"])
    body = {name: getattr(note, name) for name in ("id", "action", "body", "author_username", "author_name",
                                                    "author_role", "created_at", "change_id")}
    commit_with_answer()
    return body, 201


def _transition(query_id: uuid.UUID, action: str, data: dict):
    query = queries.transition(db.session, current_actor(), query_id, action, message=data.get("message"),
                               change_id=data.get("change_id"), expected_etag=_if_match())
    body, headers = _detail(query)
    commit_with_answer()
    return body, 200, headers


@blp.post("/<uuid:query_id>/answer")
@blp.doc(**if_match_doc(required=False))
@requires("queries:answer")
@blp.arguments(AnswerIn)
@blp.response(200, QueryDetailOut)
def answer_query(data, query_id: uuid.UUID):
    """Answer an open query (site staff), linking the data change that corrected it."""
    return _transition(query_id, "answer", data)


@blp.post("/<uuid:query_id>/close")
@blp.doc(**if_match_doc(required=False))
@requires("queries:manage")
@blp.arguments(CloseIn)
@blp.response(200, QueryDetailOut)
def close_query(data, query_id: uuid.UUID):
    """Close an answered query."""
    return _transition(query_id, "close", data)


@blp.post("/<uuid:query_id>/reopen")
@blp.doc(**if_match_doc(required=False))
@requires("queries:manage")
@blp.arguments(MessageIn)
@blp.response(200, QueryDetailOut)
def reopen_query(data, query_id: uuid.UUID):
    """Re-open an answered or closed query, saying why."""
    return _transition(query_id, "reopen", data)


@blp.post("/<uuid:query_id>/cancel")
@blp.doc(**if_match_doc(required=False))
@requires("queries:manage")
@blp.arguments(MessageIn)
@blp.response(200, QueryDetailOut)
def cancel_query(data, query_id: uuid.UUID):
    """Cancel an open or answered query raised in error, saying why."""
    return _transition(query_id, "cancel", data)
