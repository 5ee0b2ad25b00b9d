"""Fuzzing from the OpenAPI document (Schemathesis): every operation of /api/openapi.json, called through the WSGI
app by an investigator, a monitor and the data manager, must answer no 5xx, and every answer must be one of the
operation's documented status codes, with its documented content type, headers and body schema.

The number of generated requests per operation and mode is bounded here (EDC_FUZZ_EXAMPLES, small by default so
the suite stays fast); `make fuzz` runs the same test with many more.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi import checks

from conftest import bearer, login, problem
from test_entries import SUBJECT, VITALS, post_entry
from edc.api.openapi import MULTI_LINE_TEXT, SINGLE_LINE_TEXT, YEARS
from edc.ecrf.inputs import EARLIEST_DATE, LATEST_DATE, text_problem
from edc.security.permissions import AUTHENTICATED, MATRIX, PUBLIC, declared_permission

EXAMPLES = int(os.environ.get("EDC_FUZZ_EXAMPLES", "3"))
# Answers as documented, and input the document calls invalid refused (the document is no stricter than the
# server). Its converse, positive_data_acceptance, also counts the 404s and 409s of random ids and states.
CHECKS = [checks.status_code_conformance, checks.content_type_conformance, checks.response_headers_conformance,
          checks.response_schema_conformance, checks.negative_data_rejection]
# Logging out ends the session the token belongs to: fuzz it last, or every later call would be a 401.
LAST = ("/api/v1/auth/logout",)


def _operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    return sorted(operations, key=lambda operation: operation.path in LAST)


def _may_call(app, operation, role: str) -> bool:
    """Does the role's permission set include the operation's (the check that runs before any input is read)?"""
    path = re.sub(r"{[^}]+}", str(uuid.uuid4()), operation.path)
    endpoint, _ = app.url_map.bind("localhost").match(path, method=operation.method.upper())
    permission = declared_permission(app.view_functions[endpoint])
    return permission in (PUBLIC, AUTHENTICATED) or role in MATRIX[permission]


def _known_records(client, staff) -> dict[str, str]:
    """A subject, an entry and a query that exist, so that part of the requests reach real records, not only 404s."""
    inv, dm = (bearer(login(client, staff[role])) for role in ("investigator", "data_manager"))
    number = client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]
    entry = post_entry(client, inv, number, "vitals", VITALS, event="SCR").get_json()["id"]
    query = client.post("/api/v1/queries", json={"entry_id": entry, "item": "HR", "message": "Please check."}, headers=dm)
    assert query.status_code == 201, query.get_json()
    return {"number": number, "subject_id": number, "entry_id": entry, "query_id": query.get_json()["id"],
            "code": "ES01", "form_id": "vitals"}


def _strategy(operation, mode: GenerationMode, known: dict[str, str]):
    """Generated requests, half of them (where the path names records) to the known records."""
    names = [p.name for p in operation.path_parameters]
    anywhere = operation.as_strategy(generation_mode=mode)
    if not names or not all(name in known for name in names):
        return anywhere
    return anywhere | operation.as_strategy(generation_mode=mode, path_parameters={name: known[name] for name in names})


def _fuzz(operation, mode: GenerationMode, headers: dict[str, str], examples: int, known: dict[str, str]) -> list[str]:
    """The failures of up to `examples` generated requests to one operation (not shrunk: the first of each is kept)."""
    found: list[str] = []

    @given(case=_strategy(operation, mode, known))
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case):
        # The token replaces the generated one in the case itself, so that negative mode re-checks what is
        # still invalid and never counts a replaced token as the invalid part of a request.
        case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        failure = _failure(case, response)
        if failure and len(found) < 3:
            found.append(failure)

    try:
        run()
    except Unsatisfiable:  # negative mode: an operation that takes nothing has nothing to make invalid
        assert mode is GenerationMode.NEGATIVE, operation.label
    return found


def _failure(case, response) -> str | None:
    where = f"{case.operation.label} ({case.meta.generation.mode.value if case.meta else '?'})"
    if response.status_code >= 500:
        return f"{where}: {response.status_code} {response.text[:300]}"
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as exc:  # names every check that failed
        return f"{where}: {str(exc)[:1200]}"
    return None


@pytest.mark.parametrize("role", ["investigator", "monitor", "data_manager"])
def test_every_operation_answers_as_documented_under_fuzzing(app, client, staff, role):
    known = _known_records(client, staff)
    headers = bearer(login(client, staff[role]))
    failures = []
    for operation in _operations(app):
        if _may_call(app, operation, role):
            failures += _fuzz(operation, GenerationMode.POSITIVE, headers, EXAMPLES, known)
            failures += _fuzz(operation, GenerationMode.NEGATIVE, headers, max(1, EXAMPLES * 2 // 3), known)
        else:  # refused (403) before its input is read, whatever the input: one request shows the answer is documented
            failures += _fuzz(operation, GenerationMode.POSITIVE, headers, 1, known)
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(failures)


# ---------------------------------------------------------------- the document itself


def _each_operation(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


def test_the_openapi_document_is_valid_and_complete(app, client):
    document = client.get("/api/openapi.json").get_json()
    validate(document)  # openapi-spec-validator: OpenAPI 3.1 structure and JSON Schema
    operations = list(_each_operation(document))
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids)) == len(operations) > 80
    adapter = app.url_map.bind("localhost")
    for path, method, operation in operations:
        endpoint, _ = adapter.match(re.sub(r"{[^}]+}", str(uuid.uuid4()), path), method=method.upper())
        public = declared_permission(app.view_functions[endpoint]) == PUBLIC
        assert (operation.get("security") == []) == public, (method, path)
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                [media] = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]["content"]
                expected = {"/fhir/auth/token": "application/json"}.get(path) if int(status) in (400, 401) else None
                assert media == expected or media == ("application/fhir+json" if path.startswith("/fhir") else
                                                      "application/problem+json"), (method, path, status)
    problem = document["components"]["schemas"]["Problem"]
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/FieldError"}


@pytest.mark.parametrize("path, method, field, rule", [
    ("/api/v1/entries/{entry_id}/unlock", "post", "reason", "required"),
    ("/api/v1/study/lock", "post", "reason", "required"),
    ("/api/v1/study/unlock", "post", "reason", "required"),
    ("/api/v1/exports", "post", "format", "enum"),
    ("/api/v1/subjects", "post", "birth_year", "minimum"),
])
def test_request_schemas_are_as_strict_as_the_server(client, path, method, field, rule):
    document = client.get("/api/openapi.json").get_json()
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if rule == "required":
        assert field in schema["required"] and schema["properties"][field]["pattern"]
    else:
        assert rule in schema["properties"][field]


def test_versioned_records_declare_their_etag_and_preconditions(client):
    document = client.get("/api/openapi.json").get_json()
    read = document["paths"]["/api/v1/subjects/{number}"]["get"]
    assert "ETag" in read["responses"]["200"]["headers"] and "304" in read["responses"]
    assert {"If-None-Match"} <= {p["name"] for p in read["parameters"]}
    write = document["paths"]["/api/v1/entries/{entry_id}"]["put"]
    assert [p for p in write["parameters"] if p["name"] == "If-Match"][0]["required"] is True
    assert {"412", "428"} <= set(write["responses"])


def test_the_documented_input_rules_are_the_parsers():
    assert [bool(re.match(YEARS, f"{year}-01-01")) for year in (1899, 1900, 2100, 2101)] == [False, True, True, False]
    assert (EARLIEST_DATE.year, LATEST_DATE.year) == (1900, 2100)
    for char in map(chr, [*range(0x20), 0x7F, 0x20, 0xE9]):
        assert (re.fullmatch(SINGLE_LINE_TEXT, f"a{char}b") is None) == (text_problem(f"a{char}b") is not None)
        assert (re.fullmatch(MULTI_LINE_TEXT, f"a{char}b") is None) == (text_problem(f"a{char}b", multiline=True) is not None)


# ---------------------------------------------------------------- what the fuzz found, pinned


@pytest.mark.parametrize("lang", ["", " es", "e s", "es-"])
def test_a_malformed_language_is_422_not_a_500(client, staff, lang):
    dm = bearer(login(client, staff["data_manager"]))
    for url in ("/api/v1/forms/vitals", "/api/v1/forms/vitals/questionnaire"):
        answer = problem(client.get(url, query_string={"lang": lang}, headers=dm), 422)
        assert [e["pointer"] for e in answer["errors"]] == ["/query/lang"]
