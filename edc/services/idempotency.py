"""Idempotency keys (docs/api.md): a POST that creates something, retried with the same Idempotency-Key by
the same account, gets the answer of the first one instead of creating it twice (a site on an unstable link
cannot tell a lost answer from a lost request).

The key is claimed in a transaction of its own before the request runs, so a concurrent duplicate finds it
(409); the answer is stored in the request's own transaction, committed with its writes or not at all, so a
commit whose answer was lost is found by the retry. A request that fails frees its key.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edc import clock
from edc.models.base import new_id
from edc.models.idempotency import IdempotentRequest
from edc.problems import Conflict, UnprocessableContent, field_error
from edc.security.crypto import decrypt_value, encrypt_value, envelope_key_id
from edc.services import keys

RETENTION = timedelta(hours=24)
# A claim without an answer this old belongs to a request that died (gunicorn's timeout is 60 s): taken over.
STALE_CLAIM = timedelta(seconds=120)
HEADER_POINTER = "/headers/Idempotency-Key"
RESPONSE_FIELD = "response"  # the associated data of a stored answer: ("idempotent_requests", id, this)


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def request_hash(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def claim(session: Session, user_id: uuid.UUID, key: str, digest: str) -> Claim | Answer:
    """Claim `key` for this request (committed at once), or return the answer of the request that used it."""
    now = clock.utcnow()
    session.execute(sa.delete(IdempotentRequest).where(IdempotentRequest.created_at < now - RETENTION))
    row = session.scalar(sa.select(IdempotentRequest).where(IdempotentRequest.user_id == user_id, IdempotentRequest.key == key))
    if row is not None and row.request_hash != digest:
        raise UnprocessableContent("This Idempotency-Key was used for another request; use a new key for a new request.",
                                   errors=[field_error(HEADER_POINTER, "used within 24 h for a request with another "
                                                                       "method, path or body")])
    if row is not None and row.status is not None:
        return _answer(session, row)
    if row is not None and row.created_at > now - STALE_CLAIM:
        raise _in_progress()
    if row is None:
        row = IdempotentRequest(id=new_id(), user_id=user_id, key=key, request_hash=digest, created_at=now)
        session.add(row)
    row.created_at = now
    claim_id = row.id
    try:
        session.commit()
    except IntegrityError:  # a concurrent duplicate claimed it first
        session.rollback()
        raise _in_progress() from None
    return Claim(claim_id)


def record(session: Session, claim_id: uuid.UUID, answer: Answer) -> None:
    """Store the answer with the request's writes (the caller commits). Encrypted: it holds clinical values."""
    sealed = encrypt_value(keys.ring_for_writing(session), {"headers": answer.headers, "body": answer.body},
                           table=IdempotentRequest.__tablename__, record_id=str(claim_id), field=RESPONSE_FIELD)
    session.execute(sa.update(IdempotentRequest).where(IdempotentRequest.id == claim_id)
                    .values(status=answer.status, response=sealed))


def release(session: Session, claim_id: uuid.UUID) -> None:
    """Free the key of a request that wrote nothing, so a retry runs it again (the caller has rolled back)."""
    session.execute(sa.delete(IdempotentRequest).where(IdempotentRequest.id == claim_id,
                                                       IdempotentRequest.status.is_(None)))
    session.commit()


def _answer(session: Session, row: IdempotentRequest) -> Answer:
    stored = decrypt_value(keys.ring_for_reading(session, envelope_key_id(row.response)), row.response, table=IdempotentRequest.__tablename__,
                           record_id=str(row.id), field=RESPONSE_FIELD)
    return Answer(row.status, stored["headers"], stored["body"])


def _in_progress() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still in progress; retry shortly for its answer.",
                    headers={"Retry-After": "2"})
