"""Per-request plumbing: request id, runtime binding, content type, authentication and the
permission check (deny by default), security headers and the JSON request log."""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, current_app, g, request

from edc import runtime
from edc.api.common import add_page_links
from edc.api.openapi import QUERY_PARAMETERS_KEY
from edc.errors import is_fhir_request
from edc.extensions import db
from edc.logs import REQUEST_FIELDS
from edc.problems import Forbidden, Unauthorized, UnprocessableContent, UnsupportedMediaType, field_error
from edc.security.permissions import AUTHENTICATED, PUBLIC, declared_permission
from edc.services import auth

log = logging.getLogger("edc.request")

# Views that third-party packages register: the OpenAPI document and the offline docs page.
THIRD_PARTY_PUBLIC = frozenset({"api-docs.openapi_json", "swagger_ui.show"})
WEB_BLUEPRINT = "web"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = ("application/json",)
# A client's own X-Request-ID is kept when it is a plain token that fits the audit trail's column (64).
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _request_id() -> str:
    sent = request.headers.get("X-Request-ID", "")
    return sent if CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def _start() -> None:
    g.request_id = _request_id()
    g.actor = None
    runtime.bind(db.session, runtime.for_app(current_app))


def _check_content_type() -> None:
    if request.method not in BODY_METHODS or not request.path.startswith("/api/"):
        return
    has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding")
    mimetype = request.mimetype or ""
    if has_body and not (mimetype in JSON_TYPES or mimetype.endswith("+json")):
        raise UnsupportedMediaType("Send the request body as application/json.")


def _check_query() -> None:
    """A query parameter the route does not document is a 422 on every /api route, with a query schema or without:
    a misspelt filter or option must never be silently ignored."""
    if not request.path.startswith("/api/") or not request.args:
        return
    declared = current_app.extensions.get(QUERY_PARAMETERS_KEY, {}).get((request.endpoint, request.method))
    if declared is None:  # the OpenAPI document itself, the docs page, HEAD and OPTIONS
        return
    unknown = sorted(set(request.args) - declared)
    if unknown:
        raise UnprocessableContent(errors=[field_error("/query/" + name.replace("~", "~0").replace("/", "~1"),
                                                       "Unknown query parameter.") for name in unknown])


def permission_for(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    if endpoint in THIRD_PARTY_PUBLIC:
        return PUBLIC
    if endpoint.startswith("bench.") and current_app.config["EDC"]["benchmark_endpoints"]:
        return PUBLIC
    return declared_permission(current_app.view_functions.get(endpoint))


def _authorize() -> None:
    if request.endpoint is None:  # 404 / 405: the routing error answers
        return
    if request.blueprint == WEB_BLUEPRINT:  # the web pages authorize their browser sessions themselves (edc/web/browser.py)
        return
    permission = permission_for(request.endpoint)
    if permission is None:
        log.error("route without a declared permission refused", extra={"fields": {"endpoint": request.endpoint}})
        raise Forbidden("This route declares no permission and is refused.")
    if permission == PUBLIC:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Sign in and send the access token as 'Authorization: Bearer <token>'.")
    actor = auth.authenticate(db.session, token.strip(), request_id=g.request_id, client_address=request.remote_addr)
    g.actor = actor
    if actor.client_id is not None and not is_fhir_request():
        # A registry client's token (SMART Backend Services) is for the FHIR API only, whatever its account's
        # roles allow elsewhere, even the routes open to any signed-in account.
        raise Forbidden("This token is for the FHIR API (/fhir/) only.")
    if actor.must_change_password and permission != AUTHENTICATED:
        raise Forbidden("Change your password before doing anything else (POST /api/v1/auth/password).")
    if not actor.can(permission):
        raise Forbidden("Your role does not allow this action.")


def _not_modified(response):
    """304 to a GET whose If-None-Match names the ETag the answer carries (RFC 9110 §13.1.2)."""
    etag = response.headers.get("ETag")
    if request.method in ("GET", "HEAD") and response.status_code == 200 and etag and request.if_none_match:
        if request.if_none_match.contains_weak(etag.strip('"')):
            response.status_code = 304
            response.set_data(b"")
            response.headers.pop("Content-Type", None)


def _finish(response):
    settings = current_app.config["EDC"]
    add_page_links(response)
    _not_modified(response)
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Strict-Transport-Security"] = f"max-age={settings['hsts_seconds']}; includeSubDomains"
    if "Cache-Control" not in response.headers or g.get("actor") is not None:
        response.headers["Cache-Control"] = "no-store"
    if request.endpoint != "swagger_ui.show":
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    _record_request(response.status_code)
    return response


def _record_request(status: int) -> None:
    """Leave the request's log fields for edc.logs.RequestLog, which writes them with the status sent."""
    actor = g.get("actor")
    fields = {
        "event": "request",
        "request_id": g.get("request_id"),
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule else None,
        "status": status,
        "client": request.remote_addr,
        "user": actor.username if actor else None,
        "user_id": str(actor.user_id) if actor and actor.user_id else None,
        "role": actor.roles if actor else None,
        "site": sorted({gr.site_code for gr in actor.grants if gr.site_code}) if actor else None,
    }
    detail = g.get("problem_log_detail")
    if detail:
        fields["detail"] = detail
    request.environ[REQUEST_FIELDS] = fields


def _close_session(_error: BaseException | None) -> None:
    """End the request's session before Flask-SQLAlchemy's own teardown (teardowns run last-registered first).

    Closing rolls back whatever the request left open; on a connection that died after the commit that
    rollback fails. The answer is already sent to the server by then and stands: log, and drop the session."""
    try:
        db.session.remove()
    except Exception as exc:
        log.error("session close failed", extra={"fields": {"event": "session_close_failed", "error": type(exc).__name__,
                                                            "request_id": g.get("request_id")}})
        db.session.registry.clear()


def register(app: Flask) -> None:
    app.teardown_appcontext(_close_session)
    app.before_request(_start)
    app.before_request(_authorize)
    app.before_request(_check_content_type)
    app.before_request(_check_query)
    app.after_request(_finish)
