"""Per-subject summary rows (subject_summaries): casebook completeness and the safety summary.

The monitoring reports add these up, one row per subject, instead of reading the entries. Every
write that can move a count refreshes its subject's row in the same transaction: an entry saved
(completeness when its cell is scheduled or it moved an anchor date, safety when it is an adverse event
or a daily grading entry: study.yaml `safety:` names those forms and items), a subject enrolled or
changing status. Time moves completeness too:
a row holds until `valid_until`, the day one of the subject's visit windows next opens or closes.
Rows that have run out or were counted under another schedule are counted afresh, not written, by
the report that meets them, and rewritten by `flask edc init` and the worker (refresh_outdated).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf.definitions import MAX_GRADE_KEYS, SafetyDef, Study
from edc.models.entries import Entry, FormStatus
from edc.models.subjects import Subject, SubjectSummary
from edc.services import audit
from edc.services.sealing import unseal

COUNTING_RULES_VERSION = 1  # bump when the counting below changes: every row is then outdated
# Subjects still followed: their scheduled forms become expected and can fall overdue. Subjects who
# left (screen failure, withdrawal, completion, death) count what was entered, never what is missing.
FOLLOWED_STATUSES = ("screening", "enrolled")
COMPLETENESS_FIELDS = ("expected", "complete", "draft", "missing", "overdue")

UNKNOWN_GRADE = "unknown"


@dataclass(frozen=True)
class ScheduledForm:
    """A form of a scheduled visit, its window as day offsets from the subject's anchor date."""

    event_key: str
    form_id: str
    anchor: str
    opens_day: int      # expected from anchor + opens_day
    closes_day: int     # overdue after anchor + closes_day


def schedule(rt: runtime.Runtime) -> tuple[tuple[ScheduledForm, ...], str]:
    """The study's scheduled forms and the fingerprint of them and of the counting rules (once per process)."""
    key = "summaries.schedule"
    if key not in rt.derived:
        forms = tuple(ScheduledForm(f"{event.id}/1", form_id, event.anchor, event.day - event.window_before,
                                    event.day + event.window_after)
                      for event in rt.study.events if not event.optional and not event.repeatable and event.anchor
                      for form_id in event.forms)
        text = json.dumps([COUNTING_RULES_VERSION, [list(vars(form).values()) for form in forms],
                           *_counted_items(rt.study)])
        rt.derived[key] = forms, hashlib.sha256(text.encode()).hexdigest()[:16]
    return rt.derived[key]


def _counted_items(study: Study) -> list[Any]:
    """What the safety summary reads (study.yaml `safety:`): rows counted under another mapping are outdated.
    Nothing for a study without it, which keeps the fingerprint of rows counted before the mapping existed."""
    safety = study.safety
    if safety is None:
        return []
    events = safety.adverse_events
    return [[events.form, events.grade, events.serious, safety.yes] if events else None,
            {name: [graded.form, list(graded.grades)] for name, graded in sorted(safety.max_grades.items())}]


def safety_forms(study: Study) -> tuple[str, ...]:
    """The forms whose entries move the safety summary."""
    return study.safety.summary_forms if study.safety else ()


def anchor_dates(subject: Subject) -> dict[str, date | None]:
    return {"registration": subject.registration_date, "planned_infusion": subject.planned_infusion_date,
            "day0": subject.day0}


# --- completeness ---------------------------------------------------------------------------

def count_completeness(forms: Iterable[ScheduledForm], anchors: dict[str, date | None], followed: bool,
                       states: dict[tuple[str, str], str], today: date) -> tuple[dict[str, int], date | None]:
    """One subject's scheduled forms: expected, complete, draft, missing, overdue; and the first day
    after today on which they change by time alone (a window opening or closing), or None.

    A form is expected once entered, or (for a followed subject) once its window has opened; it is
    overdue when a followed subject's window has closed and its form-status cell is not complete."""
    counts = dict.fromkeys(COMPLETENESS_FIELDS, 0)
    changes: list[date] = []
    for form in forms:
        anchor = anchors.get(form.anchor)
        state = states.get((form.event_key, form.form_id))
        opens = closes_after = None
        if anchor is not None:
            opens, closes_after = anchor + timedelta(days=form.opens_day), anchor + timedelta(days=form.closes_day)
            changes += [day for day in (opens, closes_after + timedelta(days=1)) if day > today]
        if state is None and not (followed and opens is not None and opens <= today):
            continue
        counts["expected"] += 1
        counts[state or "missing"] += 1
        if followed and closes_after is not None and closes_after < today and state != "complete":
            counts["overdue"] += 1
    return counts, min(changes, default=None)


