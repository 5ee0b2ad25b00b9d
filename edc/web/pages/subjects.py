"""Subjects: the list of the caller's sites' subjects, enrolment, and a subject's casebook.

The same services as the API's /api/v1/subjects routes, with their permissions and site scope (another site's
subject is a 404 raised by the service). Enrolment is retried safely: its form carries a one-time token that
is the Idempotency-Key of edc.services.idempotency (the API's mechanism), so a POST whose answer was lost and is
sent again gets the first answer (the same study number) instead of a second subject. The hospital number is
only passed to the duplicate check: it is never put back into a page, a URL or a log.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date
from typing import Any

from flask import current_app, redirect, request
from werkzeug.wrappers import Response

from edc.errors import roll_back_quietly
from edc.extensions import db
from edc.models.subjects import SUBJECT_STATUSES
from edc.problems import Conflict, Problem, UnprocessableContent, field_error
from edc.security.permissions import Actor, requires
from edc import clock
from edc.services import casebook, entries, idempotency, locking, scope, signatures, sites, subjects
from edc.web import browser, labels
from edc.web.blueprint import blp
from edc.web.i18n import translate as t
from edc.web.pages.account import notice as account_notice
from edc.web.rendering import committed, page, refused

NOTICES = {"enrolled": "The subject is enrolled under the study number shown here."}
SEX_NAMES = {"F": "Female", "M": "Male", "U": "Unknown or undetermined"}
ENROL_FIELDS = ("site", "consent_date", "sex", "birth_year", "birth_month")
FORM_TOKEN = re.compile(r"[0-9a-f]{32}")
ALREADY_SENT = "This form was already sent with other values; check the subject list before you enrol the subject again."
STILL_SAVING = "This form is still being saved; wait a moment and send it again to see its result."
UNRESOLVED_QUERIES = ("open", "answered")  # the casebook lists the queries still waiting for someone
LOG_COLUMNS = 3  # a log's table shows its form's first items (and its last derived one, a grade, say)


def notice() -> str | None:
    key = request.args.get("notice")
    return t(NOTICES[key]) if key in NOTICES else account_notice()


def _sites_for(actor: Actor, permission: str) -> list:
    """The active sites the actor reaches with `permission` (for a site choice; the service checks again)."""
    scope = actor.site_scope(permission)
    listed = sites.list_sites(db.session, actor, status="active", page_size=current_app.config["EDC"]["page_size_max"])
    return [s for s in listed.items if scope is None or s.id in scope]


def _number_arg(name: str, default: int, maximum: int | None = None) -> int:
    raw = request.args.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        bound = f"1 to {maximum}" if maximum is not None else "1 or more"
        raise UnprocessableContent(errors=[field_error(f"/query/{name}", f"Must be a whole number, {bound}.")])
    return value


# --- the list ---------------------------------------------------------------------------------------------

@blp.get("/subjects")
@requires("subjects:read")
def subject_list():
    actor = browser.current_actor()
    settings = current_app.config["EDC"]
    page_no = _number_arg("page", 1)
    page_size = _number_arg("page_size", settings["page_size_default"], settings["page_size_max"])
    site, status = request.args.get("site") or None, request.args.get("status") or None
    if status is not None and status not in SUBJECT_STATUSES:
        raise UnprocessableContent(errors=[field_error("/query/status", f"Must be one of {', '.join(SUBJECT_STATUSES)}.")])
    listing = subjects.list_subjects(db.session, actor, site=site, status=status, page=page_no, page_size=page_size)
    last_page = max(1, -(-listing.total // page_size))
    return page("web/subjects.html", listing=listing, last_page=last_page, chosen_site=site, chosen_status=status,
                statuses=SUBJECT_STATUSES, sites=_sites_for(actor, "subjects:read"), notice=notice(),
                default_size=settings["page_size_default"])


# --- enrolment --------------------------------------------------------------------------------------------

def _enrol_page(actor: Actor, status: int = 200, *, values: dict[str, str] | None = None,
                errors: dict[str, str] | None = None, problem: str | None = None, token: str | None = None) -> Response:
    return page("web/enrol.html", status, sites=_sites_for(actor, "subjects:enrol"), sexes=SEX_NAMES,
                values=values or {}, errors=errors or {}, problem=problem, form_token=token or uuid.uuid4().hex,
                today=clock.utcnow().date().isoformat())


def _parsed(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The form's text as the service's arguments; what cannot be read is a field error."""
    errors: dict[str, str] = {}
    for name in ENROL_FIELDS:
        if not values[name]:
            errors[name] = t("Required.")
    parsed: dict[str, Any] = {"site": values["site"], "sex": values["sex"]}
    for name in ("birth_year", "birth_month"):
        if name not in errors:
            try:
                parsed[name] = int(values[name])
            except ValueError:
                errors[name] = t("Enter a whole number.")
    if "consent_date" not in errors:
        try:
            parsed["consent_date"] = date.fromisoformat(values["consent_date"])
        except ValueError:
            errors["consent_date"] = t("Enter a date as YYYY-MM-DD.")
    return parsed, errors


