"""Queries (discrepancy management): automatic ones opened by warnings and answered when a later save
makes the rule pass; manual ones opened by monitors and data managers on an item or a whole entry.

States: open -> answered -> closed; re-open from answered or closed; cancel from open or answered.
Every transition and comment is a QueryMessage of the query's thread and an audit record on the
subject's chain, written in the caller's transaction with the form-status cell refreshed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf import FormDef, validate_entry
from edc.models.audit import AuditRecord
from edc.models.entries import Entry, Query
from edc.models.monitoring import QueryMessage
from edc.models.sites import Site
from edc.models.subjects import Subject
from edc.problems import Conflict, NotFound, UnprocessableContent, field_error
from edc.security.permissions import MATRIX, Actor, require
from edc.services import audit, outbox, status_table
from edc.services.concurrency import check_locked_etag
from edc.services.pagination import Page, paginate
from edc.services.rule_context import validation_context
from edc.services.scope import get_subject
from edc.services.sealing import unseal

OPEN, ANSWERED, CLOSED, CANCELLED = "open", "answered", "closed", "cancelled"
READ, MANAGE, ANSWER, MESSAGE = "queries:read", "queries:manage", "queries:answer", "queries:message"
ENTRY_SAVES = ("entry_created", "entry_updated")
# The thread author of automatic transitions: the check itself (the audit record names whose save caused it).
CHECKS_USERNAME, CHECKS_NAME, CHECKS_ROLE = "system:checks", "Automatic check", "system"


@dataclass(frozen=True)
class Transition:
    permission: str
    sources: frozenset[str]
    target: str
    audit_action: str


TRANSITIONS = {
    "answer": Transition(ANSWER, frozenset({OPEN}), ANSWERED, "query_answered"),
    "close": Transition(MANAGE, frozenset({ANSWERED}), CLOSED, "query_closed"),
    "reopen": Transition(MANAGE, frozenset({ANSWERED, CLOSED}), OPEN, "query_reopened"),
    "cancel": Transition(MANAGE, frozenset({OPEN, ANSWERED}), CANCELLED, "query_cancelled"),
}


# --- automatic queries ---------------------------------------------------------------------------

def _key(check_id: str | None, item_id: str | None) -> tuple[str | None, str | None]:
    """What identifies an automatic query within one entry: the rule and the item (or row path)."""
    return check_id, item_id


def _wanted(warnings: list[dict[str, Any]], only_cross_form: bool) -> dict[tuple, dict[str, Any]]:
    wanted = {}
    for warning in warnings:
        if only_cross_form and warning.get("kind") != "cross_form":
            continue
        for item in warning.get("items") or [None]:
            wanted[_key(warning["check"], item)] = warning
    return wanted


def _settled_while_failing(session: Session, query: Query) -> bool:
    """Whether a person answered or cancelled this automatic query while its rule still failed (and
    the rule has not passed since): the same warning must then not open a duplicate on every save."""
    latest = session.scalars(
        sa.select(QueryMessage).where(
            QueryMessage.query_id == query.id,
            sa.or_(QueryMessage.author_role == CHECKS_ROLE, QueryMessage.action.in_(("answer", "cancel"))))
        .order_by(QueryMessage.created_at.desc(), QueryMessage.id.desc()).limit(1)
    ).one_or_none()
    return latest is not None and latest.author_role != CHECKS_ROLE


def sync_automatic(session: Session, actor: Actor, entry: Entry, warnings: list[dict[str, Any]], *,
                   fixing_change: uuid.UUID | None, only_cross_form: bool = False,
                   new_entry: bool = False) -> tuple[list[Query], list[Query]]:
    """Open a query for each new warning; answer open automatic queries whose rule now passes."""
    now = clock.utcnow()
    existing = [] if new_entry else list(session.scalars(
        sa.select(Query).where(Query.entry_id == entry.id, Query.origin == "auto").order_by(Query.opened_at, Query.id)))
    if only_cross_form:
        existing = [q for q in existing if q.rule_kind == "cross_form"]
    wanted = _wanted(warnings, only_cross_form)
    open_keys = {_key(q.check_id, q.item_id) for q in existing if q.state == OPEN}
    latest_settled: dict[tuple, Query] = {}
    for query in existing:
        if query.state != OPEN:
            latest_settled[_key(query.check_id, query.item_id)] = query
    settled = {key for key, query in latest_settled.items() if _settled_while_failing(session, query)}
    subject = entry.subject
    opened, answered = [], []
    for query in existing:
        if query.state == OPEN and _key(query.check_id, query.item_id) not in wanted:
            query.state, query.answered_at, query.answered_by_change = ANSWERED, now, fixing_change
            query.first_answered_at = query.first_answered_at or now
            query.assignee_role = _reviewer_role(session, query)
            answered.append(query)
    for key, warning in wanted.items():
        if key in open_keys or key in settled:
            continue
        query = Query(id=uuid.uuid4(), entry_id=entry.id, subject_id=entry.subject_id, site_id=subject.site_id,
                      form_id=entry.form_id, item_id=key[1], origin="auto", check_id=key[0], rule_kind=warning.get("kind"),
                      message=warning["message"], critical=bool(warning.get("critical")), state=OPEN, opened_at=now,
                      opened_by=actor.username, assignee_role="site")
        session.add(query)
        opened.append(query)
    session.flush()
    for query in opened:
        _message(session, query, "open", query.message, author=None, at=now)
        audit.record(session, actor, "query_opened", entity_type="query", entity_id=query.id,
                     chain=audit.subject_chain(entry.subject_id), site_code=subject.site.code,
                     changes=[audit.change("entry", None, str(entry.id)), audit.change("item", None, query.item_id),
                              audit.change("check", None, query.check_id), audit.change("message", None, query.message)])
        _notify_if_critical(session, query, subject)
    for query in answered:
        _message(session, query, "answer", "The check passes now.", author=None, at=now,
                 change_id=fixing_change)
        audit.record(session, actor, "query_answered", entity_type="query", entity_id=query.id,
                     chain=audit.subject_chain(entry.subject_id), site_code=subject.site.code,
                     changes=[audit.change("state", OPEN, ANSWERED),
                              audit.change("fixing_change", None, str(fixing_change) if fixing_change else None)])
    for key in settled - set(wanted):
        # The rule passes now: note it in the thread, so that a later failure opens a new query.
        query = latest_settled[key]
        _message(session, query, "comment", "The check passes now.", author=None, at=now, change_id=fixing_change)
        audit.record(session, actor, "query_comment", entity_type="query", entity_id=query.id,
                     chain=audit.subject_chain(entry.subject_id), site_code=subject.site.code,
                     changes=[audit.change("message", None, "The check passes now.")])
    return opened, answered


def for_entry(session: Session, entry_id: uuid.UUID) -> list[Query]:
    return list(session.scalars(sa.select(Query).where(Query.entry_id == entry_id).order_by(Query.opened_at, Query.id)))


def for_subject(session: Session, subject_id: uuid.UUID) -> list[Query]:
    return list(session.scalars(sa.select(Query).where(Query.subject_id == subject_id).order_by(Query.opened_at, Query.id)))


def open_by_subject(session: Session, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many open queries (awaiting the site's answer) each of these subjects has, in one statement; the
    caller has reached the subjects within its scope."""
    if not subject_ids:
        return {}
    return dict(session.execute(sa.select(Query.subject_id, sa.func.count(Query.id))
                                .where(Query.subject_id.in_(subject_ids), Query.state == OPEN)
                                .group_by(Query.subject_id)).all())


