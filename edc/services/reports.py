"""Monitoring reports: enrolment, casebook completeness, query ageing, safety summary, safety clocks.

Each report is site-scoped (reports:read) and reads the summary rows kept current by the write
paths (subjects, form_status, queries, safety_clocks) through their indexes, never a scan of all
entries. The one exception is the safety summary, which has the database count the AE, daily CRS and
daily ICANS entries by their graded values, through the (form_id, subject_id) index.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
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
    window's last day is before today and its form-status cell is not complete. The database does
    the counting: subjects × the schedule, outer-joined to their form-status cells, grouped.
    """
    sites = _sites(session, actor, site)
    today = clock.utcnow().date()
    built = _completeness_statement(runtime.of(session), by_subject)
    report: dict[str, Any] = {"as_of": today, "sites": []}
    if built is None:
        report["sites"] = [{"site": code, **_counts()} for code in sites.values()]
        if by_subject:
            report["subjects"] = []
        return report
    stmt, window_days = built
    limits = {_limit_name(days): today - timedelta(days=days) for days in window_days}
    per_site = {sid: _counts() for sid in sites}
    per_subject: dict[str, dict[str, Any]] = {}
    for row in session.execute(stmt, {"sites": list(sites), **limits}):
        site_id, *subject_keys, state, count, late = row
        targets = [per_site[site_id]]
        if by_subject:
            number, status = subject_keys
            targets.append(per_subject.setdefault(number, {"subject": number, "site": sites[site_id], "status": status,
                                                           **_counts()}))
        for counts in targets:
            counts["expected"] += count
            counts[state or "missing"] += count
            counts["overdue"] += late
    report["sites"] = [{"site": code, **per_site[sid]} for sid, code in sites.items()]
    if by_subject:
        # Subjects with nothing expected yet still get their (zero) row.
        for number, site_id, status in session.execute(sa.select(Subject.number, Subject.site_id, Subject.status)
                                                       .where(Subject.site_id.in_(sites))):
            per_subject.setdefault(number, {"subject": number, "site": sites[site_id], "status": status, **_counts()})
        report["subjects"] = [per_subject[number] for number in sorted(per_subject)]
    return report


def _completeness_statement(rt: runtime.Runtime, by_subject: bool):
    """The counting statement for this study, built once per process: (statement, window day offsets).

    It takes the sites (`sites`) and, per day offset d of a window limit, today - d days
    (`_limit_name(d)`) as parameters, so the same statement object serves every request."""
    key = ("reports.completeness", by_subject)
    if key not in rt.statements:
        rt.statements[key] = _build_completeness_statement(rt.study, by_subject)
    return rt.statements[key]


def _build_completeness_statement(study, by_subject: bool):
    schedule, window_days = _schedule(study)
    if schedule is None:
        return None
    anchor = sa.case(
        (schedule.c.anchor == "registration", Subject.registration_date),
        (schedule.c.anchor == "planned_infusion", Subject.planned_infusion_date),
        (schedule.c.anchor == "day0", Subject.day0),
    )
    followed = Subject.status.in_(FOLLOWED_STATUSES)
    entered = FormStatus.state.is_not(None)
    expected = sa.or_(entered, sa.and_(followed, anchor <= schedule.c.opens_by))
    overdue = sa.and_(followed, anchor < schedule.c.closed_before, sa.func.coalesce(FormStatus.state, "") != "complete")
    cell = sa.and_(FormStatus.subject_id == Subject.id, FormStatus.event_key == schedule.c.event_key,
                   FormStatus.form_id == schedule.c.form_id, FormStatus.entries > 0)
    keys = [Subject.site_id] + ([Subject.number, Subject.status] if by_subject else [])
    stmt = (sa.select(*keys, FormStatus.state, sa.func.count(), sa.func.count().filter(overdue))
            .select_from(Subject).join(schedule, sa.true()).outerjoin(FormStatus, cell)
            .where(Subject.site_id.in_(sa.bindparam("sites", expanding=True)), expected)
            .group_by(*keys, FormStatus.state))
    return stmt, window_days


def _limit_name(days: int) -> str:
    return f"limit_{days}" if days >= 0 else f"limit_minus_{-days}"


