"""FHIR R4 API for statisticians, data managers and registries: GET /fhir/metadata (public) and
GET /fhir/Patient/{id}/$everything.

Every error under /fhir/ (401, 403, 404, 405, 500..., including the ones raised before a view runs and
paths that match no route) is an OperationOutcome in application/fhir+json, not problem+json: FHIR clients
read nothing else. edc.errors renders them, in the one place that renders every error.
"""

from __future__ import annotations

from edc.api.common import current_actor, public_url
from edc.api.openapi import FHIR_JSON, fhir_resource, success_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit
from edc.errors import fhir_response
from edc.exports.capability import capability_statement
from edc.extensions import db
from edc.security.permissions import public, requires
from edc.services import fhir_export

blp = Blueprint("fhir", __name__, url_prefix="/fhir", description="FHIR R4 (pseudonymised)")


def fhir_base() -> str:
    """The FHIR base URL (…/fhir) at public_base_url, never taken from the request's Host."""
    return public_url("/fhir")


@blp.route("/metadata", methods=["GET"])
@blp.doc(**success_doc("The CapabilityStatement", media=FHIR_JSON, schema=fhir_resource("CapabilityStatement")))
@public
def metadata():
    """The server's CapabilityStatement (R4): Bulk Data export, Patient/$everything, SMART Backend Services."""
    return fhir_response(capability_statement(fhir_base()))


@blp.route("/Patient/<subject_id>/$everything", methods=["GET"])
@blp.doc(**success_doc("A searchset Bundle", media=FHIR_JSON, schema=fhir_resource("Bundle")))
@requires(fhir_export.PERMISSION)
def patient_everything(subject_id: str):
    """Everything about one subject as a searchset Bundle (R4 JSON)."""
    base = fhir_base()
    bundle = fhir_export.patient_everything(db.session, current_actor(), subject_id, base_url=base,
                                            self_url=f"{base}/Patient/{subject_id}/$everything")
    return commit(fhir_response(bundle))  # the audit record of the export
