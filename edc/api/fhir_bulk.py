"""FHIR Bulk Data Access (STU3 v3.0.0) over the export jobs: `$export` kick-off, status polling, files, cancel.

    GET /fhir/$export            (Prefer: respond-async)  -> 202, Content-Location: <status URL>
    GET /fhir/Patient/$export    the same, limited to the Patient compartment's resource types
    GET <status URL>             -> 202 + X-Progress + Retry-After while running; 200 + manifest when complete
    DELETE <status URL>          -> 202 + an OperationOutcome saying so; later polls are 404
    GET <file URL>               -> application/fhir+ndjson (the bearer token is required: requiresAccessToken)

Parameters: `_outputFormat` (application/fhir+ndjson, application/ndjson, ndjson), `_type`, `_since`. Others
(`_until`, `_elements`, `_typeFilter`, `patient`, `includeAssociatedData`, `organizeOutputBy`) are refused
with 400, unless the client sends `Prefer: handling=lenient`, in which case they are ignored and said to be:
a warning issue per ignored parameter in the kick-off's OperationOutcome, and the same OperationOutcome as
the manifest's `error` file (the Bulk Data manifest's rule for parameters ignored under lenient handling). Errors are
OperationOutcome resources (edc/errors.py renders every error under /fhir/ so). A registry client's token
exports only the resource types its SMART scope grants.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from flask import Response, json, request, url_for

from edc.api.common import current_actor, public_request_url, public_url
from edc.api.downloads import handed_out, stored_file
from edc.api.openapi import BULK_MANIFEST, FHIR_JSON, PREFER_ASYNC, RETRY_AFTER, docs, fhir_resource, success_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit
from edc.errors import fhir_response, operation_outcome
from edc.ecrf.inputs import date_problem
from edc.exports.fhir_ndjson import RESOURCE_TYPES
from edc.extensions import db
from edc.models.exports import ExportJob
from edc.problems import BadRequest, NotFound
from edc.security.permissions import requires
from edc.services import exports, fhir_export

blp = Blueprint("fhir_bulk", __name__, url_prefix="/fhir", description="FHIR Bulk Data export")

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = (NDJSON, "application/ndjson", "ndjson")
# The Patient compartment (R4 CompartmentDefinition patient) leaves out the shared resources: the site's
# Organization, the ResearchStudy and the product's Medication.
NOT_IN_PATIENT_COMPARTMENT = frozenset({"Organization", "ResearchStudy", "Medication"})
UNSUPPORTED_PARAMETERS = ("_until", "_elements", "_typeFilter", "patient", "includeAssociatedData", "organizeOutputBy",
                          "allowPartialManifests")
RETRY_AFTER_SECONDS = 2
# The kick-off reads its parameters itself (unknown ones are refused unless lenient); declared for the docs.
KICK_OFF_PARAMETERS = [
    {"in": "query", "name": "_outputFormat", "schema": {"type": "string", "enum": list(OUTPUT_FORMATS)}},
    {"in": "query", "name": "_type", "schema": {"type": "string"}, "description": "resource types, comma-separated"},
    {"in": "query", "name": "_since", "schema": {"type": "string", "format": "date-time"},
     "description": "only resources changed after this instant (with a time zone)"},
]
KICK_OFF_DOC = docs({"parameters": [*KICK_OFF_PARAMETERS, PREFER_ASYNC]}, success_doc(
    "Accepted: poll the status URL in Content-Location", status=202, media=FHIR_JSON, schema=fhir_resource("OperationOutcome"),
    headers={"Content-Location": {"schema": {"type": "string", "format": "uri"}, "required": True}}), errors=(429,))


def _prefer() -> set[str]:
    return {token.strip().lower() for token in request.headers.get("Prefer", "").split(",") if token.strip()}


def _kick_off(level: str) -> Response:
    prefer = _prefer()
    if "respond-async" not in prefer:
        raise BadRequest("The $export operation is asynchronous: send the header Prefer: respond-async.")
    lenient = "handling=lenient" in prefer
    args = request.args
    output_format = args.get("_outputFormat", NDJSON)
    if output_format not in OUTPUT_FORMATS:
        raise BadRequest(f"_outputFormat {output_format!r} is not supported; use {NDJSON}.")
    refused = [name for name in UNSUPPORTED_PARAMETERS if name in args]
    if refused and not lenient:
        raise BadRequest(f"Not supported: {', '.join(refused)} (send Prefer: handling=lenient to have them ignored).")
    granted = fhir_export.granted_types(current_actor())  # a registry token's SMART scope; None: any type
    allowed = [t for t in sorted(RESOURCE_TYPES) if (level == "system" or t not in NOT_IN_PATIENT_COMPARTMENT)
               and (granted is None or t in granted)]
    types = _types(args.get("_type"), allowed)
    since = _instant(args.get("_since"))
    wanted = exports.ExportRequest(format="fhir", since=since, types=tuple(types))
    job = exports.request_export(db.session, current_actor(), wanted, bulk=True, request_url=public_request_url())
    status_url = public_url(url_for("fhir_bulk.export_status", job_id=job.id))
    accepted = {"severity": "information", "code": "informational", "diagnostics": "Export accepted; poll Content-Location."}
    return commit(fhir_response({"resourceType": "OperationOutcome", "issue": [accepted, *_ignored_issues(refused)]},
                                202, {"Content-Location": status_url}))


def _ignored_issues(names: list[str]) -> list[dict[str, str]]:
    """One warning per parameter ignored under Prefer: handling=lenient."""
    return [{"severity": "warning", "code": "not-supported",
             "diagnostics": f"Parameter {name} is not supported and was ignored (Prefer: handling=lenient)."}
            for name in names]


def _ignored_parameters(job: ExportJob) -> list[str]:
    """The unsupported parameters the kick-off ignored, read back from its URL (kept for the manifest)."""
    asked = {name for name, _ in parse_qsl(urlsplit(job.parameters.get("request") or "").query, keep_blank_values=True)}
    return [name for name in UNSUPPORTED_PARAMETERS if name in asked]


def _types(value: str | None, allowed: list[str]) -> list[str]:
    if not value:
        return allowed
    asked = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in asked if t not in allowed]
    if unknown:
        raise BadRequest(f"_type: {', '.join(unknown)} not exported here; the types are {', '.join(allowed)}.")
    return sorted(set(asked))


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequest("_since must be a FHIR instant with a time zone, e.g. 2026-11-01T00:00:00Z.")
    out_of_range = date_problem(moment)  # refused now, not when the worker first converts it to UTC
    if out_of_range:
        raise BadRequest(f"_since {out_of_range}.")
    return moment


@blp.route("/$export", methods=["GET"])
@blp.doc(**KICK_OFF_DOC)
@requires("fhir:read")
def system_export():
    """Kick off an export of every resource (Bulk Data system level)."""
    return _kick_off("system")


@blp.route("/Patient/$export", methods=["GET"])
@blp.doc(**KICK_OFF_DOC)
@requires("fhir:read")
def patient_export():
    """Kick off an export of the Patient compartment (Bulk Data patient level)."""
    return _kick_off("patient")


@blp.route("/bulk-status/<job_id>", methods=["GET"])
@blp.doc(**docs(success_doc("The manifest of the completed export", schema=BULK_MANIFEST), success_doc("In progress", status=202, media="", headers={"X-Progress": {"schema": {"type": "string"}}, "Retry-After": RETRY_AFTER}), errors=(500,)))
@requires("fhir:read")
def export_status(job_id):
    """Poll a bulk export: 202 while it runs, 200 with the manifest once complete, 404 once cancelled."""
    job = exports.get_job(db.session, current_actor(), job_id, bulk=True)
    if job.state in ("queued", "running"):
        progress = exports.progress_of(job)
        note = f"{job.state}: {progress['subjects_done']} of {progress['subjects_total'] or '?'} subjects"
        return Response(status=202, headers={"X-Progress": note[:99], "Retry-After": str(RETRY_AFTER_SECONDS)})
    if job.state != "completed":
        return operation_outcome(500, f"The export {job.state}: {job.error or 'no files were produced'}")
    exports.ensure_files_present(db.session, job)  # 410 after a restore without the files: kick off again
    return _manifest(job)


def _manifest(job: ExportJob) -> Response:
    output = [{"type": f["name"].removesuffix(".ndjson"), "count": f["records"],
               "url": public_url(url_for("fhir_bulk.export_file", job_id=job.id, name=f["name"]))}
              for f in job.manifest["files"]]
    errors = ([{"type": "OperationOutcome", "count": 1,
                "url": public_url(url_for("fhir_bulk.ignored_parameters_file", job_id=job.id))}]
              if _ignored_parameters(job) else [])
    body = {"transactionTime": job.manifest["transaction_time"], "request": job.parameters.get("request"),
            "requiresAccessToken": True, "output": output, "error": errors,
            "extension": {"export": str(job.id), "filters": job.parameters}}
    return fhir_response(body, 200, {"Content-Type": "application/json"})


@blp.route("/bulk-status/<job_id>", methods=["DELETE"])
@blp.doc(**success_doc("Cancelled, or deleted with its files", status=202, media=""))
@requires("fhir:read")
def cancel_export(job_id):
    """Cancel a running bulk export, or delete a finished one and its files."""
    job = exports.cancel(db.session, current_actor(), job_id, bulk=True)
    done = "cancelled" if job.state == "cancelled" else "deleted with its files"
    return commit(fhir_response({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": f"The export was {done}."}]}, 202))


@blp.route("/bulk-errors/<job_id>/OperationOutcome.ndjson", methods=["GET"])
@requires("fhir:read")
def ignored_parameters_file(job_id):
    """The manifest's error file: an OperationOutcome naming the parameters ignored under handling=lenient."""
    job = exports.get_job(db.session, current_actor(), job_id, bulk=True)
    exports.manifest_of(job)
    ignored = _ignored_parameters(job)
    if not ignored:
        raise NotFound("The export has no error file.")
    line = json.dumps({"resourceType": "OperationOutcome", "issue": _ignored_issues(ignored)}, separators=(",", ":"))
    return Response(line + "\n", mimetype=NDJSON)


@blp.route("/bulk-files/<job_id>/<name>", methods=["GET"])
@blp.doc(**success_doc("NDJSON, one resource a line", media=NDJSON, schema={"type": "string"}))
@requires("fhir:read")
def export_file(job_id, name):
    """One NDJSON file of a completed bulk export (410 once export storage no longer has it)."""
    actor = current_actor()
    stream, listed = exports.open_file(db.session, actor, job_id, name, bulk=True)
    response = stored_file(stream, media_type=NDJSON, size=listed["bytes"], sha256=listed["sha256"])
    if handed_out(response):
        exports.record_download(db.session, actor, job_id, name, response.headers.get("Content-Range"))
    return commit(response)