def _schedule(study):
    """The scheduled forms as a table, with each visit's window turned into two anchor-date limits
    (parameters, today - d days): the window has opened when anchor <= opens_by, and closed when
    anchor < closed_before. Returns (subquery or None, the day offsets d it needs)."""
    rows = [(f"{event.id}/1", form_id, event.anchor, event.day - event.window_before, event.day + event.window_after)
            for event in study.events if not event.optional and not event.repeatable and event.anchor
            for form_id in event.forms]
    if not rows:
        return None, set()
    # A UNION ALL of one-row selects: SQLite has no column list on a VALUES alias.
    selects = [sa.select(sa.literal(event_key, sa.String).label("event_key"), sa.literal(form_id, sa.String).label("form_id"),
                         sa.literal(anchor, sa.String).label("anchor"),
                         sa.bindparam(_limit_name(opens), type_=sa.Date).label("opens_by"),
                         sa.bindparam(_limit_name(closes), type_=sa.Date).label("closed_before"))
               for event_key, form_id, anchor, opens, closes in rows]
    return sa.union_all(*selects).subquery("schedule"), {d for row in rows for d in row[3:]}


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
    for site_id, values, count in _value_counts(session, sites, AE_FORM, (AE_GRADE, AE_SERIOUS)):
        row, grade = report[site_id], _grade_label(values[AE_GRADE])
        row["ae_total"] += count
        row["ae_by_grade"][grade] += count
        if values[AE_SERIOUS] == "Y":
            row["sae_total"] += count
            row["sae_by_grade"][grade] += count
    for form_id, items, key in ((CRS_FORM, CRS_GRADES, "max_crs_grade"), (ICANS_FORM, ICANS_GRADES, "max_icans_grade")):
        for site_id, values, _ in _value_counts(session, sites, form_id, items):
            grade = next((g for g in map(_grade, (values[item] for item in items)) if g is not None), None)
            if grade is not None and (report[site_id][key] is None or grade > report[site_id][key]):
                report[site_id][key] = grade
    rows = [{**row, "ae_by_grade": dict(sorted(row["ae_by_grade"].items())),
             "sae_by_grade": dict(sorted(row["sae_by_grade"].items()))} for row in report.values()]
    return {"sites": rows, "ae_total": sum(r["ae_total"] for r in rows), "sae_total": sum(r["sae_total"] for r in rows)}


def _value_counts(session: Session, sites: dict[uuid.UUID, str], form_id: str, items: tuple[str, ...]):
    """(site id, values of `items`, number of entries) over every entry of one form at these sites.

    The database extracts the wanted items and counts the entries per distinct combination (through
    ix_entries_form_subject), so a handful of rows come back whatever the study's size; only when a
    form version in use encrypts one of the items are the entries opened and counted here instead."""
    study = runtime.of(session).study
    in_scope = sa.and_(Entry.form_id == form_id, Subject.site_id.in_(sites))
    versions = session.scalars(sa.select(Entry.form_version).join(Subject, Subject.id == Entry.subject_id)
                               .where(in_scope).distinct()).all()
    if any(study.form(form_id, version).encrypted_items & set(items) for version in versions):
        counted: dict[tuple, int] = defaultdict(int)
        stmt = sa.select(Entry, Subject.site_id).join(Subject, Subject.id == Entry.subject_id).where(in_scope)
        for entry, site_id in session.execute(stmt):
            values = entries.unseal(session, study.form(entry.form_id, entry.form_version), entry)
            counted[(site_id, *(_as_text(values.get(item)) for item in items))] += 1
        for (site_id, *values), count in counted.items():
            yield site_id, dict(zip(items, values, strict=True)), count
        return
    extracted = [Entry.data[item].as_string() for item in items]
    stmt = (sa.select(Subject.site_id, *extracted, sa.func.count())
            .join(Subject, Subject.id == Entry.subject_id).where(in_scope)
            .group_by(Subject.site_id, *extracted))
    for site_id, *values, count in session.execute(stmt):
        yield site_id, dict(zip(items, values, strict=True)), count


def _as_text(value: Any) -> str | None:
    """A value as the database's text extraction gives it, so both paths count alike."""
    return None if value is None else str(value)


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