def _states(session: Session, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[tuple[str, str], str]]:
    """The form-status states of these subjects' cells that hold entries."""
    states: dict[uuid.UUID, dict[tuple[str, str], str]] = {sid: {} for sid in subject_ids}
    for subject_id, event_key, form_id, state in session.execute(
            sa.select(FormStatus.subject_id, FormStatus.event_key, FormStatus.form_id, FormStatus.state)
            .where(FormStatus.subject_id.in_(subject_ids), FormStatus.entries > 0)):
        states[subject_id][(event_key, form_id)] = state
    return states


def completeness_of(session: Session, subjects: list[Subject], today: date) -> dict[uuid.UUID, tuple[dict[str, int], date | None]]:
    """Count these subjects' completeness now, from their form-status cells (nothing is written)."""
    forms, _ = schedule(runtime.of(session))
    states = _states(session, [s.id for s in subjects])
    return {s.id: count_completeness(forms, anchor_dates(s), s.status in FOLLOWED_STATUSES, states[s.id], today)
            for s in subjects}


@dataclass(frozen=True)
class NextDue:
    """A followed subject's earliest scheduled visit with forms not yet complete: its window and those forms."""

    event_key: str
    opens: date
    closes: date
    forms: tuple[str, ...]
    overdue: bool


def next_due_of(session: Session, subjects: list[Subject], today: date) -> dict[uuid.UUID, NextDue | None]:
    """Per subject, the scheduled visit whose window closes first among those with forms not complete (an
    overdue one first), from the form-status cells of all these subjects in one statement. Subjects who left,
    or whose anchor dates are not known yet, have none."""
    forms, _ = schedule(runtime.of(session))
    states = _states(session, [s.id for s in subjects])
    found: dict[uuid.UUID, NextDue | None] = {}
    for subject in subjects:
        anchors, pending = anchor_dates(subject), {}
        for form in forms if subject.status in FOLLOWED_STATUSES else ():
            anchor = anchors.get(form.anchor)
            if anchor is None or states[subject.id].get((form.event_key, form.form_id)) == "complete":
                continue
            window = (anchor + timedelta(days=form.opens_day), anchor + timedelta(days=form.closes_day))
            pending.setdefault((window[1], window[0], form.event_key), []).append(form.form_id)
        if not pending:
            found[subject.id] = None
            continue
        (closes, opens, event_key), form_ids = min(pending.items())
        found[subject.id] = NextDue(event_key, opens, closes, tuple(form_ids), closes < today)
    return found


# --- safety ---------------------------------------------------------------------------------

