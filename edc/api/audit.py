"""The security and administration chain of the audit trail, for auditors."""

from __future__ import annotations


from edc.api.common import current_actor, page_args
from edc.api.parsing import Blueprint
from edc.api.schemas import AuditArgs, AuditRecordOut
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import audit

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit", description="Audit trail")


@blp.get("/security")
@requires("audit:read")
@blp.arguments(AuditArgs, location="query")
@blp.response(200, AuditRecordOut(many=True))
def list_security_audit(args):
    """Security and administration events in chain order (logins, accounts, roles, sites)."""
    paging = page_args(args)
    return audit.security_history(
        db.session, current_actor(), entity_type=args.get("entity_type"), entity_id=args.get("entity_id"),
        limit=paging["page_size"], offset=(paging["page"] - 1) * paging["page_size"],
    )
