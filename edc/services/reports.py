"""Monitoring reports: enrolment, casebook completeness, query ageing, safety summary, safety clocks.

Each report is site-scoped (reports:read) and reads the summary rows kept current by the write
paths (subjects, form_status, queries, safety_clocks) through their indexes, never a scan of all
entries. The one exception is the safety summary, which reads only the AE, daily CRS and daily
ICANS entries, by the (form_id, subject_id) index.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.errors import NotFound
from edc.models.entries import Entry, FormStatus, Query
from edc.models.safety import SafetyClock
from edc.models.sites import Site
from edc.models.subjects import Subject
from edc.security.permissions import Actor, require
from edc.services import entries

PERMISSION = "reports:read"
# Subjects still followed: their scheduled forms become expected and can fall overdue. Subjects who
# left (screen failure, withdrawal, completion, death) count what was entered, never what is missing.
FOLLOWED_STATUSES = ("screening", "enrolled")
# Age buckets of open queries, in whole days since opening: (label, first day, last day or None).
AGE_BUCKETS = (("0-7", 0, 7), ("8-14", 8, 14), ("15-30", 15, 30), (">30", 31, None))

# The items the safety summary reads (forms/ae, forms/crs_daily, forms/icans_daily).
AE_FORM, AE_GRADE, AE_SERIOUS = "ae", "AETOXGR", "AESER"
CRS_FORM, CRS_GRADES = "crs_daily", ("CRSGRINV", "CRSGRDRV")        # investigator's grade, else derived
ICANS_FORM, ICANS_GRADES = "icans_daily", ("ICANSINV", "ICANSDRV")
UNKNOWN_GRADE = "unknown"


# --- scope ----------------------------------------------------------------------------------

def _sites(session: Session, actor: Actor, site: str | None) -> dict[uuid.UUID, str]:
    """Site id -> code of the sites the report covers: the caller's, or the one asked for (404 outside)."""
    require(actor, PERMISSION)
    scope = actor.site_scope(PERMISSION)
    stmt = sa.select(Site.id, Site.code).order_by(Site.code)
    if scope is not None:
        stmt = stmt.where(Site.id.in_(scope))
    if site is not None:
        stmt = stmt.where(Site.code == site.upper())
    found = {row.id: row.code for row in session.execute(stmt)}
    if site is not None and not found:
        raise NotFound(f"No site {site} among your sites.")
    return found


# --- enrolment ------------------------------------------------------------------------------

def enrolment(session: Session, actor: Actor, *, site: str | None = None) -> dict[str, Any]:
    """Subjects registered per site and calendar month of registration, each split by status."""
    sites = _sites(session, actor, site)
    stmt = (sa.select(Subject.site_id, Subject.registration_date, Subject.status, sa.func.count(Subject.id))
            .where(Subject.site_id.in_(sites))
            .group_by(Subject.site_id, Subject.registration_date, Subject.status))
    per_site: dict[uuid.UUID, dict[str, Any]] = {sid: {"total": 0, "by_status": defaultdict(int), "months": {}} for sid in sites}
    for site_id, registered, status, count in session.execute(stmt):
        row = per_site[site_id]
        row["total"] += count
        row["by_status"][status] += count
        month = row["months"].setdefault(registered.strftime("%Y-%m"), {"total": 0, "by_status": defaultdict(int)})
        month["total"] += count
        month["by_status"][status] += count
    report = []
    for site_id, code in sites.items():
        row = per_site[site_id]
        report.append({"site": code, "total": row["total"], "by_status": dict(row["by_status"]),
                       "months": [{"month": month, "total": m["total"], "by_status": dict(m["by_status"])}
                                  for month, m in sorted(row["months"].items())]})
    return {"sites": report, "total": sum(r["total"] for r in report)}


# --- completeness ---------------------------------------------------------------------------

def _counts() -> dict[str, int]:
    return {"expected": 0, "complete": 0, "draft": 0, "missing": 0, "overdue": 0}


