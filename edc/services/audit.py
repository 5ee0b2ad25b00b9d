"""Writing, verifying and anchoring the hash-chained audit trail."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.entries import Entry
from edc.models.audit import SECURITY_CHAIN, AuditChainHead, AuditRecord, AuditValue
from edc.problems import NotFound
from edc.security import crypto
from edc.security.permissions import Actor, require
from edc.services.scope import get_subject

GENESIS = "0" * 64
VALUE_REF = "sealed"  # a change side stored encrypted in audit_values: {"sealed": "<audit value id>"}


def subject_chain(subject_id: uuid.UUID | str) -> str:
    return f"subject:{subject_id}"


def change(field: str, old: Any, new: Any) -> dict[str, Any]:
    """One changed field of an audit record."""
    return {"field": field, "old": old, "new": new}


def lock_chain(session: Session, chain: str) -> None:
    """Wait for, then hold until commit, the lock every write to this chain takes (a subject's writes)."""
    _lock_head(session, chain)


_LOCKED_HEAD = (sa.select(AuditChainHead).where(AuditChainHead.chain == sa.bindparam("chain")).with_for_update()
                .execution_options(populate_existing=True))


def _lock_head(session: Session, chain: str) -> AuditChainHead:
    """Create the chain head if needed, then lock it (FOR UPDATE; SQLite is already in BEGIN IMMEDIATE)."""
    head = session.scalars(_LOCKED_HEAD, {"chain": chain}).one_or_none()
    if head is not None:  # the usual case: one statement
        return head
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(AuditChainHead).values(chain=chain, seq=0, hash=GENESIS).on_conflict_do_nothing(index_elements=["chain"])
    )
    return session.scalars(_LOCKED_HEAD, {"chain": chain}).one()


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {VALUE_REF}


def _plain_changes(session: Session, ring, record_id: uuid.UUID, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes with encrypted values opened, for hashing and for authorised readers."""
    refs = [c[side][VALUE_REF] for c in changes for side in ("old", "new") if _is_ref(c.get(side))]
    sealed = {}
    if refs:
        sealed = {str(v.id): v for v in session.scalars(sa.select(AuditValue).where(AuditValue.record_id == record_id))}
    out = []
    for item in changes:
        opened = dict(item)
        for side in ("old", "new"):
            if _is_ref(item.get(side)):
                value = sealed.get(item[side][VALUE_REF])
                if value is None or value.field != item["field"] or value.side != side:
                    raise crypto.DecryptionError(f"encrypted audit value of {item['field']} is missing")
                opened[side] = crypto.decrypt_value(ring, value.envelope, table="audit_values", record_id=str(value.id),
                                                    field=f"{record_id}/{value.field}/{side}")
        out.append(opened)
    return out


def _record_hash(ring, record: AuditRecord, plain_changes: list[dict[str, Any]]) -> str:
    doc = {
        "id": str(record.id),
        "chain": record.chain,
        "seq": record.seq,
        "prev_hash": record.prev_hash,
        "occurred_at": record.occurred_at.isoformat(),
        "actor_id": str(record.actor_id) if record.actor_id else None,
        "actor_username": record.actor_username,
        "actor_name": record.actor_name,
        "actor_role": record.actor_role,
        "site_code": record.site_code,
        "action": record.action,
        "entity_type": record.entity_type,
        "entity_id": record.entity_id,
        "reason": record.reason,
        "request_id": record.request_id,
        "client_address": record.client_address,
        # Keyed digests of plaintext, so re-encryption under a new key changes no hash.
        "changes": [
            {"field": c["field"], "old": crypto.value_digest(ring, c.get("old")), "new": crypto.value_digest(ring, c.get("new"))}
            for c in plain_changes
        ],
    }
    return hashlib.sha256(crypto.canonical_json(doc)).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    entity_type: str,
    entity_id: str | uuid.UUID | None,
    changes: list[dict[str, Any]] | None = None,
    chain: str = SECURITY_CHAIN,
    site_code: str | None = None,
    reason: str | None = None,
    encrypted_fields: frozenset[str] = frozenset(),
) -> AuditRecord:
    """Append one audit record to a chain in the caller's transaction."""
    ring = runtime.of(session).keyring
    head = _lock_head(session, chain)
    record_id = uuid.uuid4()
    plain = [dict(c) for c in changes or []]
    stored, sealed = [], []
    for item in plain:
        kept = dict(item)
        if item["field"] in encrypted_fields:
            for side in ("old", "new"):
                if item.get(side) is None:
                    continue
                value_id = uuid.uuid4()
                envelope = crypto.encrypt_value(ring, item[side], table="audit_values", record_id=str(value_id),
                                                field=f"{record_id}/{item['field']}/{side}")
                sealed.append(AuditValue(id=value_id, record_id=record_id, field=item["field"], side=side,
                                         envelope=envelope, key_id=envelope["kid"]))
                kept[side] = {VALUE_REF: str(value_id)}
        stored.append(kept)
    row = AuditRecord(
        id=record_id,
        chain=chain,
        seq=head.seq + 1,
        occurred_at=clock.utcnow(),
        actor_id=actor.user_id,
        actor_username=actor.username,
        actor_name=actor.display_name,
        actor_role=actor.primary_role,
        site_code=site_code,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        reason=reason,
        request_id=actor.request_id,
        client_address=actor.client_address,
        changes=stored,
        prev_hash=head.hash,
        hash="",
    )
    row.hash = _record_hash(ring, row, plain)
    session.add(row)
    session.flush()
    session.add_all(sealed)
    head.seq, head.hash = row.seq, row.hash
    session.flush()
    return row


@dataclass(frozen=True)
class ChainReport:
    chain: str
    records: int
    ok: bool
    first_broken_id: str | None = None
    problem: str | None = None


def _records(session: Session, chain: str) -> Iterator[AuditRecord]:
    """Stream a chain in order (a server-side cursor on PostgreSQL, closed even on early exit)."""
    stmt = sa.select(AuditRecord).where(AuditRecord.chain == chain).order_by(AuditRecord.seq).execution_options(yield_per=500)
    result = session.scalars(stmt)
    try:
        yield from result
    finally:
        result.close()


def verify_chain(session: Session, chain: str) -> ChainReport:
    """Walk a chain from its first record; name the first record that breaks it."""
    with contextlib.closing(_records(session, chain)) as rows:
        return _walk(session, chain, rows)


def _walk(session: Session, chain: str, rows: Iterator[AuditRecord]) -> ChainReport:
    ring = runtime.of(session).keyring
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for row in rows:
        count += 1
        try:
            computed = _record_hash(ring, row, _plain_changes(session, ring, row.id, row.changes))
        except crypto.DecryptionError:
            return ChainReport(chain, count, False, str(row.id), "an encrypted value cannot be opened")
        if row.seq != expected_seq:
            return ChainReport(chain, count, False, str(row.id), f"sequence {row.seq} where {expected_seq} was expected (a record is missing)")
        if row.prev_hash != prev_hash:
            return ChainReport(chain, count, False, str(row.id), "does not follow the previous record")
        if computed != row.hash:
            return ChainReport(chain, count, False, str(row.id), "content does not match its hash (modified)")
        prev_hash, expected_seq = row.hash, expected_seq + 1
    head = session.get(AuditChainHead, chain)
    if head is not None and (head.seq, head.hash) != (expected_seq - 1, prev_hash):
        return ChainReport(chain, count, False, None, f"chain head is at {head.seq} but records end at {expected_seq - 1} (records removed from the end)")
    return ChainReport(chain, count, True)


def chains(session: Session) -> list[str]:
    heads = set(session.scalars(sa.select(AuditChainHead.chain)))
    records = set(session.scalars(sa.select(AuditRecord.chain).distinct()))
    return sorted(heads | records)


def verify_all(session: Session) -> list[ChainReport]:
    return [verify_chain(session, chain) for chain in chains(session)]


def anchor(session: Session) -> dict[str, Any]:
    """A digest of every chain head, signed with the current token-signing key (ES256 JWS)."""
    rt = runtime.of(session)
    heads = {h.chain: {"seq": h.seq, "hash": h.hash} for h in session.scalars(sa.select(AuditChainHead).order_by(AuditChainHead.chain))}
    digest = hashlib.sha256(crypto.canonical_json(heads)).hexdigest()
    claims = {
        "iss": rt.settings["jwt_issuer"],
        "iat": int(clock.utcnow().timestamp()),
        "chains": len(heads),
        "heads_sha256": digest,
    }
    key = rt.current_signing_key
    signed = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"typ": "edc-audit-anchor+jwt", "kid": key.kid})
    return {"anchored_at": clock.utcnow().isoformat(), "chains": len(heads), "heads_sha256": digest, "kid": key.kid, "jws": signed}


