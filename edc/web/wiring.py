"""Attaching the web application to the Flask app (called by edc.create_app)."""

from __future__ import annotations

from flask import Flask

from edc.errors import WEB_ERROR_PAGE
from edc.web import hooks, pages
from edc.web.blueprint import blp
from edc.web.pages.home import error_page


def register(app: Flask) -> None:
    assert hooks and pages  # importing them attached the hooks and views to the blueprint, once per process
    app.register_blueprint(blp)
    app.extensions[WEB_ERROR_PAGE] = error_page
