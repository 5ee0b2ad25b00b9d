"""Enrolment under pseudonymous study numbers, site scope, status transitions."""

import threading

import pytest
import sqlalchemy as sa

from conftest import BACKEND, bearer, count_rows, login, make_site, make_user, problem
from edc.models import Subject

NEW = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}


@pytest.fixture
def clinical(session, staff):
    """Staff plus a coordinator at IT01, a manufacturing account and a safety officer."""
    make_user(session, "crc-it01", [("coordinator", "IT01")])
    make_user(session, "mfg", [("manufacturing", None)])
    make_user(session, "safety", [("safety", None)])
    return {**staff, "coordinator_it": "crc-it01", "manufacturing": "mfg", "safety": "safety"}


def enrol(client, headers, **overrides):
    return client.post("/api/v1/subjects", json={**NEW, **overrides}, headers=headers)


def test_enrolment_gives_the_sites_next_number(client, clinical):
    inv = bearer(login(client, clinical["investigator"]))
    first, second = enrol(client, inv), enrol(client, inv)
    assert first.status_code == 201 and first.get_json()["number"] == "ES01-0001"
    assert second.get_json()["number"] == "ES01-0002"
    assert first.headers["Location"].endswith("/api/v1/subjects/ES01-0001")
    body = first.get_json()
    assert body["status"] == "screening" and body["birth_year"] == 2016 and body["birth_month"] == 4


def test_numbers_are_per_site(client, clinical):
    it = bearer(login(client, clinical["coordinator_it"]))
    assert enrol(client, it, site="IT01").get_json()["number"] == "IT01-0001"


def test_site_staff_enrol_only_at_their_sites(client, clinical, session):
    inv = bearer(login(client, clinical["investigator"]))
    problem(enrol(client, inv, site="IT01"), 404)
    assert count_rows(session, "subjects") == 0


@pytest.mark.parametrize("role", ["monitor", "data_manager", "auditor", "statistician", "admin", "manufacturing", "safety"])
def test_other_roles_do_not_enrol(client, clinical, role):
    problem(enrol(client, bearer(login(client, clinical[role]))), 403)


@pytest.mark.parametrize("field, value", [
    ("birth_month", 13), ("birth_month", 0), ("birth_year", 1900), ("birth_year", "2016"),
    ("consent_date", "2999-01-01"), ("sex", "X"), ("birth_date", "2016-04-12"),
])
def test_bad_enrolment_is_422_and_saves_nothing(client, clinical, session, field, value):
    inv = bearer(login(client, clinical["investigator"]))
    body = problem(enrol(client, inv, **{field: value}), 422)
    assert f"/{field}" in {e["pointer"] for e in body["errors"]}
    assert count_rows(session, "subjects") == 0 and count_rows(session, "subject_counters") == 0


def test_hospital_number_detects_duplicates_and_is_never_stored(client, clinical, session):
    inv = bearer(login(client, clinical["investigator"]))
    canary = "MRN-CANARY-774411"
    assert enrol(client, inv, hospital_number=canary).status_code == 201
    duplicate = problem(enrol(client, inv, hospital_number=f"  {canary.lower()} "), 409)
    assert duplicate["existing"] == "ES01-0001"
    dump = "\n".join(repr(tuple(r)) for table in ("subjects", "audit_records")
                     for r in session.execute(sa.text(f"SELECT * FROM {table}")).all())
    assert canary not in dump and canary.lower() not in dump


def test_listing_is_scoped_to_the_callers_sites(client, clinical):
    inv = bearer(login(client, clinical["investigator"]))
    it = bearer(login(client, clinical["coordinator_it"]))
    enrol(client, inv)
    enrol(client, it, site="IT01")
    assert [s["number"] for s in client.get("/api/v1/subjects", headers=inv).get_json()["items"]] == ["ES01-0001"]
    dm = bearer(login(client, clinical["data_manager"]))
    assert client.get("/api/v1/subjects", headers=dm).get_json()["total"] == 2
    assert [s["number"] for s in client.get("/api/v1/subjects?site=IT01", headers=dm).get_json()["items"]] == ["IT01-0001"]
    problem(client.get("/api/v1/subjects?site=IT01", headers=inv), 404)


