"""Monitoring reports: enrolment, casebook completeness, query ageing, safety summary, safety clocks.

Each report is site-scoped (reports:read) and reads the summary rows kept current by the write
paths (subjects, subject_summaries, queries, safety_clocks) through their indexes, never a scan of
all entries: completeness and the safety summary add up one row per subject (edc/services/summaries.py),
counting afresh only the subjects whose row no longer holds (a visit window moved since, or the
schedule was amended).
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
from edc.models.entries import Query
from edc.models.safety import SafetyClock
from edc.models.sites import Site
from edc.models.subjects import Subject, SubjectSummary
from edc.problems import NotFound
from edc.security.permissions import Actor, require
from edc.services import summaries

PERMISSION = "reports:read"
# Age buckets of open queries, in whole days since opening: (label, first day, last day or None).
AGE_BUCKETS = (("0-7", 0, 7), ("8-14", 8, 14), ("15-30", 15, 30), (">30", 31, None))


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
    return dict.fromkeys(summaries.COMPLETENESS_FIELDS, 0)


def _add(target: dict[str, int], counts: dict[str, int]) -> None:
    for name in summaries.COMPLETENESS_FIELDS:
        target[name] += counts[name]


def completeness(session: Session, actor: Actor, *, site: str | None = None, by_subject: bool = False) -> dict[str, Any]:
    """Scheduled forms per site (and subject): expected, complete, draft, missing, and overdue.

    A form of a scheduled (not optional, not repeatable) visit is expected once its anchor date is
    known and its window has opened, or as soon as it has been entered; it is overdue when the
    window's last day is before today and its form-status cell is not complete (the rules of
    summaries.count_completeness). The database adds up the subjects' summary rows that hold today;
    the few that do not are counted afresh from their form-status cells.
    """
    sites = _sites(session, actor, site)
    today = clock.utcnow().date()
    _, fingerprint = summaries.schedule(runtime.of(session))
    holds = summaries.is_current(fingerprint, today)
    per_site = {sid: _counts() for sid in sites}
    per_subject: dict[uuid.UUID, dict[str, Any]] = {}
    if by_subject:
        stmt = (sa.select(Subject.id, Subject.number, Subject.site_id, Subject.status,
                          *(getattr(SubjectSummary, name) for name in summaries.COMPLETENESS_FIELDS))
                .join(SubjectSummary, SubjectSummary.subject_id == Subject.id).where(Subject.site_id.in_(sites), holds))
        for subject_id, number, site_id, status, *values in session.execute(stmt):
            counts = dict(zip(summaries.COMPLETENESS_FIELDS, values, strict=True))
            per_subject[subject_id] = {"subject": number, "site": sites[site_id], "status": status, **counts}
            _add(per_site[site_id], counts)
    else:
        totals = [sa.func.coalesce(sa.func.sum(getattr(SubjectSummary, name)), 0) for name in summaries.COMPLETENESS_FIELDS]
        stmt = (sa.select(SubjectSummary.site_id, *totals).where(SubjectSummary.site_id.in_(sites), holds)
                .group_by(SubjectSummary.site_id))
        for site_id, *values in session.execute(stmt):
            _add(per_site[site_id], dict(zip(summaries.COMPLETENESS_FIELDS, values, strict=True)))
    outdated = session.scalars(sa.select(Subject).outerjoin(SubjectSummary, SubjectSummary.subject_id == Subject.id)
                               .where(Subject.site_id.in_(sites), sa.or_(SubjectSummary.subject_id.is_(None), sa.not_(holds)))).all()
    counted = summaries.completeness_of(session, list(outdated), today) if outdated else {}
    for subject in outdated:
        counts, _ = counted[subject.id]
        per_subject[subject.id] = {"subject": subject.number, "site": sites[subject.site_id], "status": subject.status, **counts}
        _add(per_site[subject.site_id], counts)
    report: dict[str, Any] = {"as_of": today, "sites": [{"site": code, **per_site[sid]} for sid, code in sites.items()]}
    if by_subject:
        report["subjects"] = sorted(per_subject.values(), key=lambda row: row["subject"])
    return report


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
    medians, overall = _median_hours_to_first_answer(session, sa.and_(in_sites, Query.first_answered_at.is_not(None)))
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
            "median_hours_to_first_answer": medians.get(site_id),
        })
    return {"as_of": now, "sites": report, "median_hours_to_first_answer": overall}


def _median_hours_to_first_answer(session: Session, answered) -> tuple[dict[uuid.UUID, float], float | None]:
    """Median hours from opening to first answer of the `answered` queries, per site and overall.
    PostgreSQL computes it; SQLite has no percentile function, so there the waits are read and sorted here."""
    if session.get_bind().dialect.name == "postgresql":
        hours = sa.extract("epoch", Query.first_answered_at - Query.opened_at) / 3600
        median = sa.func.percentile_cont(0.5).within_group(hours)
        per_site = session.execute(sa.select(Query.site_id, median).where(answered).group_by(Query.site_id)).all()
        return {site_id: _rounded(value) for site_id, value in per_site}, _rounded(session.scalar(sa.select(median).where(answered)))
    waits: dict[uuid.UUID, list[float]] = defaultdict(list)
    for site_id, opened_at, answered_at in session.execute(sa.select(Query.site_id, Query.opened_at, Query.first_answered_at)
                                                           .where(answered)):
        waits[site_id].append((answered_at - opened_at).total_seconds() / 3600)
    every_wait = [hours for site_waits in waits.values() for hours in site_waits]
    return ({site_id: _rounded(statistics.median(values)) for site_id, values in waits.items()},
            _rounded(statistics.median(every_wait)) if every_wait else None)


def _rounded(hours: float | None) -> float | None:
    return None if hours is None else round(float(hours), 2)


# --- safety ---------------------------------------------------------------------------------

def safety(session: Session, actor: Actor, *, site: str | None = None) -> dict[str, Any]:
    """AE and SAE counts by grade per site, with each site's maximum daily CRS and ICANS grades.

    The database adds up the subjects' summary rows, their {grade: count} maps included; subjects whose
    row was counted under other rules (or who have none) are counted afresh from their entries."""
    sites = _sites(session, actor, site)
    _, fingerprint = summaries.schedule(runtime.of(session))
    report = {sid: {"site": code, "ae_total": 0, "sae_total": 0, "ae_by_grade": defaultdict(int),
                    "sae_by_grade": defaultdict(int), "max_crs_grade": None, "max_icans_grade": None}
              for sid, code in sites.items()}
    counted = SubjectSummary.fingerprint == fingerprint
    in_scope = sa.and_(SubjectSummary.site_id.in_(sites), counted)
    totals = sa.select(SubjectSummary.site_id, sa.func.sum(SubjectSummary.ae_total), sa.func.sum(SubjectSummary.sae_total),
                       sa.func.max(SubjectSummary.max_crs_grade), sa.func.max(SubjectSummary.max_icans_grade))
    rows: list[tuple[uuid.UUID, dict[str, Any]]] = [
        (site_id, {"ae_total": ae_total, "sae_total": sae_total, "ae_by_grade": {}, "sae_by_grade": {},
                   "max_crs_grade": max_crs, "max_icans_grade": max_icans})
        for site_id, ae_total, sae_total, max_crs, max_icans in session.execute(
            totals.where(in_scope).group_by(SubjectSummary.site_id))]
    for key, column in (("ae_by_grade", SubjectSummary.ae_by_grade), ("sae_by_grade", SubjectSummary.sae_by_grade)):
        for site_id, label, count in session.execute(_grade_counts(session, column, in_scope)):
            rows.append((site_id, {"ae_total": 0, "sae_total": 0, "ae_by_grade": {}, "sae_by_grade": {}, key: {label: int(count)},
                                   "max_crs_grade": None, "max_icans_grade": None}))
    outdated = dict(session.execute(sa.select(Subject.id, Subject.site_id)
                                    .outerjoin(SubjectSummary, SubjectSummary.subject_id == Subject.id)
                                    .where(Subject.site_id.in_(sites), sa.or_(SubjectSummary.subject_id.is_(None), sa.not_(counted)))).all())
    if outdated:
        rows += [(outdated[sid], counts) for sid, counts in summaries.safety_of(session, list(outdated)).items()]
    for site_id, counts in rows:
        _add_safety(report[site_id], counts)
    out = [{**row, "ae_by_grade": dict(sorted(row["ae_by_grade"].items())),
            "sae_by_grade": dict(sorted(row["sae_by_grade"].items()))} for row in report.values()]
    return {"sites": out, "ae_total": sum(r["ae_total"] for r in out), "sae_total": sum(r["sae_total"] for r in out)}


def _grade_counts(session: Session, grade_map, where):
    """(site id, grade label, count) summed by the database over the subjects' {label: count} documents."""
    each = "jsonb_each_text" if session.get_bind().dialect.name == "postgresql" else "json_each"
    pairs = getattr(sa.func, each)(grade_map).table_valued("key", "value")
    return (sa.select(SubjectSummary.site_id, pairs.c.key, sa.func.sum(sa.cast(pairs.c.value, sa.Integer)))
            .select_from(SubjectSummary).join(pairs, sa.true()).where(where)
            .group_by(SubjectSummary.site_id, pairs.c.key))


def _add_safety(row: dict[str, Any], counts: dict[str, Any]) -> None:
    row["ae_total"] += counts["ae_total"]
    row["sae_total"] += counts["sae_total"]
    for key in ("ae_by_grade", "sae_by_grade"):
        for label, n in counts[key].items():
            row[key][label] += n
    for key in ("max_crs_grade", "max_icans_grade"):
        if counts[key] is not None and (row[key] is None or counts[key] > row[key]):
            row[key] = counts[key]


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
