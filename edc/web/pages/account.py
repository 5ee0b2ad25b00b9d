"""Sign in, sign out, password change (first login too), the setup link's password form, and the language."""

from __future__ import annotations

from flask import g, redirect, request, url_for

from edc.extensions import db
from edc.problems import TooManyRequests, Unauthorized, UnprocessableContent
from edc.security.permissions import AUTHENTICATED, public, requires
from edc.services import auth
from edc.web import browser, i18n
from edc.web.blueprint import blp
from edc.web.i18n import translate as t
from edc.web.rendering import committed, page, refused

NOTICES = {  # ?notice= names one of these, so no URL can put text of its own on the page
    "signed_out": "You have signed out.",
    "password_set": "Your password is set; sign in with it.",
    "password_changed": "Your password was changed.",
}


def notice() -> str | None:
    key = request.args.get("notice")
    return t(NOTICES[key]) if key in NOTICES else None


def _field_errors(exc: UnprocessableContent) -> dict[str, str]:
    """A service's JSON Pointer errors by form field name (`/new_password` -> `new_password`)."""
    return {e["pointer"].lstrip("/"): e["detail"] for e in exc.errors or []}


@blp.route("/login", methods=["GET", "POST"])
@public
def login():
    next_path = browser.local_path(request.values.get("next"))
    if request.method == "GET":
        if g.actor is not None:
            return redirect(next_path)
        return page("web/login.html", next=next_path, notice=notice())
    username = request.form.get("username", "")
    try:
        pair = auth.login(db.session, username=username, password=request.form.get("password", ""),
                          client_address=request.remote_addr, request_id=g.request_id)
    except (Unauthorized, TooManyRequests) as exc:
        refused(exc)
        message = t("Too many failed logins; try again later.") if isinstance(exc, TooManyRequests) \
            else t("Invalid username or password.")
        response = page("web/login.html", exc.status, next=next_path, error=message, username=username)
        response.headers.update(exc.headers or {})
        return response
    destination = url_for("web.password") if pair.password_change_required else next_path
    return committed(browser.start_session(redirect(destination, 303), pair.refresh_token))


@blp.post("/logout")
@requires(AUTHENTICATED)
def logout():
    auth.logout(db.session, browser.current_actor())
    return committed(browser.end_session(redirect(url_for("web.login", notice="signed_out"), 303)))


@blp.route("/password", methods=["GET", "POST"])
@requires(AUTHENTICATED)
def password():
    actor = browser.current_actor()
    if request.method == "GET":
        return page("web/password.html", forced=actor.must_change_password)
    form = request.form
    if form.get("new_password", "") != form.get("confirm_password", ""):
        return page("web/password.html", 422, forced=actor.must_change_password,
                    errors={"confirm_password": t("The two new passwords differ.")})
    try:
        auth.change_password(db.session, actor, current_password=form.get("current_password", ""),
                             new_password=form.get("new_password", ""))
    except (UnprocessableContent, TooManyRequests) as exc:
        refused(exc)
        errors = _field_errors(exc) if isinstance(exc, UnprocessableContent) else {"current_password": exc.detail}
        return page("web/password.html", exc.status, forced=actor.must_change_password, errors=errors)
    return committed(redirect(url_for("web.home", notice="password_changed"), 303))


@blp.route("/setup", methods=["GET", "POST"])
@public
def setup():
    """The page the account mail points to: the one-time setup token and a first password."""
    if request.method == "GET":
        return page("web/setup.html")
    form = request.form
    if form.get("new_password", "") != form.get("confirm_password", ""):
        return page("web/setup.html", 422, errors={"confirm_password": t("The two new passwords differ.")})
    try:
        auth.redeem_setup_token(db.session, token=form.get("token", "").strip(), new_password=form.get("new_password", ""),
                                request_id=g.request_id, client_address=request.remote_addr)
    except (UnprocessableContent, Unauthorized) as exc:
        refused(exc)
        errors = _field_errors(exc) if isinstance(exc, UnprocessableContent) else {"token": exc.detail}
        return page("web/setup.html", exc.status, errors=errors)
    return committed(redirect(url_for("web.login", notice="password_set"), 303))


@blp.post("/language")
@public
def choose_language():
    """Remember the chosen language in a cookie (not a secret: it only picks the page's words)."""
    chosen = request.form.get("lang")
    response = redirect(browser.local_path(request.form.get("next")), 303)
    if chosen in i18n.LANGUAGES:
        response.set_cookie(i18n.LANGUAGE_COOKIE, chosen, max_age=365 * 86400, samesite="Lax", path="/",
                            secure=request.is_secure)
    return response

