"""The Idempotency-Key header on the POST routes that create things (edc.services.idempotency, docs/api.md).

@idempotent goes between @requires and @blp.arguments: a retry is answered before its body is parsed, and the
view's answer is stored by edc.api.transaction.commit, in the transaction that commits its writes.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from typing import Any

from flask import Response, g, request

from edc.api.common import current_actor
from edc.errors import roll_back_quietly
from edc.extensions import db
from edc.problems import UnprocessableContent, field_error
from edc.services import idempotency

log = logging.getLogger("edc.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
CLAIM = "edc_idempotency_claim"
KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII: a UUID is the usual choice
KEPT_HEADERS = ("Content-Type", "Location", "ETag", "Content-Location")
PARAMETER = {"in": "header", "name": HEADER, "required": False, "schema": {"type": "string", "maxLength": 255},
             "description": "Any unique string (a UUID) per new request: a retry with the same key and body within 24 h "
                            "gets the first answer again (header Idempotent-Replayed: true) instead of a second write."}


def idempotent(view):
    @functools.wraps(view)
    def run_once(*args: Any, **kwargs: Any):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        outcome = idempotency.claim(db.session, current_actor().user_id, _checked(key), _request_hash())
        if isinstance(outcome, idempotency.Answer):
            return _replayed(outcome)
        setattr(g, CLAIM, outcome.id)
        try:
            response = view(*args, **kwargs)
        except BaseException:
            _release()
            raise
        if g.get(CLAIM) is not None:  # answered without committing anything: nothing to replay
            _release()
        return response

    run_once._apidoc = copy.deepcopy(getattr(run_once, "_apidoc", {}))  # type: ignore[attr-defined]
    run_once._apidoc.setdefault("manual_doc", {}).setdefault("parameters", []).append(PARAMETER)  # type: ignore[attr-defined]
    return run_once


def store_answer(response: Response) -> None:
    """Keep the answer under the request's key (called just before the commit of its writes)."""
    claim_id = g.pop(CLAIM, None)
    if claim_id is None:
        return
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    idempotency.record(db.session, claim_id, idempotency.Answer(response.status_code, headers,
                                                                response.get_data(as_text=True)))


def _checked(key: str) -> str:
    if not KEY.fullmatch(key):
        raise UnprocessableContent(errors=[field_error(idempotency.HEADER_POINTER,
                                                       "1 to 255 visible ASCII characters (a UUID, say)")])
    return key


def _request_hash() -> str:
    return idempotency.request_hash(request.method, request.path, request.query_string, request.get_data(cache=True))


def _replayed(answer: idempotency.Answer) -> Response:
    response = Response(answer.body, status=answer.status, headers=answer.headers)
    response.headers[REPLAYED] = "true"
    return response


def _release() -> None:
    claim_id = g.pop(CLAIM, None)
    if claim_id is None:
        return
    roll_back_quietly()
    try:
        idempotency.release(db.session, claim_id)
    except Exception as exc:  # the database is gone: the claim goes stale and is taken over later
        roll_back_quietly()
        log.error("idempotency key not released", extra={"fields": {"event": "idempotency_release_failed",
                                                                    "error": type(exc).__name__}})
