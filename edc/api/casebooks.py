"""Human-readable copies of the record: a subject's casebook as a PDF, and a site's archive at study close.

The schemas of this resource live here: they describe only these routes and change with them.
"""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from marshmallow import Schema, fields, validate

from edc.api.common import current_actor, page_args
from edc.api.downloads import handed_out, stored_file
from edc.api.idempotency import idempotent
from edc.api.exports import POLL_SECONDS, ExportProgressOut
from edc.api.openapi import ETAG_HEADER, IF_NONE_MATCH, RETRY_AFTER, docs, success_doc, success_headers_doc
from edc.api.parsing import Blueprint
from edc.api.schemas import PageArgs, PageOut
from edc.api.transaction import commit, commit_with_answer
from edc.extensions import db
from edc.models.exports import ACTIVE_STATES, ExportJob
from edc.security.permissions import requires
from edc.services import casebook, exports

blp = Blueprint("casebooks", __name__, url_prefix="/api/v1", description="Casebook PDFs and site archives")

PDF = "application/pdf"


class CasebookPdfArgs(Schema):
    lang = fields.String(load_default="en", validate=[validate.Length(min=1, max=8), validate.Regexp(
        r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$", error="A language tag, e.g. en or ar.")],
        metadata={"description": "the language of item labels, titles and code labels: one of the study's (en, es, it, ar)"})
    include_audit = fields.Boolean(load_default=False, metadata={"description": "add each entry's full audit history"})
    data_cut = fields.String(load_default=None, validate=validate.Length(min=1, max=64), metadata={
        "description": "the name of a data cut: the record as it stood at its cut-off (default: the live record)"})


class ArchiveOut(Schema):
    id = fields.UUID()
    site = fields.String()
    state = fields.String(metadata={"description": "queued | running | completed | failed | cancelled"})
    progress = fields.Nested(ExportProgressOut)
    requested_by = fields.String()
    requested_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    files = fields.List(fields.Dict(), metadata={"description": "once completed: the zip's name, SHA-256 and size"})
    links = fields.Dict(metadata={"description": "self, and once completed: files"})


class ArchivePage(PageOut):
    items = fields.List(fields.Nested(ArchiveOut))


def view(job: ExportJob) -> dict[str, Any]:
    code = job.parameters["site"]
    links: dict[str, Any] = {"self": url_for("casebooks.get_archive", code=code, job_id=job.id)}
    files = exports.all_files(job.manifest) if job.state == "completed" and job.manifest else []
    if files:
        links["files"] = [url_for("casebooks.get_archive_file", code=code, job_id=job.id, name=f["name"]) for f in files]
    return {"id": job.id, "site": code, "state": job.state, "progress": exports.progress_of(job),
            "requested_by": job.requested_by, "requested_at": job.requested_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "attempts": job.attempts, "error": job.error,
            "files": [{k: f[k] for k in ("name", "sha256", "bytes", "media_type")} for f in files], "links": links}


@blp.get("/subjects/<number>/casebook.pdf")
@blp.doc(**docs(success_doc("The casebook as a PDF (ETag: its SHA-256, also recorded in the audit trail)", media=PDF,
                            schema={"type": "string", "format": "binary"}, headers={"ETag": ETAG_HEADER})))
@requires("casebooks:read")
@blp.arguments(CasebookPdfArgs, location="query")
def get_casebook_pdf(args, number):
    """A subject's casebook as a PDF: cover, every event and form in schedule order, values, queries, SDV,
    signatures and, with include_audit, each entry's audit trail. Each copy is audited with its SHA-256."""
    made = casebook.casebook_pdf_copy(db.session, current_actor(), number, lang=args["lang"],
                                      include_audit=args["include_audit"], data_cut=args["data_cut"])
    response = Response(made.content, mimetype=PDF)
    response.set_etag(made.sha256)
    response.headers.set("Content-Disposition", "attachment", filename=made.file_name)
    return commit(response)


@blp.post("/sites/<code>/archive")
@blp.doc(**docs(errors=(409, 429)))
@requires("archives:create")
@idempotent
@blp.response(202, ArchiveOut)
def create_archive(code):
    """Archive a site at study close (data managers; 409 unless the study or every subject of the site is locked):
    a zip of every subject's casebook PDF with audit trail, the site's CSV and ODM exports and a manifest of SHA-256s,
    built by the export worker. 202 with the archive's URL in Location."""
    job = exports.request_archive(db.session, current_actor(), code)
    commit_with_answer()
    return view(job), 202, {"Location": url_for("casebooks.get_archive", code=job.parameters["site"], job_id=job.id)}


@blp.get("/sites/<code>/archives")
@requires("archives:read")
@blp.arguments(PageArgs, location="query")
@blp.response(200, ArchivePage)
def list_archives(args, code):
    """A site's archives, newest first (data managers and the site's principal investigator)."""
    paging = page_args(args)
    rows, total = exports.list_archives(db.session, current_actor(), code, limit=paging["page_size"],
                                        offset=(paging["page"] - 1) * paging["page_size"])
    return {"items": [view(job) for job in rows], "total": total, **paging}


@blp.get("/sites/<code>/archives/<job_id>")
@blp.doc(**success_headers_doc({"Retry-After": RETRY_AFTER}))
@requires("archives:read")
@blp.response(200, ArchiveOut)
def get_archive(code, job_id):
    """A site archive's state (data managers and the site's principal investigator); while it runs, Retry-After."""
    job = exports.get_archive(db.session, current_actor(), code, job_id)
    return view(job), 200, ({"Retry-After": str(POLL_SECONDS)} if job.state in ACTIVE_STATES else {})


@blp.get("/sites/<code>/archives/<job_id>/files/<name>")
@blp.doc(**docs(success_doc("The archive (zip)", media="application/zip", schema={"type": "string", "format": "binary"},
                            headers={"ETag": ETAG_HEADER}), {"parameters": [IF_NONE_MATCH]},
                {"responses": {"304": {"description": "Not Modified"}}}, errors=(409,)))
@requires("archives:read")
def get_archive_file(code, job_id, name):
    """The archive's zip, streamed from export storage (data managers and the site's principal investigator);
    each download is audited."""
    actor = current_actor()
    stream, listed = exports.open_archive_file(db.session, actor, code, job_id, name)
    response: Response = stored_file(stream, media_type=listed["media_type"], size=listed["bytes"],
                                     sha256=listed["sha256"], download_name=name)
    if handed_out(response):
        exports.record_download(db.session, actor, job_id, name, response.headers.get("Content-Range"))
    return commit(response)