def test_other_sites_subject_is_404(client, clinical):
    it = bearer(login(client, clinical["coordinator_it"]))
    enrol(client, it, site="IT01")
    inv = bearer(login(client, clinical["investigator"]))
    problem(client.get("/api/v1/subjects/IT01-0001", headers=inv), 404)
    problem(client.get("/api/v1/subjects/IT01-0001/casebook", headers=inv), 404)
    problem(client.get("/api/v1/subjects/IT01-0001/audit", headers=inv), 404)


@pytest.mark.parametrize("role", ["statistician", "admin"])
def test_roles_without_clinical_access_read_no_subjects(client, clinical, role):
    problem(client.get("/api/v1/subjects", headers=bearer(login(client, clinical[role]))), 403)


def test_status_transitions_are_checked(client, clinical):
    inv = bearer(login(client, clinical["investigator"]))
    created = enrol(client, inv)
    etag = created.headers["ETag"]
    problem(client.post("/api/v1/subjects/ES01-0001/status", json={"status": "withdrawn"}, headers={**inv, "If-Match": etag}), 422)
    problem(client.post("/api/v1/subjects/ES01-0001/status", json={"status": "completed"}, headers={**inv, "If-Match": etag}), 409)
    problem(client.post("/api/v1/subjects/ES01-0001/status", json={"status": "enrolled"}, headers=inv), 428)
    enrolled = client.post("/api/v1/subjects/ES01-0001/status", json={"status": "enrolled"}, headers={**inv, "If-Match": etag})
    assert enrolled.get_json()["status"] == "enrolled"
    problem(client.post("/api/v1/subjects/ES01-0001/status", json={"status": "withdrawn", "reason": "x"},
                        headers={**inv, "If-Match": etag}), 412)
    withdrawn = client.post("/api/v1/subjects/ES01-0001/status", json={"status": "withdrawn", "reason": "family decision"},
                            headers={**inv, "If-Match": enrolled.headers["ETag"]})
    assert withdrawn.get_json()["status_reason"] == "family decision"


def test_screen_failure_keeps_its_number(client, clinical):
    inv = bearer(login(client, clinical["investigator"]))
    etag = enrol(client, inv).headers["ETag"]
    client.post("/api/v1/subjects/ES01-0001/status", json={"status": "screen_failed", "reason": "MRD negative"},
                headers={**inv, "If-Match": etag})
    assert enrol(client, inv).get_json()["number"] == "ES01-0002"
    assert client.get("/api/v1/subjects/ES01-0001", headers=inv).get_json()["status"] == "screen_failed"


def test_enrolment_is_audited_on_the_subjects_chain(client, clinical):
    inv = bearer(login(client, clinical["investigator"]))
    enrol(client, inv)
    history = client.get("/api/v1/subjects/ES01-0001/audit", headers=inv).get_json()
    assert history[0]["action"] == "subject_enrolled" and history[0]["chain"].startswith("subject:")
    assert {"field": "number", "old": None, "new": "ES01-0001"} in history[0]["changes"]


@pytest.mark.skipif(BACKEND != "postgresql", reason="concurrency is proven on PostgreSQL; SQLite serialises writers")
def test_fifty_parallel_enrolments_get_fifty_consecutive_numbers(app, client, clinical):
    token = login(client, clinical["investigator"])["access_token"]
    results, errors = [], []

    def worker():
        local = app.test_client()
        response = local.post("/api/v1/subjects", json=NEW, headers=bearer(token))
        (results if response.status_code == 201 else errors).append(response.get_json())

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["number"] for r in results) == [f"ES01-{n:04d}" for n in range(1, 51)]


def test_parallel_enrolments_on_sqlite_also_get_distinct_numbers(app, client, clinical, session):
    token = login(client, clinical["investigator"])["access_token"]
    statuses = []

    def worker():
        statuses.append(app.test_client().post("/api/v1/subjects", json=NEW, headers=bearer(token)).status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 10
    numbers = session.scalars(sa.select(Subject.number).order_by(Subject.number)).all()
    assert numbers == [f"ES01-{n:04d}" for n in range(1, 11)]


def test_closed_site_enrols_nobody(client, clinical, session):
    make_site(session, "LB01", time_zone="Asia/Beirut")
    make_user(session, "inv-lb01", [("investigator", "LB01")])
    admin = bearer(login(client, clinical["admin"]))
    etag = client.get("/api/v1/sites/LB01", headers=admin).headers["ETag"]
    client.post("/api/v1/sites/LB01/close", json={"reason": "x"}, headers={**admin, "If-Match": etag})
    problem(enrol(client, bearer(login(client, "inv-lb01")), site="LB01"), 409)
