"""The request's one commit, made after its answer is built.

Committing expires every loaded row, so an answer serialised after the commit reads the database
again: if the connection dies right after the commit, a write that is stored would be answered as a
failure, and a client that retries would write it twice. A route that writes therefore calls
commit_with_answer() and returns its result as usual: edc's Blueprint serialises the answer first
and commits after (answered()). A route that builds its own Response returns commit(response).
"""

from __future__ import annotations

from flask import Response, g

from edc.api.idempotency import store_answer
from edc.extensions import db

PENDING = "edc_commit_pending"


def commit_with_answer() -> None:
    """Commit this request's writes once its answer is built (the answer needs no read after the commit)."""
    setattr(g, PENDING, True)


def commit(response: Response) -> Response:
    """Commit the request's transaction, with the answer under its Idempotency-Key if it has one; the
    response is already built and stands as it is."""
    g.pop(PENDING, None)
    store_answer(response)
    db.session.commit()
    return response


def answered(response: Response) -> Response:
    """Called with each built answer of a Blueprint view: commit if the view asked for it."""
    return commit(response) if g.get(PENDING) else response
