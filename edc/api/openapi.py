"""What the OpenAPI document says beyond what each route's schemas say, written in one place for every operation:
the error answers (problem+json under /api, OperationOutcome under /fhir, RFC 6749 errors at the token endpoint)
with the statuses each operation can really answer, `security: []` on public routes, an operationId, the ETag and
If-Match / If-None-Match headers, and the configured page-size maximum. Clients and fuzzers (Schemathesis) check
the server against this document, so it must be exactly as strict as the server.
"""

from __future__ import annotations

import http
from typing import Any

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import fields, validate

from edc.api.parsing import MULTILINE, REQUEST_SCHEMAS
from edc.ecrf.inputs import INT64_MAX, INT64_MIN
from edc.security.permissions import PUBLIC, declared_permission

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
TOKEN_PATH = "/fhir/auth/token"
BODY_METHODS = frozenset({"post", "put", "patch"})
QUERY_PARAMETERS_KEY = "edc.query_parameters"  # app.extensions: (endpoint, METHOD) -> the query parameters documented
ETAG_MARK = "x-edc-etag"  # set by etag_doc, read and removed by the plugin
HEADERS_MARK = "x-edc-headers"  # headers of every success answer (success_headers_doc)
ERRORS_MARK = "x-edc-errors"  # statuses an operation answers beyond those the plugin infers (docs())

ETAG_HEADER = {"description": "The record's version (strong ETag): send it back as If-Match to change the record, "
                              "or as If-None-Match to read it only when it changed.",
               "schema": {"type": "string"}}
RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
PAGE_HEADERS = {
    "Link": {"description": "RFC 8288 links to the first, prev, next and last pages (prev and next where they exist)",
             "schema": {"type": "string"}},
    "X-Total-Count": {"description": "how many items the list holds, all pages together",
                      "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
IF_MATCH = {"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string", "minLength": 1},
            "description": "The ETag you read: the change is refused (412) if the record changed since, and 428 "
                           "without this header."}
IF_MATCH_OPTIONAL = {**IF_MATCH, "required": False, "schema": {"type": "string"},
                     "description": "Optional (empty counts as absent): the ETag you read; the change is refused (412) "
                                    "if the record changed since."}
IF_NONE_MATCH = {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
                 "description": "The ETag you hold: 304 Not Modified, without a body, while the record is unchanged."}

FIELD_ERROR = {"type": "object", "required": ["pointer", "detail"], "properties": {
    "pointer": {"type": "string", "description": "JSON Pointer to the field: /name in the body, /query/name, "
                                                 "/headers/name"},
    "detail": {"type": "string"}}}
PROBLEM = {
    "type": "object", "required": ["type", "title", "status", "detail", "instance", "request_id"],
    "description": "RFC 9457 problem details; `type` is one of the URIs listed in docs/api.md.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the path of the request"},
        "request_id": {"type": "string", "description": "the X-Request-ID of the request, also in the server's log"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"},
                   "description": "on 422: one entry per invalid field"},
    },
}
OPERATION_OUTCOME = {
    "type": "object", "required": ["resourceType", "issue"], "description": "A FHIR R4 OperationOutcome.",
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["severity", "code"],
            "properties": {"severity": {"enum": ["fatal", "error", "warning", "information"]},
                           "code": {"type": "string"}, "diagnostics": {"type": "string"}}}},
    },
}
OAUTH_ERROR = {
    "type": "object", "required": ["error", "error_description"], "description": "An RFC 6749 §5.2 error.",
    "properties": {"error": {"enum": ["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                                      "unsupported_grant_type", "invalid_scope"]},
                   "error_description": {"type": "string"}},
}
# The input rules of edc.ecrf.inputs, which the parser applies to every field, as JSON Schema (ECMA-262 and Python
# read these patterns alike). A lone surrogate needs no pattern: JSON Schema strings are Unicode text.
SINGLE_LINE_TEXT = r"^[^\u0000-\u001f\u007f]*$"
MULTI_LINE_CHAR = r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]"
MULTI_LINE_TEXT = f"^{MULTI_LINE_CHAR}*$"
YEARS = "^(19[0-9]{2}|20[0-9]{2}|2100)-"  # EARLIEST_DATE to LATEST_DATE by year (tests/test_fuzz.py holds them together)
HEADERS_OF = {401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
              405: {"Allow": {"schema": {"type": "string"}}},
              429: {"Retry-After": RETRY_AFTER}, 503: {"Retry-After": RETRY_AFTER}}


def etag_doc(*, create: bool = False) -> dict[str, Any]:
    """blp.doc(**etag_doc()) on a route whose success answer carries the record's ETag: a GET then also answers 304
    to If-None-Match (edc.api.hooks); a write declares its If-Match itself (IF_MATCH)."""
    return {ETAG_MARK: "create" if create else True}


def success_headers_doc(headers: dict[str, Any]) -> dict[str, Any]:
    """blp.doc(**success_headers_doc({...})): headers every success answer of the operation may carry."""
    return {HEADERS_MARK: headers}


def if_match_doc(*, required: bool = True) -> dict[str, Any]:
    """blp.doc(**if_match_doc()) on a write guarded by If-Match (required: 428 without it)."""
    return {"parameters": [IF_MATCH if required else IF_MATCH_OPTIONAL], ETAG_MARK: True}


def success_doc(description: str, *, status: int = 200, media: str = "application/json", schema: dict | None = None,
                headers: dict | None = None) -> dict[str, Any]:
    """blp.doc(**success_doc(...)) on a route that builds its own response (FHIR, files, the token endpoint)."""
    response: dict[str, Any] = {"description": description}
    if media:
        response["content"] = {media: {"schema": schema or {"type": "object"}}}
    if headers:
        response["headers"] = headers
    return {"responses": {str(status): response}}


def docs(*parts: dict[str, Any], errors: tuple[int, ...] = ()) -> dict[str, Any]:
    """The blp.doc keyword arguments of several *_doc() parts at once, plus error statuses the plugin cannot infer."""
    merged: dict[str, Any] = {ERRORS_MARK: list(errors)} if errors else {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            elif isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


def fhir_resource(resource_type: str) -> dict[str, Any]:
    return {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"const": resource_type}}}