# --- threads, roles, notifications -----------------------------------------------------------------

def _role_for(actor: Actor, permission: str) -> str | None:
    """The actor's role that grants the permission (the role they act in)."""
    if actor.is_system:
        return "system"
    allowed = MATRIX.get(permission, frozenset())
    return next((role for role in actor.roles if role in allowed), actor.primary_role)


def _message(session: Session, query: Query, action: str, body: str, *, author: tuple[Actor, str] | None, at,
             change_id: uuid.UUID | None = None) -> QueryMessage:
    """Add one message to the query's thread; author None is the automatic check."""
    if author is None:
        username, name, role = CHECKS_USERNAME, CHECKS_NAME, CHECKS_ROLE
    else:
        actor, permission = author
        username, name, role = actor.username, actor.display_name or actor.username, _role_for(actor, permission)
    # A thread is ordered by time: a message never predates the previous one (clocks may tie or step back).
    previous = session.scalar(sa.select(sa.func.max(QueryMessage.created_at)).where(QueryMessage.query_id == query.id))
    if previous is not None and at <= previous:
        at = previous + timedelta(microseconds=1)
    message = QueryMessage(id=uuid.uuid4(), query_id=query.id, action=action, body=body, author_username=username,
                           author_name=name, author_role=role, created_at=at, change_id=change_id)
    session.add(message)
    return message


