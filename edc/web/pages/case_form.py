"""The case form: an entry shown and saved (/entries/<id>), a new entry entered (/subjects/<number>/enter), and
the evaluation the page asks for as the user leaves a field (…/evaluate: the form body as the server sees it).

Every value, visibility, derived item, error and warning on the page comes from the services: the evaluation
is entries.preview_entry (the save's own validation and derivation, writing nothing), the saves are
entries.create_entry and entries.update_entry, as the API's routes call them. A new entry's form carries a
form token that is its save's idempotency key (edc.services.idempotency, as the API's Idempotency-Key), so a
save retried after a lost answer lands on the entry it created instead of entering it twice.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import redirect, request, url_for

from edc import runtime
from edc.ecrf import FormDef
from edc.extensions import db
from edc.models.entries import SUBJECT_LOG_KEY, Entry
from edc.problems import Conflict, PreconditionFailed, Problem, UnprocessableContent
from edc.security.permissions import requires
from edc.services import entries, identifying, idempotency, queries, sdv, signatures
from edc.services.concurrency import etag_of
from edc.services.scope import get_subject
from edc.web import browser, forms
from edc.web.blueprint import blp
from edc.web.i18n import language
from edc.web.i18n import translate as t
from edc.web.pages.monitoring import NOTICES as MONITORING_NOTICES
from edc.web.rendering import committed, page, refused

NOTICES = {
    "entry_saved": "The form was saved.",
    "entry_saved_queries": "The form was saved; its warnings opened queries.",
    "query_opened": MONITORING_NOTICES["query_opened"],  # a query raised on an item of this form returns here
}
OPEN_STATES = ("open", "answered")
SAVE_ACTIONS = ("draft", "complete")


def _notice() -> str | None:
    key = request.args.get("notice")
    return t(NOTICES[key]) if key in NOTICES else None


def _study():
    return runtime.of(db.session).study


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


# ------------------------------------------------------------------ messages by field

def _translated(form: FormDef, message: str) -> str:
    """A message in the page's language: a form check's from the form's own translations, the engine's commonest
    from the page catalogue (the services speak English)."""
    lang = language()
    for check in form.checks:
        if check.message.get("en") == message:
            return check.message.get(lang) or message
    return t(message)


def _errors_by_field(form: FormDef, errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in errors:
        key = forms.key_of_pointer(error.get("pointer", "")) or "@" + error.get("pointer", "").lstrip("/")
        found.setdefault(key, []).append(_translated(form, error.get("detail", "")))
    return found


def _warnings_by_field(form: FormDef, warnings: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for warning in warnings:
        keys = [forms.key_of_pointer(p) for p in warning.get("pointers", [])] or ["@form"]
        for key in dict.fromkeys(k or "@form" for k in keys):
            found.setdefault(key, []).append(_translated(form, warning.get("message", "")))
    return found


def _unplaced(messages: dict[str, list[str]], shown: set[str]) -> list[str]:
    """Messages of no field drawn on the page (the whole entry's, a hidden item's): shown above the form."""
    return [m for key, texts in messages.items() if key not in shown for m in texts]


# ------------------------------------------------------------------ the form's parts around the fields

def _queries_by_field(rows) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for query in rows:
        if query.state in OPEN_STATES:
            found.setdefault(forms.key_of_item_path(query.item_id) or "@entry", []).append(query)
    return found


def _entry_extras(actor, entry: Entry, *, with_signatures: bool = True) -> dict[str, Any]:
    """An entry's queries, SDV marks and signatures, each read once for the whole page (when the role sees them);
    an evaluation's fragment draws no signature."""
    extras: dict[str, Any] = {"queries": {}, "verified": set(), "entry_verified": False, "signatures": []}
    if actor.can("queries:read"):
        extras["queries"] = _queries_by_field(queries.for_entry(db.session, entry.id))
    if actor.can("sdv:read"):
        state = sdv.entry_sdv(db.session, actor, entry.id)
        extras["verified"] = {mark.item_id for mark in state.marks if mark.item_id}
        extras["entry_verified"] = state.verified
    if with_signatures and actor.can("signatures:read"):
        extras["signatures"] = signatures.entry_signatures(db.session, actor, entry.id)
    return extras


def _place(event_key: str) -> tuple[str | None, int]:
    if event_key == SUBJECT_LOG_KEY or "/" not in event_key:
        return None, 1
    event, _, instance = event_key.partition("/")
    return event, int(instance)


def _event_label(event: str | None, instance: int) -> str:
    if event is None:
        return t("Subject log")
    try:
        label = forms.text(_study().event(event).label, language())
    except KeyError:
        label = event
    return f"{label} #{instance}" if instance != 1 else label


