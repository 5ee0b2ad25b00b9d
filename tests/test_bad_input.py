"""Bad input is a 4xx naming what is wrong, never a 5xx, and changes nothing.

The walk reads the app's own OpenAPI document: every operation gets each class of bad input in every field of
its request body and every parameter (query and path), sent by an account whose role may call it. Focused
tests below pin the exact answer of each class where the security test found a 500.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import bearer, login, problem, row_counts
from edc.exports import source
from edc.exports.csv_files import write_csv
from edc.security.permissions import AUTHENTICATED, MATRIX, PUBLIC, declared_permission
from test_entries import SUBJECT, VITALS, post_entry

# The staff fixture's accounts, in the order the walk prefers them for a permission.
ROLE_ORDER = ("data_manager", "investigator", "monitor", "admin", "auditor", "statistician")
BAD_TEXT = {"lone surrogate": "ok\ud800", "NUL": "ok\x00ok", "escape": "ok\x1b[2J"}
LINE_BREAKS = {"bare CR": "ok\rok"}  # refused where text is single-line (LF and tab too: tests/ecrf, focused tests)
HUGE_INTEGER = 10 ** 20
BAD_DATE_TIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1899-12-31T23:00:00Z")
BAD_DATES = ("0001-01-01", "9999-12-30", "1899-12-31", "2101-01-01")
DEEP_JSON = "[" * 5000 + "]" * 5000
HUGE_LITERAL = '{"page": ' + "9" * 5000 + "}"
PROBLEM, FHIR_JSON = "application/problem+json", "application/fhir+json"


@dataclass
class Operation:
    method: str
    path: str             # the OpenAPI path template
    spec: dict[str, Any]
    headers: dict[str, str]

    def url(self, **values: str) -> str:
        url = self.path
        for parameter in self.parameters("path"):
            name = parameter["name"]
            sample = str(uuid.uuid4()) if parameter["schema"].get("format") == "uuid" else "ES01"
            url = url.replace("{" + name + "}", values.get(name, sample))
        return url

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == where]

    @property
    def fhir(self) -> bool:
        return self.path.startswith("/fhir/")


def _operations(app, client, staff) -> list[Operation]:
    """Every operation of the OpenAPI document, with the bearer header of an account allowed to call it."""
    document = client.get("/api/openapi.json").get_json()
    adapter = app.url_map.bind("localhost")
    tokens: dict[str, dict[str, str]] = {}
    found = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, spec in item.items():
            if method == "parameters":
                continue
            spec = {**spec, "parameters": [*shared, *spec.get("parameters", [])]}
            operation = Operation(method.upper(), path, spec, {})
            endpoint, _ = adapter.match(operation.url(), method=operation.method)
            permission = declared_permission(app.view_functions[endpoint])
            if permission not in (PUBLIC, None):
                role = next(r for r in ROLE_ORDER if permission == AUTHENTICATED or r in MATRIX[permission])
                if role not in tokens:
                    tokens[role] = bearer(login(client, staff[role]))
                operation.headers = tokens[role]
            found.append(operation)
    document["__operations__"] = found
    return found, document


def _body_schema(document: dict, operation: Operation) -> dict[str, Any] | None:
    content = operation.spec.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema


@dataclass
class Probe:
    operation: Operation
    kwargs: dict[str, Any]
    pointer: str | None   # the field the answer must name; None: the body as a whole (400)
    status: int | None = None  # the exact status where it is known


def _probes(document: dict, operations: list[Operation], kind: str) -> Iterator[Probe]:
    """The requests of one class of bad input, one per field or parameter it applies to."""
    for operation in operations:
        schema = _body_schema(document, operation)
        if kind in ("deep JSON", "huge literal"):
            if schema is not None:
                data = DEEP_JSON if kind == "deep JSON" else HUGE_LITERAL
                yield Probe(operation, {"data": data, "content_type": "application/json"}, None, 400)
            continue
        if kind == "path":
            for parameter in operation.parameters("path"):
                if parameter["schema"].get("format") != "uuid":
                    yield Probe(operation, {"url": operation.url(**{parameter["name"]: "ES01\x00"})}, None, 404)
            continue
        for name, field in (schema or {}).get("properties", {}).items():
            for value in _bad_values(kind, field):
                yield Probe(operation, {"json": {name: value}}, "/" + name + ("/0" if field.get("type") == "array" else ""))
        for parameter in operation.parameters("query"):
            for value in _bad_values(kind, parameter["schema"]):
                value = str(value[0] if isinstance(value, list) else value)
                if value == BAD_TEXT["lone surrogate"]:
                    continue  # a URL cannot carry one (UTF-8 percent-encoding has no surrogates)
                query = {parameter["name"]: value}
                yield Probe(operation, {"query_string": query}, "/query/" + parameter["name"])


def _bad_values(kind: str, field: dict[str, Any]) -> list[Any]:
    if field.get("type") == "array" and isinstance(field.get("items"), dict):
        return [[value] for value in _bad_values(kind, field["items"])]
    kind_of_field = field.get("type")
    if isinstance(kind_of_field, list):  # ["string", "null"]
        kind_of_field = next(t for t in kind_of_field if t != "null")
    if kind_of_field == "string" and "enum" not in field:
        if kind == "text":
            return list(BAD_TEXT.values()) + ([] if field.get("x-multiline") else list(LINE_BREAKS.values()))
        if kind == "dates" and field.get("format") == "date-time":
            return list(BAD_DATE_TIMES)
        if kind == "dates" and field.get("format") == "date":
            return list(BAD_DATES)
    if kind_of_field == "integer" and kind == "huge integer":
        return [HUGE_INTEGER, -HUGE_INTEGER]
    return []


def _send(client, probe: Probe):
    kwargs = dict(probe.kwargs)
    url = kwargs.pop("url", None) or probe.operation.url()
    return client.open(url, method=probe.operation.method, headers=probe.operation.headers, **kwargs)


def _wrong(probe: Probe, response) -> str | None:
    """What is wrong with the answer to a probe, or None."""
    where = f"{probe.operation.method} {probe.operation.path} {probe.kwargs!r:.120}: {response.status_code}"
    if not 400 <= response.status_code < 500:
        return where
    if probe.status is not None and response.status_code != probe.status:
        return where + f" (expected {probe.status})"
    expected = FHIR_JSON if probe.operation.fhir else PROBLEM
    if response.mimetype != expected:
        return where + f" {response.mimetype}"
    body = response.get_json()
    if probe.pointer is None or probe.operation.fhir:
        return None
    if response.status_code != 422 or probe.pointer not in {e["pointer"] for e in body.get("errors", [])}:
        return where + f" does not name {probe.pointer}: {body.get('errors')}"
    return None


@pytest.mark.parametrize("kind", ["text", "dates", "huge integer", "deep JSON", "huge literal", "path"])
def test_every_operation_answers_bad_input_with_a_4xx_naming_the_field(app, client, staff, database_url, kind):
    operations, document = _operations(app, client, staff)
    probes = list(_probes(document, operations, kind))
    assert len(probes) > {"text": 150, "dates": 3, "huge integer": 10, "deep JSON": 30, "huge literal": 30, "path": 20}[kind]
    before = row_counts(database_url)
    wrong = [failure for probe in probes if (failure := _wrong(probe, _send(client, probe)))]
    assert not wrong, "\n".join(wrong)
    assert row_counts(database_url) == before


def test_the_walk_reaches_paginated_lists_and_multiline_fields(app, client, staff):
    operations, document = _operations(app, client, staff)
    paginated = [o.path for o in operations if any(p["name"] == "page" for p in o.parameters("query"))]
    assert {"/api/v1/users", "/api/v1/sites", "/api/v1/subjects", "/api/v1/queries", "/api/v1/exports"} <= set(paginated)
    multiline = {name for schema in document["components"]["schemas"].values()
                 for name, field in schema.get("properties", {}).items() if field.get("x-multiline")}
    assert multiline == {"reason", "message"}


# ---------------------------------------------------------------- each class, exactly


@pytest.fixture
def inv(client, staff):
    return bearer(login(client, staff["investigator"]))


@pytest.fixture
def subject(client, inv):
    return client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]


@pytest.mark.parametrize("body", [DEEP_JSON, '{"username": "x", "password": ' + "1" * 4301 + "}",
                                  '{"username": "x", "password": NaN}', '{"username": -Infinity}',
                                  '{"username": ' + "[" * 40 + "]" * 40 + "}"])
def test_unreadable_json_at_login_is_400_and_records_nothing(client, database_url, body):
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/auth/login", data=body, content_type="application/json"), 400)
    assert answer["detail"] == "The request body is not valid JSON."
    assert row_counts(database_url) == before


@pytest.mark.parametrize("value, reason", [("mfg\ud800", "surrogate"), ("mfg\x00", "U+0000"), ("mfg\r", "U+000D")])
def test_bad_text_at_login_is_422_naming_the_username(client, staff, database_url, value, reason):
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/auth/login", json={"username": value, "password": "x"}), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/username"] and reason in answer["errors"][0]["detail"]
    assert row_counts(database_url) == before


@pytest.mark.parametrize("display_name", ["Dr \ud800", "Dr\x00Who", "Dr\rWho", "Dr\x7f"])
def test_a_display_name_with_a_control_character_or_surrogate_is_422(client, staff, database_url, display_name):
    admin = bearer(login(client, staff["admin"]))
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/users", json={"username": "newcomer", "display_name": display_name},
                                 headers=admin), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/display_name"]
    assert row_counts(database_url) == before


def test_a_hospital_number_with_a_surrogate_is_422(client, inv, database_url):
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/subjects", json={**SUBJECT, "hospital_number": "\ud800"}, headers=inv), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/hospital_number"]
    assert row_counts(database_url) == before


@pytest.mark.parametrize("value, status", [("calm\ud800", 422), ("calm\x00", 422), ("calm\x0b", 422),
                                           ("calm\r\nnext line\ttabbed", 201)])
def test_free_text_items_refuse_surrogates_and_controls_but_keep_line_breaks(client, inv, subject, database_url,
                                                                             value, status):
    before = row_counts(database_url)
    response = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": value}, event="SCR")
    if status == 201:
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["data"]["VSCOMM"] == value
        return
    answer = problem(response, 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/data/VSCOMM"]
    assert row_counts(database_url) == before


def test_a_missing_data_note_refuses_controls(client, inv, subject):
    answer = problem(post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": {"missing": "ND", "note": "a\x00"}},
                                event="SCR"), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/data/VSCOMM"]


@pytest.mark.parametrize("form, event, data, item", [
    ("apheresis", "APH", {"APHDAT": "2026-11-05", "PRODUCT_ID": "ARI-000001", "PLANINFDAT": "9999-12-30"}, "PLANINFDAT"),
    ("apheresis", "APH", {"APHDAT": "1899-12-31", "PRODUCT_ID": "ARI-000001"}, "APHDAT"),
    ("ae", None, {"AETERM": "Fever", "AESTDAT": "0001", "AETOXGR": "1", "AESER": "N", "AEREL": "POSSIBLE"}, "AESTDAT"),
])
def test_dates_outside_the_study_range_are_422(client, inv, subject, database_url, form, event, data, item):
    before = row_counts(database_url)
    answer = problem(post_entry(client, inv, subject, form, data, event=event), 422)
    assert f"/data/{item}" in [e["pointer"] for e in answer["errors"]]
    assert row_counts(database_url) == before


def test_a_planned_infusion_date_at_the_end_of_the_range_keeps_the_completeness_report_working(client, inv, subject,
                                                                                               staff):
    aph = {"APHDAT": "2026-11-05", "PRODUCT_ID": "ARI-000001", "PLANINFDAT": "2100-12-31"}
    assert post_entry(client, inv, subject, "apheresis", aph, event="APH").status_code == 201
    dm = bearer(login(client, staff["data_manager"]))
    assert client.get("/api/v1/reports/completeness?by_subject=true", headers=dm).status_code == 200


def test_a_date_time_item_out_of_range_is_422(client, inv, subject):
    data = {"INFDAT": "2026-11-20", "INFSTTIM": "9999-12-31T23:59:00-14:00"}
    answer = problem(post_entry(client, inv, subject, "infusion", data, event="D0"), 422)
    assert "/data/INFSTTIM" in [e["pointer"] for e in answer["errors"]]


@pytest.mark.parametrize("page", ["99999999999999999999", "1000001", "0"])
def test_a_page_beyond_the_bound_is_422(client, staff, page):
    admin = bearer(login(client, staff["admin"]))
    answer = problem(client.get(f"/api/v1/users?page={page}", headers=admin), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/query/page"]


def test_the_last_page_within_the_bound_is_an_empty_page(client, staff):
    admin = bearer(login(client, staff["admin"]))
    response = client.get("/api/v1/users?page=1000000&page_size=200", headers=admin)
    assert response.status_code == 200 and response.get_json()["items"] == []


@pytest.mark.parametrize("cutoff", ["0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59Z"])
def test_a_data_cut_time_out_of_range_is_422(client, staff, database_url, cutoff):
    dm = bearer(login(client, staff["data_manager"]))
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/data-cuts", json={"name": "interim", "cutoff_at": cutoff, "reason": "DSMB"},
                                 headers=dm), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/cutoff_at"]
    assert row_counts(database_url) == before


def test_an_export_since_out_of_range_is_422_at_request_time(client, staff, database_url):
    statistician = bearer(login(client, staff["statistician"]))
    before = row_counts(database_url)
    answer = problem(client.post("/api/v1/exports", json={"format": "csv", "since": "0001-01-01T00:00:00+14:00"},
                                 headers=statistician), 422)
    assert [e["pointer"] for e in answer["errors"]] == ["/since"]
    assert row_counts(database_url) == before


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_bulk_export_since_out_of_range_is_refused_at_kick_off(client, staff, database_url, since):
    dm = bearer(login(client, staff["data_manager"]))
    before = row_counts(database_url)
    response = client.get("/fhir/$export", query_string={"_since": since}, headers={**dm, "Prefer": "respond-async"})
    assert response.status_code == 400 and response.mimetype == FHIR_JSON
    assert "_since must lie between" in response.get_json()["issue"][0]["diagnostics"]
    assert row_counts(database_url) == before


def test_a_path_segment_with_a_control_character_matches_no_route(client, staff):
    admin = bearer(login(client, staff["admin"]))
    problem(client.get("/api/v1/users/admin%00", headers=admin), 404)


# ---------------------------------------------------------------- the form-encoded FHIR token endpoint


def test_a_token_request_parameter_with_a_control_character_is_invalid_request(client, database_url):
    before = row_counts(database_url)
    response = client.post("/fhir/auth/token", data="grant_type=client_credentials%00&scope=system%2F*.read",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request" and "grant_type" in response.get_json()["error_description"]
    assert row_counts(database_url) == before


@pytest.mark.parametrize("claims", [{"iss": "\ud800"}, {"iss": "client\x00"}])  # a registered client's: test_smart_auth.py
def test_a_client_assertion_with_unstorable_claims_is_invalid_client(client, claims):
    import base64
    import json

    def part(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    assertion = ".".join([part({"alg": "ES384", "typ": "JWT"}), part({"sub": "c", "aud": "x", "jti": "j", "exp": 1,
                                                                     **claims}), "c2ln"])
    response = client.post("/fhir/auth/token", content_type="application/x-www-form-urlencoded", data={
        "grant_type": "client_credentials", "scope": "system/*.read",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion": assertion})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


# ---------------------------------------------------------------- multi-line text in CSV files


def test_multiline_values_never_split_a_csv_row(client, inv, subject, session, tmp_path):
    text = "first line\rsecond line, \"quoted\""  # a bare CR alone: the csv module used to leave it unquoted
    entry = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": text}, event="SCR")
    assert entry.status_code == 201, entry.get_json()
    changed = client.put(entry.headers["Location"], headers={**inv, "If-Match": entry.headers["ETag"]},
                         json={"data": {**VITALS, "VSCOMM": "calm"}, "complete": True, "reason": "typo\rfixed"})
    assert changed.status_code == 200, changed.get_json()
    out = tmp_path / "csv"
    out.mkdir()
    files = write_csv(session, source.Selection(), out, include_audit=True)
    for described in files:
        with (out / described.name).open(encoding="utf-8", newline="") as stream:
            parsed = list(csv.reader(stream))
        assert described.records == len(parsed) - 1, described.name  # the header is no record
    with (out / "audit_trail.csv").open(encoding="utf-8", newline="") as stream:
        trail = list(csv.DictReader(stream))
    assert text in {row["OLD"] for row in trail} and "typo\rfixed" in {row["REASON"] for row in trail}
