"""The home page by role, the subject list, enrolment and the casebook, through the web pages (Flask's test
client on the trial forms, the accounts of tests/monitoring): each page shows its role's data of its own sites
and nothing of another's, enrolment reports the service's refusals beside their fields and never shows the
hospital number again, and a retried enrolment makes one subject."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from conftest import count_rows
from edc.extensions import db
from monitoring.conftest import monitoring, username_of  # noqa: F401 (a fixture)
from trial.test_baseline_forms import VS
from trial.test_treatment_forms import CM
from web.conftest import WebClient

HOSPITAL_NUMBER = "HN-77-31415"
ENROLMENT = {"site": "ES01", "consent_date": "2026-11-02", "sex": "F", "birth_year": "2016", "birth_month": "4",
             "hospital_number": HOSPITAL_NUMBER}


@pytest.fixture
def accounts(monitoring):  # noqa: F811 (the fixture imported above)
    """The trial forms, sites ES01 and IT01 and one signed-in API account per role (tests/monitoring)."""
    return monitoring


def browser(trial, account: str) -> WebClient:
    client = WebClient(trial.client.application.test_client())
    client.login(username_of(account))
    return client


@pytest.fixture
def trial_data(accounts):
    """Two subjects at ES01 (one with a screening vital signs entry, an open query on it and a medication in
    its log) and one at IT01."""
    m = accounts
    es = m.enrol()
    m.enrol()
    it = m.enrol(site="IT01")
    vs = m.saved(es, "vs", VS, event="SCR")
    query = m.client.post("/api/v1/queries", json={"entry_id": vs["id"], "item": "HR", "message": "Please check HR."},
                          headers=m.headers["monitor_ES01"])
    assert query.status_code == 201, query.get_json()
    cm = m.saved(es, "cm", CM)
    return {"es": es, "it": it, "vs": vs["id"], "cm": cm["id"], "query": query.get_json()["id"]}


def form_token(html: str) -> str:
    return re.search(r'name="form_token" value="([0-9a-f]{32})"', html).group(1)


# --- home ----------------------------------------------------------------------------------------------------

def test_site_staff_see_their_sites_subjects_with_next_due_visit_and_open_queries(accounts, trial_data):
    home = browser(accounts, "coordinator_ES01").text("/")
    assert f'href="/subjects/{trial_data["es"]}"' in home and trial_data["it"] not in home and "IT01" not in home
    assert "Screening and registration" in home  # the next due visit
    assert f'<a href="/queries?subject={trial_data["es"]}&amp;state=open">1</a>' in home
    assert 'href="/subjects/new"' in home
    italian = browser(accounts, "investigator_IT01").text("/")
    assert trial_data["it"] in italian and trial_data["es"] not in italian and "ES01" not in italian


def test_monitors_see_their_sites_queries_and_sdv_progress(accounts, trial_data):
    home = browser(accounts, "monitor_ES01").text("/")
    assert "Please check HR." in home and f'href="/queries/{trial_data["query"]}"' in home
    assert "Source data verification" in home and "ES01" in home and "IT01" not in home
    assert 'href="/subjects/new"' not in home
    other = browser(accounts, "monitor_IT01").text("/")
    assert "Please check HR." not in other and "ES01" not in other


def test_data_managers_see_the_whole_study_per_site(accounts, trial_data):
    home = browser(accounts, "data_manager").text("/")
    assert "The study is open for data entry." in home
    rows = dict(re.findall(r'<tr><th scope="row"><a href="/subjects\?site=(\w+)">\w+</a></th><td>(\d+)</td>', home))
    assert rows == {"ES01": "2", "IT01": "1"}


def test_other_roles_get_a_short_page_of_what_they_do_here(accounts, trial_data):
    for account, says in [("statistician", "export pseudonymised data sets"), ("admin", "manage accounts and sites"),
                          ("safety", "review serious adverse events"), ("auditor", "without changing anything")]:
        home = browser(accounts, account).text("/")
        assert says in home and trial_data["es"] not in home and "Please check HR." not in home, account


# --- the subject list ----------------------------------------------------------------------------------------

def test_the_subject_list_pages_filters_and_keeps_to_the_callers_sites(accounts, trial_data):
    coordinator = browser(accounts, "coordinator_ES01")
    listing = coordinator.text("/subjects")
    assert trial_data["es"] in listing and trial_data["it"] not in listing and "2 subjects" in listing
    first = coordinator.text("/subjects?page_size=1")
    assert "page 1 of 2" in first and 'href="/subjects?page=2&amp;page_size=1"' in first
    second = coordinator.text("/subjects?page=2&page_size=1")
    assert 'rel="prev"' in second and 'rel="next"' not in second
    assert "0 subjects" in coordinator.text("/subjects?status=enrolled")
    assert coordinator.get("/subjects?site=IT01").status_code == 404
    assert coordinator.get("/subjects?page_size=100000").status_code == 422
    assert coordinator.get("/subjects?status=nonsense").status_code == 422
    manager = browser(accounts, "data_manager").text("/subjects?site=IT01")
    assert trial_data["it"] in manager and trial_data["es"] not in manager


def test_a_statistician_sees_no_subjects(accounts, trial_data):
    statistician = browser(accounts, "statistician")
    for path in ("/subjects", f"/subjects/{trial_data['es']}", "/subjects/new"):
        response = statistician.get(path)
        assert response.status_code == 403 and response.mimetype == "text/html", path
        main = response.get_data(as_text=True).split('<main id="main">')[1]
        assert "Your role does not allow this page." in main and trial_data["es"] not in main


# --- enrolment -----------------------------------------------------------------------------------------------

def test_enrolment_gives_the_next_study_number_and_never_shows_the_hospital_number(accounts, session, caplog):
    coordinator = browser(accounts, "coordinator_ES01")
    form = coordinator.text("/subjects/new")
    assert '<option value="ES01"' in form and "IT01" not in form
    response = coordinator.post("/subjects/new", {**ENROLMENT, "form_token": form_token(form)})
    assert response.status_code == 303 and response.headers["Location"] == "/subjects/ES01-0001?notice=enrolled"
    page = coordinator.text(response.headers["Location"])
    assert "ES01-0001" in page and "enrolled under the study number" in page and HOSPITAL_NUMBER not in page
    again = coordinator.text("/subjects/new")
    duplicate = coordinator.post("/subjects/new", {**ENROLMENT, "form_token": form_token(again)})
    html = duplicate.get_data(as_text=True)
    assert duplicate.status_code == 409 and HOSPITAL_NUMBER not in html
    assert re.search(r'aria-describedby="h-hospital_number e-hospital_number" aria-invalid="true"', html)
    assert re.search(r'id="e-hospital_number">[^<]*already registered at this site as ES01-0001', html)
    assert count_rows(session, "subjects") == 1
    assert caplog.records and not [r for r in caplog.records if HOSPITAL_NUMBER in str(vars(r))]  # nor in a log


def test_enrolment_errors_are_shown_beside_their_fields_and_change_nothing(accounts, session):
    coordinator = browser(accounts, "coordinator_ES01")
    token = form_token(coordinator.text("/subjects/new"))
    unreadable = coordinator.post("/subjects/new", {**ENROLMENT, "birth_year": "twenty", "consent_date": "", "form_token": token})
    html = unreadable.get_data(as_text=True)
    assert unreadable.status_code == 422 and HOSPITAL_NUMBER not in html
    assert 'id="e-birth_year">Enter a whole number.' in html and 'id="e-consent_date">Required.' in html
    assert 'aria-describedby="e-birth_year" aria-invalid="true"' in html
    refused = coordinator.post("/subjects/new", {**ENROLMENT, "birth_year": "1950", "consent_date": "2027-01-01",
                                                 "form_token": token})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and 'id="e-birth_year">Must be between' in html
    assert 'id="e-consent_date">Must not be in the future.' in html and HOSPITAL_NUMBER not in html
    assert count_rows(session, "subjects") == 0
    fixed = coordinator.post("/subjects/new", {**ENROLMENT, "form_token": token})  # the same form, corrected
    assert fixed.status_code == 303 and count_rows(session, "subjects") == 1


def test_another_sites_enrolment_is_refused_and_a_forged_post_too(accounts, session):
    coordinator = browser(accounts, "coordinator_ES01")
    token = form_token(coordinator.text("/subjects/new"))
    assert coordinator.post("/subjects/new", {**ENROLMENT, "site": "IT01", "form_token": token}).status_code == 404
    assert coordinator.post("/subjects/new", {**ENROLMENT, "form_token": token}, csrf=False).status_code == 403
    assert count_rows(session, "subjects") == 0


def test_a_retried_enrolment_makes_one_subject_and_answers_as_the_first_did(accounts, session):
    coordinator = browser(accounts, "coordinator_ES01")
    body = {**ENROLMENT, "form_token": form_token(coordinator.text("/subjects/new"))}
    first = coordinator.post("/subjects/new", body)
    retry = coordinator.post("/subjects/new", body)  # the answer of the first was lost: the browser sends it again
    assert first.status_code == retry.status_code == 303
    assert retry.headers["Location"] == first.headers["Location"] == "/subjects/ES01-0001?notice=enrolled"
    assert count_rows(session, "subjects") == 1
    changed = coordinator.post("/subjects/new", {**body, "birth_month": "5"})  # the same token for another request
    assert changed.status_code == 422 and count_rows(session, "subjects") == 1
    assert "already sent with other values" in changed.get_data(as_text=True)
    assert form_token(changed.get_data(as_text=True)) != body["form_token"]  # a new form for a new subject
    for response in (first, retry, changed):
        assert HOSPITAL_NUMBER not in response.headers.get("Location", "") + response.get_data(as_text=True)


# --- the casebook --------------------------------------------------------------------------------------------

def test_the_casebook_grid_shows_states_in_words_and_links_each_form(accounts, trial_data):
    coordinator = browser(accounts, "coordinator_ES01")
    page = coordinator.text(f"/subjects/{trial_data['es']}")
    number = trial_data["es"]
    vital_signs = re.search(rf'<a href="/entries/{trial_data["vs"]}">Vital signs</a>\s*(.*?)</li>', page, re.S)
    assert vital_signs and "queried" in vital_signs.group(1)  # the open query on the entry
    assert f'href="/subjects/{number}/enter?form=dm&amp;event=SCR&amp;instance=1"' in page
    assert re.search(r'>Demographics</a> <span class="badge">empty</span>', page)
    assert f'href="/subjects/{number}/enter?form=vs&amp;event=UNS&amp;instance=1"' in page
    assert f'<a href="/entries/{trial_data["cm"]}">1</a>' in page and "Levetiracetam" in page
    assert f'href="/subjects/{number}/enter?form=ae"' in page and f'href="/subjects/{number}/enter?form=crs_daily"' in page
    assert '<a href="/subjects" aria-current="page">Subjects</a>' in page
    assert f'<a href="/queries/{trial_data["query"]}">Please check HR.</a>' in page
    assert 'href="/subjects/' + number + '/sign"' not in page  # the coordinator does not sign
    assert f'href="/subjects/{number}/sign"' in browser(accounts, "investigator_ES01").text(f"/subjects/{number}")
    monitor = browser(accounts, "monitor_ES01").text(f"/subjects/{number}")
    assert f'href="/entries/{trial_data["vs"]}"' in monitor and "/enter?" not in monitor  # a monitor enters nothing


def test_another_sites_subject_is_a_404_page(accounts, trial_data):
    coordinator = browser(accounts, "coordinator_ES01")
    for path in (f"/subjects/{trial_data['it']}", "/subjects/ES01-9999"):
        response = coordinator.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html"
        assert "Page not found" in response.get_data(as_text=True)


# --- statements per page -------------------------------------------------------------------------------------

def statements(app, fetch) -> int:
    """How many SQL statements the app runs while `fetch` loads a page."""
    with app.app_context():
        engine = db.engine
    count = 0

    def seen(*_args) -> None:
        nonlocal count
        count += 1

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        fetch()
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    return count


def test_the_pages_read_as_many_statements_for_many_subjects_and_entries_as_for_few(accounts, trial_data):
    app = accounts.client.application
    paths = {"coordinator_ES01": ["/", "/subjects", f"/subjects/{trial_data['es']}"], "monitor_ES01": ["/"],
             "data_manager": ["/"]}
    browsers = {account: browser(accounts, account) for account in paths}

    def count_all() -> dict[str, int]:
        return {f"{account} {path}": statements(app, lambda: browsers[account].text(path))
                for account, listed in paths.items() for path in listed}

    before = count_all()
    for _ in range(3):
        number = accounts.enrol()
        accounts.saved(number, "vs", VS, event="SCR")
    accounts.saved(trial_data["es"], "cm", {**CM, "CMTRT": "Ondansetron"})
    vs = accounts.saved(trial_data["es"], "vs", VS, event="UNS")
    accounts.client.post("/api/v1/queries", json={"entry_id": vs["id"], "item": "HR", "message": "HR again?"},
                         headers=accounts.headers["monitor_ES01"])
    assert count_all() == before
    assert max(before.values()) <= 20, before  # the session's own statements included
