"""The one place that turns every error into application/problem+json (RFC 9457); edc.problems defines the Problems.

Two surfaces answer in their own format, from here too: everything under /fhir/ answers FHIR
OperationOutcome resources (application/fhir+json), since FHIR clients read nothing else, and the OAuth
token endpoint of the registry clients answers RFC 6749 §5.2 errors (OAuthError).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy.exc
import sqlalchemy.orm.exc
from flask import Flask, current_app, g, has_request_context, request
from werkzeug.exceptions import HTTPException, SecurityError

from edc.extensions import db
from edc.problems import INVALID_JSON, WRONG_HOST, OAuthError, Problem, field_error, problem_type

log = logging.getLogger("edc.errors")
PROBLEM_TYPE = "application/problem+json"
FHIR_JSON = "application/fhir+json"
# HTTP status -> OperationOutcome issue code (http://hl7.org/fhir/R4/valueset-issue-type.html)
ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               409: "conflict", 410: "not-found", 412: "conflict", 413: "too-costly", 415: "not-supported", 422: "invalid",
               428: "conflict", 429: "throttled", 503: "transient"}


def is_fhir_request() -> bool:
    """Is this a request to the FHIR surface (/fhir/...), whose errors are OperationOutcomes?"""
    return has_request_context() and (request.path == "/fhir" or request.path.startswith("/fhir/"))


def fhir_response(body: dict, status: int = 200, headers: dict[str, str] | None = None):
    """A FHIR resource as application/fhir+json (compact, non-ASCII kept, keys in the models' order)."""
    response = Flask.response_class(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                                    mimetype=FHIR_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def operation_outcome(status: int, detail: str, headers: dict[str, str] | None = None, *, errors=None):
    """An error as a FHIR OperationOutcome: one issue, plus one per invalid field."""
    code = ISSUE_CODES.get(status, "exception")
    severity = "fatal" if status >= 500 else "error"
    issues = [{"severity": severity, "code": code, "diagnostics": detail}]
    issues += [{"severity": severity, "code": code, "diagnostics": f"{e['pointer']}: {e['detail']}"} for e in errors or []]
    return fhir_response({"resourceType": "OperationOutcome", "issue": issues}, status, headers)


# Set by edc.web.register: renders an error as an HTML page for the browser (the web pages' own surface).
WEB_ERROR_PAGE = "edc.web.error_page"
NOT_WEB_PREFIXES = ("/api/", "/fhir", "/.well-known/", "/healthz", "/readyz", "/bench/")


def is_web_request() -> bool:
    """Is this a request of the web pages (or a browser's request for an unknown page), answered in HTML?"""
    if not has_request_context():
        return False
    if request.blueprint == "web":
        return True
    return (request.endpoint is None and not request.path.startswith(NOT_WEB_PREFIXES)
            and request.accept_mimetypes.accept_html)


def problem_response(status: int, title: str, detail: str, *, errors=None, headers=None, extra=None,
                     kind: str | None = None):
    if is_fhir_request():
        return operation_outcome(status, detail, headers, errors=errors)
    if is_web_request() and WEB_ERROR_PAGE in current_app.extensions:
        response = current_app.extensions[WEB_ERROR_PAGE](status, title, detail, errors)
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response
    body: dict[str, Any] = {
        "type": problem_type(status, kind),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path if request else None,
        "request_id": g.get("request_id"),
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    from flask import json

    response = Flask.response_class(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def roll_back_quietly() -> None:
    """Roll the request's transaction back; a rollback that fails (the connection is gone, and the
    database drops the transaction with it) is logged, and the answer being built stands."""
    try:
        db.session.rollback()
    except Exception as exc:
        log.error("rollback failed", extra={"fields": {"event": "rollback_failed", "error": type(exc).__name__,
                                                       "request_id": g.get("request_id")}})


def _pointers(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten marshmallow/webargs messages into JSON Pointer errors."""
    if isinstance(messages, dict):
        out: list[dict[str, str]] = []
        for key, value in messages.items():
            token = str(key).replace("~", "~0").replace("/", "~1")
            out.extend(_pointers(value, f"{prefix}/{token}"))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [field_error(prefix or "/", " ".join(messages))]
    if isinstance(messages, list):
        return [e for m in messages for e in _pointers(m, prefix)]
    return [field_error(prefix or "/", str(messages))]


def _webargs_errors(exc: HTTPException) -> list[dict[str, str]]:
    messages = (getattr(exc, "data", None) or {}).get("messages", {})
    out = []
    for location, fields in messages.items():
        base = "" if location == "json" else f"/{location}"
        for error in _pointers(fields):
            error["pointer"] = (base + error["pointer"]) if error["pointer"] != "/" else (base or "/")
            out.append(error)
    return out


def settle_problem(exc: Problem) -> None:
    """Undo the request's writes, then commit the security events that must survive it."""
    roll_back_quietly()
    if exc.after_rollback:
        try:
            for write in exc.after_rollback:
                write(db.session)
            db.session.commit()
        except Exception:  # the security write failed: still answer the original problem
            roll_back_quietly()
            log.exception("security event could not be recorded")
    g.problem_log_detail = exc.log_detail


def handle_problem(exc: Problem):
    settle_problem(exc)
    return problem_response(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra,
                            kind=exc.kind)


def handle_oauth_error(exc: OAuthError):
    settle_problem(exc)
    from flask import json

    response = Flask.response_class(json.dumps({"error": exc.error, "error_description": exc.detail}),
                                    status=exc.status, mimetype="application/json")
    # RFC 6749 §5.1/5.2: token endpoint answers are never cached.
    response.headers.update({**exc.headers, "Cache-Control": "no-store", "Pragma": "no-cache"})
    return response


def handle_http_exception(exc: HTTPException):
    roll_back_quietly()
    status = exc.code or 500
    original = exc.get_response()
    headers = {k: v for k, v in original.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
    errors = kind = None
    detail = exc.description or ""
    if status == 422:
        errors = _webargs_errors(exc) or []
        detail = "The request has invalid fields."
    elif status == 400 and getattr(exc, "data", None):
        detail, kind = "The request body is not valid JSON.", INVALID_JSON
    elif status == 413:
        detail = "The request body is too large."
    title = "Unprocessable Content" if status == 422 else exc.name  # RFC 9110's name
    return problem_response(status, title, detail, errors=errors, headers=headers, kind=kind)


def handle_untrusted_host(exc: SecurityError):
    # A Host other than public_base_url's (Flask's TRUSTED_HOSTS): 400, without repeating the Host sent.
    roll_back_quietly()
    return problem_response(400, "Bad Request", "This server answers only at its public address (public_base_url).",
                            kind=WRONG_HOST)


def handle_integrity_error(exc: sqlalchemy.exc.IntegrityError):
    # Unique violations that a service did not anticipate (e.g. a race): a conflict, not a 500.
    roll_back_quietly()
    log.warning("integrity error mapped to 409", extra={"request_id": g.get("request_id")})
    return problem_response(409, "Conflict", "The request conflicts with an existing record.")


def handle_stale_version(exc: sqlalchemy.orm.exc.StaleDataError):
    # A versioned row changed between this request's read and its write, past the row-lock comparison the
    # services make (concurrency.check_etag): the same answer as a stale If-Match, never a 500.
    roll_back_quietly()
    log.warning("stale version mapped to 412", extra={"request_id": g.get("request_id")})
    return problem_response(412, "Precondition Failed",
                            "The record has changed since you read it; read it again and reapply your change.")


def handle_database_unavailable(exc: sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
    # Unreachable, restarting, or stuck past a time limit (statement or lock timeout, no free pooled connection).
    roll_back_quietly()
    cause = getattr(exc, "orig", None) or exc
    log.error("database unavailable: %s", type(cause).__name__)
    return problem_response(503, "Service Unavailable", "The database is unavailable; try again shortly.",
                            headers={"Retry-After": "5"})


def handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    roll_back_quietly()
    log.exception("unhandled error (request %s)", g.get("request_id"))
    return problem_response(500, "Internal Server Error", "An unexpected error occurred; it has been logged.")


def register(app: Flask) -> None:
    """Install the handlers; called after flask-smorest so ours replace its own."""
    app.register_error_handler(OAuthError, handle_oauth_error)
    app.register_error_handler(Problem, handle_problem)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(SecurityError, handle_untrusted_host)
    app.register_error_handler(sqlalchemy.exc.IntegrityError, handle_integrity_error)
    app.register_error_handler(sqlalchemy.orm.exc.StaleDataError, handle_stale_version)
    app.register_error_handler(sqlalchemy.exc.OperationalError, handle_database_unavailable)
    app.register_error_handler(sqlalchemy.exc.TimeoutError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
