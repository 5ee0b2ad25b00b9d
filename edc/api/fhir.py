"""FHIR R4 read API for statisticians, data managers and registries: GET /fhir/Patient/{id}/$everything.

Every error of these routes (401, 403, 404, 500...) is an OperationOutcome in application/fhir+json,
not problem+json: FHIR clients read nothing else.
"""

from __future__ import annotations

import json
import logging

from flask import Response, g, request
from flask_smorest import Blueprint
from werkzeug.exceptions import HTTPException

from edc.api.common import current_actor
from edc.errors import Problem, handle_problem
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import fhir_export

log = logging.getLogger("edc.fhir")
FHIR_JSON = "application/fhir+json"

blp = Blueprint("fhir", __name__, url_prefix="/fhir", description="FHIR R4 (pseudonymised)")

# HTTP status -> OperationOutcome issue code (http://hl7.org/fhir/R4/valueset-issue-type.html)
ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               409: "conflict", 412: "conflict", 415: "not-supported", 422: "invalid", 429: "throttled",
               503: "transient"}


def fhir_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                        mimetype=FHIR_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def operation_outcome(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    issue = {"severity": "fatal" if status >= 500 else "error", "code": ISSUE_CODES.get(status, "exception"),
             "diagnostics": detail}
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return fhir_response(body, status, headers)


@blp.errorhandler(Problem)
def _problem(exc: Problem):
    handle_problem(exc)  # rollback and the security writes that must survive it, as everywhere else
    return operation_outcome(exc.status, exc.detail, exc.headers)


@blp.errorhandler(HTTPException)
def _http(exc: HTTPException):
    db.session.rollback()
    headers = {k: v for k, v in exc.get_response().headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
    return operation_outcome(exc.code or 500, exc.description or exc.name, headers)


@blp.errorhandler(Exception)
def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http(exc)
    if isinstance(exc, Problem):
        return _problem(exc)
    db.session.rollback()
    log.exception("unhandled error (request %s)", g.get("request_id"))
    return operation_outcome(500, "An unexpected error occurred; it has been logged.")


@blp.route("/Patient/<subject_id>/$everything", methods=["GET"])
@requires(fhir_export.PERMISSION)
def patient_everything(subject_id: str):
    """Everything about one subject as a searchset Bundle (R4 JSON)."""
    base = request.url_root.rstrip("/") + "/fhir"
    bundle = fhir_export.patient_everything(db.session, current_actor(), subject_id, base_url=base,
                                            self_url=f"{base}/Patient/{subject_id}/$everything")
    db.session.commit()  # the audit record of the export
    return fhir_response(bundle)
