"""What an entry's rules (checks, show_if, calculations) read besides its own values: the subject's facts,
the window of the entry's visit, and the subject's other entries of the forms its cross-form checks read.

Saving an entry validates against it, re-checking the entries that read a changed form rebuilds it, and a
query raised on an item asks it whether the item is shown; it sits below those use cases.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf import Study, ValidationContext
from edc.ecrf.labs import LAB_BASELINES
from edc.models.entries import SUBJECT_LOG_KEY, Entry
from edc.models.subjects import Subject
from edc.services.sealing import unseal


def _study(session: Session) -> Study:
    return runtime.of(session).study


def subject_facts(subject: Subject, event_key: str = SUBJECT_LOG_KEY, study: Study | None = None) -> dict[str, Any]:
    """The facts rules read as subject.<fact>, with the window of the visit at `event_key` when it is known."""
    return {
        **(_visit_window(study, subject, event_key) if study is not None else {}),
        "site": subject.site.code,
        "birth_year": subject.birth_year,
        "birth_month": subject.birth_month,
        "sex": subject.sex,
        "registration_date": subject.registration_date,
        "day0": subject.day0,
        "planned_infusion": subject.planned_infusion_date,
    }


def _visit_window(study: Study, subject: Subject, event_key: str) -> dict[str, date]:
    if not event_key:
        return {}
    event = study.event(event_key.split("/")[0])
    anchor = {"registration": subject.registration_date, "planned_infusion": subject.planned_infusion_date,
              "day0": subject.day0}.get(event.anchor) if event.anchor else None
    if anchor is None or event.day is None or event.repeatable:
        return {}
    due = anchor + timedelta(days=event.day)
    return {"visit_due": due, "visit_earliest": due - timedelta(days=event.window_before),
            "visit_latest": due + timedelta(days=event.window_after)}


def forms_read_by(study: Study, form_id: str) -> set[str]:
    """The other forms whose values the cross-form checks of form_id read."""
    return {source for source, readers in study.cross_form_dependencies.items() if form_id in readers}


def load_values(session: Session, subject: Subject, forms: set[str]) -> list[tuple[Entry, dict[str, Any]]]:
    """The subject's entries of these forms with their values opened, oldest change first."""
    study = _study(session)
    stmt = (sa.select(Entry).where(Entry.subject_id == subject.id, Entry.form_id.in_(forms))
            .order_by(Entry.updated_at, Entry.id))
    return [(entry, unseal(session, study.form(entry.form_id, entry.form_version), entry)) for entry in session.scalars(stmt)]


def _other_entries(session: Session, subject: Subject, form_id: str, exclude: uuid.UUID | None,
                   loaded: list[tuple[Entry, dict[str, Any]]] | None = None,
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The subject's other entries of the forms this form's cross-form checks read (and only those): the latest
    values per form (for forms.<form>.<item>) and every entry's values per form (for entries.<form>).
    `loaded` is a preloaded superset (from load_values), so rechecking many entries reads them once."""
    wanted = forms_read_by(_study(session), form_id)
    if not wanted:
        return {}, {}
    latest: dict[str, dict[str, Any]] = {}
    every: dict[str, list[dict[str, Any]]] = {form: [] for form in wanted}
    for entry, values in loaded if loaded is not None else load_values(session, subject, wanted):
        if entry.form_id in wanted and entry.id != exclude:
            latest[entry.form_id] = values
            every[entry.form_id].append(values)
    return latest, every


def validation_context(session: Session, subject: Subject, form_id: str, *, exclude: uuid.UUID | None,
                       event_key: str = SUBJECT_LOG_KEY, loaded: list[tuple[Entry, dict[str, Any]]] | None = None,
                       ) -> ValidationContext:
    """What the rules of an entry of form_id at event_key read besides its own values: the subject's facts and
    visit window, and the subject's other entries of the forms its cross-form checks read (not `exclude`, the
    entry itself). `loaded` is a preloaded superset of those entries (from load_values)."""
    study = _study(session)
    rule = study.lab_baseline
    graded = rule is not None and rule["form"] == form_id
    if graded and loaded is None:   # one read for the cross-form checks and the baselines
        loaded = load_values(session, subject, forms_read_by(study, form_id) | {rule["form"], rule["before"]["form"]})
    latest, every = _other_entries(session, subject, form_id, exclude, loaded)
    facts = subject_facts(subject, event_key, study)
    if graded:
        facts[LAB_BASELINES] = lab_baselines(session, subject, exclude, loaded)
    return ValidationContext(subject=facts, other_forms=latest, other_entries=every,
                             today=clock.utcnow().date())


def lab_baselines(session: Session, subject: Subject, exclude: uuid.UUID | None = None,
                  loaded: list[tuple[Entry, dict[str, Any]]] | None = None) -> dict[str, tuple[float, date]]:
    """The subject's CTCAE baseline of each numeric item of the lab form (study.yaml lab_baseline), as
    item -> (value, sample date): the last value sampled before the first day of treatment (the earliest `before`
    date), else the value of the entry at the fallback event. `exclude`: the entry being saved; `loaded`: a preloaded
    superset of the entries read (from load_values)."""
    study = _study(session)
    rule = study.lab_baseline
    lab_form, before = rule["form"], rule["before"]
    if loaded is None:
        loaded = load_values(session, subject, {lab_form, before["form"]})
    start = min((day for entry, values in loaded if entry.form_id == before["form"]
                 for day in _dates(values, before["date"])), default=None)
    earlier: dict[str, tuple[float, date]] = {}
    fallback: dict[str, tuple[float, date]] = {}
    for entry, values in loaded:
        day = next(iter(_dates(values, rule["date"])), None)
        if entry.form_id != lab_form or entry.id == exclude or day is None:
            continue
        numbers = _numbers(study.form(entry.form_id, entry.form_version), values)
        if entry.event_key.split("/")[0] == rule["fallback_event"]:
            fallback.update({item: (value, day) for item, value in numbers.items()})
        if start is not None and day < start:
            for item, value in numbers.items():
                if item not in earlier or earlier[item][1] <= day:
                    earlier[item] = (value, day)
    return {**fallback, **earlier}


def _dates(values: dict[str, Any], item: str) -> list[date]:
    """The full dates of `item` in an entry, at its top level or in the rows of its groups."""
    found = [values.get(item)]
    for rows in values.values():
        if isinstance(rows, list):
            found += [row.get(item) for row in rows if isinstance(row, dict)]
    days = []
    for raw in found:
        try:
            days.append(date.fromisoformat(raw))
        except (TypeError, ValueError):
            continue
    return days


def _numbers(form, values: dict[str, Any]) -> dict[str, float]:
    """The entry's answered top-level numeric results (not coded, not computed)."""
    return {item_id: value for item_id, value in values.items()
            if (item := form.items.get(item_id)) is not None and item.group is None and not item.computed
            and item.value_kind in ("integer", "decimal") and type(value) in (int, float)}
