"""What HTTP API clients expect of every route: list paging with Link headers and a total, unknown query
parameters refused, 304 for an unchanged record, stable problem types, their own request id echoed, and
Retry-After while an export runs."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import bearer, login, problem, project_root
from edc.problems import KIND_OF_STATUS, PROBLEM_TYPE_PREFIX
from test_entries import SUBJECT


@pytest.fixture
def admin(client, staff):
    return bearer(login(client, staff["admin"]))


@pytest.fixture
def inv(client, staff):
    return bearer(login(client, staff["investigator"]))


def _links(response) -> dict[str, dict[str, list[str]]]:
    """rel -> query of the link's URL, from an RFC 8288 Link header."""
    found = {}
    for url, rel in re.findall(r'<([^>]+)>; rel="([a-z]+)"', response.headers["Link"]):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://localhost/api/v1/users"  # public_base_url
        found[rel] = parse_qs(parts.query)
    return found


# ---------------------------------------------------------------- lists


def test_a_page_in_the_middle_links_to_first_prev_next_and_last_with_the_total(client, admin, staff):
    response = client.get("/api/v1/users?status=active&page=2&page_size=2", headers=admin)
    assert response.status_code == 200
    total = response.get_json()["total"]
    assert total == len(staff) and response.headers["X-Total-Count"] == str(total)
    links = _links(response)
    assert {rel: query["page"] for rel, query in links.items()} == {"first": ["1"], "prev": ["1"], "next": ["3"],
                                                                   "last": ["3"]}
    assert all(query["page_size"] == ["2"] and query["status"] == ["active"] for query in links.values())


def test_the_first_and_only_page_has_no_prev_or_next(client, admin):
    links = _links(client.get("/api/v1/users", headers=admin))
    assert {rel: query["page"] for rel, query in links.items()} == {"first": ["1"], "last": ["1"]}


def test_a_page_size_over_the_maximum_is_422_not_a_shorter_page(client, admin, app):
    limit = app.config["EDC"]["page_size_max"]
    assert client.get(f"/api/v1/users?page_size={limit}", headers=admin).status_code == 200
    answer = problem(client.get(f"/api/v1/users?page_size={limit + 1}", headers=admin), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/query/page_size"] and str(limit) in answer["errors"][0]["detail"]
    document = client.get("/api/openapi.json").get_json()
    [size] = [p for p in document["paths"]["/api/v1/users"]["get"]["parameters"] if p["name"] == "page_size"]
    assert size["schema"]["maximum"] == limit


@pytest.mark.parametrize("url", ["/api/v1/subjects?stauts=enrolled", "/api/v1/subjects/ES01-0001/entries?from=SCR",
                                 "/api/v1/queries?sate=open", "/api/v1/me?verbose=1", "/api/v1/study?a/b=1"])
def test_an_unknown_query_parameter_is_422_naming_it(client, inv, url):
    name = url.split("?")[1].split("=")[0]
    answer = problem(client.get(url, headers=inv), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/query/" + name.replace("/", "~1")]


# ---------------------------------------------------------------- conditional reads


def test_if_none_match_with_the_current_etag_answers_304_without_a_body(client, inv):
    created = client.post("/api/v1/subjects", json=SUBJECT, headers=inv)
    url, etag = created.headers["Location"], created.headers["ETag"]
    unchanged = client.get(url, headers={**inv, "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b"" and unchanged.headers["ETag"] == etag
    assert client.get(url, headers={**inv, "If-None-Match": "*"}).status_code == 304
    stale = client.get(url, headers={**inv, "If-None-Match": '"an-older-version"'})
    assert stale.status_code == 200 and stale.get_json()["number"]


def test_if_none_match_never_hides_an_error(client, inv):
    problem(client.get("/api/v1/subjects/ES01-9999", headers={**inv, "If-None-Match": "*"}), 404)


# ---------------------------------------------------------------- problem types


def test_problem_types_are_stable_uris_per_kind(client, inv):
    cases = [
        (client.get("/api/v1/subjects/ES01-9999", headers=inv), "not-found"),
        (client.get("/api/v1/me"), "unauthenticated"),
        (client.post("/api/v1/subjects", json={**SUBJECT, "sex": "X"}, headers=inv), "invalid-fields"),
        (client.post("/api/v1/subjects", data="{", content_type="application/json", headers=inv), "invalid-json"),
        (client.delete("/api/v1/me", headers=inv), "method-not-allowed"),
        (client.get("/api/v1/me", headers={**inv, "Host": "elsewhere.example"}), "wrong-host"),
    ]
    for response, kind in cases:
        assert response.get_json()["type"] == PROBLEM_TYPE_PREFIX + kind, (response.status_code, response.get_json())


def test_every_problem_type_is_documented_in_the_api_guide():
    guide = (project_root() / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(re.escape(PROBLEM_TYPE_PREFIX) + r"([a-z-]+)", guide))
    assert set(KIND_OF_STATUS.values()) | {"invalid-json", "wrong-host"} == documented


# ---------------------------------------------------------------- request ids


def test_a_well_formed_client_request_id_is_echoed_and_logged(client, inv, caplog):
    caplog.set_level(logging.INFO, logger="edc")
    sent = "3f6c1a0e-7b1d-4c55-9a43-0d2f3e1b9c77"
    response = client.get("/api/v1/me", headers={**inv, "X-Request-ID": sent})
    assert response.headers["X-Request-ID"] == sent
    logged = [r.fields for r in caplog.records if r.name == "edc.request" and hasattr(r, "fields")]
    assert [line["request_id"] for line in logged] == [sent]
    assert problem(client.get("/api/v1/nowhere", headers={"X-Request-ID": sent}), 404)["request_id"] == sent


def test_a_malformed_client_request_id_is_replaced_by_a_generated_one(client, inv):
    for sent in ["x" * 65, "has space", "new\\nline", "-leading-dash", "ünïcode", "a;b", ""]:
        response = client.get("/api/v1/me", headers={**inv, "X-Request-ID": sent})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), sent


# ---------------------------------------------------------------- export polling


def test_polling_a_queued_export_answers_retry_after(client, staff):
    statistician = bearer(login(client, staff["statistician"]))
    job = client.post("/api/v1/exports", json={"format": "csv"}, headers=statistician)
    assert job.status_code == 202, job.get_json()
    polled = client.get(f"/api/v1/exports/{job.get_json()['id']}", headers=statistician)
    assert polled.get_json()["state"] == "queued" and int(polled.headers["Retry-After"]) >= 1
