"""The `web` blueprint: every page's view attaches to it (edc/web/pages/), its hooks in edc/web/hooks.py."""

from flask import Blueprint

blp = Blueprint("web", __name__, template_folder="templates")
