"""Source data verification: a monitor marks items or whole entries verified; progress per site and form.

The schemas of this resource live here: they describe only this resource and change with it.
"""

from __future__ import annotations

import uuid

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from edc.api.common import current_actor
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import SITE_CODE
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import sdv

blp = Blueprint("sdv", __name__, url_prefix="/api/v1", description="Source data verification")


class SdvIn(Schema):
    items = fields.List(fields.String(validate=validate.Length(min=1, max=64)), validate=validate.Length(min=1, max=500),
                        metadata={"description": "top-level item (or repeating group) ids verified against source"})
    entry = fields.Boolean(metadata={"description": "true: the whole entry (every item the form requires) is verified"})

    @validates_schema
    def _one_of(self, data, **kwargs):
        if bool(data.get("items")) == bool(data.get("entry")):
            raise ValidationError("Send either items (a list of item ids) or entry: true.", "_schema")


class SdvMarkOut(Schema):
    item = fields.String(attribute="item_id", allow_none=True, metadata={"description": "null: the whole entry"})
    entry_version = fields.Integer()
    verified_by = fields.String()
    verified_at = fields.DateTime()
    cleared_at = fields.DateTime(allow_none=True)
    cleared_by_change = fields.UUID(allow_none=True, metadata={"description": "audit record id of the change"})


class EntrySdvOut(Schema):
    entry = fields.UUID()
    form = fields.String()
    entry_version = fields.Integer()
    requirement = fields.String(metadata={"description": "all | critical | none (study.yaml sdv)"})
    required_items = fields.List(fields.String())
    verified = fields.Boolean(metadata={"description": "the entry has an active whole-entry mark"})
    marks = fields.List(fields.Nested(SdvMarkOut), metadata={"description": "active marks"})
    cleared = fields.List(fields.Nested(SdvMarkOut), metadata={"description": "marks cleared by later changes"})


class ProgressArgs(Schema):
    site = fields.String(validate=SITE_CODE)


class ProgressRowOut(Schema):
    site = fields.String()
    form = fields.String()
    requirement = fields.String()
    entries = fields.Integer(metadata={"description": "entries requiring SDV"})
    entries_verified = fields.Integer()
    items_verified = fields.Integer()


class ProgressOut(Schema):
    items = fields.List(fields.Nested(ProgressRowOut))


def _out(state: sdv.EntrySdv) -> dict:
    return {"entry": state.entry.id, "form": state.entry.form_id, "entry_version": state.entry.version,
            "requirement": state.requirement, "required_items": state.required_items, "verified": state.verified,
            "marks": state.marks, "cleared": state.cleared}


@blp.get("/entries/<uuid:entry_id>/sdv")
@requires("sdv:read")
@blp.response(200, EntrySdvOut)
def get_entry_sdv(entry_id: uuid.UUID):
    """An entry's SDV requirement and marks (active and cleared)."""
    return _out(sdv.entry_sdv(db.session, current_actor(), entry_id))


@blp.post("/entries/<uuid:entry_id>/sdv")
@requires("sdv:write")
@blp.arguments(SdvIn)
@blp.response(200, EntrySdvOut)
def verify_entry(data, entry_id: uuid.UUID):
    """Mark items of a complete entry, or the whole entry, verified against source."""
    state = sdv.verify(db.session, current_actor(), entry_id, items=data.get("items"), whole_entry=bool(data.get("entry")))
    body = _out(state)
    commit_with_answer()
    return body


@blp.get("/sdv/progress")
@requires("sdv:read")
@blp.arguments(ProgressArgs, location="query")
@blp.response(200, ProgressOut)
def get_sdv_progress(args):
    """SDV progress of your sites per site and form."""
    return {"items": sdv.progress(db.session, current_actor(), site=args.get("site"))}
