"""Writing, verifying and anchoring the hash-chained audit trail."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.entries import Entry
from edc.models.audit import SECURITY_CHAIN, AuditChainHead, AuditRecord, AuditValue
from edc.models.subjects import Subject
from edc.problems import NotFound
from edc.security import crypto
from edc.security.keyring import SigningKey
from edc.security.permissions import Actor, require
from edc.services import identifying, keys
from edc.services.scope import get_subject

GENESIS = "0" * 64
VALUE_REF = "sealed"  # a change side stored encrypted in audit_values: {"sealed": "<audit value id>"}


SUBJECT_CHAIN_PREFIX = "subject:"


def subject_chain(subject_id: uuid.UUID | str) -> str:
    return f"{SUBJECT_CHAIN_PREFIX}{subject_id}"


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
                holding = keys.ring_for_reading(session, crypto.envelope_key_id(value.envelope))
                opened[side] = crypto.decrypt_value(holding, value.envelope, table="audit_values", record_id=str(value.id),
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
    sealing_ring = keys.ring_for_writing(session) if any(c["field"] in encrypted_fields for c in plain) else None
    stored, sealed = [], []
    for item in plain:
        kept = dict(item)
        if item["field"] in encrypted_fields:
            for side in ("old", "new"):
                if item.get(side) is None:
                    continue
                value_id = uuid.uuid4()
                envelope = crypto.encrypt_value(sealing_ring, item[side], table="audit_values", record_id=str(value_id),
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
    where: str | None = None  # where a problem that is not one record's shows: "chain head", "anchored seq 7", "subjects table"

    def failed(self, problem: str, where: str) -> ChainReport:
        """This chain reported broken, unless it already is (the first problem found is the one named)."""
        return self if not self.ok else ChainReport(self.chain, self.records, False, None, problem, where)


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
        return ChainReport(chain, count, False, None, f"chain head is at {head.seq} but records end at {expected_seq - 1} (records removed from the end)",
                           "chain head")
    return ChainReport(chain, count, True)


def chains(session: Session) -> list[str]:
    heads = set(session.scalars(sa.select(AuditChainHead.chain)))
    records = set(session.scalars(sa.select(AuditRecord.chain).distinct()))
    return sorted(heads | records)


def verify_all(session: Session, anchor: dict[str, Any] | None = None) -> list[ChainReport]:
    """Verify every chain, that every subject has its chain and every subject chain its subject, and,
    given an anchor, that no anchored chain lost or changed a record it held then (one report per chain)."""
    reports = {chain: verify_chain(session, chain) for chain in chains(session)}
    _check_subjects(session, reports)
    if anchor is not None:
        _check_anchor(session, reports, anchor)
    return [reports[chain] for chain in sorted(reports)]


def _check_subjects(session: Session, reports: dict[str, ChainReport]) -> None:
    """Enrolment writes a subject's first audit record, so each subject row has a chain and each subject chain a row."""
    numbers = {subject_chain(subject_id): number for subject_id, number in session.execute(sa.select(Subject.id, Subject.number))}
    for chain, number in numbers.items():
        report = reports.get(chain, ChainReport(chain, 0, True))
        if report.records == 0:  # no chain at all, or a head moved back to the start
            reports[chain] = report.failed(f"subject {number} has no audit records (its chain was deleted)", "subjects table")
    for chain, report in reports.items():
        if chain.startswith(SUBJECT_CHAIN_PREFIX) and chain not in numbers:
            reports[chain] = report.failed("no subject row has this id (the subject was deleted)", "subjects table")


def _check_anchor(session: Session, reports: dict[str, ChainReport], anchor: dict[str, Any]) -> None:
    """A chain may have grown since the anchor; it may not be shorter, differ at the anchored record, or be gone."""
    for chain, head in read_anchor(anchor).items():
        seq, anchored_hash = head["seq"], head["hash"]
        report = reports.get(chain)
        if report is None:
            reports[chain] = ChainReport(chain, 0, False, None,
                                         f"anchored at seq {seq} but has no records and no chain head (the whole chain was deleted)",
                                         f"anchored seq {seq}")
        elif report.ok and report.records < seq:
            reports[chain] = report.failed(f"records end at seq {report.records} but the anchor holds seq {seq} "
                                           "(records removed from the end, the chain head moved back)", f"anchored seq {seq}")
        elif report.ok and seq > 0:
            stored = session.scalar(sa.select(AuditRecord.hash).where(AuditRecord.chain == chain, AuditRecord.seq == seq))
            if stored != anchored_hash:
                reports[chain] = report.failed(f"the record at seq {seq} is not the one anchored (its hash differs: the chain "
                                               "was rewritten)", f"anchored seq {seq}")


ANCHOR_FORMAT = "edc-audit-anchor/1"
ANCHOR_JOSE_TYPE = "edc-audit-anchor+jws"


