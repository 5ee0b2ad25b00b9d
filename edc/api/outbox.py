"""The notification outbox: what was (or will be) mailed, for data managers and the safety role.

An account mail shows its recipient, never its content: the setup link inside is sealed for the mailer.

The schemas of this listing live here: they describe only this resource and change with it.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from edc.api.common import current_actor, page_args
from edc.api.parsing import Blueprint
from edc.api.schemas import PageArgs, PageOut
from edc.extensions import db
from edc.models.monitoring import OUTBOX_KINDS, OUTBOX_STATES
from edc.security.permissions import requires
from edc.services import outbox

blp = Blueprint("outbox", __name__, url_prefix="/api/v1/outbox", description="Notification outbox")


class OutboxListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(OUTBOX_STATES))
    kind = fields.String(validate=validate.OneOf(OUTBOX_KINDS))


class OutboxOut(Schema):
    id = fields.UUID()
    kind = fields.String(metadata={"description": " | ".join(OUTBOX_KINDS)})
    recipient = fields.String(allow_none=True, metadata={"description": "an account mail's one addressee"})
    site = fields.String(allow_none=True)
    subject = fields.String(allow_none=True)
    due_at = fields.DateTime(allow_none=True)
    status = fields.String(metadata={"description": "pending | sent | failed"})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()


class OutboxPage(PageOut):
    items = fields.List(fields.Nested(OutboxOut))


@blp.get("")
@requires("outbox:read")
@blp.arguments(OutboxListArgs, location="query")
@blp.response(200, OutboxPage)
def list_outbox(args):
    """Notification records, newest first; filter by status and kind."""
    result = outbox.list_records(db.session, current_actor(), status=args.get("status"), kind=args.get("kind"),
                                 **page_args(args))
    items = [{"id": row.id, "kind": row.kind, "recipient": row.recipient, "site": code, "subject": row.subject_number, "due_at": row.due_at,
              "status": row.status, "attempts": row.attempts, "next_attempt_at": row.next_attempt_at,
              "sent_at": row.sent_at, "last_error": row.last_error, "created_at": row.created_at}
             for row, code in result.items]
    return {"items": items, "page": result.page, "page_size": result.page_size, "total": result.total}