def _reviewer_role(session: Session, query: Query) -> str:
    """Who reviews an answer: the data manager for the queries a data manager opened, else the monitor."""
    opener = session.scalar(sa.select(QueryMessage.author_role).where(QueryMessage.query_id == query.id,
                                                                      QueryMessage.action == "open")
                            .order_by(QueryMessage.created_at, QueryMessage.id).limit(1))
    return "data_manager" if opener == "data_manager" else "monitor"


def _notify_if_critical(session: Session, query: Query, subject: Subject) -> None:
    """A critical query is announced through the outbox (kind, site, subject number only)."""
    if query.critical:
        outbox.enqueue(session, "critical_query", dedupe_key=str(query.id), site_id=query.site_id,
                       subject_number=subject.number)


def thread(session: Session, query_id: uuid.UUID) -> list[QueryMessage]:
    return list(session.scalars(sa.select(QueryMessage).where(QueryMessage.query_id == query_id)
                                .order_by(QueryMessage.created_at, QueryMessage.id)))


# --- manual queries and transitions ------------------------------------------------------------------

def _scoped_query(session: Session, actor: Actor, query_id: uuid.UUID, permission: str, *, for_update: bool = False) -> Query:
    require(actor, permission)
    stmt = sa.select(Query).where(Query.id == query_id)
    if for_update:  # serialise transitions of one query (ignored by SQLite, whose writes are immediate)
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    query = session.scalars(stmt).one_or_none()
    scope = actor.site_scope(permission)
    if query is None or (scope is not None and query.site_id not in scope):
        raise NotFound("No such query among your sites.")
    return query


def get_query(session: Session, actor: Actor, query_id: uuid.UUID) -> tuple[Query, list[QueryMessage]]:
    query = _scoped_query(session, actor, query_id, READ)
    return query, thread(session, query.id)


def _study(session: Session):
    return runtime.of(session).study


def _check_item(session: Session, entry: Entry, form: FormDef, item: str) -> None:
    """The item must exist in the entry's form version (rows as GROUP/index/ITEM) and be shown now."""
    values = unseal(session, form, entry)
    parts = item.split("/")
    if len(parts) == 3:
        group_id, index, member = parts
        group = form.groups.get(group_id)
        rows = values.get(group_id)
        if group is None or member not in group.items or not index.isdigit():
            raise UnprocessableContent(errors=[field_error("/item", f"No item {item} in form {form.id} version {form.version}.")])
        if not isinstance(rows, list) or int(index) >= len(rows):
            raise UnprocessableContent(errors=[field_error("/item", f"{group_id} has no row {index} in this entry.")])
        shown_if = form.items[member].show_if or group.show_if
        checked = (group_id, f"{group_id}/{int(index)}/{member}")
    elif len(parts) == 1 and (item in form.groups or (item in form.items and form.items[item].group is None)):
        shown_if = (form.groups[item] if item in form.groups else form.items[item]).show_if
        checked = (item,)
    else:
        raise UnprocessableContent(errors=[field_error("/item", f"No item {item} in form {form.id} version {form.version}.")])
    if shown_if is None and len(checked) == 1:
        return
    context = validation_context(session, entry.subject, entry.form_id, exclude=entry.id, event_key=entry.event_key)
    stored = {key: value for key, value in values.items() if not (key in form.items and form.items[key].computed)}
    hidden = validate_entry(form, stored, complete=False, context=context).hidden
    if any(name in hidden for name in checked):
        raise UnprocessableContent(errors=[field_error("/item", f"{item} is hidden by a condition for this entry's "
                                                                f"current values (shown only if {shown_if}).")])


