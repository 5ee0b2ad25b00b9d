"""Subjects: enrolment under a study number, listing, status, casebook and audit history."""

from __future__ import annotations

from flask import url_for

from edc.api.common import current_actor, etag, if_match, page_args
from edc.api.idempotency import idempotent
from edc.api.openapi import etag_doc, if_match_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import (AuditHistoryArgs, AuditRecordOut, CasebookOut, SubjectIn, SubjectListArgs, SubjectOut,
                             SubjectPage, SubjectStatusIn)
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import audit, casebook, scope, subjects

blp = Blueprint("subjects", __name__, url_prefix="/api/v1/subjects", description="Subjects")


@blp.post("")
@blp.doc(**etag_doc(create=True))
@requires("subjects:enrol")
@idempotent
@blp.arguments(SubjectIn)
@blp.response(201, SubjectOut)
def enrol_subject(data):
    """Enrol a subject at one of your sites; it gets the site's next study number."""
    subject = subjects.enrol(db.session, current_actor(), **data)
    commit_with_answer()
    return subject, 201, {"Location": url_for(".get_subject", number=subject.number), "ETag": etag(subject)}


@blp.get("")
@requires("subjects:read")
@blp.arguments(SubjectListArgs, location="query")
@blp.response(200, SubjectPage)
def list_subjects(args):
    """Subjects of your sites, by site and status."""
    return subjects.list_subjects(db.session, current_actor(), site=args.get("site"), status=args.get("status"), **page_args(args))


@blp.get("/<number>")
@blp.doc(**etag_doc())
@requires("subjects:read")
@blp.response(200, SubjectOut)
def get_subject(number):
    """One subject by study number."""
    subject = scope.get_subject(db.session, current_actor(), number)
    return subject, 200, {"ETag": etag(subject)}


@blp.post("/<number>/status")
@blp.doc(**if_match_doc())
@requires("subjects:status")
@blp.arguments(SubjectStatusIn)
@blp.response(200, SubjectOut)
def change_subject_status(data, number):
    """Move a subject to another status (If-Match; withdrawal and screen failure need a reason)."""
    subject = subjects.change_status(db.session, current_actor(), number, expected_etag=if_match(), **data)
    commit_with_answer()
    return subject, 200, {"ETag": etag(subject)}


@blp.get("/<number>/casebook")
@requires("entries:read")
@blp.response(200, CasebookOut)
def get_casebook(number):
    """The schedule with due dates, windows and each form's state."""
    return casebook.casebook(db.session, current_actor(), number)


@blp.get("/<number>/audit")
@requires("clinical_audit:read")
@blp.arguments(AuditHistoryArgs, location="query")
@blp.response(200, AuditRecordOut(many=True))
def get_subject_audit(args, number):
    """The subject's audit trail, oldest first."""
    paging = page_args(args)
    return audit.subject_history(db.session, current_actor(), number, limit=paging["page_size"],
                                 offset=(paging["page"] - 1) * paging["page_size"])
