"""A subject's casebook: the schedule with due dates and windows, and each form's state,
read from the form-status table (never by scanning entries)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.entries import FormStatus
from edc.models.subjects import Subject
from edc.security.permissions import Actor
from edc.services import queries
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