def grade(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None  # a missing-data code


def grade_label(value: Any) -> str:
    found = grade(value)
    return str(found) if found is not None else UNKNOWN_GRADE


def count_safety(entries: Iterable[tuple[str, dict[str, Any]]], safety: SafetyDef | None) -> dict[str, Any]:
    """AE and SAE counts by grade and the maximum daily grades (CRS, ICANS) of one subject's entries
    ((form id, values) of the forms `safety` names: the adverse events and the daily grading forms)."""
    ae, sae = Counter(), Counter()
    max_grades: dict[str, int | None] = dict.fromkeys(MAX_GRADE_KEYS)
    events = safety.adverse_events if safety else None
    graded = safety.max_grades if safety else {}
    for form_id, values in entries:
        if events is not None and form_id == events.form:
            label = grade_label(values.get(events.grade)) if events.grade else UNKNOWN_GRADE
            ae[label] += 1
            if events.serious and values.get(events.serious) == safety.yes:
                sae[label] += 1
        for name, daily in graded.items():
            if form_id != daily.form:
                continue
            found = next((g for g in map(grade, (values.get(item) for item in daily.grades)) if g is not None), None)
            if found is not None and (max_grades[name] is None or found > max_grades[name]):
                max_grades[name] = found
    return {"ae_total": sum(ae.values()), "sae_total": sum(sae.values()), "ae_by_grade": dict(sorted(ae.items())),
            "sae_by_grade": dict(sorted(sae.items())),
            **{f"max_{name}_grade": max_grades[name] for name in MAX_GRADE_KEYS}}


def safety_of(session: Session, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Count these subjects' safety summary now, from their adverse-event and daily grading entries."""
    study = runtime.of(session).study
    found: dict[uuid.UUID, list[tuple[str, dict[str, Any]]]] = {sid: [] for sid in subject_ids}
    forms = safety_forms(study)
    for entry in session.scalars(sa.select(Entry).where(Entry.subject_id.in_(subject_ids), Entry.form_id.in_(forms))) if forms else ():
        found[entry.subject_id].append((entry.form_id, unseal(session, study.form(entry.form_id, entry.form_version), entry)))
    return {sid: count_safety(rows, study.safety) for sid, rows in found.items()}


# --- the rows -------------------------------------------------------------------------------

def refresh(session: Session, subject: Subject, *, completeness: bool = True, safety: bool = True) -> SubjectSummary:
    """Recount one subject's row (the parts asked for; both when it has no row yet) and write it."""
    rt = runtime.of(session)
    _, fingerprint = schedule(rt)
    today = clock.utcnow().date()
    session.flush()  # the form-status cells and entries this transaction changed
    row = session.get(SubjectSummary, subject.id)
    if row is None:
        row = SubjectSummary(subject_id=subject.id, site_id=subject.site_id)
    if not _holds(row, fingerprint, today):  # new, counted under another schedule, or run out
        completeness = safety = True
    if completeness:
        counts, row.valid_until = completeness_of(session, [subject], today)[subject.id]
        for name, value in counts.items():
            setattr(row, name, value)
        row.counted_on = today
    if safety:
        for name, value in safety_of(session, [subject.id])[subject.id].items():
            setattr(row, name, value)
    row.fingerprint, row.updated_at = fingerprint, clock.utcnow()
    session.add(row)
    session.flush()
    return row


def _holds(row: SubjectSummary, fingerprint: str, today: date) -> bool:
    return (row.fingerprint == fingerprint and row.counted_on is not None and row.counted_on <= today
            and (row.valid_until is None or row.valid_until > today))


def is_current(fingerprint: str, today: date):
    """The SQL condition of a row that holds today."""
    return sa.and_(SubjectSummary.fingerprint == fingerprint, SubjectSummary.counted_on <= today,
                   sa.or_(SubjectSummary.valid_until.is_(None), SubjectSummary.valid_until > today))


def refresh_outdated(session: Session, *, limit: int | None = None,
                     commit: Callable[[], None] | None = None) -> int:
    """Rewrite the rows of subjects with none, or with one that no longer holds today, one subject at a
    time under the lock its writers take (so a save committed meanwhile is never overwritten by an
    older count); how many were written."""
    _, fingerprint = schedule(runtime.of(session))
    today = clock.utcnow().date()
    stmt = (sa.select(Subject.id).outerjoin(SubjectSummary, SubjectSummary.subject_id == Subject.id)
            .where(sa.or_(SubjectSummary.subject_id.is_(None), sa.not_(is_current(fingerprint, today))))
            .order_by(Subject.id).limit(limit))
    done = 0
    for subject_id in session.scalars(stmt).all():
        audit.lock_chain(session, audit.subject_chain(subject_id))
        refresh(session, session.get(Subject, subject_id, populate_existing=True))
        done += 1
        if commit:
            commit()
    return done


def after_entry_saved(session: Session, subject: Subject, entry: Entry, *, moved_anchor: bool) -> None:
    """Refresh what an entry's save can move: completeness when its cell is scheduled or it moved an
    anchor date (every window of the subject with it), safety when it is an adverse event or a daily grading."""
    rt = runtime.of(session)
    forms, _ = schedule(rt)
    scheduled = moved_anchor or any(f.event_key == entry.event_key and f.form_id == entry.form_id for f in forms)
    safety = entry.form_id in safety_forms(rt.study)
    if scheduled or safety:
        refresh(session, subject, completeness=scheduled, safety=safety)