def history(session: Session, *, entity_type: str | None = None, entity_id: str | None = None, chain: str | None = None,
            limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Audit records as dicts with encrypted values opened, newest last."""
    ring = runtime.of(session).keyring
    stmt = sa.select(AuditRecord).order_by(AuditRecord.chain, AuditRecord.seq)
    if entity_type:
        stmt = stmt.where(AuditRecord.entity_type == entity_type)
    if entity_id:
        stmt = stmt.where(AuditRecord.entity_id == str(entity_id))
    if chain:
        stmt = stmt.where(AuditRecord.chain == chain)
    rows = session.scalars(stmt.limit(limit).offset(offset))
    return [_as_dict(session, ring, row) for row in rows]


def security_history(session: Session, actor: Actor, *, entity_type: str | None = None, entity_id: str | None = None,
                     limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The security and administration chain, for auditors."""
    require(actor, "audit:read")
    return history(session, chain=SECURITY_CHAIN, entity_type=entity_type, entity_id=entity_id, limit=limit, offset=offset)


def subject_history(session: Session, actor: Actor, number: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """A subject's chain (enrolment, entries, queries), within the caller's sites."""
    subject = get_subject(session, actor, number, "clinical_audit:read")
    return history(session, chain=subject_chain(subject.id), limit=limit, offset=offset)


def entry_history(session: Session, actor: Actor, entry_id: uuid.UUID) -> list[dict[str, Any]]:
    """An entry's creation and changes, within the caller's sites."""
    require(actor, "clinical_audit:read")
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope("clinical_audit:read")
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    return history(session, chain=subject_chain(entry.subject_id), entity_type="entry", entity_id=str(entry.id), limit=10_000)


def _as_dict(session: Session, ring, row: AuditRecord) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "chain": row.chain,
        "seq": row.seq,
        "occurred_at": row.occurred_at,
        "actor": row.actor_username,
        "actor_name": row.actor_name,
        "role": row.actor_role,
        "site": row.site_code,
        "action": row.action,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "reason": row.reason,
        "request_id": row.request_id,
        "changes": json.loads(json.dumps(_plain_changes(session, ring, row.id, row.changes), default=str)),
    }
