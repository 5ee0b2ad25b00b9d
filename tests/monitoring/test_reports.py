"""Monitoring reports through the HTTP API: enrolment, completeness, query ageing, safety, safety clocks.

Site roles see their own sites only (another site's code is 404); each report reads the summary rows
(subjects, subject_summaries, queries, safety_clocks), which the statement log checks: no report
reads entries or form-status cells while the subjects' summary rows hold. Rows that ran out or were
counted under other rules are counted afresh, and the counts always match a plain count.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from conftest import bearer, login, problem
from edc import clock, runtime
from edc.extensions import db
from edc.models import Entry, FormStatus, Site, Subject, SubjectSummary
from edc.services.demo import DEMO_PASSWORD
from edc.services import sealing, summaries
from edc.services.summaries import FOLLOWED_STATUSES
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

def test_reports_read_summary_rows_never_entries_nor_form_status_cells(monitoring):
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
            reads = [s for s in statements if re.search(r"\b(FROM|JOIN)\s+(entries|form_status)\b", s, re.I)]
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
        # The worker rewrites the rows that ran out; the site totals the database adds up then agree.
        assert invoke(app, "worker", "--once").exit_code == 0
        assert outdated_rows(app) == 0
        again = client.get("/api/v1/reports/completeness", headers=headers).get_json()
        assert {row["site"]: row for row in again["sites"]} == {row["site"]: row for row in body["sites"]}
    body = client.get("/api/v1/reports/safety", headers=headers).get_json()
    assert [{k: row[k] for k in SAFETY_COUNTS} for row in body["sites"]] == reference_safety(app)


SAFETY_COUNTS = ("ae_total", "sae_total", "ae_by_grade", "sae_by_grade", "max_crs_grade", "max_icans_grade")


def outdated_rows(app) -> int:
    """Subjects whose summary row is missing or does not hold today."""
    with app.app_context():
        rt = runtime.for_app(app)
        runtime.bind(db.session, rt)
        _, fingerprint = summaries.schedule(rt)
        n = db.session.scalar(sa.select(sa.func.count(Subject.id))
                              .outerjoin(SubjectSummary, SubjectSummary.subject_id == Subject.id)
                              .where(sa.or_(SubjectSummary.subject_id.is_(None),
                                            sa.not_(summaries.is_current(fingerprint, clock.utcnow().date())))))
        db.session.rollback()
        return n


def reference_safety(app) -> list[dict]:
    """Per site (in code order), the safety counts the plain way: every AE, CRS and ICANS entry opened."""
    with app.app_context():
        rt = runtime.for_app(app)
        runtime.bind(db.session, rt)
        out = []
        for site in db.session.scalars(sa.select(Site).order_by(Site.code)):
            counts = {"ae_total": 0, "sae_total": 0, "ae_by_grade": {}, "sae_by_grade": {}, "max_crs_grade": None,
                      "max_icans_grade": None}
            rows = db.session.scalars(sa.select(Entry).join(Subject).where(Subject.site_id == site.id)).all()
            for entry in rows:
                values = sealing.unseal(db.session, rt.study.form(entry.form_id, entry.form_version), entry)
                if entry.form_id == "ae":
                    label = str(int(values["AETOXGR"])) if str(values.get("AETOXGR")).isdigit() else "unknown"
                    counts["ae_total"] += 1
                    counts["ae_by_grade"][label] = counts["ae_by_grade"].get(label, 0) + 1
                    if values.get("AESER") == "Y":
                        counts["sae_total"] += 1
                        counts["sae_by_grade"][label] = counts["sae_by_grade"].get(label, 0) + 1
                for form, items, key in (("crs_daily", ("CRSGRINV", "CRSGRDRV"), "max_crs_grade"),
                                         ("icans_daily", ("ICANSINV", "ICANSDRV"), "max_icans_grade")):
                    grades = [int(values[i]) for i in items if str(values.get(i)).isdigit()]
                    if entry.form_id == form and grades and (counts[key] is None or grades[0] > counts[key]):
                        counts[key] = grades[0]
            counts["ae_by_grade"] = dict(sorted(counts["ae_by_grade"].items()))
            counts["sae_by_grade"] = dict(sorted(counts["sae_by_grade"].items()))
            out.append(counts)
        db.session.rollback()
        return out


# --- the summary rows -------------------------------------------------------------------------

def summary_of(monitoring, number) -> dict:
    app = monitoring.client.application
    with app.app_context():
        row = db.session.scalars(sa.select(SubjectSummary).join(Subject).where(Subject.number == number)).one()
        out = {c.name: getattr(row, c.name) for c in SubjectSummary.__table__.columns}
        db.session.rollback()
        return out


def test_the_summary_row_follows_every_write_that_moves_it(monitoring, fake_clock):
    number = monitoring.enrol()
    row = summary_of(monitoring, number)
    assert (row["expected"], row["missing"], row["ae_total"], row["max_crs_grade"]) == (SCREENING_FORMS, SCREENING_FORMS, 0, None)
    assert row["valid_until"] is not None and row["valid_until"] > fake_clock.now.date()
    monitoring.saved(number, "vs", VS, event="SCR")
    assert (summary_of(monitoring, number)["complete"], summary_of(monitoring, number)["missing"]) == (1, SCREENING_FORMS - 1)
    first = monitoring.saved(number, "ae", ae(AESHOSP="N", AETOXGR="2"))
    monitoring.saved(number, "crs_daily", crs(38.5, "N", "FLUIDS", 0, grade=2))
    row = summary_of(monitoring, number)
    assert (row["ae_total"], row["sae_total"], row["ae_by_grade"], row["max_crs_grade"]) == (1, 0, {"2": 1}, 2)
    changed = monitoring.update(first["id"], ae(), reason="Hospitalised per source: serious, grade 3.")
    assert changed.status_code == 200, changed.get_json()
    row = summary_of(monitoring, number)
    assert (row["ae_by_grade"], row["sae_by_grade"]) == ({"3": 1}, {"3": 1})
    # A subject who leaves has nothing more expected: only what was entered counts.
    subject = monitoring.client.get(f"/api/v1/subjects/{number}", headers=monitoring.headers["investigator_ES01"])
    left = monitoring.client.post(f"/api/v1/subjects/{number}/status", json={"status": "withdrawn", "reason": "Consent withdrawn."},
                                  headers={**monitoring.headers["investigator_ES01"], "If-Match": subject.headers["ETag"]})
    assert left.status_code == 200, left.get_json()
    row = summary_of(monitoring, number)
    assert (row["expected"], row["complete"], row["missing"]) == (1, 1, 0)
    assert by_site(report(monitoring, "completeness"))["ES01"]["expected"] == 1


def test_rows_counted_under_other_rules_are_counted_afresh_until_init_rewrites_them(monitoring, app_factory, monkeypatch):
    number = monitoring.enrol()
    monitoring.saved(number, "vs", VS, event="SCR")
    monitoring.saved(number, "ae", ae())
    before = {name: report(monitoring, name) for name in ("completeness", "safety")}
    monkeypatch.setattr(summaries, "COUNTING_RULES_VERSION", summaries.COUNTING_RULES_VERSION + 1)
    amended = app_factory(forms_dir=TRIAL_FORMS)  # a restarted process
    client = amended.test_client()
    headers = bearer(login(client, username_of("data_manager")))
    assert outdated_rows(amended) == 1
    for name, body in before.items():
        assert client.get(f"/api/v1/reports/{name}", headers=headers).get_json() == body
    result = amended.test_cli_runner().invoke(args=["edc", "init"], catch_exceptions=False)
    assert result.exit_code == 0 and "subject summaries: 1 recounted" in result.output
    assert outdated_rows(amended) == 0
    for name, body in before.items():
        assert client.get(f"/api/v1/reports/{name}", headers=headers).get_json() == body