def open_query(session: Session, actor: Actor, *, entry_id: uuid.UUID, item: str | None, message: str,
               critical: bool = False) -> Query:
    """Raise a query on an item of an entry, or on the whole entry (item None)."""
    require(actor, MANAGE)
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope(MANAGE)
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    form = _study(session).form(entry.form_id, entry.form_version)
    if item is not None:
        _check_item(session, entry, form, item)
    now, subject = clock.utcnow(), entry.subject
    query = Query(id=uuid.uuid4(), entry_id=entry.id, subject_id=subject.id, site_id=subject.site_id, form_id=entry.form_id,
                  item_id=item, origin="manual", message=message, critical=critical, state=OPEN, opened_at=now,
                  opened_by=actor.username, assignee_role="site")
    session.add(query)
    session.flush()
    _message(session, query, "open", message, author=(actor, MANAGE), at=now)
    audit.record(session, actor, "query_opened", entity_type="query", entity_id=query.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                 changes=[audit.change("entry", None, str(entry.id)), audit.change("item", None, item),
                          audit.change("critical", None, critical), audit.change("message", None, message)])
    _notify_if_critical(session, query, subject)
    status_table.refresh(session, subject, entry.event_key, entry.form_id)
    return query


def _open_seq(session: Session, query: Query) -> int:
    """Where on the subject's chain the query opened: changes after it can answer it."""
    return session.scalar(sa.select(sa.func.min(AuditRecord.seq)).where(
        AuditRecord.entity_type == "query", AuditRecord.entity_id == str(query.id), AuditRecord.action == "query_opened")) or 0


def _entry_changes_since(session: Session, query: Query):
    return (sa.select(AuditRecord).where(
        AuditRecord.entity_id == str(query.entry_id), AuditRecord.entity_type == "entry",
        AuditRecord.chain == audit.subject_chain(query.subject_id), AuditRecord.action.in_(ENTRY_SAVES),
        AuditRecord.seq > _open_seq(session, query)))


def _linked_change(session: Session, query: Query, change_id: uuid.UUID | None) -> uuid.UUID | None:
    """The data change that answers the query: the one named (checked), else the latest that changed its item."""
    if change_id is not None:
        found = session.scalar(_entry_changes_since(session, query).where(AuditRecord.id == change_id))
        if found is None:
            raise UnprocessableContent(errors=[field_error(
                "/change_id", "Not a change to this query's entry made after the query opened.")])
        return found.id
    field_name = query.item_id.split("/")[0] if query.item_id else None
    for record in session.scalars(_entry_changes_since(session, query).order_by(AuditRecord.seq.desc())):
        if field_name is None or any(change.get("field") == field_name for change in record.changes or []):
            return record.id
    return None


def transition(session: Session, actor: Actor, query_id: uuid.UUID, action: str, *, message: str | None,
               change_id: uuid.UUID | None = None, expected_etag: str | None = None) -> Query:
    """Answer, close, re-open or cancel a query (role and state checked; 409 for an illegal transition)."""
    rule = TRANSITIONS[action]
    query = _scoped_query(session, actor, query_id, rule.permission, for_update=True)
    if expected_etag is not None:
        check_locked_etag(query, expected_etag, "This query")  # read under its row lock just above
    if query.state not in rule.sources:
        raise Conflict(f"A query that is {query.state} cannot be {action_past(action)}.", state=query.state)
    now, before = clock.utcnow(), query.state
    link = _linked_change(session, query, change_id) if action == "answer" else None
    query.state = rule.target
    if action == "answer":
        query.answered_at, query.answered_by_change = now, link
        query.first_answered_at = query.first_answered_at or now
        query.assignee_role = _reviewer_role(session, query)
    elif action == "close":
        query.closed_at, query.closed_by = now, actor.username
    elif action == "reopen":
        query.answered_at = query.answered_by_change = query.closed_at = query.closed_by = None
        query.assignee_role = "site"
    elif action == "cancel":
        query.cancelled_at = now
    body = message or f"Query {action_past(action)}."
    session.flush()
    _message(session, query, action, body, author=(actor, rule.permission), at=now, change_id=link)
    changes = [audit.change("state", before, rule.target), audit.change("message", None, body)]
    if link is not None:
        changes.append(audit.change("answered_by_change", None, str(link)))
    entry = query.entry
    audit.record(session, actor, rule.audit_action, entity_type="query", entity_id=query.id,
                 chain=audit.subject_chain(query.subject_id), site_code=entry.subject.site.code, changes=changes)
    status_table.refresh(session, entry.subject, entry.event_key, entry.form_id)
    return query


