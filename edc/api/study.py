"""The study schedule and the eCRF definitions, as native JSON and as FHIR Questionnaires."""

from __future__ import annotations

import json

from flask import current_app

from edc.api.common import current_actor
from edc.api.parsing import Blueprint
from edc.api.schemas import FormArgs
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import study

blp = Blueprint("study", __name__, url_prefix="/api/v1", description="Study schedule and form definitions")


@blp.get("/study")
@requires("forms:read")
@blp.response(200)
def get_study():
    """The visit schedule: events, anchors, windows, the forms each holds, subject logs and repeating forms."""
    return study.schedule(db.session, current_actor())


@blp.get("/forms")
@requires("forms:read")
@blp.response(200)
def list_forms():
    """Every form with its versions."""
    return study.list_forms(db.session, current_actor())


@blp.get("/forms/<form_id>")
@requires("forms:read")
@blp.arguments(FormArgs, location="query")
@blp.response(200)
def get_form(args, form_id):
    """One form definition (the latest version, or ?version=)."""
    return study.form_definition(db.session, current_actor(), form_id, version=args.get("version"), lang=args["lang"])


@blp.get("/forms/<form_id>/questionnaire")
@requires("forms:read")
@blp.arguments(FormArgs, location="query")
@blp.response(200)
def get_questionnaire(args, form_id):
    """The form as a FHIR R4 Questionnaire."""
    body = study.questionnaire(db.session, current_actor(), form_id, version=args.get("version"), lang=args["lang"])
    return current_app.response_class(json.dumps(body), mimetype="application/fhir+json")
