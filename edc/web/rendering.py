"""Building pages: a template rendered with the page globals, and the commit that follows a page's writes."""

from __future__ import annotations

from flask import Response, make_response, render_template

from edc.errors import settle_problem
from edc.extensions import db
from edc.problems import Problem


def page(template: str, status: int = 200, **context) -> Response:
    """A whole page (or an htmx fragment) as a response, rendered now: nothing in it reads the database later."""
    return make_response(render_template(template, **context), status)


def committed(response: Response) -> Response:
    """Commit the request's writes once its answer is built, as the API does (edc/api/transaction.py): a commit
    whose connection dies afterwards still answers what was stored."""
    db.session.commit()
    return response


def refused(exc: Problem) -> None:
    """A service refused the request and the page will show why: undo its writes, keep the security events the
    problem carries (a failed password check's audit record), exactly as the API's error handler does."""
    settle_problem(exc)
