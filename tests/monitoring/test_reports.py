"""Monitoring reports through the HTTP API: enrolment, completeness, query ageing, safety, safety clocks.

Site roles see their own sites only (another site's code is 404); each report reads the summary rows
(subjects, form_status, queries, safety_clocks), which the statement log checks: only the safety
report reads entries, and only those of the AE, CRS and ICANS forms.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from conftest import bearer, login, problem
from edc import clock, runtime
from edc.extensions import db
from edc.models import FormStatus, Subject
from edc.services.demo import DEMO_PASSWORD
from edc.services.reports import FOLLOWED_STATUSES
from monitoring.conftest import username_of
from test_demo_subjects import TRIAL_FORMS, invoke
from trial.test_baseline_forms import DM, VS
from trial.test_safety_clocks import SAE_DUE, ae
from trial.test_safety_forms import crs, icans

REPORTS = ("enrolment", "completeness", "queries", "safety", "safety-clocks")
SCREENING_FORMS = 14  # forms of the SCR visit in forms/study.yaml


def report(monitoring, name, role="data_manager", **params):
    response = monitoring.client.get(f"/api/v1/reports/{name}", query_string=params, headers=monitoring.headers[role])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def by_site(body):
    return {row["site"]: row for row in body["sites"]}


def later(monitoring, fake_clock, **delta):
    """Move the clock on and sign everyone in again (access tokens last minutes)."""
    fake_clock.advance(**delta)
    for name in monitoring.headers:
        monitoring.headers[name] = bearer(login(monitoring.client, username_of(name)))


# --- access and scope -------------------------------------------------------------------------

@pytest.mark.parametrize("name", REPORTS)
def test_site_roles_see_only_their_sites_and_another_site_is_404(monitoring, name):
    for role, site in (("investigator_ES01", "ES01"), ("coordinator_IT01", "IT01"), ("monitor_ES01", "ES01")):
        assert list(by_site(report(monitoring, name, role))) == [site]
        assert list(by_site(report(monitoring, name, role, site=site))) == [site]
        other = "IT01" if site == "ES01" else "ES01"
        problem(monitoring.client.get(f"/api/v1/reports/{name}", query_string={"site": other},
                                      headers=monitoring.headers[role]), 404)
    for role in ("data_manager", "safety", "auditor"):
        assert list(by_site(report(monitoring, name, role))) == ["ES01", "IT01"]
    problem(monitoring.client.get(f"/api/v1/reports/{name}", query_string={"site": "XX99"},
                                  headers=monitoring.headers["data_manager"]), 404)


@pytest.mark.parametrize("name", REPORTS)
def test_roles_without_reports_read_are_403_and_a_malformed_site_is_422(monitoring, name):
    for role in ("statistician", "admin"):
        problem(monitoring.client.get(f"/api/v1/reports/{name}", headers=monitoring.headers[role]), 403)
    problem(monitoring.client.get(f"/api/v1/reports/{name}", query_string={"site": "es 01; drop"},
                                  headers=monitoring.headers["data_manager"]), 422)
    problem(monitoring.client.get(f"/api/v1/reports/{name}"), 401)


# --- enrolment --------------------------------------------------------------------------------

def test_enrolment_counts_subjects_by_site_month_and_status(monitoring, fake_clock):
    monitoring.enrol()
    monitoring.enrol()
    monitoring.enrol(site="IT01")
    later(monitoring, fake_clock, days=15)                 # into December
    monitoring.enrol()
    body = report(monitoring, "enrolment")
    sites = by_site(body)
    assert body["total"] == 4
    assert sites["ES01"]["total"] == 3 and sites["ES01"]["by_status"] == {"screening": 3}
    assert [(m["month"], m["total"]) for m in sites["ES01"]["months"]] == [("2026-11", 2), ("2026-12", 1)]
    assert sites["IT01"]["months"] == [{"month": "2026-11", "total": 1, "by_status": {"screening": 1}}]
    # An IT01 investigator's report holds IT01's subjects only.
    assert report(monitoring, "enrolment", "investigator_IT01")["total"] == 1


# --- completeness -----------------------------------------------------------------------------

def test_completeness_counts_expected_complete_draft_missing_and_overdue_by_visit_window(monitoring, fake_clock):
    number = monitoring.enrol()
    monitoring.saved(number, "vs", VS, event="SCR")
    monitoring.saved(number, "dm", DM, event="SCR", complete=False)
    monitoring.enrol(site="IT01")
    es01 = by_site(report(monitoring, "completeness"))["ES01"]
    assert es01 == {"site": "ES01", "expected": SCREENING_FORMS, "complete": 1, "draft": 1,
                    "missing": SCREENING_FORMS - 2, "overdue": 0}
    # Registration + 42 days is the last day of the screening window; the day after, what is not complete is overdue.
    later(monitoring, fake_clock, days=42)
    assert by_site(report(monitoring, "completeness"))["ES01"]["overdue"] == 0
    later(monitoring, fake_clock, days=1)
    body = report(monitoring, "completeness", by_subject="true")
    assert by_site(body)["ES01"]["overdue"] == SCREENING_FORMS - 1
    assert by_site(body)["IT01"]["overdue"] == SCREENING_FORMS
    subject = next(row for row in body["subjects"] if row["subject"] == number)
    assert subject | {"status": None} == {"subject": number, "site": "ES01", "status": None, "expected": SCREENING_FORMS,
                                          "complete": 1, "draft": 1, "missing": SCREENING_FORMS - 2,
                                          "overdue": SCREENING_FORMS - 1}
    assert "subjects" not in report(monitoring, "completeness")
    # A site role's per-subject rows are its own site's subjects only.
    rows = report(monitoring, "completeness", "monitor_IT01", by_subject="true")["subjects"]
    assert rows and {row["site"] for row in rows} == {"IT01"}


# --- queries ----------------------------------------------------------------------------------

def test_query_report_buckets_open_queries_by_age_and_takes_the_median_time_to_first_answer(monitoring, fake_clock):
    first = monitoring.enrol()
    monitoring.saved(first, "vs", {**VS, "TEMP": 41.0}, event="SCR")             # soft range: opens a query
    later(monitoring, fake_clock, days=10)
    second = monitoring.enrol()
    body = monitoring.saved(second, "vs", {**VS, "VSDAT": "2026-11-30", "HR": 210}, event="SCR")
    monitoring.saved(monitoring.enrol(site="IT01"), "vs", {**VS, "VSDAT": "2026-11-30", "OXYSAT": 88}, event="SCR",
                     role="investigator_IT01")
    later(monitoring, fake_clock, hours=6)
    fixed = monitoring.update(body["id"], {**VS, "VSDAT": "2026-11-30", "HR": 110})   # the correction answers it
    assert fixed.status_code == 200, fixed.get_json()
    sites = by_site(report(monitoring, "queries"))
    assert sites["ES01"]["open"] == 1 and sites["ES01"]["answered"] == 1
    assert sites["ES01"]["open_by_age_days"] == {"0-7": 0, "8-14": 1, "15-30": 0, ">30": 0}
    assert sites["ES01"]["median_hours_to_first_answer"] == 6.0
    assert sites["IT01"]["open_by_age_days"] == {"0-7": 1, "8-14": 0, "15-30": 0, ">30": 0}
    assert sites["IT01"]["median_hours_to_first_answer"] is None
    later(monitoring, fake_clock, days=21)
    sites = by_site(report(monitoring, "queries"))
    assert sites["ES01"]["open_by_age_days"] == {"0-7": 0, "8-14": 0, "15-30": 0, ">30": 1}
    assert sites["IT01"]["open_by_age_days"] == {"0-7": 0, "8-14": 0, "15-30": 1, ">30": 0}
    it01 = report(monitoring, "queries", "monitor_IT01")
    assert [row["site"] for row in it01["sites"]] == ["IT01"] and it01["median_hours_to_first_answer"] is None


# --- safety -----------------------------------------------------------------------------------

def test_safety_report_counts_aes_and_saes_by_grade_and_takes_the_maximum_crs_and_icans_grades(monitoring):
    es01 = monitoring.enrol(birth_year=2011, birth_month=1)
    monitoring.saved(es01, "ae", ae())                                                  # serious, grade 3
    monitoring.saved(es01, "ae", ae(AESHOSP="N", AETOXGR="1", AETERM="Headache"))       # not serious
    monitoring.saved(es01, "ae", {"AETERM": "Rash", "AECAT": "OTHER"}, complete=False)  # draft, not yet graded
    monitoring.saved(es01, "crs_daily", crs(38.5, grade=1))
    monitoring.saved(es01, "crs_daily", crs(38.5, "N", "FLUIDS", 0, grade=2))
    monitoring.saved(es01, "icans_daily", icans("ICE", 8, grade=1))
    it01 = monitoring.enrol(site="IT01")
    monitoring.saved(it01, "ae", ae(AETOXGR="4"), role="investigator_IT01")
    body = report(monitoring, "safety")
    sites = by_site(body)
    assert body["ae_total"] == 4 and body["sae_total"] == 2
    assert sites["ES01"] == {"site": "ES01", "ae_total": 3, "sae_total": 1, "ae_by_grade": {"1": 1, "3": 1, "unknown": 1},
                             "sae_by_grade": {"3": 1}, "max_crs_grade": 2, "max_icans_grade": 1}
    assert sites["IT01"] == {"site": "IT01", "ae_total": 1, "sae_total": 1, "ae_by_grade": {"4": 1},
                             "sae_by_grade": {"4": 1}, "max_crs_grade": None, "max_icans_grade": None}
    assert by_site(report(monitoring, "safety", "investigator_IT01")) == {"IT01": sites["IT01"]}


# --- safety clocks ----------------------------------------------------------------------------

def test_safety_clock_report_counts_open_and_overdue_clocks_by_site_and_kind(monitoring, fake_clock):
    number = monitoring.enrol()
    monitoring.saved(number, "ae", ae(), complete=False)              # SAE draft: the 24-hour clock runs
    sites = by_site(report(monitoring, "safety-clocks"))
    assert sites["ES01"]["open"] == 1 and sites["ES01"]["overdue"] == 0
    [kind] = sites["ES01"]["by_kind"]
    assert kind["kind"] == "sae_initial" and kind["earliest_due_at"].startswith(SAE_DUE[:16])
    assert sites["IT01"] == {"site": "IT01", "open": 0, "overdue": 0, "by_kind": []}
    later(monitoring, fake_clock, days=2)
    sites = by_site(report(monitoring, "safety-clocks", "safety"))
    assert sites["ES01"]["open"] == 0 and sites["ES01"]["overdue"] == 1
    assert report(monitoring, "safety-clocks", "investigator_IT01")["sites"] == [
        {"site": "IT01", "open": 0, "overdue": 0, "by_kind": []}]


# --- what the reports read --------------------------------------------------------------------

def test_reports_read_summary_rows_and_only_the_safety_report_reads_entries_of_its_forms(monitoring):
    number = monitoring.enrol()
    monitoring.saved(number, "vs", VS, event="SCR")
    monitoring.saved(number, "ae", ae())
    statements: list[str] = []
    engine = sa.engine.Engine  # every engine: the app's request sessions run on their own

    def remember(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", remember)
    try:
        for name in REPORTS:
            statements.clear()
            report(monitoring, name)
            reads = [s for s in statements if re.search(r"\b(FROM|JOIN)\s+entries\b", s, re.I)]
            if name == "safety":
                assert reads and all("entries.form_id =" in s for s in reads), reads
            else:
                assert not reads, (name, reads)
    finally:
        sa.event.remove(engine, "before_cursor_execute", remember)


# --- completeness against a reference -------------------------------------------------------

def reference_completeness(app) -> dict[str, dict[str, int]]:
    """Per subject, the completeness counts computed the plain way: every subject × scheduled visit × form in Python."""
    with app.app_context():
        study = runtime.for_app(app).study
        today = clock.utcnow().date()
        cells = {(row.subject_id, row.event_key, row.form_id): row.state
                 for row in db.session.scalars(sa.select(FormStatus).where(FormStatus.entries > 0))}
        out = {}
        for subject in db.session.scalars(sa.select(Subject)):
            anchors = {"registration": subject.registration_date, "planned_infusion": subject.planned_infusion_date,
                       "day0": subject.day0}
            counts = {"expected": 0, "complete": 0, "draft": 0, "missing": 0, "overdue": 0}
            for event in study.events:
                if event.optional or event.repeatable or not event.anchor:
                    continue
                anchor = anchors.get(event.anchor)
                due = anchor + timedelta(days=event.day) if anchor is not None else None
                followed = subject.status in FOLLOWED_STATUSES
                window_open = due is not None and due - timedelta(days=event.window_before) <= today
                past_window = due is not None and due + timedelta(days=event.window_after) < today
                for form_id in event.forms:
                    state = cells.get((subject.id, f"{event.id}/1", form_id))
                    if state is None and not (followed and window_open):
                        continue
                    counts["expected"] += 1
                    counts[state or "missing"] += 1
                    counts["overdue"] += state != "complete" and followed and past_window
            out[subject.number] = counts
        db.session.rollback()
        return out


def test_completeness_counted_by_the_database_matches_the_plain_count_over_demo_casebooks(app_factory, fake_clock):
    start = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
    fake_clock.now = start
    app = app_factory(forms_dir=TRIAL_FORMS)
    assert invoke(app, "seed-demo").exit_code == 0
    assert invoke(app, "seed-demo", "--subjects", "3", "--seed", "5").exit_code == 0
    client = app.test_client()
    for days in (0, 20, 60, 400):  # windows opening, closing and long past
        fake_clock.now = start + timedelta(days=days)
        headers = bearer(login(client, "dm", DEMO_PASSWORD))
        body = client.get("/api/v1/reports/completeness?by_subject=true", headers=headers).get_json()
        expected = reference_completeness(app)
        assert {row["subject"]: {k: row[k] for k in ("expected", "complete", "draft", "missing", "overdue")}
                for row in body["subjects"]} == expected
        totals = {name: sum(row[name] for row in body["sites"]) for name in ("expected", "missing", "overdue")}
        assert totals == {name: sum(c[name] for c in expected.values()) for name in totals}
        assert totals["expected"] > 0
