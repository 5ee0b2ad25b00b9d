"""Monitoring reports (JSON, site-scoped): enrolment, completeness, queries, safety, safety clocks.

The schemas of these reports live here: they describe only these responses and change with them.
"""

from __future__ import annotations

from flask import current_app
from marshmallow import Schema, fields

from edc.api.common import current_actor
from edc.api.parsing import Blueprint
from edc.api.schemas import SITE_CODE
from edc.database import allow_long_statements
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import reports

blp = Blueprint("reports", __name__, url_prefix="/api/v1/reports", description="Monitoring reports")

COUNTS = fields.Dict(keys=fields.String(), values=fields.Integer())


class SiteArgs(Schema):
    site = fields.String(validate=SITE_CODE, metadata={"description": "one of your sites (404 for any other)"})


class CompletenessArgs(SiteArgs):
    by_subject = fields.Boolean(load_default=False, metadata={"description": "add one row per subject"})


class EnrolmentMonthOut(Schema):
    month = fields.String(metadata={"description": "YYYY-MM of registration"})
    total = fields.Integer()
    by_status = COUNTS


class EnrolmentSiteOut(Schema):
    site = fields.String()
    total = fields.Integer()
    by_status = COUNTS
    months = fields.List(fields.Nested(EnrolmentMonthOut))


class EnrolmentOut(Schema):
    total = fields.Integer()
    sites = fields.List(fields.Nested(EnrolmentSiteOut))


class CompletenessCountsOut(Schema):
    expected = fields.Integer(metadata={"description": "forms of scheduled visits whose window has opened, or entered"})
    complete = fields.Integer()
    draft = fields.Integer()
    missing = fields.Integer(metadata={"description": "expected and not entered"})
    overdue = fields.Integer(metadata={"description": "not complete and the visit window's last day has passed"})


class CompletenessSiteOut(CompletenessCountsOut):
    site = fields.String()


class CompletenessSubjectOut(CompletenessCountsOut):
    subject = fields.String()
    site = fields.String()
    status = fields.String()


class CompletenessOut(Schema):
    as_of = fields.Date()
    sites = fields.List(fields.Nested(CompletenessSiteOut))
    subjects = fields.List(fields.Nested(CompletenessSubjectOut))


class QuerySiteOut(Schema):
    site = fields.String()
    open = fields.Integer()
    open_by_age_days = fields.Dict(keys=fields.String(), values=fields.Integer(),
                                   metadata={"description": "open queries by whole days since opening: 0-7, 8-14, 15-30, >30"})
    answered = fields.Integer()
    closed = fields.Integer()
    cancelled = fields.Integer()
    median_hours_to_first_answer = fields.Float(allow_none=True)


class QueryReportOut(Schema):
    as_of = fields.DateTime()
    sites = fields.List(fields.Nested(QuerySiteOut))
    median_hours_to_first_answer = fields.Float(allow_none=True)


class SafetySiteOut(Schema):
    site = fields.String()
    ae_total = fields.Integer()
    sae_total = fields.Integer()
    ae_by_grade = fields.Dict(keys=fields.String(), values=fields.Integer(),
                              metadata={"description": "CTCAE (ASTCT for CRS/ICANS) grade 1-5, or unknown (not yet graded)"})
    sae_by_grade = fields.Dict(keys=fields.String(), values=fields.Integer())
    max_crs_grade = fields.Integer(allow_none=True, metadata={"description": "highest daily ASTCT CRS grade"})
    max_icans_grade = fields.Integer(allow_none=True, metadata={"description": "highest daily ASTCT ICANS grade"})


class SafetyOut(Schema):
    ae_total = fields.Integer()
    sae_total = fields.Integer()
    sites = fields.List(fields.Nested(SafetySiteOut))


class ClockKindOut(Schema):
    kind = fields.String(metadata={"description": "sae_initial | susar_7d | susar_15d"})
    open = fields.Integer(metadata={"description": "running and not yet due"})
    overdue = fields.Integer(metadata={"description": "running past the due time"})
    earliest_due_at = fields.DateTime()


class ClockSiteOut(Schema):
    site = fields.String()
    open = fields.Integer()
    overdue = fields.Integer()
    by_kind = fields.List(fields.Nested(ClockKindOut))


class ClockReportOut(Schema):
    as_of = fields.DateTime()
    sites = fields.List(fields.Nested(ClockSiteOut))


def _reads_whole_study() -> None:
    """A report aggregates the whole study: its statements get the long time limit, not a request's."""
    allow_long_statements(db.session, current_app.config["EDC"]["database_long_statement_timeout_ms"])


@blp.get("/enrolment")
@requires("reports:read")
@blp.arguments(SiteArgs, location="query")
@blp.response(200, EnrolmentOut)
def get_enrolment_report(args):
    """Subjects registered per site and month of registration, by status."""
    _reads_whole_study()
    return reports.enrolment(db.session, current_actor(), site=args.get("site"))


@blp.get("/completeness")
@requires("reports:read")
@blp.arguments(CompletenessArgs, location="query")
@blp.response(200, CompletenessOut)
def get_completeness_report(args):
    """Expected, complete, draft, missing and overdue forms per site (and per subject on request)."""
    _reads_whole_study()
    return reports.completeness(db.session, current_actor(), site=args.get("site"), by_subject=args["by_subject"])


@blp.get("/queries")
@requires("reports:read")
@blp.arguments(SiteArgs, location="query")
@blp.response(200, QueryReportOut)
def get_query_report(args):
    """Open queries per site by age, answered and closed counts, and median time to first answer."""
    _reads_whole_study()
    return reports.queries(db.session, current_actor(), site=args.get("site"))


@blp.get("/safety")
@requires("reports:read")
@blp.arguments(SiteArgs, location="query")
@blp.response(200, SafetyOut)
def get_safety_report(args):
    """AE and SAE counts by grade per site, with maximum CRS and ICANS grades."""
    _reads_whole_study()
    return reports.safety(db.session, current_actor(), site=args.get("site"))


@blp.get("/safety-clocks")
@requires("reports:read")
@blp.arguments(SiteArgs, location="query")
@blp.response(200, ClockReportOut)
def get_safety_clock_report(args):
    """Open and overdue safety-reporting clocks per site and kind."""
    _reads_whole_study()
    return reports.safety_clocks(db.session, current_actor(), site=args.get("site"))