def anchor(session: Session) -> dict[str, Any]:
    """Every chain's last seq and hash, to keep outside the database and verify against later, signed.

    Deterministic: the same chain heads and generation time give the same document, signature included
    (RFC 6979 ECDSA). The signature is a compact ES256 JWS over the RFC 8785 form of the rest of the
    document, by the current token-signing key: any JOSE library checks it with /.well-known/jwks.json."""
    rt = runtime.of(session)
    heads = session.execute(sa.select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.hash).order_by(AuditChainHead.chain))
    chain_heads = {chain: {"seq": seq, "hash": head_hash} for chain, seq, head_hash in heads}
    doc = {
        "format": ANCHOR_FORMAT,
        "generated_at": clock.utcnow().isoformat(),
        "issuer": rt.settings["jwt_issuer"],
        "chain_count": len(chain_heads),
        "chains": chain_heads,
    }
    return {**doc, "signature": _sign(rt.current_signing_key, crypto.canonical_json(doc))}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(key: SigningKey, payload: bytes) -> str:
    header = _b64(crypto.canonical_json({"alg": "ES256", "kid": key.kid, "typ": ANCHOR_JOSE_TYPE}))
    signing_input = f"{header}.{_b64(payload)}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class AnchorError(ValueError):
    """The document is not an audit anchor this version can read, or not the one this server signed."""


def read_anchor(doc: Any) -> dict[str, dict[str, Any]]:
    """The chains of an anchor document, checked: {chain: {"seq": int, "hash": 64 hex digits}}."""
    if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"not an audit anchor (format must be {ANCHOR_FORMAT!r})")
    if not isinstance(doc.get("generated_at"), str):
        raise AnchorError("the anchor has no generated_at time")
    heads = doc.get("chains")
    if not isinstance(heads, dict) or doc.get("chain_count") != len(heads):
        raise AnchorError("the anchor's chains do not match its chain_count")
    for chain, head in heads.items():
        if (not isinstance(head, dict) or set(head) != {"seq", "hash"} or type(head["seq"]) is not int or head["seq"] < 0
                or not isinstance(head["hash"], str) or not re.fullmatch(r"[0-9a-f]{64}", head["hash"])):
            raise AnchorError(f"chain {chain!r}: expected {{\"seq\": <int>, \"hash\": <64 hex digits>}}")
    return heads


def check_anchor_signature(session: Session, doc: dict[str, Any]) -> str:
    """Raise AnchorError unless the anchor is signed and, when this server still holds the key, unaltered.

    An anchor signed with a key since retired cannot be checked here (its JWKS of the time can); the
    returned note says which case it was."""
    token = doc.get("signature")
    if not isinstance(token, str):
        raise AnchorError("the anchor is not signed")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        raise AnchorError("the anchor's signature is not a JWS") from None
    key = runtime.of(session).signing_key(kid)
    if key is None:
        return f"signature not checked: key {kid} is no longer held here (check it with the JWKS of the time)"
    try:
        payload = jwt.PyJWS().decode(token, key.public_key, algorithms=["ES256"])
    except jwt.InvalidTokenError:
        raise AnchorError(f"the anchor's signature does not verify with key {kid}") from None
    if payload != crypto.canonical_json({name: value for name, value in doc.items() if name != "signature"}):
        raise AnchorError("the anchor was altered after it was signed")
    return f"signature by key {kid} verified"


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
    """A subject's chain (enrolment, entries, queries), within the caller's sites; identifying items' values
    withheld unless the caller may see them."""
    subject = get_subject(session, actor, number, "clinical_audit:read")
    records = history(session, chain=subject_chain(subject.id), limit=limit, offset=offset)
    study = runtime.of(session).study
    forms = {str(entry_id): form_id for entry_id, form_id in
             session.execute(sa.select(Entry.id, Entry.form_id).where(Entry.subject_id == subject.id))}
    hidden = {form_id: identifying.hidden_from(study, actor, form_id, subject.site_id) for form_id in set(forms.values())}
    for record in records:
        if record["entity_type"] == "entry" and record["entity_id"] in forms:
            record["changes"] = identifying.withhold_changes(record["changes"], hidden[forms[record["entity_id"]]])
    return records


def entry_history(session: Session, actor: Actor, entry_id: uuid.UUID) -> list[dict[str, Any]]:
    """An entry's creation and changes, within the caller's sites; identifying items' values withheld unless
    the caller may see them."""
    require(actor, "clinical_audit:read")
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope("clinical_audit:read")
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    records = history(session, chain=subject_chain(entry.subject_id), entity_type="entry", entity_id=str(entry.id), limit=10_000)
    hidden = identifying.hidden_from(runtime.of(session).study, actor, entry.form_id, entry.subject.site_id)
    return [{**record, "changes": identifying.withhold_changes(record["changes"], hidden)} for record in records]


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
