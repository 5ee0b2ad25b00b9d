"""FHIR R4 read API for statisticians, data managers and registries: GET /fhir/Patient/{id}/$everything.

Every error of these routes (401, 403, 404, 500...) is an OperationOutcome in application/fhir+json,
not problem+json: FHIR clients read nothing else.
"""

from __future__ import annotations

import json
import logging
import uuid

import sqlalchemy as sa
from flask import Response, g, request
from flask_smorest import Blueprint
from sqlalchemy.orm import Session, joinedload
from werkzeug.exceptions import HTTPException

from edc import runtime
from edc.api.common import current_actor
from edc.errors import NotFound, Problem, handle_problem
from edc.exports import fhir
from edc.extensions import db
from edc.models.entries import Entry
from edc.models.subjects import Subject
from edc.security.permissions import Actor, require, requires
from edc.services import entries as entry_service

log = logging.getLogger("edc.fhir")
FHIR_JSON = "application/fhir+json"
PERMISSION = "fhir:read"

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


def find_subject(session: Session, actor: Actor, subject_id: str) -> Subject:
    """A subject by study number, subject id or exported Patient id, within the caller's sites (404 otherwise)."""
    require(actor, PERMISSION)
    scope = actor.site_scope(PERMISSION)
    stmt = sa.select(Subject).options(joinedload(Subject.site))
    if scope is not None:
        stmt = stmt.where(Subject.site_id.in_(scope))
    try:
        as_uuid = uuid.UUID(subject_id)
    except ValueError:
        as_uuid = None
    subject = None
    if as_uuid is None:
        subject = session.scalars(stmt.where(Subject.number == subject_id.upper())).one_or_none()
    else:
        subject = session.scalars(stmt.where(Subject.id == as_uuid)).one_or_none()
        if subject is None:  # the Patient id of an earlier export: uuid5 of the subject id
            ids = session.scalars(stmt.with_only_columns(Subject.id)).all()
            match = next((i for i in ids if fhir.patient_id_for(i) == str(as_uuid)), None)
            subject = session.scalars(stmt.where(Subject.id == match)).one_or_none() if match else None
    if subject is None:
        raise NotFound(f"No patient {subject_id} among your sites.")
    return subject


def subject_casebook(session: Session, subject: Subject):
    """Every entry of the subject with its values opened (identifying items are dropped by the mapper)."""
    study = runtime.of(session).study
    rows = session.scalars(sa.select(Entry).where(Entry.subject_id == subject.id)
                           .order_by(Entry.created_at, Entry.id)).all()
    return study, [(e, entry_service.unseal(session, study.form(e.form_id, e.form_version), e)) for e in rows]


@blp.route("/Patient/<subject_id>/$everything", methods=["GET"])
@requires(PERMISSION)
def patient_everything(subject_id: str):
    """Everything about one subject as a searchset Bundle (R4 JSON)."""
    session = db.session
    subject = find_subject(session, current_actor(), subject_id)
    study, casebook = subject_casebook(session, subject)
    resources = fhir.subject_resources(study, subject, casebook)
    base = request.url_root.rstrip("/") + "/fhir"
    bundle = fhir.everything_bundle(resources, base, f"{base}/Patient/{subject_id}/$everything")
    session.rollback()  # read only
    return fhir_response(bundle)