TOKEN_RESPONSE = {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope"], "properties": {
    "access_token": {"type": "string"}, "token_type": {"const": "bearer"}, "expires_in": {"type": "integer"},
    "scope": {"type": "string"}}}
SMART_CONFIGURATION = {"type": "object", "required": ["token_endpoint", "grant_types_supported"], "properties": {
    "token_endpoint": {"type": "string", "format": "uri"},
    "grant_types_supported": {"type": "array", "items": {"type": "string"}},
    "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
    "token_endpoint_auth_signing_alg_values_supported": {"type": "array", "items": {"type": "string"}},
    "scopes_supported": {"type": "array", "items": {"type": "string"}},
    "capabilities": {"type": "array", "items": {"type": "string"}}}}
BULK_MANIFEST = {"type": "object", "required": ["transactionTime", "request", "requiresAccessToken", "output", "error"],
                 "properties": {
                     "transactionTime": {"type": "string"}, "request": {"type": "string"},
                     "requiresAccessToken": {"type": "boolean"},
                     "output": {"type": "array", "items": {"type": "object", "required": ["type", "url"], "properties": {
                         "type": {"type": "string"}, "url": {"type": "string"}, "count": {"type": "integer"}}}},
                     "error": {"type": "array"}, "extension": {"type": "object"}}}
FORM_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["grant_type", "client_assertion_type", "client_assertion", "scope"], "properties": {
        "grant_type": {"const": "client_credentials"},
        "client_assertion_type": {"const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
        "client_assertion": {"type": "string", "pattern": SINGLE_LINE_TEXT,
                             "description": "a JWT signed with one of the client's registered keys"},
        "scope": {"type": "string", "pattern": SINGLE_LINE_TEXT, "description": "e.g. system/*.read"},
        "client_id": {"type": "string", "pattern": SINGLE_LINE_TEXT}}}}}}}
PREFER_ASYNC = {"in": "header", "name": "Prefer", "required": True,
                "schema": {"type": "string", "pattern": "^(.*, *)?respond-async *(,.*)?$"},
                "description": "respond-async (required), optionally with handling=lenient"}


