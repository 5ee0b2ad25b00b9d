"""GET /fhir/metadata (a valid R4 CapabilityStatement, public) and OperationOutcome for every error under /fhir/:
unmatched paths, wrong methods, and the refusals made before a view runs. The public address the discovery
documents name is public_base_url, never the request's Host."""

from __future__ import annotations

import pytest

from conftest import bearer, login, problem

FHIR_JSON = "application/fhir+json"
BULK = "http://hl7.org/fhir/uv/bulkdata"


def outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code and body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["diagnostics"]
    return body


def test_metadata_is_a_public_valid_r4_capability_statement(client, r4):
    response = client.get("/fhir/metadata")
    assert response.status_code == 200 and response.mimetype == FHIR_JSON
    statement = response.get_json(force=True)
    # The pinned schema is the one published with R4 4.0.0: its FHIRVersion codes stop at 4.0.0. 4.0.1 (the R4
    # technical correction that servers and the Bulk Data IG declare) is the one difference let through.
    assert r4.errors({**statement, "fhirVersion": "4.0.0"}) == []
    assert [e for e in r4.errors(statement) if "fhirVersion: '4.0.1' is not one of" not in e] == []
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance" and statement["status"] == "active"
    assert {"json", "application/fhir+json", "application/fhir+ndjson"} <= set(statement["format"])
    assert statement["instantiates"] == [f"{BULK}/CapabilityStatement/bulk-data"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert rest["operation"] == [{"name": "export", "definition": f"{BULK}/OperationDefinition/export"}]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {(o["name"], o["definition"]) for o in patient["operation"]} == {
        ("export", f"{BULK}/OperationDefinition/patient-export"),
        ("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything")}
    security = rest["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    oauth = next(e for e in security["extension"]
                 if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    assert oauth["extension"] == [{"url": "token", "valueUri": "http://localhost/fhir/auth/token"}]
    assert client.get("/fhir/metadata").get_data() == response.get_data()  # the same server describes itself the same way


def test_unmatched_paths_and_wrong_methods_under_fhir_are_operation_outcomes(client):
    for path in ("/fhir/Nothing", "/fhir/Patient", "/fhir/Patient/x/$nothing", "/fhir"):
        outcome(client.get(path), 404, "not-found")
    wrong = client.post("/fhir/metadata", data="{}", content_type=FHIR_JSON)
    outcome(wrong, 405, "not-supported")
    assert "GET" in wrong.headers["Allow"]
    outcome(client.delete("/fhir/Patient/ES01-0001/$everything"), 405, "not-supported")
    outcome(client.get("/fhir/auth/token"), 405, "not-supported")
    # Outside /fhir/ errors stay problem+json.
    problem(client.get("/api/v1/nothing"), 404)
    problem(client.get("/fhirish"), 404)


def test_refusals_before_the_view_are_operation_outcomes(client, staff):
    path = "/fhir/Patient/ES01-0001/$everything"
    unauthenticated = client.get(path)
    outcome(unauthenticated, 401, "login")
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    outcome(client.get(path, headers={"Authorization": "Bearer not-a-token"}), 401, "login")
    for role in ("monitor", "investigator", "auditor", "admin"):  # no fhir:read
        outcome(client.get(path, headers=bearer(login(client, staff[role]))), 403, "forbidden")
    outcome(client.get(path, headers=bearer(login(client, staff["statistician"]))), 404, "not-found")


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/.well-known/smart-configuration"])
def test_discovery_needs_no_token(client, path):
    assert client.get(path).status_code == 200


PUBLIC = "https://edc.trial.example"


@pytest.fixture
def public_client(app_factory):
    """The app behind a public address other than the test client's http://localhost."""
    return app_factory(public_base_url=PUBLIC).test_client()


def test_discovery_names_public_base_url_whatever_host_and_scheme_the_request_used(public_client):
    # The port of a Host is not compared (werkzeug's trusted-host check): it must not leak into the URLs either.
    host = {"Host": "edc.trial.example:8443"}
    statement = public_client.get("/fhir/metadata", headers=host).get_json(force=True)
    assert statement["implementation"]["url"] == f"{PUBLIC}/fhir"
    oauth = next(e for e in statement["rest"][0]["security"]["extension"] if e["url"].endswith("/oauth-uris"))
    assert oauth["extension"] == [{"url": "token", "valueUri": f"{PUBLIC}/fhir/auth/token"}]
    configuration = public_client.get("/fhir/.well-known/smart-configuration", headers=host)
    assert configuration.get_json()["token_endpoint"] == f"{PUBLIC}/fhir/auth/token"


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/.well-known/smart-configuration"])
def test_discovery_for_another_host_is_refused_and_never_cached(client, path):
    response = client.get(path, headers={"Host": "attacker.example"})
    body = outcome(response, 400, "invalid")
    assert "attacker" not in response.get_data(as_text=True) and "public_base_url" in body["issue"][0]["diagnostics"]
    assert response.headers["Cache-Control"] == "no-store"


def test_api_requests_for_another_host_are_400_problems(client, staff):
    refused = client.post("/api/v1/auth/login", json={"username": staff["statistician"], "password": "x"},
                          headers={"Host": "attacker.example"})
    assert problem(refused, 400)["detail"].endswith("(public_base_url).")
    assert client.get("/api/v1/me", headers={"Host": "attacker.example", **bearer(login(client, staff["admin"]))}
                      ).status_code == 400
