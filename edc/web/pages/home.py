"""The home page by role, and the error page every web answer uses."""

from __future__ import annotations

from flask import Response, make_response, render_template

from edc.security.permissions import AUTHENTICATED, requires
from edc.web import browser
from edc.web.blueprint import blp
from edc.web.hooks import page_globals
from edc.web.pages.account import notice
from edc.web.rendering import page


@blp.get("/")
@requires(AUTHENTICATED)
def home():
    actor = browser.current_actor()
    return page("web/home.html", notice=notice(), roles=sorted({g.role for g in actor.grants}))


def error_page(status: int, title: str, detail: str, errors) -> Response:
    """Any refused or failed web request, as a page (edc.errors calls this for the web's requests)."""
    context = {**page_globals(), "status": status, "title": title, "detail": detail, "errors": errors or []}
    return make_response(render_template("web/error.html", **context), status)
