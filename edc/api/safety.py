"""Safety-reporting clocks: the 24-hour SAE and 7/15-day SUSAR deadlines, open, overdue or all.

The schemas of this resource live here rather than in schemas.py: they describe only this
listing and change with it.
"""

from __future__ import annotations

from flask import url_for
from marshmallow import Schema, fields, validate

from edc.api.common import current_actor, page_args
from edc.api.parsing import Blueprint
from edc.api.schemas import SITE_CODE, PageArgs, PageOut
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import safety

blp = Blueprint("safety", __name__, url_prefix="/api/v1/safety", description="Safety-reporting clocks")


class ClockListArgs(PageArgs):
    state = fields.String(load_default="open", validate=validate.OneOf(safety.STATES),
                          metadata={"description": "open (not stopped, overdue included), overdue, or all"})
    site = fields.String(validate=SITE_CODE)
    subject = fields.String(validate=validate.Length(min=1, max=16))


class CriticalQueryOut(Schema):
    id = fields.UUID()
    entry_id = fields.UUID()
    form = fields.String(attribute="form_id")
    item = fields.String(attribute="item_id", allow_none=True)
    message = fields.String()
    opened_at = fields.DateTime()


class ClockOut(Schema):
    id = fields.UUID()
    kind = fields.String(metadata={"description": "sae_initial | susar_7d | susar_15d"})
    subject = fields.String()
    site = fields.String()
    ae_entry = fields.UUID()
    ae_entry_url = fields.String()
    started_at = fields.DateTime()
    due_at = fields.DateTime()
    stopped_at = fields.DateTime(allow_none=True)
    stop_reason = fields.String(allow_none=True, metadata={"description": "complete | submitted | not_serious | not_susar"})
    state = fields.String(metadata={"description": "open | overdue | stopped | late | cancelled"})
    overdue = fields.Boolean(metadata={"description": "open past its due time, or stopped after it (late)"})
    hours_left = fields.Float(allow_none=True, metadata={"description": "until due (negative when past); null once stopped"})
    critical_queries = fields.List(fields.Nested(CriticalQueryOut))


class ClockPage(PageOut):
    items = fields.List(fields.Nested(ClockOut))


def _out(view: safety.ClockView) -> dict:
    row = view.clock
    return {
        "id": row.id, "kind": row.kind, "subject": view.subject, "site": view.site, "ae_entry": row.ae_entry_id,
        "ae_entry_url": url_for("entries.get_entry", entry_id=row.ae_entry_id),
        "started_at": row.started_at, "due_at": row.due_at, "stopped_at": row.stopped_at, "stop_reason": row.stop_reason,
        "state": view.state, "overdue": view.overdue, "hours_left": view.hours_left, "critical_queries": view.critical_queries,
    }


@blp.get("/clocks")
@requires("safety:read")
@blp.arguments(ClockListArgs, location="query")
@blp.response(200, ClockPage)
def list_clocks(args):
    """Safety-reporting clocks of your sites, soonest due first, with each subject's critical open queries."""
    result = safety.list_clocks(db.session, current_actor(), state=args["state"], site=args.get("site"),
                                subject=args.get("subject"), **page_args(args))
    return {"items": [_out(view) for view in result.items], "page": result.page, "page_size": result.page_size,
            "total": result.total}