def _request_digest() -> str:
    """What a retry must repeat to be the same request: every posted field, the session's CSRF token included
    (not stored anywhere), so the digest kept with the token tells nothing about the hospital number."""
    fields = sorted(request.form.items(multi=True))
    return idempotency.request_hash(request.method, request.path, b"", json.dumps(fields).encode())


@blp.route("/subjects/new", methods=["GET", "POST"])
@requires("subjects:enrol")
def enrol():
    actor = browser.current_actor()
    if request.method == "GET":
        return _enrol_page(actor)
    values = {name: request.form.get(name, "").strip() for name in ENROL_FIELDS}
    hospital_number = request.form.get("hospital_number", "").strip() or None
    token = request.form.get("form_token", "")
    if not FORM_TOKEN.fullmatch(token):
        return _enrol_page(actor, 422, values=values, problem=t("The form has expired; fill it in again."))
    arguments, errors = _parsed(values)
    if errors:
        return _enrol_page(actor, 422, values=values, errors=errors, token=token)
    try:
        claim = idempotency.claim(db.session, actor.user_id, f"web-enrol:{token}", _request_digest())
    except UnprocessableContent as exc:  # the token of a form already sent, now with other values
        refused(exc)
        return _enrol_page(actor, exc.status, values=values, problem=t(ALREADY_SENT))
    except Conflict as exc:  # the first POST of this form is still running
        refused(exc)
        return _enrol_page(actor, exc.status, values=values, problem=t(STILL_SAVING), token=token)
    if isinstance(claim, idempotency.Answer):  # the first POST was stored; its answer was lost on the way
        return redirect(claim.headers["Location"], 303)
    try:
        subject = subjects.enrol(db.session, actor, hospital_number=hospital_number, **arguments)
    except (UnprocessableContent, Conflict) as exc:
        refused(exc)
        idempotency.release(db.session, claim.id)
        return _enrol_refused(actor, exc, values, token)
    except BaseException:
        roll_back_quietly()
        idempotency.release(db.session, claim.id)
        raise
    location = f"/subjects/{subject.number}?notice=enrolled"
    response = redirect(location, 303)
    idempotency.record(db.session, claim.id, idempotency.Answer(303, {"Location": location}, ""))
    return committed(response)


def _enrol_refused(actor: Actor, exc: Problem, values: dict[str, str], token: str) -> Response:
    """The form again with the service's reasons: beside their fields, or above the form for the others."""
    fields = {*ENROL_FIELDS, "hospital_number"}
    errors, others = {}, []
    for error in exc.errors or []:
        name = error["pointer"].lstrip("/")
        if name in fields:
            errors[name] = error["detail"]
        else:
            others.append(error["detail"])
    if isinstance(exc, Conflict) and exc.extra.get("existing"):
        errors["hospital_number"] = t("This hospital number is already registered at this site as {number}.",
                                      number=exc.extra["existing"])
    elif not errors and not others:
        others.append(exc.detail)
    return _enrol_page(actor, exc.status, values=values, errors=errors, problem=" ".join(others) or None, token=token)


# --- the casebook -----------------------------------------------------------------------------------------

def _display(item, value: Any) -> str:
    """A log entry's value in words: code-list labels in the user's language, missing-data codes by name."""
    if value is None:
        return ""
    if isinstance(value, dict):
        if "withheld" in value:
            return t("withheld")
        if "missing" in value:
            return str(value["missing"])
        return ", ".join(str(v) for v in value.values())
    if isinstance(value, bool):
        return t("yes") if value else t("no")
    if item.code_list and str(value) in item.code_list:
        return labels.in_language(item.code_list[str(value)], str(value))
    if isinstance(value, list):
        return ", ".join(_display(item, v) for v in value)
    return str(value)


