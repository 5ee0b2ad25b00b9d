"""Every error is application/problem+json with a request id, and leaks nothing."""

import pytest
import sqlalchemy as sa

from conftest import bearer, count_rows, login, problem
from edc.services import sites as site_service

LEAKS = ("Traceback", "sqlalchemy", "psycopg", "SELECT", "BEGIN", "PRIVATE KEY", 'File "')


@pytest.fixture
def admin(client, staff):
    return bearer(login(client, staff["admin"]))


def test_bad_json_is_400(client, admin):
    body = problem(client.post("/api/v1/sites", data="{not json", headers={**admin, "Content-Type": "application/json"}), 400)
    assert "JSON" in body["detail"]


def test_missing_token_is_401_with_www_authenticate(client, staff):
    response = client.get("/api/v1/sites")
    problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_forbidden_role_is_403(client, staff):
    investigator = bearer(login(client, staff["investigator"]))
    problem(client.post("/api/v1/sites", json={"code": "FR01", "name": "x", "country": "FR", "time_zone": "Europe/Paris"},
                        headers=investigator), 403)


def test_unknown_route_is_404(client):
    problem(client.get("/api/v1/nothing-here"), 404)


def test_unknown_object_is_404(client, admin):
    problem(client.get("/api/v1/sites/ZZ99", headers=admin), 404)


def test_wrong_method_is_405_and_keeps_allow(client, admin):
    response = client.delete("/api/v1/sites", headers=admin)
    problem(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_oversized_body_is_413(client, admin, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    payload = '{"name": "' + "x" * (limit + 10) + '"}'
    problem(client.post("/api/v1/sites", data=payload, headers={**admin, "Content-Type": "application/json"}), 413)


def test_form_encoded_body_is_415(client, admin, session):
    before = count_rows(session, "sites")
    problem(client.post("/api/v1/sites", data={"code": "FR01"}, headers=admin), 415)
    assert count_rows(session, "sites") == before


def test_invalid_fields_are_422_with_pointers(client, admin):
    body = problem(client.post("/api/v1/sites", json={"code": "spain", "name": "", "time_zone": "Mars/Olympus", "extra": 1},
                               headers=admin), 422)
    pointers = {e["pointer"]: e["detail"] for e in body["errors"]}
    assert set(pointers) == {"/code", "/name", "/country", "/time_zone", "/extra"}
    assert "Unknown field" in pointers["/extra"]


def test_wrong_types_are_422(client, admin):
    body = problem(client.post("/api/v1/sites", json={"code": 1, "name": ["a"], "country": None, "time_zone": {}},
                               headers=admin), 422)
    assert {e["pointer"] for e in body["errors"]} == {"/code", "/name", "/country", "/time_zone"}


def test_query_string_errors_point_into_the_query(client, admin):
    body = problem(client.get("/api/v1/sites?page=0", headers=admin), 422)
    assert body["errors"][0]["pointer"] == "/query/page"


def test_write_without_if_match_is_428(client, admin):
    problem(client.patch("/api/v1/sites/ES01", json={"name": "New"}, headers=admin), 428)


def test_stale_if_match_is_412_and_first_write_survives(client, admin):
    etag = client.get("/api/v1/sites/ES01", headers=admin).headers["ETag"]
    assert client.patch("/api/v1/sites/ES01", json={"name": "First"}, headers={**admin, "If-Match": etag}).status_code == 200
    problem(client.patch("/api/v1/sites/ES01", json={"name": "Second"}, headers={**admin, "If-Match": etag}), 412)
    assert client.get("/api/v1/sites/ES01", headers=admin).get_json()["name"] == "First"


def test_unexpected_error_is_500_without_details(client, admin, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM keys -----BEGIN PRIVATE KEY-----")

    monkeypatch.setattr(site_service, "list_sites", explode)
    response = client.get("/api/v1/sites", headers=admin)
    body = problem(response, 500)
    text = response.get_data(as_text=True)
    assert not [leak for leak in LEAKS if leak in text], text
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_unanticipated_integrity_error_is_409(client, admin, monkeypatch):
    def collide(*args, **kwargs):
        raise sa.exc.IntegrityError("INSERT INTO sites ...", {}, Exception("duplicate key value"))

    monkeypatch.setattr(site_service, "create_site", collide)
    response = client.post("/api/v1/sites", json={"code": "FR01", "name": "x", "country": "FR", "time_zone": "Europe/Paris"},
                           headers=admin)
    problem(response, 409)
    assert "INSERT" not in response.get_data(as_text=True)


def test_database_outage_is_503(client, admin, monkeypatch):
    def outage(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(site_service, "list_sites", outage)
    response = client.get("/api/v1/sites", headers=admin)
    problem(response, 503)
    assert "SELECT" not in response.get_data(as_text=True)


def test_duplicate_site_is_409_and_changes_nothing(client, admin, session):
    before = count_rows(session, "audit_records")
    problem(client.post("/api/v1/sites", json={"code": "ES01", "name": "Again", "country": "ES", "time_zone": "Europe/Madrid"},
                        headers=admin), 409)
    assert count_rows(session, "audit_records") == before
