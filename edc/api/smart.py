"""SMART Backend Services for registry clients: POST /fhir/auth/token and GET /fhir/.well-known/smart-configuration.

The token endpoint takes an OAuth 2.0 client-credentials request (application/x-www-form-urlencoded) whose
client authenticates with a signed JWT (RFC 7523). It is the one route under /fhir/ whose errors are not
OperationOutcomes but RFC 6749 §5.2 errors ({"error": "invalid_client", "error_description": ...}), because
the OAuth libraries registries use read that and nothing else (edc.problems.OAuthError, rendered by edc.errors).
"""

from __future__ import annotations

from flask import Response, g, json, request

from edc.api.common import client_address
from edc.api.fhir import fhir_base
from edc.api.openapi import FORM_BODY, SMART_CONFIGURATION, TOKEN_RESPONSE, docs, success_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit
from edc.ecrf.inputs import text_problem
from edc.extensions import db
from edc.problems import OAuthError
from edc.security.permissions import public
from edc.services import fhir_clients

FORM = "application/x-www-form-urlencoded"

blp = Blueprint("smart", __name__, url_prefix="/fhir", description="SMART Backend Services: registry clients' tokens")


def token_url() -> str:
    """The URL clients post to, which their assertions must name as aud: at public_base_url, so an assertion
    minted for another server is refused here whatever Host the request names."""
    return fhir_base() + "/auth/token"


def _token_parameters() -> dict[str, str]:
    if request.mimetype != FORM:
        raise OAuthError("invalid_request", f"Send the token request as {FORM}.")
    repeated = [name for name in fhir_clients.TOKEN_PARAMETERS if len(request.form.getlist(name)) > 1]
    if repeated:  # RFC 6749 §3.2
        raise OAuthError("invalid_request", f"Parameter(s) given more than once: {', '.join(repeated)}.")
    params = {name: request.form[name] for name in fhir_clients.TOKEN_PARAMETERS if name in request.form}
    for name, value in params.items():
        problem = text_problem(value)
        if problem:  # RFC 6749 §5.2: a malformed parameter is invalid_request
            raise OAuthError("invalid_request", f"{name} {problem}.")
    return params


@blp.route("/auth/token", methods=["POST"])
@blp.doc(**docs(success_doc("An access token (RFC 6749 §5.1)", schema=TOKEN_RESPONSE), FORM_BODY))
@public
def issue_token():
    """Exchange a client assertion (SMART Backend Services, client credentials) for a short-lived access token."""
    token = fhir_clients.issue_token(db.session, params=_token_parameters(), token_url=token_url(),
                                     client_address=client_address(), request_id=g.request_id)
    return commit(Response(json.dumps(token.as_json()), mimetype="application/json",
                           headers={"Cache-Control": "no-store", "Pragma": "no-cache"}))


@blp.route("/.well-known/smart-configuration", methods=["GET"])
@blp.doc(**success_doc("SMART configuration", schema=SMART_CONFIGURATION))
@public
def smart_configuration():
    """How a backend service gets an access token here (token URL, private_key_jwt, RS384/ES384, scopes)."""
    return Response(json.dumps(fhir_clients.smart_configuration(token_url())), mimetype="application/json",
                    headers={"Cache-Control": "public, max-age=3600"})