def _body(form: FormDef, raw: dict[str, Any], *, preview: entries.Preview | None, errors: list[dict[str, Any]],
          warnings: list[dict[str, Any]], extras: dict[str, Any] | None, editable: bool, hidden: set[str] | None = None,
          values: dict[str, Any] | None = None, reason_shown: bool = False) -> dict[str, Any]:
    """What the form body fragment draws."""
    extras = extras or {}
    error_map, warning_map = _errors_by_field(form, errors), _warnings_by_field(form, warnings)
    layout = forms.Layout(form, language(), raw, values=preview.values if preview else (values or {}),
                          hidden=preview.hidden if preview else (hidden or set()), errors=error_map,
                          warnings=warning_map, queries=extras.get("queries", {}), verified=extras.get("verified", set()),
                          yes_no=(t("Yes"), t("No")))
    sections = layout.sections()
    if reason_shown:
        layout.shown_keys.add("@reason")
    return {"sections": sections, "editable": editable, "erring": layout.erring(sections),
            "general_errors": _unplaced(error_map, layout.shown_keys),
            "general_warnings": _unplaced(warning_map, layout.shown_keys),
            "error_count": sum(len(v) for v in error_map.values()),
            "entry_queries": extras.get("queries", {}).get("@entry", []), "reason_errors": error_map.get("@reason", [])}


def _withholds(values: Any) -> bool:
    """Whether the actor's view of the values withholds an identifying item: such a form is never saved back."""
    if isinstance(values, dict):
        return values == identifying.WITHHELD or any(_withholds(v) for v in values.values())
    return isinstance(values, list) and any(_withholds(v) for v in values)