def completeness(session: Session, actor: Actor, *, site: str | None = None, by_subject: bool = False) -> dict[str, Any]:
    """Scheduled forms per site (and subject): expected, complete, draft, missing, and overdue.

    A form of a scheduled (not optional, not repeatable) visit is expected once its anchor date is
    known and its window has opened, or as soon as it has been entered; it is overdue when the
    window's last day is before today and its form-status cell is not complete.
    """
    sites = _sites(session, actor, site)
    study = runtime.of(session).study
    today = clock.utcnow().date()
    scheduled = [event for event in study.events if not event.optional and not event.repeatable and event.anchor]
    subjects = session.execute(
        sa.select(Subject.id, Subject.number, Subject.site_id, Subject.status, Subject.registration_date,
                  Subject.planned_infusion_date, Subject.day0)
        .where(Subject.site_id.in_(sites)).order_by(Subject.number)
    ).all()
    cells: dict[uuid.UUID, dict[tuple[str, str], str]] = defaultdict(dict)
    for row in session.execute(sa.select(FormStatus.subject_id, FormStatus.event_key, FormStatus.form_id, FormStatus.state,
                                         FormStatus.entries)
                               .where(FormStatus.site_id.in_(sites), FormStatus.event_key != "")):
        if row.entries:
            cells[row.subject_id][(row.event_key, row.form_id)] = row.state
    per_site = {sid: _counts() for sid in sites}
    per_subject = []
    for subject in subjects:
        counts = _subject_completeness(scheduled, subject, cells.get(subject.id, {}), today)
        for name, value in counts.items():
            per_site[subject.site_id][name] += value
        if by_subject:
            per_subject.append({"subject": subject.number, "site": sites[subject.site_id], "status": subject.status, **counts})
    report: dict[str, Any] = {"as_of": today, "sites": [{"site": code, **per_site[sid]} for sid, code in sites.items()]}
    if by_subject:
        report["subjects"] = per_subject
    return report


def _subject_completeness(scheduled, subject, cells: dict[tuple[str, str], str], today: date) -> dict[str, int]:
    anchors = {"registration": subject.registration_date, "planned_infusion": subject.planned_infusion_date,
               "day0": subject.day0}
    followed = subject.status in FOLLOWED_STATUSES
    counts = _counts()
    for event in scheduled:
        anchor = anchors.get(event.anchor)
        due = anchor + timedelta(days=event.day) if anchor is not None else None
        window_open = due is not None and due - timedelta(days=event.window_before) <= today
        past_window = due is not None and due + timedelta(days=event.window_after) < today
        for form_id in event.forms:
            state = cells.get((f"{event.id}/1", form_id))
            if state is None and not (followed and window_open):
                continue
            counts["expected"] += 1
            counts[state or "missing"] += 1
            if state != "complete" and followed and past_window:
                counts["overdue"] += 1
    return counts


# --- queries --------------------------------------------------------------------------------

def queries(session: Session, actor: Actor, *, site: str | None = None) -> dict[str, Any]:
    """Open queries per site by age bucket, answered and closed counts, and median hours to first answer."""
    sites = _sites(session, actor, site)
    now = clock.utcnow()
    in_sites = Query.site_id.in_(sites)
    open_columns = []
    for _, first, last in AGE_BUCKETS:
        condition = Query.opened_at <= now - timedelta(days=first)
        if last is not None:
            condition = sa.and_(condition, Query.opened_at > now - timedelta(days=last + 1))
        open_columns.append(sa.func.count(Query.id).filter(condition))
    buckets = {row[0]: row[1:] for row in session.execute(
        sa.select(Query.site_id, *open_columns).where(in_sites, Query.state == "open").group_by(Query.site_id))}
    states: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for site_id, state, count in session.execute(
            sa.select(Query.site_id, Query.state, sa.func.count(Query.id)).where(in_sites).group_by(Query.site_id, Query.state)):
        states[site_id][state] = count
    # Median in Python: SQLite has no percentile function, and only answered queries are read.
    waits: dict[uuid.UUID, list[float]] = defaultdict(list)
    for site_id, opened_at, answered_at in session.execute(
            sa.select(Query.site_id, Query.opened_at, Query.first_answered_at)
            .where(in_sites, Query.first_answered_at.is_not(None))):
        waits[site_id].append((answered_at - opened_at).total_seconds() / 3600)
    report = []
    for site_id, code in sites.items():
        counts = buckets.get(site_id, (0,) * len(AGE_BUCKETS))
        report.append({
            "site": code,
            "open": states[site_id].get("open", 0),
            "open_by_age_days": {label: count for (label, _, _), count in zip(AGE_BUCKETS, counts, strict=True)},
            "answered": states[site_id].get("answered", 0),
            "closed": states[site_id].get("closed", 0),
            "cancelled": states[site_id].get("cancelled", 0),
            "median_hours_to_first_answer": _median(waits[site_id]),
        })
    every_wait = [hours for site_waits in waits.values() for hours in site_waits]
    return {"as_of": now, "sites": report, "median_hours_to_first_answer": _median(every_wait)}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


# --- safety ---------------------------------------------------------------------------------

