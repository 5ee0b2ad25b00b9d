"""Monitoring pages: the query inbox and threads, source data verification, signatures, and an item's audit history.

Each view calls the same edc.services use cases as the matching API route (edc/api/queries.py, sdv.py,
signatures.py, and entries.py's entry audit), under the same permission, so roles, site scope (another site's
entry or query is a 404), validation and audit exist once. The pages only choose what to show: which actions
a role has comes from the permission matrix and the query workflow's own transition table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, redirect, request, url_for

from edc import clock, runtime
from edc.ecrf import FormDef
from edc.extensions import db
from edc.models.entries import QUERY_STATES
from edc.models.monitoring import SIGNATURE_MEANINGS
from edc.problems import Conflict, NotFound, TooManyRequests, Unauthorized, UnprocessableContent, field_error
from edc.security.permissions import requires
from edc.services import audit, entries, queries, sdv, signatures, sites
from edc.services.scope import get_subject
from edc.web import browser, i18n
from edc.web.blueprint import blp
from edc.web.i18n import translate as t
from edc.web.rendering import committed, page, refused

NOTICES = {  # ?notice= names one of these, so no URL can put text of its own on the page
    "query_opened": "The query was opened.",
    "query_answered": "The query was answered.",
    "query_closed": "The query was closed.",
    "query_reopened": "The query was re-opened.",
    "query_cancelled": "The query was cancelled.",
    "query_message": "Your message was added to the thread.",
    "sdv_marked": "The verification was recorded.",
    "signed": "Your signature was recorded.",
}
# The words for the services' codes (distinct English keys: the page catalogue holds each key once).
STATE_TEXT = {"open": "open: the site answers", "answered": "answered: to review", "closed": "closed: resolved",
              "cancelled": "cancelled: raised in error"}
WAITING_TEXT = {"site": "the site", "monitor": "the monitor", "data_manager": "the data manager"}
ENTRY_STATUS_TEXT = {"draft": "draft entry", "complete": "complete entry"}
MEANING_TEXT = {"approval": "Approval of these data", "review": "Review of these data",
                "responsibility": "Responsibility for these data", "authorship": "Authorship of these data"}
ACTION_TEXT = {"open": "opened the query", "answer": "answered the query", "close": "closed the query",
               "reopen": "re-opened the query", "cancel": "cancelled the query", "comment": "commented"}
REQUIREMENT_TEXT = {"all": "every item entered", "critical": "the critical items", "none": "nothing (not required)"}
MESSAGE_MAX = 4000  # as the API's query messages (edc/api/queries.py)
PAGE_SIZE = 50
ANY_STATE = "all"
ACTION_NOTICES = {"answer": "query_answered", "close": "query_closed", "reopen": "query_reopened",
                  "cancel": "query_cancelled"}
# A message is optional only when closing (as the API: CloseIn); the service then writes "Query closed.".
MESSAGE_OPTIONAL = frozenset({"close"})


def notice() -> str | None:
    key = request.args.get("notice")
    return t(NOTICES[key]) if key in NOTICES else None


# --- presentation helpers ----------------------------------------------------------------------------------

def _study():
    return runtime.of(db.session).study


def _label(labels: dict[str, str] | None, default: str) -> str:
    if not labels:
        return default
    return labels.get(i18n.language()) or labels.get("en") or default


def _form(entry) -> FormDef:
    return _study().form(entry.form_id, entry.form_version)


def item_label(form: FormDef, item: str | None) -> str:
    """An item's label in the user's language (a group row's item as `group label #n: item label`)."""
    if not item:
        return t("The whole entry")
    parts = item.split("/")
    if len(parts) == 3 and parts[0] in form.groups and parts[2] in form.items:
        group, member = form.groups[parts[0]], form.items[parts[2]]
        row = int(parts[1]) + 1 if parts[1].isdigit() else parts[1]
        return f"{_label(group.label, group.id)} #{row}: {_label(member.label, member.id)}"
    if item in form.groups:
        return _label(form.groups[item].label, item)
    if item in form.items:
        return _label(form.items[item].label, item)
    return item


def _event_text(event_key: str) -> str:
    if not event_key:
        return t("Subject-level log (no visit)")
    event_id, _, instance = event_key.partition("/")
    try:
        label = _label(_study().event(event_id).label, event_id)
    except KeyError:
        label = event_id
    return f"{label} #{instance}" if instance and instance != "1" else label


def _form_title(form_id: str) -> str:
    try:
        return _label(_study().form(form_id).title, form_id)
    except KeyError:
        return form_id


def show_value(form: FormDef, item_id: str | None, value: Any) -> str:
    """A stored value as the page shows it: code labels in the user's language, missing-data codes by name,
    an identifying value the role may not see as withheld (the services decide that, not this function)."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, dict):
        if "withheld" in value:
            return t("withheld (identifying)")
        if "missing" in value:
            code = value["missing"]
            text = _label(form.missing_code_labels.get(code), code)
            return f"{text}: {value['note']}" if value.get("note") else text
        return ", ".join(f"{_item_name(form, k)}: {show_value(form, k, v)}" for k, v in value.items())
    item = form.items.get(item_id or "")
    if isinstance(value, list):
        if all(isinstance(row, dict) for row in value):
            return " · ".join(f"#{n}: {show_value(form, None, row)}" for n, row in enumerate(value, 1))
        return ", ".join(show_value(form, item_id, v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if item is not None and item.code_list and str(value) in item.code_list:
        return f"{_label(item.code_list[str(value)], str(value))} ({value})"
    if item is not None and item.unit:
        return f"{value} {item.unit_display or item.unit}"
    return str(value)


def _item_name(form: FormDef, item_id: str) -> str:
    item = form.items.get(item_id)
    return _label(item.label, item_id) if item is not None else item_id


def _value_at(values: dict[str, Any], item: str | None) -> Any:
    """The current value of `item` (a group row's item as GROUP/index/ITEM) in an entry's values."""
    if not item:
        return None
    parts = item.split("/")
    if len(parts) == 3:
        rows = values.get(parts[0])
        if isinstance(rows, list) and parts[1].isdigit() and int(parts[1]) < len(rows) and isinstance(rows[int(parts[1])], dict):
            return rows[int(parts[1])].get(parts[2])
        return None
    return values.get(item)


def utc_text(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def local_text(moment: datetime | None, time_zone: str | None) -> str:
    """The moment on the site's wall clock, with its offset."""
    if moment is None or not time_zone:
        return ""
    try:
        local = moment.astimezone(ZoneInfo(time_zone))
    except (KeyError, ValueError):
        return ""
    return local.strftime("%Y-%m-%d %H:%M (UTC%z)")


def _text(words: dict[str, str], code: str | None) -> str:
    return t(words[code]) if code in words else (code or "")


def _entry_context(entry) -> dict[str, Any]:
    return {"entry_id": entry.id, "subject": entry.subject.number, "form_title": _form_title(entry.form_id),
            "event": _event_text(entry.event_key), "status": _text(ENTRY_STATUS_TEXT, entry.status),
            "version": entry.version}


def _message_errors(text: str, *, required: bool) -> dict[str, str]:
    if required and not text.strip():
        return {"message": t("Write a message.")}
    if len(text) > MESSAGE_MAX:
        return {"message": t("At most {limit} characters.", limit=MESSAGE_MAX)}
    return {}


def _field_errors(exc: UnprocessableContent) -> dict[str, str]:
    """A service's JSON Pointer errors by form field (`/item` -> `item`); errors of no field under `_form`."""
    found: dict[str, str] = {}
    for error in exc.errors or []:
        name = error.get("pointer", "").lstrip("/").split("/")[0] or "_form"
        found.setdefault(name, error.get("detail", ""))
    return found or {"_form": exc.detail or exc.title}


# --- queries: the inbox ----------------------------------------------------------------------------------

def _positive(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise UnprocessableContent(errors=[field_error(f"/query/{name}", f"A whole number from 1 to {maximum}.")])
    return int(raw)


@blp.get("/queries")
@requires("queries:read")
def query_inbox():
    """The queries of your sites (of one site or one subject if asked): site staff start on the open ones,
    which wait for their answer."""
    actor = browser.current_actor()
    site_staff = actor.can("queries:answer")
    state = request.args.get("state")
    if state is None:
        state = "open" if site_staff else ANY_STATE
    if state not in (*QUERY_STATES, ANY_STATE):
        raise UnprocessableContent(errors=[field_error("/query/state", f"One of {', '.join((*QUERY_STATES, ANY_STATE))}.")])
    site = request.args.get("site", "").strip().upper() or None
    subject = request.args.get("subject", "").strip().upper() or None
    page_size = _positive("page_size", PAGE_SIZE, current_app.config["EDC"]["page_size_max"])
    number = _positive("page", 1, 1_000_000)
    result = queries.list_queries(db.session, actor, site=site, subject=subject,
                                  state=None if state == ANY_STATE else state, page=number, page_size=page_size)
    rows = []
    for view in result.items:
        query = view.query
        rows.append({"id": query.id, "subject": view.subject, "site": view.site, "form": _form_title(query.form_id),
                     "event": _event_text(view.event_key), "item": _query_item_label(query),
                     "message": query.message, "state": query.state, "state_text": _text(STATE_TEXT, query.state),
                     "critical": query.critical, "waiting": _text(WAITING_TEXT, query.assignee_role), "opened": utc_text(query.opened_at),
                     "age_days": (_now() - query.opened_at).days})
    last_page = max(1, -(-result.total // result.page_size))
    return page("web/monitoring/queries.html", rows=rows, state=state, states=[(code, _text(STATE_TEXT, code)) for code in QUERY_STATES], any_state=ANY_STATE,
                site=site or "", subject=subject or "", sites=_scope_sites(actor), total=result.total, page_number=result.page,
                last_page=last_page, page_size=result.page_size, site_staff=site_staff, notice=notice())


def _now() -> datetime:
    return clock.utcnow()


def _query_item_label(query) -> str:
    """The queried item's label from the form's latest version (labels, not items, change between versions; no
    read of each query's entry)."""
    try:
        form = _study().form(query.form_id)
    except KeyError:
        return query.item_id or ""
    return item_label(form, query.item_id)


def _scope_sites(actor) -> list[str]:
    """The site codes the filter offers: the sites the actor reads queries of (the service checks the choice)."""
    scope = actor.site_scope("queries:read")
    listed = sites.list_sites(db.session, actor, page_size=current_app.config["EDC"]["page_size_max"]).items
    return [site.code for site in listed if scope is None or site.id in scope]


# --- queries: a thread and its actions ------------------------------------------------------------------

def _thread_page(query_id: uuid.UUID, status: int = 200, *, errors: dict[str, str] | None = None,
                 failed: str | None = None, message: str = ""):
    actor = browser.current_actor()
    query, thread = queries.get_query(db.session, actor, query_id)
    [view] = queries.views(db.session, [query])
    entry = query.entry
    form = _form(entry)
    current = None
    if actor.can("entries:read") and query.item_id:
        _, values = entries.get_entry(db.session, actor, entry.id)
        current = show_value(form, query.item_id.split("/")[-1], _value_at(values, query.item_id))
    actions = [name for name, rule in queries.TRANSITIONS.items()
               if actor.can(rule.permission) and query.state in rule.sources]
    may_message = actor.can(queries.MESSAGE) and query.state in (queries.OPEN, queries.ANSWERED)
    history_item = query.item_id.split("/")[0] if query.item_id else None
    messages = [{"action": m.action, "action_text": _text(ACTION_TEXT, m.action), "body": m.body, "author": m.author_name or m.author_username,
                 "username": m.author_username, "role": m.author_role, "at": utc_text(m.created_at),
                 "linked_change": m.change_id} for m in thread]
    return page("web/monitoring/query.html", status, query=query, site=view.site, item=item_label(form, query.item_id),
                current=current, messages=messages, actions=actions, may_message=may_message,
                entry=_entry_context(entry), history_item=history_item if actor.can("clinical_audit:read") else None,
                opened=utc_text(query.opened_at), state_text=_text(STATE_TEXT, query.state),
                waiting=_text(WAITING_TEXT, query.assignee_role), errors=errors or {}, failed=failed, message=message,
                optional=MESSAGE_OPTIONAL, notice=notice())


@blp.get("/queries/<uuid:query_id>")
@requires("queries:read")
def query_thread(query_id: uuid.UUID):
    return _thread_page(query_id)


def _transition(query_id: uuid.UUID, action: str):
    text = request.form.get("message", "")
    errors = _message_errors(text, required=action not in MESSAGE_OPTIONAL)
    if errors:
        return _thread_page(query_id, 422, errors=errors, failed=action, message=text)
    try:
        queries.transition(db.session, browser.current_actor(), query_id, action, message=text.strip() or None)
    except (Conflict, UnprocessableContent) as exc:
        refused(exc)
        problem = _field_errors(exc) if isinstance(exc, UnprocessableContent) else {"_form": exc.detail}
        return _thread_page(query_id, exc.status, errors=problem, failed=action, message=text)
    return committed(redirect(url_for("web.query_thread", query_id=query_id, notice=ACTION_NOTICES[action]), 303))


@blp.post("/queries/<uuid:query_id>/answer")
@requires("queries:answer")
def answer_query(query_id: uuid.UUID):
    """Answer an open query (site staff); the latest change of the queried item is linked to the answer."""
    return _transition(query_id, "answer")


@blp.post("/queries/<uuid:query_id>/close")
@requires("queries:manage")
def close_query(query_id: uuid.UUID):
    return _transition(query_id, "close")


@blp.post("/queries/<uuid:query_id>/reopen")
@requires("queries:manage")
def reopen_query(query_id: uuid.UUID):
    return _transition(query_id, "reopen")


@blp.post("/queries/<uuid:query_id>/cancel")
@requires("queries:manage")
def cancel_query(query_id: uuid.UUID):
    return _transition(query_id, "cancel")


@blp.post("/queries/<uuid:query_id>/messages")
@requires("queries:message")
def add_query_message(query_id: uuid.UUID):
    """A comment on a query that is open or answered."""
    text = request.form.get("message", "")
    errors = _message_errors(text, required=True)
    if errors:
        return _thread_page(query_id, 422, errors=errors, failed="messages", message=text)
    try:
        queries.comment(db.session, browser.current_actor(), query_id, message=text.strip())
    except Conflict as exc:
        refused(exc)
        return _thread_page(query_id, exc.status, errors={"_form": exc.detail}, failed="messages", message=text)
    return committed(redirect(url_for("web.query_thread", query_id=query_id, notice="query_message"), 303))


# --- queries: raising one on an item of an entry ------------------------------------------------------------

def _item_choices(form: FormDef, values: dict[str, Any]) -> list[tuple[str, str]]:
    """The items a query can be raised on, in the form's order: top-level items, and each row's items of a group."""
    choices = []
    for item_id in form.top_level:
        if item_id in form.groups:
            rows = values.get(item_id)
            for index in range(len(rows) if isinstance(rows, list) else 0):
                for member in form.groups[item_id].items:
                    path = f"{item_id}/{index}/{member}"
                    choices.append((path, item_label(form, path)))
        else:
            choices.append((item_id, item_label(form, item_id)))
    return choices


def _entry_queries_page(entry_id: uuid.UUID, status: int = 200, *, errors: dict[str, str] | None = None,
                        chosen: str = "", message: str = ""):
    actor = browser.current_actor()
    entry, values = entries.get_entry(db.session, actor, entry_id)
    form = _form(entry)
    rows = [{"id": q.id, "item": item_label(form, q.item_id), "state": q.state,
             "state_text": _text(STATE_TEXT, q.state), "message": q.message,
             "opened": utc_text(q.opened_at)} for q in queries.for_entry(db.session, entry.id)]
    return page("web/monitoring/entry_queries.html", status, entry=_entry_context(entry), rows=rows,
                choices=_item_choices(form, values), may_open=actor.can(queries.MANAGE), errors=errors or {},
                chosen=request.args.get("item", chosen), message=message, notice=notice())


@blp.get("/entries/<uuid:entry_id>/queries")
@requires("queries:read")
def entry_queries(entry_id: uuid.UUID):
    """An entry's queries, and for monitors and data managers the form that raises one."""
    return _entry_queries_page(entry_id)


@blp.post("/entries/<uuid:entry_id>/queries")
@requires("queries:manage")
def open_query(entry_id: uuid.UUID):
    """Raise a query on an item (or the whole entry), then back to the case form."""
    # A row's item is GROUP/<row>/ITEM, as in the API; the case form's field keys spell it GROUP.<row>.ITEM
    # (item ids have no dots, so either spelling names one item).
    item = request.form.get("item", "").strip().replace(".", "/") or None
    text = request.form.get("message", "")
    errors = _message_errors(text, required=True)
    if errors:
        return _entry_queries_page(entry_id, 422, errors=errors, chosen=item or "", message=text)
    try:
        queries.open_query(db.session, browser.current_actor(), entry_id=entry_id, item=item, message=text.strip())
    except UnprocessableContent as exc:
        refused(exc)
        return _entry_queries_page(entry_id, exc.status, errors=_field_errors(exc), chosen=item or "", message=text)
    return committed(redirect(f"/entries/{entry_id}?notice=query_opened", 303))


# --- source data verification -----------------------------------------------------------------------------

def _sdv_page(entry_id: uuid.UUID, status: int = 200, *, errors: dict[str, str] | None = None):
    actor = browser.current_actor()
    state = sdv.entry_sdv(db.session, actor, entry_id)
    entry, values = entries.get_entry(db.session, actor, entry_id)
    form = _form(entry)
    active = {mark.item_id: mark for mark in state.marks}
    cleared: dict[str | None, Any] = {}
    for mark in state.cleared:  # oldest first: the latest clearing of each item wins
        cleared[mark.item_id] = mark
    required = set(state.required_items)
    rows = []
    for item_id in form.top_level:
        value = values.get(item_id)
        if value in (None, "", []) and item_id not in active and item_id not in cleared:
            continue
        rows.append(_sdv_row(form, item_id, show_value(form, item_id, value), item_id in required,
                             active.get(item_id), cleared.get(item_id)))
    whole = _sdv_row(form, None, "", False, active.get(None), cleared.get(None))
    return page("web/monitoring/sdv.html", status, entry=_entry_context(entry), rows=rows, whole=whole,
                requirement=_text(REQUIREMENT_TEXT, state.requirement), verified=state.verified, may_verify=actor.can("sdv:write"),
                errors=errors or {}, notice=notice())


def _sdv_row(form: FormDef, item_id: str | None, value: str, required: bool, mark, cleared) -> dict[str, Any]:
    row: dict[str, Any] = {"item": item_id, "label": item_label(form, item_id), "value": value, "required": required,
                           "verified": mark is not None}
    if mark is not None:
        row.update(by=mark.verified_by, at=utc_text(mark.verified_at), version=mark.entry_version)
    elif cleared is not None:
        row.update(cleared_at=utc_text(cleared.cleared_at), cleared_by=cleared.verified_by,
                   cleared_verified_at=utc_text(cleared.verified_at), change=cleared.cleared_by_change)
    return row


@blp.get("/entries/<uuid:entry_id>/sdv")
@requires("sdv:read")
def entry_sdv(entry_id: uuid.UUID):
    return _sdv_page(entry_id)


@blp.post("/entries/<uuid:entry_id>/sdv")
@requires("sdv:write")
def verify_entry(entry_id: uuid.UUID):
    """Mark the ticked items, or (button `entry`) the whole entry, verified against source."""
    items = [item for item in request.form.getlist("items") if item]
    whole = request.form.get("entry") == "1"
    if not items and not whole:
        return _sdv_page(entry_id, 422, errors={"_form": t("Tick the items you verified, or verify the whole entry.")})
    try:
        sdv.verify(db.session, browser.current_actor(), entry_id, items=items or None, whole_entry=whole)
    except (Conflict, UnprocessableContent) as exc:
        refused(exc)
        return _sdv_page(entry_id, exc.status, errors={"_form": exc.detail or exc.title})
    return committed(redirect(url_for("web.entry_sdv", entry_id=entry_id, notice="sdv_marked"), 303))


# --- signatures --------------------------------------------------------------------------------------------

def signature_rows(views: list[signatures.SignatureView]) -> list[dict[str, Any]]:
    """Signatures' manifestations (21 CFR 11.50): printed name, time (UTC), meaning, and whether still valid."""
    return [{"printed_name": v.signature.printed_name, "signer": v.signature.signer_username,
             "at": utc_text(v.signature.signed_at), "meaning": _text(MEANING_TEXT, v.signature.meaning),
             "scope": "entry" if v.signature.entry_id else "casebook", "entry_version": v.signature.entry_version,
             "status": v.status, "invalidated_at": utc_text(v.signature.invalidated_at),
             "verification": v.verification} for v in views]


def _sign_page(*, entry_id: uuid.UUID | None = None, number: str | None = None, status: int = 200,
               errors: dict[str, str] | None = None, meaning: str = "", username: str = ""):
    actor = browser.current_actor()
    if entry_id is not None:
        views = signatures.entry_signatures(db.session, actor, entry_id)
        entry, _ = entries.get_entry(db.session, actor, entry_id)
        context: dict[str, Any] = {"entry": _entry_context(entry), "subject": entry.subject.number,
                                   "action": url_for("web.sign_entry", entry_id=entry_id)}
    else:
        views = signatures.subject_signatures(db.session, actor, number)
        subject = get_subject(db.session, actor, number, "signatures:read")
        context = {"entry": None, "subject": subject.number, "action": url_for("web.sign_casebook", number=subject.number)}
    return page("web/monitoring/sign.html", status, signatures=signature_rows(views), meanings=[(code, _text(MEANING_TEXT, code)) for code in SIGNATURE_MEANINGS],
                may_sign=actor.can("signatures:sign"), errors=errors or {}, meaning=meaning, username=username,
                notice=notice(), **context)


def _sign(sign, done: str, **where):
    """Sign with username and password again; a refusal (wrong password: throttled and audited by the service,
    whose security records refused() keeps) shows the form again with why."""
    form = request.form
    meaning, username = form.get("meaning", ""), form.get("username", "")
    if meaning not in SIGNATURE_MEANINGS:
        return _sign_page(**where, status=422, errors={"meaning": t("Choose the meaning of your signature.")},
                          username=username)
    try:
        sign(db.session, browser.current_actor(), *where.values(), username=username, password=form.get("password", ""),
             meaning=meaning)
    except (Unauthorized, TooManyRequests, Conflict) as exc:
        refused(exc)
        if isinstance(exc, Unauthorized):
            errors = {"password": t("Signing needs your own username and password, entered again.")}
        elif isinstance(exc, TooManyRequests):
            errors = {"password": t("Too many failed password checks; try again later.")}
        else:
            errors = {"_form": exc.detail}
        response = _sign_page(**where, status=exc.status, errors=errors, meaning=meaning, username=username)
        response.headers.update({k: v for k, v in (exc.headers or {}).items() if k == "Retry-After"})
        return response
    return committed(redirect(f"{done}?notice=signed", 303))


@blp.get("/entries/<uuid:entry_id>/sign")
@requires("signatures:read")
def entry_signature(entry_id: uuid.UUID):
    """An entry's signatures, and for investigators the signing form (the service lets only the PI sign)."""
    return _sign_page(entry_id=entry_id)


@blp.post("/entries/<uuid:entry_id>/sign")
@requires("signatures:sign")
def sign_entry(entry_id: uuid.UUID):
    return _sign(signatures.sign_entry, url_for("web.entry_signature", entry_id=entry_id), entry_id=entry_id)


@blp.get("/subjects/<number>/sign")
@requires("signatures:read")
def casebook_signature(number: str):
    return _sign_page(number=number)


@blp.post("/subjects/<number>/sign")
@requires("signatures:sign")
def sign_casebook(number: str):
    return _sign(signatures.sign_casebook, url_for("web.casebook_signature", number=number), number=number)


# --- an item's audit history ---------------------------------------------------------------------------------

@blp.get("/entries/<uuid:entry_id>/items/<item>/history")
@requires("clinical_audit:read")
def item_history(entry_id: uuid.UUID, item: str):
    """Who changed an item, in which role, when (UTC and the site's time), from what to what, and why."""
    actor = browser.current_actor()
    records = audit.entry_history(db.session, actor, entry_id)
    entry, values = entries.get_entry(db.session, actor, entry_id)
    form = _form(entry)
    if item not in form.items and item not in form.groups:
        raise NotFound(f"No item {item} in form {form.id} version {form.version}.")
    time_zone = entry.subject.site.time_zone
    rows = []
    for record in records:
        for change in record["changes"] or []:
            if change.get("field") != item:
                continue
            rows.append({"at": utc_text(record["occurred_at"]), "local": local_text(record["occurred_at"], time_zone),
                         "who": record["actor_name"] or record["actor"], "username": record["actor"],
                         "role": record["role"], "action": record["action"], "reason": record["reason"],
                         "old": show_value(form, item, change.get("old")), "new": show_value(form, item, change.get("new"))})
    return page("web/monitoring/history.html", entry=_entry_context(entry), item=item, label=item_label(form, item),
                current=show_value(form, item, values.get(item)), rows=rows, time_zone=time_zone)