def _component_responses() -> dict[str, dict[str, Any]]:
    responses = {}
    for status in http.HTTPStatus:
        if status < 400:
            continue
        headers = {"headers": HEADERS_OF[status]} if status in HEADERS_OF else {}
        responses[f"Problem{status.value}"] = {
            "description": status.phrase, **headers,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        responses[f"OperationOutcome{status.value}"] = {
            "description": f"{status.phrase} (FHIR OperationOutcome)", **headers,
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
    for status in (400, 401, 429):
        headers = {"headers": HEADERS_OF[status]} if status in HEADERS_OF else {}
        responses[f"OAuthError{status}"] = {
            "description": f"{http.HTTPStatus(status).phrase} (RFC 6749 error)", **headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}}
    return responses


class DocumentPlugin(BasePlugin):
    """An apispec plugin that completes each operation as flask-smorest registers it."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def init_spec(self, spec) -> None:
        super().init_spec(spec)
        [marshmallow] = [plugin for plugin in spec.plugins if isinstance(plugin, MarshmallowPlugin)]
        marshmallow.converter.add_attribute_function(input_rules)
        spec.components.schema("FieldError", FIELD_ERROR)
        spec.components.schema("Problem", PROBLEM)
        spec.components.schema("OperationOutcome", OPERATION_OUTCOME)
        spec.components.schema("OAuthError", OAUTH_ERROR)
        for name, response in _component_responses().items():
            spec.components.response(name, response)

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        view = self.app.view_functions.get(rule.endpoint)
        public = declared_permission(view) == PUBLIC
        declared = self.app.extensions.setdefault(QUERY_PARAMETERS_KEY, {})
        for method, operation in operations.items():
            declared[(rule.endpoint, method.upper())] = frozenset(
                p["name"] for p in operation.get("parameters", []) if isinstance(p, dict) and p.get("in") == "query")
            name = rule.endpoint.replace(".", "_")
            operation.setdefault("operationId", name if len(operations) == 1 else f"{name}_{method}")
            if public:
                operation["security"] = []
            self._document_etag(method, operation, operation.pop(ETAG_MARK, None))
            _add_success_headers(operation, operation.pop(HEADERS_MARK, {}))
            if any(p.get("name") == "page" for p in operation.get("parameters", []) if isinstance(p, dict)):
                _add_success_headers(operation, PAGE_HEADERS)
            self._document_page_size(operation)
            extra = set(operation.pop(ERRORS_MARK, ()))
            self._document_errors(rule.rule, method, operation, public=public, extra=extra)

    @staticmethod
    def _document_etag(method: str, operation: dict, etag: Any) -> None:
        if not etag:
            return
        _add_success_headers(operation, {"ETag": ETAG_HEADER})
        if method == "get":
            operation.setdefault("parameters", []).append(IF_NONE_MATCH)
            operation["responses"]["304"] = {"description": "Not Modified: the record still has the ETag you sent.",
                                             "headers": {"ETag": ETAG_HEADER}}

    def _document_page_size(self, operation: dict) -> None:
        for parameter in operation.get("parameters", []):
            if isinstance(parameter, dict) and parameter.get("in") == "query" and parameter.get("name") == "page_size":
                parameter["schema"]["maximum"] = self.app.config["EDC"]["page_size_max"]
                parameter["description"] = "at most the configured maximum (page_size_max); more is a 422"

    @staticmethod
    def _document_errors(rule: str, method: str, operation: dict, *, public: bool, extra: set[int]) -> None:
        responses = operation.setdefault("responses", {})
        for status in [s for s in responses if s == "default" or int(s) >= 400]:
            del responses[status]  # flask-smorest's own error documentation (application/json, its Error schema)
        statuses = _error_statuses(rule, method, operation, public=public) | extra
        if rule.startswith("/fhir"):
            kinds = {s: ("OAuthError" if rule == TOKEN_PATH and s in (400, 401) else "OperationOutcome") for s in statuses}
        else:
            kinds = {s: "Problem" for s in statuses}
        for status in sorted(statuses):
            responses[str(status)] = f"{kinds[status]}{status}"


def input_rules(converter, field: fields.Field, ret: dict, **kwargs: Any) -> dict[str, Any]:
    """The input rules a field of a request schema is held to before its schema reads it (edc.api.parsing), as JSON
    Schema keywords. Answers are not held to them: a message's text may run over lines wherever it is shown."""
    if type(field.root) not in REQUEST_SCHEMAS:
        return {}
    if isinstance(field, (fields.Date, fields.DateTime)):
        return {"pattern": YEARS}
    if isinstance(field, fields.Integer) and not isinstance(field, fields.Boolean):
        return {"minimum": ret.get("minimum", INT64_MIN), "maximum": ret.get("maximum", INT64_MAX)}
    if isinstance(field, fields.Dict):
        return {"propertyNames": {**ret.get("propertyNames", {}), "pattern": SINGLE_LINE_TEXT}}
    if isinstance(field, fields.String) and "pattern" not in ret and "enum" not in ret and not _one_of(field):
        return {"pattern": MULTI_LINE_TEXT if field.metadata.get(MULTILINE) else SINGLE_LINE_TEXT}
    return {}


def _one_of(field: fields.Field) -> bool:
    return any(isinstance(v, validate.OneOf) for v in field.validators)


def _add_success_headers(operation: dict, headers: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        if str(status).startswith("2") and isinstance(response, dict):
            response.setdefault("headers", {}).update(headers)


def _error_statuses(rule: str, method: str, operation: dict, *, public: bool) -> set[int]:
    """The error statuses an operation can answer: 400 (bad JSON, a Host not ours) and 503 (database down) anywhere,
    then by what the operation takes."""
    statuses = {400, 503}
    parameters = [p for p in operation.get("parameters", []) if isinstance(p, dict)]
    takes = "<" in rule or method in BODY_METHODS or any(p.get("in") == "query" for p in parameters)
    if not public:
        statuses |= {401, 403}
    if takes and not public:
        statuses.add(404)  # a path, filter or body naming a record you cannot see
    if public and method in BODY_METHODS:
        statuses |= {401, 429}  # sign-in and token exchanges: refused credentials, throttled attempts
    if method in BODY_METHODS:
        statuses |= {409, 413, 415, 422}
    if method == "delete":
        statuses.add(409)
    if any(p.get("in") == "query" for p in parameters):
        statuses.add(422)
    if any(p.get("name") == "If-Match" for p in parameters):
        statuses |= {412} | ({428} if any(p.get("required") for p in parameters if p.get("name") == "If-Match") else set())
    return statuses