def action_past(action: str) -> str:
    return {"answer": "answered", "close": "closed", "reopen": "re-opened", "cancel": "cancelled"}[action]


def comment(session: Session, actor: Actor, query_id: uuid.UUID, *, message: str) -> QueryMessage:
    """Add a comment to the thread of a query that is still open or answered."""
    query = _scoped_query(session, actor, query_id, MESSAGE, for_update=True)
    if query.state in (CLOSED, CANCELLED):
        raise Conflict(f"A {query.state} query takes no more messages; re-open it first.", state=query.state)
    now = clock.utcnow()
    note = _message(session, query, "comment", message, author=(actor, MESSAGE), at=now)
    session.flush()
    audit.record(session, actor, "query_comment", entity_type="query", entity_id=query.id,
                 chain=audit.subject_chain(query.subject_id), site_code=query.entry.subject.site.code,
                 changes=[audit.change("message", None, message)])
    return note


# --- the listing ---------------------------------------------------------------------------------------

@dataclass
class QueryView:
    query: Query
    subject: str
    site: str
    event_key: str
    messages: list[QueryMessage] = field(default_factory=list)


def list_queries(session: Session, actor: Actor, *, site: str | None = None, subject: str | None = None,
                 form: str | None = None, state: str | None = None, min_age_days: int | None = None,
                 max_age_days: int | None = None, assignee_role: str | None = None, critical: bool | None = None,
                 page: int = 1, page_size: int = 50) -> Page[QueryView]:
    """Queries of the caller's sites, oldest first, read from the indexed query rows."""
    require(actor, READ)
    now = clock.utcnow()
    stmt = sa.select(Query).order_by(Query.opened_at, Query.id)
    scope = actor.site_scope(READ)
    if scope is not None:
        stmt = stmt.where(Query.site_id.in_(scope))
    if site:
        site_row = session.scalars(sa.select(Site).where(Site.code == site.upper())).one_or_none()
        if site_row is None or (scope is not None and site_row.id not in scope):
            raise NotFound(f"No site {site} among your sites.")
        stmt = stmt.where(Query.site_id == site_row.id)
    if subject:
        stmt = stmt.where(Query.subject_id == get_subject(session, actor, subject, READ).id)
    if form:
        stmt = stmt.where(Query.form_id == form)
    if state:
        stmt = stmt.where(Query.state == state)
    if min_age_days is not None:
        stmt = stmt.where(Query.opened_at <= now - timedelta(days=min_age_days))
    if max_age_days is not None:
        stmt = stmt.where(Query.opened_at > now - timedelta(days=max_age_days + 1))
    if assignee_role:
        stmt = stmt.where(Query.assignee_role == assignee_role)
    if critical is not None:
        stmt = stmt.where(Query.critical.is_(critical))
    result = paginate(session, stmt, page=page, page_size=page_size)
    return Page(items=views(session, result.items), page=result.page, page_size=result.page_size, total=result.total)


def views(session: Session, rows: list[Query]) -> list[QueryView]:
    """The queries with their subject number, site code and event (one statement for the lot)."""
    if not rows:
        return []
    places = {row.id: row[1:] for row in session.execute(
        sa.select(Query.id, Subject.number, Site.code, Entry.event_key)
        .join(Subject, Subject.id == Query.subject_id).join(Site, Site.id == Query.site_id)
        .join(Entry, Entry.id == Query.entry_id).where(Query.id.in_([q.id for q in rows])))}
    return [QueryView(query=q, subject=places[q.id][0], site=places[q.id][1], event_key=places[q.id][2]) for q in rows]