def _stored_view(form: FormDef, values: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """A read-only view of stored values: items show_if hid have no value, so conditional items without one
    are left out (a writer's page asks the preview instead)."""
    hidden = {node.id for node in form.plan if node.show_if and values.get(node.id) in (None, [], "")}
    for group in form.groups.values():
        rows = values.get(group.id)
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            hidden |= {f"{group.id}/{index}/{item.id}" for item in group.row_plan
                       if item.show_if and (not isinstance(row, dict) or row.get(item.id) in (None, [], ""))}
    return forms.to_fields(form, values), hidden


# ------------------------------------------------------------------ an existing entry

def _entry_page(entry: Entry, values: dict[str, Any], raw: dict[str, Any] | None = None, *, status: int = 200,
                errors: list[dict[str, Any]] | None = None, conflict: dict[str, Any] | None = None,
                reason: str = "", etag: str | None = None, fragment: bool = False, notice: str | None = None):
    actor = browser.current_actor()
    study = _study()
    form = study.form(entry.form_id, entry.form_version)
    writable = actor.can("entries:write") and entries.may_write_form(actor, study, entry.form_id)
    editable = (writable and entry.locked_at is None and entry.frozen_by_cut is None and entry.subject.locked_at is None
                and not _withholds(values))
    extras = _entry_extras(actor, entry, with_signatures=not fragment)
    if editable:
        raw = raw if raw is not None else forms.to_fields(form, values)
        preview = entries.preview_entry(db.session, actor, entry_id=entry.id, data=forms.to_data(
            form, raw, entry.subject.site.time_zone), complete=entry.status == "complete")
        body = _body(form, raw, preview=preview, errors=errors if errors is not None else preview.errors,
                     warnings=preview.warnings, extras=extras, editable=True, reason_shown=True)
    else:
        raw, hidden = _stored_view(form, values)
        body = _body(form, raw, preview=None, errors=errors or [], warnings=[], extras=extras, editable=False, hidden=hidden,
                     values=values)
    event, instance = _place(entry.event_key)
    context = {
        **body, "form": form, "form_title": forms.text(form.title, language()), "entry": entry,
        "subject": entry.subject.number, "event_label": _event_label(event, instance),
        "action_url": url_for("web.show_entry", entry_id=entry.id),
        "evaluate_url": url_for("web.evaluate_entry", entry_id=entry.id),
        "etag": etag or etag_of(entry), "reason_required": entries.reason_required(db.session, entry),
        "reason": reason, "signatures": extras["signatures"], "entry_verified": extras["entry_verified"],
        "conflict": conflict, "notice": notice or _notice(), "writable": writable,
        "may_open_queries": actor.can("queries:manage"), "form_token": None,
        "history": actor.can("clinical_audit:read"),
    }
    if fragment:
        return page("web/case_form_body.html", status, **context)
    return page("web/case_form.html", status, **context)


@blp.get("/entries/<uuid:entry_id>")
@requires("entries:read")
def show_entry(entry_id: uuid.UUID):
    entry, values = entries.get_entry(db.session, browser.current_actor(), entry_id)
    return _entry_page(entry, values)


@blp.post("/entries/<uuid:entry_id>")
@requires("entries:write")
def save_entry(entry_id: uuid.UUID):
    actor = browser.current_actor()
    entry, values = entries.get_entry(db.session, actor, entry_id)
    form = _study().form(entry.form_id, entry.form_version)
    raw = forms.posted_fields(request.form)
    action = request.form.get("action", "")
    reason = request.form.get("reason", "")
    sent_etag = request.form.get("etag", "")
    if action not in SAVE_ACTIONS:   # add or remove a row, or check: the form again, nothing saved
        return _entry_page(entry, values, forms.change_rows(form, raw, action), reason=reason, etag=sent_etag)
    data = forms.to_data(form, raw, entry.subject.site.time_zone)
    try:
        outcome = entries.update_entry(db.session, actor, entry.id, data=data, complete=action == "complete",
                                       expected_etag=sent_etag, reason=reason or None)
    except PreconditionFailed as exc:
        refused(exc)
        entry, theirs = entries.get_entry(db.session, actor, entry_id)
        conflict = _conflict(form, theirs, data)
        return _entry_page(entry, theirs, raw, status=exc.status, conflict=conflict, reason=reason,
                           etag=etag_of(entry))
    except (UnprocessableContent, Conflict) as exc:
        refused(exc)
        entry, values = entries.get_entry(db.session, actor, entry_id)
        return _entry_page(entry, values, raw, status=exc.status, errors=_problem_errors(exc), reason=reason,
                           etag=sent_etag)
    notice = "entry_saved_queries" if outcome.opened else "entry_saved"
    return committed(redirect(url_for("web.show_entry", entry_id=entry_id, notice=notice), 303))


@blp.post("/entries/<uuid:entry_id>/evaluate")
@requires("entries:write")
def evaluate_entry(entry_id: uuid.UUID):
    """The form body as the server evaluates the fields sent (htmx, as the user leaves a field; the whole page for a
    request that is not htmx's); nothing is saved."""
    entry, values = entries.get_entry(db.session, browser.current_actor(), entry_id)
    form = _study().form(entry.form_id, entry.form_version)
    raw = forms.change_rows(form, forms.posted_fields(request.form), request.form.get("action", ""))
    return _entry_page(entry, values, raw, reason=request.form.get("reason", ""), etag=request.form.get("etag"),
                       fragment=_is_htmx())


def _problem_errors(exc: Problem) -> list[dict[str, Any]]:
    errors = list(getattr(exc, "errors", None) or [])
    return errors or [{"pointer": "/data", "detail": exc.detail or exc.title}]


def _conflict(form: FormDef, theirs: dict[str, Any], yours: dict[str, Any]) -> dict[str, Any]:
    """The items whose stored value (theirs) differs from what the user sent (yours), for the 412 page."""
    rows = []
    for node_id in form.top_level:
        item = form.items.get(node_id)
        if item is not None and item.computed:
            continue
        mine, stored = yours.get(node_id), _entered(form, node_id, theirs.get(node_id))
        if mine != stored:
            label = forms.text((form.groups[node_id].label if node_id in form.groups else item.label), language())
            rows.append({"label": label, "theirs": _display(stored), "yours": _display(mine)})
    return {"rows": rows}


def _entered(form: FormDef, node_id: str, stored: Any) -> Any:
    """A stored value as the user enters it: a group's rows without their computed items."""
    group = form.groups.get(node_id)
    if group is None or not isinstance(stored, list):
        return stored
    return [{k: v for k, v in row.items() if not form.items[k].computed} if isinstance(row, dict) else row
            for row in stored]


def _display(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict) and "missing" in value:
        return f"[{value['missing']}]"
    if isinstance(value, list):
        return "; ".join(_display(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_display(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return t("Yes") if value else t("No")
    return str(value)


# ------------------------------------------------------------------ a new entry

def _new_place() -> tuple[str, str | None, int]:
    form_id = request.args.get("form", "")
    event = request.args.get("event") or None
    try:
        instance = int(request.args.get("instance", "1"))
    except ValueError:
        instance = 1
    return form_id, event, max(instance, 1)


def _new_page(number: str, raw: dict[str, Any], *, status: int = 200, errors: list[dict[str, Any]] | None = None,
              token: str | None = None, fragment: bool = False):
    actor = browser.current_actor()
    form_id, event, instance = _new_place()
    subject = get_subject(db.session, actor, number, "entries:write")
    form = _form_or_none(form_id)   # an unknown form is the service's 422, as in the API
    data = forms.to_data(form, raw, subject.site.time_zone) if form is not None else {}
    preview = entries.preview_entry(db.session, actor, number=subject.number, form=form_id, event=event,
                                    event_instance=instance, data=data, complete=False)
    form = _study().form(form_id)
    body = _body(form, raw, preview=preview, errors=errors if errors is not None else preview.errors,
                 warnings=preview.warnings, extras=None, editable=True)
    query = {"form": form_id, **({"event": event} if event else {}), **({"instance": instance} if event else {})}
    context = {
        **body, "form": form, "form_title": forms.text(form.title, language()), "entry": None,
        "subject": subject.number, "event_label": _event_label(event, instance),
        "action_url": url_for("web.enter_entry", number=subject.number, **query),
        "evaluate_url": url_for("web.evaluate_new_entry", number=subject.number, **query),
        "etag": None, "reason_required": False, "reason": "", "signatures": [], "entry_verified": False,
        "conflict": None, "notice": None, "writable": True, "may_open_queries": False,
        "form_token": token or str(uuid.uuid4()), "history": False,
    }
    return page("web/case_form_body.html" if fragment else "web/case_form.html", status, **context)


@blp.get("/subjects/<number>/enter")
@requires("entries:write")
def enter_entry(number: str):
    form_id, event, instance = _new_place()
    form = _form_or_none(form_id)
    if form is not None and not form.repeating:   # the form's one entry at this place exists: open it
        place = f"{event}/{instance}" if event else SUBJECT_LOG_KEY
        for entry, _ in entries.list_entries(db.session, browser.current_actor(), number, form=form_id):
            if entry.event_key == place:
                return redirect(url_for("web.show_entry", entry_id=entry.id), 303)
    return _new_page(number, {})


@blp.post("/subjects/<number>/enter")
@requires("entries:write")
def create_entry(number: str):
    actor = browser.current_actor()
    form_id, event, instance = _new_place()
    raw = forms.posted_fields(request.form)
    action = request.form.get("action", "")
    token = request.form.get("form_token", "")
    if action not in SAVE_ACTIONS:
        form = _form_or_none(form_id)
        return _new_page(number, forms.change_rows(form, raw, action) if form else raw, token=token)
    subject = get_subject(db.session, actor, number, "entries:write")   # another site's subject: 404, nothing claimed
    form = _form_or_none(form_id)
    data = forms.to_data(form, raw, subject.site.time_zone) if form else {}
    claim = _claim(actor, token)
    if isinstance(claim, idempotency.Answer):   # this form was saved before; its answer was lost on the way
        return redirect(claim.headers["Location"], 303)
    try:
        outcome = entries.create_entry(db.session, actor, subject.number, form=form_id, data=data,
                                       complete=action == "complete", event=event, event_instance=instance)
    except (UnprocessableContent, Conflict) as exc:
        refused(exc)
        _release(claim)
        errors = _problem_errors(exc)
        existing = exc.extra.get("existing") if isinstance(exc, Conflict) else None
        if existing:
            return redirect(url_for("web.show_entry", entry_id=existing.rsplit("/", 1)[-1]), 303)
        return _new_page(number, raw, status=exc.status, errors=errors, token=token)
    except BaseException:
        _release(claim)
        raise
    notice = "entry_saved_queries" if outcome.opened else "entry_saved"
    location = url_for("web.show_entry", entry_id=outcome.entry.id, notice=notice)
    response = redirect(location, 303)
    if claim is not None:
        idempotency.record(db.session, claim.id, idempotency.Answer(303, {"Location": location}, ""))
    return committed(response)


@blp.post("/subjects/<number>/enter/evaluate")
@requires("entries:write")
def evaluate_new_entry(number: str):
    form_id, _, _ = _new_place()
    form = _form_or_none(form_id)
    raw = forms.posted_fields(request.form)
    if form is not None:
        raw = forms.change_rows(form, raw, request.form.get("action", ""))
    return _new_page(number, raw, token=request.form.get("form_token"), fragment=_is_htmx())


def _form_or_none(form_id: str) -> FormDef | None:
    try:
        return _study().form(form_id)
    except KeyError:
        return None


def _claim(actor, token: str) -> idempotency.Claim | idempotency.Answer | None:
    """Claim the form token as the save's idempotency key. The key is the form's own: a retry of a lost answer
    finds the entry it created even when the user changed a value meanwhile (the hash covers the place and the
    token, not the values)."""
    try:
        uuid.UUID(token)
    except ValueError:
        return None
    digest = idempotency.request_hash("POST", request.path, request.query_string,
                                      hashlib.sha256(token.encode()).hexdigest().encode())
    return idempotency.claim(db.session, actor.user_id, "web-form:" + token, digest)


def _release(claim) -> None:
    if isinstance(claim, idempotency.Claim):
        db.session.rollback()
        idempotency.release(db.session, claim.id)

