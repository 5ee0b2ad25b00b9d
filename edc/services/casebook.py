"""A subject's casebook: the schedule with due dates and windows, and each form's state, read from the
form-status table (never by scanning entries); and the casebook as a PDF, the human-readable copy of the
record (edc/exports/casebook_pdf.py lays it out), each copy made audited with its SHA-256."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.exports import casebook_pdf
from edc.models.entries import FormStatus
from edc.models.subjects import Subject
from edc.security.permissions import Actor
from edc.models.monitoring import DataCut
from edc.problems import NotFound, UnprocessableContent, field_error
from edc.services import audit, identifying, queries
from edc.services.scope import get_subject

NOT_STARTED = "not_started"


def _anchor_dates(subject: Subject) -> dict[str, date | None]:
    return {"registration": subject.registration_date, "planned_infusion": subject.planned_infusion_date, "day0": subject.day0}


def _cell(row: FormStatus | None) -> dict[str, Any]:
    if row is None:
        return {"state": NOT_STARTED, "entries": 0, "open_queries": 0}
    state = "open_queries" if row.open_queries else row.state
    return {"state": state, "entries": row.entries, "open_queries": row.open_queries,
            "verified": row.verified, "signed": row.signed, "locked": row.locked}


def casebook(session: Session, actor: Actor, number: str) -> dict[str, Any]:
    """Every scheduled event with its due date and window (once its anchor is known) and form states."""
    subject = get_subject(session, actor, number, "entries:read")
    study = runtime.of(session).study
    cells = {(r.event_key, r.form_id): r for r in session.scalars(sa.select(FormStatus).where(FormStatus.subject_id == subject.id))}
    anchors = _anchor_dates(subject)
    today = clock.utcnow().date()
    events = []
    for event in study.events:
        instances = sorted({int(k.split("/")[1]) for k, _ in cells if k.startswith(f"{event.id}/")} or {1})
        for instance in instances if event.repeatable else [1]:
            key = f"{event.id}/{instance}"
            anchor = anchors.get(event.anchor) if event.anchor else None
            due = anchor + timedelta(days=event.day) if anchor is not None and event.day is not None else None
            window = ({"from": (due - timedelta(days=event.window_before)).isoformat(),
                       "to": (due + timedelta(days=event.window_after)).isoformat()} if due else None)
            forms = [{"form": f, **_cell(cells.get((key, f)))} for f in event.forms]
            overdue = bool(not event.optional and due and due + timedelta(days=event.window_after) < today
                           and any(f["state"] == NOT_STARTED for f in forms))
            events.append({"event": event.id, "instance": instance, "label": event.label.get("en"), "anchor": event.anchor,
                           "optional": event.optional or event.repeatable,
                           "due": due, "window": window, "overdue": overdue, "forms": forms})
    logs = [{"form": f, **_cell(cells.get(("", f)))} for f in [*study.subject_logs, *study.repeating_forms]]
    return {
        "subject": subject.number,
        "status": subject.status,
        "anchors": {name: value.isoformat() if value else None for name, value in anchors.items()},
        "events": events,
        "logs": logs,
        "queries": queries.for_subject(session, subject.id),
    }


PDF_PERMISSION = "casebooks:read"


@dataclass(frozen=True)
class CasebookPdf:
    number: str
    content: bytes
    sha256: str
    options: dict[str, Any]

    @property
    def file_name(self) -> str:
        return f"casebook-{self.number}-{self.options['lang']}.pdf"


def check_language(session: Session, lang: str) -> None:
    """422 unless the study's forms carry labels in `lang`."""
    languages = runtime.of(session).study.languages
    if lang not in languages:
        raise UnprocessableContent(errors=[field_error("/query/lang", f"Unknown language {lang!r}; one of {', '.join(languages)}.")])


def find_cut(session: Session, name: str) -> casebook_pdf.Cut:
    """A data cut by name (404 otherwise)."""
    cut = session.scalars(sa.select(DataCut).where(DataCut.name == name)).one_or_none()
    if cut is None:
        raise NotFound(f"No data cut named {name}.")
    return casebook_pdf.Cut(cut.id, cut.name, cut.cutoff_at)


def render_pdf(session: Session, actor: Actor, subject: Subject, *, lang: str, include_audit: bool,
               generated_at: datetime, generated_by: str, cut: casebook_pdf.Cut | None = None) -> bytes:
    """A subject's casebook PDF as `actor` may see it, live or at a data cut (no permission check, no audit: callers
    do both)."""
    study = runtime.of(session).study
    record = casebook_pdf.gather(session, subject, include_audit=include_audit, cut=cut,
                                 hidden=lambda form_id: identifying.hidden_from(study, actor, form_id, subject.site_id))
    options = casebook_pdf.Options(
        lang=lang, include_audit=include_audit, generated_at=generated_at, generated_by=generated_by, cut=cut)
    return casebook_pdf.render(study, record, options)


def casebook_pdf_copy(session: Session, actor: Actor, number: str, *, lang: str = "en", include_audit: bool = False,
                      data_cut: str | None = None, generated_at: datetime | None = None) -> CasebookPdf:
    """Make a PDF copy of a subject's casebook, live or as it stood at a named data cut, and audit who made it,
    with which options and its SHA-256 (the caller commits). Another site's subject or an unknown cut is 404, an
    unknown language 422. The generation time (now, to the second, unless given) is printed on the cover and is
    the PDF's date: the same data, options and time give the same bytes."""
    subject = get_subject(session, actor, number, PDF_PERMISSION)
    check_language(session, lang)
    cut = None if data_cut is None else find_cut(session, data_cut)
    moment = (generated_at or clock.utcnow()).replace(microsecond=0)
    who = f"{actor.display_name} ({actor.username})"
    content = render_pdf(session, actor, subject, lang=lang, include_audit=include_audit, generated_at=moment,
                         generated_by=who, cut=cut)
    digest = hashlib.sha256(content).hexdigest()
    options = {"lang": lang, "include_audit": include_audit, "data_cut": data_cut, "generated_at": moment.isoformat()}
    # In the security chain: a copy made is not a change of the subject's record, whose chain the casebook prints.
    audit.record(session, actor, "casebook_generated", entity_type="casebook", entity_id=subject.id,
                 site_code=subject.site.code,
                 changes=[audit.change("subject", None, subject.number), audit.change("options", None, options),
                          audit.change("sha256", None, digest), audit.change("bytes", None, len(content))])
    return CasebookPdf(subject.number, content, digest, options)
