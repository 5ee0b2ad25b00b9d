"""Investigator signatures of entries and casebooks (21 CFR 11.50, 11.70, 11.200).

The schemas of this resource live here: they describe only this resource and change with it.
"""

from __future__ import annotations

import uuid

from marshmallow import Schema, fields, validate

from edc.api.common import current_actor
from edc.api.idempotency import idempotent
from edc.api.openapi import docs
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.extensions import db
from edc.models.monitoring import SIGNATURE_MEANINGS
from edc.security.permissions import requires
from edc.services import signatures

blp = Blueprint("signatures", __name__, url_prefix="/api/v1", description="Investigator signatures")


class SignIn(Schema):
    # Not required by the schema: a signature without them is refused as a failed re-authentication (401).
    username = fields.String(validate=validate.Length(max=64), metadata={"description": "your own username, again"})
    password = fields.String(validate=validate.Length(max=1024), metadata={"description": "your password, again"})
    meaning = fields.String(required=True, validate=validate.OneOf(SIGNATURE_MEANINGS))


class SignatureOut(Schema):
    id = fields.UUID()
    subject = fields.String()
    entry = fields.UUID(allow_none=True, metadata={"description": "null: the subject's whole casebook"})
    entry_version = fields.Integer(allow_none=True)
    signer = fields.String()
    printed_name = fields.String()
    meaning = fields.String()
    signed_at = fields.DateTime()
    key_id = fields.Integer()
    status = fields.String(metadata={"description": "valid | invalidated (the signed data changed: sign again)"})
    invalidated_at = fields.DateTime(allow_none=True)
    invalidated_by_change = fields.UUID(allow_none=True)
    digest_valid = fields.Boolean(allow_none=True, metadata={
        "description": "the digest re-verified against the data as they are now; null when the data key it was made "
                       "under cannot be loaded on this server (see verification)"})
    verification = fields.String(metadata={
        "description": "verified | invalid: the data differ from what was signed | cannot be verified: key N unavailable"})


def _out(view: signatures.SignatureView) -> dict:
    row = view.signature
    return {"id": row.id, "subject": view.subject_number, "entry": row.entry_id, "entry_version": row.entry_version,
            "signer": row.signer_username, "printed_name": row.printed_name, "meaning": row.meaning,
            "signed_at": row.signed_at, "key_id": row.key_id, "status": view.status,
            "invalidated_at": row.invalidated_at, "invalidated_by_change": row.invalidated_by_change,
            "digest_valid": view.digest_valid, "verification": view.verification}


@blp.post("/entries/<uuid:entry_id>/signatures")
@blp.doc(**docs(errors=(429,)))
@requires("signatures:sign")
@idempotent
@blp.arguments(SignIn)
@blp.response(201, SignatureOut)
def sign_entry(data, entry_id: uuid.UUID):
    """Sign one entry as the site's principal investigator (username and password again)."""
    view = signatures.sign_entry(db.session, current_actor(), entry_id, **_sign_args(data))
    body = _out(view)
    commit_with_answer()
    return body, 201


@blp.post("/subjects/<number>/signatures")
@blp.doc(**docs(errors=(429,)))
@requires("signatures:sign")
@idempotent
@blp.arguments(SignIn)
@blp.response(201, SignatureOut)
def sign_casebook(data, number: str):
    """Sign a subject's whole casebook as the site's principal investigator (username and password again)."""
    view = signatures.sign_casebook(db.session, current_actor(), number, **_sign_args(data))
    body = _out(view)
    commit_with_answer()
    return body, 201


@blp.get("/entries/<uuid:entry_id>/signatures")
@requires("signatures:read")
@blp.response(200, SignatureOut(many=True))
def list_entry_signatures(entry_id: uuid.UUID):
    """Signatures over an entry (its own and its casebook's), each re-verified against the entry now."""
    return [_out(v) for v in signatures.entry_signatures(db.session, current_actor(), entry_id)]


@blp.get("/subjects/<number>/signatures")
@requires("signatures:read")
@blp.response(200, SignatureOut(many=True))
def list_subject_signatures(number: str):
    """A subject's signatures (casebook and entries), each re-verified."""
    return [_out(v) for v in signatures.subject_signatures(db.session, current_actor(), number)]


def _sign_args(data: dict) -> dict:
    return {"username": data.get("username"), "password": data.get("password"), "meaning": data["meaning"]}