def _log_columns(form) -> list:
    scalar = [form.items[i] for i in form.top_level if i in form.items]
    shown = scalar[:LOG_COLUMNS]
    derived = [item for item in scalar if item.type == "derived"]
    if derived and derived[-1] not in shown:
        shown.append(derived[-1])
    return shown


def _logs(actor: Actor, number: str, book: dict[str, Any], may_enter) -> list[dict[str, Any]]:
    study = labels.study()
    by_form: dict[str, list] = {}
    for entry, values in entries.list_entries(db.session, actor, number, event=""):
        by_form.setdefault(entry.form_id, []).append((entry, values))
    found = []
    for cell in book["logs"]:
        form = study.form(cell["form"])
        columns = _log_columns(form)
        rows = [{"entry": entry, "values": [_display(item, values.get(item.id)) for item in columns]}
                for entry, values in by_form.get(cell["form"], [])]
        found.append({"cell": cell, "columns": [labels.in_language(item.label, item.id) for item in columns],
                      "rows": rows, "may_enter": may_enter(cell["form"])})
    return found


@blp.get("/subjects/<number>")
@requires("entries:read")
def casebook_page(number: str):
    actor = browser.current_actor()
    book = casebook.casebook(db.session, actor, number)  # 404 for a subject outside the caller's sites
    subject = scope.get_subject(db.session, actor, book["subject"], "entries:read")
    writable = subject.locked_at is None and locking.study_lock(db.session) is None
    writers: dict[str, bool] = {}
    study = labels.study()

    def may_enter(form_id: str) -> bool:
        if form_id not in writers:
            writers[form_id] = writable and actor.can("entries:write") and entries.may_write_form(actor, study, form_id)
        return writers[form_id]

    places: dict[tuple[str, str], list] = {}
    for place in entries.entry_places(db.session, actor, subject.number):
        places.setdefault((place.event_key, place.form_id), []).append(place)
    signed = any(f["signed"] for e in book["events"] for f in e["forms"] if f.get("signed")) or \
        any(c.get("signed") for c in book["logs"])
    casebook_signatures = []
    if signed and actor.can("signatures:read"):
        casebook_signatures = [v for v in signatures.subject_signatures(db.session, actor, subject.number)
                               if v.signature.entry_id is None]
    open_queries = sum(1 for q in book["queries"] if q.state == "open")
    event_of = {place.id: place.event_key for found in places.values() for place in found}
    unresolved = [{"query": q, "event_key": event_of.get(q.entry_id, "")} for q in book["queries"]
                  if q.state in UNRESOLVED_QUERIES]
    return page("web/casebook.html", subject=subject, book=book, grid=_grid(book, places), may_enter=may_enter,
                logs=_logs(actor, subject.number, book, may_enter), open_queries=open_queries, unresolved=unresolved,
                casebook_signatures=casebook_signatures, writable=writable, notice=notice(),
                may_sign=signatures.is_principal_investigator(actor, subject.site_id) and actor.can("signatures:sign"),
                **labels.helpers())


def _grid(book: dict[str, Any], places: dict[tuple[str, str], list]) -> list[dict[str, Any]]:
    """The casebook's visits as rows, each form with its entries; after the last instance of a repeatable
    visit (unscheduled, relapse) that has entries, a row for the next one."""
    study, rows = labels.study(), []
    events = book["events"]
    for position, event in enumerate(events):
        key = f"{event['event']}/{event['instance']}"
        forms = [{**cell, "places": places.get((key, cell["form"]), [])} for cell in event["forms"]]
        rows.append({**event, "key": key, "forms": forms, "new": False})
        following = events[position + 1]["event"] if position + 1 < len(events) else None
        if study.event(event["event"]).repeatable and following != event["event"] and any(f["entries"] for f in forms):
            rows.append({**event, "instance": event["instance"] + 1, "key": f"{event['event']}/{event['instance'] + 1}",
                         "due": None, "window": None, "overdue": False, "new": True,
                         "forms": [{"form": f["form"], "state": casebook.NOT_STARTED, "places": []} for f in forms]})
    return rows
