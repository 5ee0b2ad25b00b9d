"""Admins create, list, update and close sites; every staff role reads them."""

import pytest

from conftest import bearer, count_rows, login, problem

NEW_SITE = {"code": "FR01", "name": "Hôpital Robert-Debré", "country": "FR", "time_zone": "Europe/Paris"}


@pytest.fixture
def admin(client, staff):
    return bearer(login(client, staff["admin"]))


def test_admin_creates_a_site(client, admin):
    response = client.post("/api/v1/sites", json=NEW_SITE, headers=admin)
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/api/v1/sites/FR01") and response.headers["ETag"]
    body = response.get_json()
    assert body["status"] == "active" and body["version"] == 1 and body["name"] == NEW_SITE["name"]


def test_site_creation_is_audited_on_the_security_chain(client, admin, staff):
    client.post("/api/v1/sites", json=NEW_SITE, headers=admin)
    auditor = bearer(login(client, staff["auditor"]))
    records = client.get("/api/v1/audit/security?entity_type=site&page_size=200", headers=auditor).get_json()
    created = [r for r in records if r["action"] == "site_created" and r["site"] == "FR01"]
    assert len(created) == 1 and created[0]["actor"] == staff["admin"] and created[0]["role"] == "admin"
    assert {"field": "time_zone", "old": None, "new": "Europe/Paris"} in created[0]["changes"]


def test_every_staff_role_lists_sites(client, staff):
    for username in staff.values():
        body = client.get("/api/v1/sites", headers=bearer(login(client, username))).get_json()
        assert [s["code"] for s in body["items"]] == ["ES01", "IT01"] and body["total"] == 2


def test_listing_paginates_with_a_hard_maximum(client, admin, app):
    # Over the maximum is refused, never silently cut to a shorter page (tests/test_api_conventions.py).
    answer = problem(client.get("/api/v1/sites?page_size=100000", headers=admin), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/query/page_size"]
    limit = app.config["EDC"]["page_size_max"]
    assert client.get(f"/api/v1/sites?page_size={limit}", headers=admin).get_json()["page_size"] == limit
    second = client.get("/api/v1/sites?page=2&page_size=1", headers=admin).get_json()
    assert [s["code"] for s in second["items"]] == ["IT01"]


def test_only_admins_manage_sites(client, staff, session):
    before = count_rows(session, "sites")
    for role in ("investigator", "monitor", "data_manager", "auditor", "statistician"):
        headers = bearer(login(client, staff[role]))
        problem(client.post("/api/v1/sites", json=NEW_SITE, headers=headers), 403)
        problem(client.patch("/api/v1/sites/ES01", json={"name": "x"}, headers={**headers, "If-Match": '"x"'}), 403)
    assert count_rows(session, "sites") == before


def test_update_changes_only_given_fields_and_bumps_the_version(client, admin):
    etag = client.get("/api/v1/sites/ES01", headers=admin).headers["ETag"]
    response = client.patch("/api/v1/sites/ES01", json={"time_zone": "Atlantic/Canary"}, headers={**admin, "If-Match": etag})
    body = response.get_json()
    assert body["time_zone"] == "Atlantic/Canary" and body["version"] == 2 and body["name"] == "Hospital ES01"
    assert response.headers["ETag"] != etag


def test_update_refuses_the_code_and_unknown_fields(client, admin):
    etag = client.get("/api/v1/sites/ES01", headers=admin).headers["ETag"]
    body = problem(client.patch("/api/v1/sites/ES01", json={"code": "ES02", "status": "closed"},
                                headers={**admin, "If-Match": etag}), 422)
    assert {e["pointer"] for e in body["errors"]} == {"/code", "/status"}


def test_close_needs_a_reason_and_if_match(client, admin):
    etag = client.get("/api/v1/sites/IT01", headers=admin).headers["ETag"]
    problem(client.post("/api/v1/sites/IT01/close", json={}, headers={**admin, "If-Match": etag}), 422)
    problem(client.post("/api/v1/sites/IT01/close", json={"reason": "site withdrew"}, headers=admin), 428)
    closed = client.post("/api/v1/sites/IT01/close", json={"reason": "site withdrew"}, headers={**admin, "If-Match": etag})
    assert closed.get_json()["status"] == "closed"
    again = client.post("/api/v1/sites/IT01/close", json={"reason": "again"}, headers={**admin, "If-Match": closed.headers["ETag"]})
    problem(again, 409)
    assert [s["code"] for s in client.get("/api/v1/sites?status=closed", headers=admin).get_json()["items"]] == ["IT01"]


def test_closed_site_is_not_updated(client, admin):
    etag = client.get("/api/v1/sites/IT01", headers=admin).headers["ETag"]
    etag = client.post("/api/v1/sites/IT01/close", json={"reason": "done"}, headers={**admin, "If-Match": etag}).headers["ETag"]
    problem(client.patch("/api/v1/sites/IT01", json={"name": "x"}, headers={**admin, "If-Match": etag}), 409)


def test_site_codes_are_case_insensitive_in_urls(client, admin):
    assert client.get("/api/v1/sites/es01", headers=admin).get_json()["code"] == "ES01"
