"""Browser sessions and CSRF protection for the web pages.

A browser signs in through the same service as the API (auth.login: throttle, password rules, audit). The
session's refresh token becomes the value of an HttpOnly cookie; the server looks the session up on every
request (auth.authenticate_browser), so logout, a password change, a disabled account or a revoked role take
effect at once, with the API's idle and absolute limits. Over https the cookie is `__Host-edc_session`
(Secure, Path=/, no Domain); a development server on plain http cannot set a `__Host-` cookie, so there it is
`edc_session` without Secure.

CSRF: every state-changing request carries a synchronizer token (form field `csrf_token`, or the
`X-CSRF-Token` header that htmx sends), derived one-way from the session cookie, so another site can neither
read nor forge it. Before sign-in the login and setup forms are bound the same way to a pre-session cookie.
SameSite=Lax adds a second line of defence.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response

from edc.ecrf.inputs import text_problem
from edc.extensions import db
from edc.problems import Forbidden, UnprocessableContent, field_error
from edc.security.permissions import PUBLIC, Actor, declared_permission
from edc.services import auth

STATIC_ENDPOINT = "web.static"
ALLOWED_BEFORE_PASSWORD_CHANGE = frozenset({"web.password", "web.logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"
CSRF_REFUSED = "The form has expired or did not come from this site; reload the page and try again."


def _secure() -> bool:
    return current_app.config["EDC"]["public_base_url"].startswith("https://")


def session_cookie_name() -> str:
    return "__Host-edc_session" if _secure() else "edc_session"


def pre_session_cookie_name() -> str:
    return "__Host-edc_pre" if _secure() else "edc_pre"


def _cookie_options() -> dict:
    return {"httponly": True, "secure": _secure(), "samesite": "Lax", "path": "/"}


def _derive(purpose: bytes, secret: str) -> str:
    return hashlib.sha256(purpose + b"\0" + secret.encode()).hexdigest()


def current_actor_or_none() -> Actor | None:
    return g.get("actor")


def current_actor() -> Actor:
    actor = g.get("actor")
    if actor is None:  # authorize() sends anonymous callers of protected pages to the login page first
        raise Forbidden("Sign in first.")
    return actor


def csrf_token() -> str:
    """The token this page's forms send back: bound to the session, or before sign-in to the pre-session cookie."""
    cookie = request.cookies.get(session_cookie_name())
    if cookie and g.get("actor") is not None:
        return _derive(b"edc-csrf-session", cookie)
    pre = g.get("new_pre_session") or request.cookies.get(pre_session_cookie_name())
    if not pre:
        pre = g.new_pre_session = secrets.token_urlsafe(32)
    return _derive(b"edc-csrf-pre", pre)


def _csrf_valid() -> bool:
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = [_derive(b"edc-csrf-session", c) for c in [request.cookies.get(session_cookie_name())] if c]
    expected += [_derive(b"edc-csrf-pre", c) for c in [request.cookies.get(pre_session_cookie_name())] if c]
    # compared as bytes: compare_digest refuses str with non-ASCII characters, and the sent value is anyone's
    return bool(sent) and any(hmac.compare_digest(sent.encode(), e.encode()) for e in expected)


def authorize() -> Response | None:
    """The web's deny-by-default check (the API's is edc.api.hooks._authorize): every view declares a permission."""
    g.actor = None
    if request.endpoint is None or request.endpoint == STATIC_ENDPOINT:  # static files: public, no database
        return None
    permission = declared_permission(current_app.view_functions.get(request.endpoint))
    if permission is None:
        raise Forbidden("This page declares no permission and is refused.")
    cookie = request.cookies.get(session_cookie_name())
    if cookie:
        g.actor = auth.authenticate_browser(db.session, cookie, request_id=g.request_id, client_address=request.remote_addr)
    if request.method not in SAFE_METHODS and not _csrf_valid():
        raise Forbidden(CSRF_REFUSED)
    if permission == PUBLIC:
        return None
    if g.actor is None:
        return to_login()
    if g.actor.must_change_password and request.endpoint not in ALLOWED_BEFORE_PASSWORD_CHANGE:
        return redirect(url_for("web.password"))
    if not g.actor.can(permission):
        raise Forbidden("Your role does not allow this page.")
    return None


def refuse_unstorable_text() -> None:
    """The API's rule for every field (edc.api.parsing), at the web's door: no query parameter or form field
    holds a control character other than tab, CR and LF, nor a lone surrogate, which no column can store
    (PostgreSQL refuses NUL). Item values (`v.` fields) are left to the eCRF engine, which applies the same
    rule and shows its message at the item's field."""
    errors = []
    for where, values in (("query", request.args), ("form", request.form)):
        for name, value in values.items(multi=True):
            if where == "form" and name.startswith("v.") and text_problem(name) is None:
                continue
            problem = text_problem(name) or text_problem(value, multiline=True)
            if problem:
                errors.append(field_error(f"/{where}/{name if text_problem(name) is None else '?'}", problem))
    if errors:
        raise UnprocessableContent(errors=errors)


def to_login() -> Response:
    """Back to the login page, returning here afterwards; htmx requests are told to load it as a whole page."""
    target = url_for("web.login", next=local_path(request.full_path))
    if request.headers.get("HX-Request"):
        return Response(status=204, headers={"HX-Redirect": target})
    return redirect(target)


def local_path(candidate: str | None, default: str = "/") -> str:
    """`candidate` if it is a path on this site (never another host: no open redirect), else `default`. Control
    characters and spaces are refused: a CR/LF would break the Location header, and browsers drop tabs and line
    breaks from a URL, so `/<TAB>/evil.example` would reach another host."""
    if not candidate:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in candidate):
        return default
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc or not candidate.startswith("/") or candidate.startswith("//") or "\\" in candidate:
        return default
    return candidate.rstrip("?") or default


def start_session(response: Response, refresh_token: str) -> Response:
    """Put a new login's session in the browser's cookie (the pre-session cookie has served its purpose)."""
    response.set_cookie(session_cookie_name(), refresh_token, **_cookie_options())
    response.delete_cookie(pre_session_cookie_name(), path="/", secure=_secure(), samesite="Lax")
    return response


def end_session(response: Response) -> Response:
    response.delete_cookie(session_cookie_name(), path="/", secure=_secure(), httponly=True, samesite="Lax")
    return response


def keep_pre_session(response: Response) -> None:
    """Set the pre-session cookie if this page made one for its forms' CSRF token."""
    pre = g.get("new_pre_session")
    if pre:
        response.set_cookie(pre_session_cookie_name(), pre, **_cookie_options())
