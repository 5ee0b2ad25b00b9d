"""Export jobs over HTTP: ask (202 + status URL), follow, read the manifest, download files, cancel or delete.

The schemas of this resource live here: they describe only these routes and change with them.
"""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from marshmallow import Schema, fields, validate

from edc.api.common import current_actor, page_args
from edc.api.downloads import handed_out, stored_file
from edc.api.idempotency import idempotent
from edc.api.openapi import ETAG_HEADER, IF_NONE_MATCH, RETRY_AFTER, docs, success_doc, success_headers_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit, commit_with_answer
from edc.api.schemas import PageArgs, PageOut
from edc.extensions import db
from edc.models.exports import ACTIVE_STATES, EXPORT_FORMATS, ExportJob
from edc.security.permissions import requires
from edc.services import exports

blp = Blueprint("exports", __name__, url_prefix="/api/v1/exports", description="Exports (CSV, CDISC ODM, FHIR)")

POLL_SECONDS = 2  # how long a client polling a queued or running export waits between polls (Retry-After)
_names = fields.List(fields.String(validate=validate.Length(min=1, max=64)), validate=validate.Length(min=1, max=100),
                     load_default=None)


class ExportIn(Schema):
    format = fields.String(required=True, validate=validate.OneOf(EXPORT_FORMATS))
    sites = _names
    forms = _names
    statuses = _names
    since = fields.AwareDateTime(load_default=None, metadata={"description": "only changes after this time"})
    include_audit = fields.Boolean(load_default=False, metadata={"description": "CSV and ODM only"})
    data_cut = fields.String(load_default=None, validate=validate.Length(min=1, max=64),
                             metadata={"description": "the name of a data cut to export instead of the live data"})
    types = _names
    spreadsheet_safe = fields.Boolean(load_default=False, metadata={
        "description": "CSV only: text cells starting with = + - @ tab or CR get a leading ' so spreadsheets do not "
                       "run them as formulas (numbers are left as they are); default false: values exactly as entered"})


class ExportProgressOut(Schema):
    subjects_done = fields.Integer()
    subjects_total = fields.Integer(allow_none=True)
    percent = fields.Float()


class ExportOut(Schema):
    id = fields.UUID()
    format = fields.String()
    state = fields.String(metadata={"description": "queued | running | completed | failed | cancelled"})
    progress = fields.Nested(ExportProgressOut)
    filters = fields.Dict()
    requested_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    files_missing = fields.Boolean(metadata={
        "description": "a completed export whose files are no longer in export storage (e.g. after a restore): "
                       "its downloads answer 410; ask for the export again"})
    links = fields.Dict(metadata={"description": "self, and once completed: manifest and files"})


class ExportPage(PageOut):
    items = fields.List(fields.Nested(ExportOut))


def view(job: ExportJob) -> dict[str, Any]:
    missing = exports.files_missing(db.session, job)
    links = {"self": url_for("exports.get_export", job_id=job.id)}
    if job.state == "completed" and job.manifest:
        links["manifest"] = url_for("exports.get_manifest", job_id=job.id)
        if not missing:
            links["files"] = [url_for("exports.get_file", job_id=job.id, name=f["name"])
                              for f in exports.all_files(job.manifest)]
    return {"id": job.id, "format": job.format, "state": job.state, "progress": exports.progress_of(job),
            "filters": job.parameters, "requested_at": job.requested_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "attempts": job.attempts, "error": job.error, "files_missing": missing,
            "links": links}


@blp.post("")
@blp.doc(**docs(errors=(429,)))
@requires("exports:create")
@idempotent
@blp.arguments(ExportIn)
@blp.response(202, ExportOut)
def create_export(body):
    """Ask for an export; the worker runs it. 202 with the status URL in Location; 429 beyond your active-job limit."""
    wanted = exports.ExportRequest(
        format=body["format"], sites=_tuple(body["sites"]), forms=_tuple(body["forms"]),
        statuses=_tuple(body["statuses"]), since=body["since"], include_audit=body["include_audit"],
        data_cut=body["data_cut"], types=_tuple(body["types"]), spreadsheet_safe=body["spreadsheet_safe"])
    job = exports.request_export(db.session, current_actor(), wanted)
    commit_with_answer()
    return view(job), 202, {"Location": url_for("exports.get_export", job_id=job.id)}


def _tuple(values):
    return tuple(values) if values else None


@blp.get("")
@requires("exports:create")
@blp.arguments(PageArgs, location="query")
@blp.response(200, ExportPage)
def list_exports(args):
    """Your exports, newest first."""
    paging = page_args(args)
    rows, total = exports.list_jobs(db.session, current_actor(), limit=paging["page_size"],
                                    offset=(paging["page"] - 1) * paging["page_size"])
    return {"items": [view(job) for job in rows], "total": total, **paging}


@blp.get("/<job_id>")
@blp.doc(**success_headers_doc({"Retry-After": RETRY_AFTER}))
@requires("exports:create")
@blp.response(200, ExportOut)
def get_export(job_id):
    """An export's state and progress; while it is queued or running, Retry-After says when to poll again."""
    job = exports.get_job(db.session, current_actor(), job_id)
    return view(job), 200, ({"Retry-After": str(POLL_SECONDS)} if job.state in ACTIVE_STATES else {})


@blp.get("/<job_id>/manifest")
@blp.doc(**docs(success_doc("The manifest"), errors=(409,)))
@requires("exports:create")
def get_manifest(job_id):
    """The manifest of a completed export: every file with its SHA-256 and counts, form versions, filters, who, when.
    409 while the export is not completed."""
    job = exports.get_job(db.session, current_actor(), job_id)
    return exports.manifest_of(job)


@blp.get("/<job_id>/files/<name>")
@blp.doc(**docs(success_doc("The file (CSV, ODM XML, NDJSON or text)", media="*/*", schema={"type": "string", "format": "binary"}, headers={"ETag": ETAG_HEADER}), {"parameters": [IF_NONE_MATCH]}, {"responses": {"304": {"description": "Not Modified"}}}, errors=(409,)))
@requires("exports:create")
def get_file(job_id, name):
    """One file of a completed export, streamed from export storage (ETag: its SHA-256); 410 once storage no
    longer has it."""
    actor = current_actor()
    stream, listed = exports.open_file(db.session, actor, job_id, name)
    response: Response = stored_file(stream, media_type=listed["media_type"], size=listed["bytes"],
                                     sha256=listed["sha256"], download_name=name)
    if handed_out(response):
        exports.record_download(db.session, actor, job_id, name, response.headers.get("Content-Range"))
    return commit(response)


@blp.delete("/<job_id>")
@requires("exports:create")
@blp.response(204)
def delete_export(job_id):
    """Cancel a queued or running export, or delete a finished one and its files."""
    exports.cancel(db.session, current_actor(), job_id)
    commit_with_answer()