def safety(session: Session, actor: Actor, *, site: str | None = None) -> dict[str, Any]:
    """AE and SAE counts by grade per site, with each site's maximum daily CRS and ICANS grades."""
    sites = _sites(session, actor, site)
    report = {sid: {"site": code, "ae_total": 0, "sae_total": 0, "ae_by_grade": defaultdict(int),
                    "sae_by_grade": defaultdict(int), "max_crs_grade": None, "max_icans_grade": None}
              for sid, code in sites.items()}
    for site_id, values in _form_values(session, sites, AE_FORM, (AE_GRADE, AE_SERIOUS)):
        row, grade = report[site_id], _grade_label(values.get(AE_GRADE))
        row["ae_total"] += 1
        row["ae_by_grade"][grade] += 1
        if values.get(AE_SERIOUS) == "Y":
            row["sae_total"] += 1
            row["sae_by_grade"][grade] += 1
    for form_id, items, key in ((CRS_FORM, CRS_GRADES, "max_crs_grade"), (ICANS_FORM, ICANS_GRADES, "max_icans_grade")):
        for site_id, values in _form_values(session, sites, form_id, items):
            grade = next((g for g in map(_grade, (values.get(item) for item in items)) if g is not None), None)
            if grade is not None and (report[site_id][key] is None or grade > report[site_id][key]):
                report[site_id][key] = grade
    rows = [{**row, "ae_by_grade": dict(sorted(row["ae_by_grade"].items())),
             "sae_by_grade": dict(sorted(row["sae_by_grade"].items()))} for row in report.values()]
    return {"sites": rows, "ae_total": sum(r["ae_total"] for r in rows), "sae_total": sum(r["sae_total"] for r in rows)}


def _form_values(session: Session, sites: dict[uuid.UUID, str], form_id: str, items: tuple[str, ...]):
    """(site id, values of `items`) for every entry of one form at these sites, by ix_entries_form_subject.

    Only the wanted items are read, extracted by the database from each document; the whole entry is
    loaded (and opened) only when a form version in use encrypts one of them."""
    study = runtime.of(session).study
    in_scope = sa.and_(Entry.form_id == form_id, Subject.site_id.in_(sites))
    versions = session.scalars(sa.select(Entry.form_version).join(Subject, Subject.id == Entry.subject_id)
                               .where(in_scope).distinct()).all()
    if any(study.form(form_id, version).encrypted_items & set(items) for version in versions):
        stmt = sa.select(Entry, Subject.site_id).join(Subject, Subject.id == Entry.subject_id).where(in_scope)
        for entry, site_id in session.execute(stmt):
            values = entries.unseal(session, study.form(entry.form_id, entry.form_version), entry)
            yield site_id, {item: values.get(item) for item in items}
        return
    stmt = (sa.select(Subject.site_id, *(Entry.data[item].as_string() for item in items))
            .join(Subject, Subject.id == Entry.subject_id).where(in_scope))
    for site_id, *values in session.execute(stmt):
        yield site_id, dict(zip(items, values, strict=True))


def _grade(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None  # a missing-data code


def _grade_label(value: Any) -> str:
    grade = _grade(value)
    return str(grade) if grade is not None else UNKNOWN_GRADE


# --- safety clocks --------------------------------------------------------------------------

def safety_clocks(session: Session, actor: Actor, *, site: str | None = None) -> dict[str, Any]:
    """Open (running, not yet due) and overdue (running past due) safety clocks per site and kind."""
    sites = _sites(session, actor, site)
    now: datetime = clock.utcnow()
    stmt = (sa.select(SafetyClock.site_id, SafetyClock.kind,
                      sa.func.count(SafetyClock.id).filter(SafetyClock.due_at >= now),
                      sa.func.count(SafetyClock.id).filter(SafetyClock.due_at < now),
                      sa.func.min(SafetyClock.due_at))
            .where(SafetyClock.stopped_at.is_(None), SafetyClock.site_id.in_(sites))
            .group_by(SafetyClock.site_id, SafetyClock.kind))
    kinds: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for site_id, kind, running, overdue, next_due in session.execute(stmt):
        kinds[site_id].append({"kind": kind, "open": running, "overdue": overdue, "earliest_due_at": next_due})
    report = []
    for site_id, code in sites.items():
        by_kind = sorted(kinds[site_id], key=lambda row: row["kind"])
        report.append({"site": code, "open": sum(r["open"] for r in by_kind), "overdue": sum(r["overdue"] for r in by_kind),
                       "by_kind": by_kind})
    return {"as_of": now, "sites": report}
