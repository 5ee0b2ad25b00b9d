"""Investigator signatures (21 CFR 11.50, 11.70, 11.200): the site's principal investigator signs an entry or
a subject's casebook after entering username and password again; a keyed digest links the signature to
exactly the data signed, and any later change to that data invalidates it."""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.entries import Entry, Query
from edc.models.monitoring import Signature
from edc.models.subjects import Subject
from edc.models.users import User
from edc.problems import Conflict, Forbidden, NotFound, Unauthorized
from edc.security import crypto, usernames
from edc.security.permissions import Actor, require
from edc.services import audit, auth, keys, sdv, status_table
from edc.services.concurrency import lock_current
from edc.services.scope import get_subject
from edc.services.sealing import unseal

log = logging.getLogger("edc.signatures")

UNRESOLVED_QUERY_STATES = ("open", "answered")  # answered queries still wait for the monitor to close them
REAUTHENTICATE = "Signing needs your own username and password, entered again."


@dataclass
class SignatureView:
    signature: Signature
    digest_valid: bool | None  # None: the key it was made under cannot be loaded here, so it is not checked
    subject_number: str

    @property
    def status(self) -> str:
        return "valid" if self.signature.invalidated_at is None else "invalidated"

    @property
    def verification(self) -> str:
        """The digest check in words; a missing key is never reported as an invalid signature."""
        if self.digest_valid is None:
            return f"cannot be verified: key {self.signature.key_id} unavailable"
        return "verified" if self.digest_valid else "invalid: the data differ from what was signed"


def _study(session: Session):
    return runtime.of(session).study


# --- who may sign ----------------------------------------------------------------------------

def is_principal_investigator(actor: Actor, site_id: uuid.UUID) -> bool:
    """Whether the actor is the principal investigator of this site: the one who signs its entries and casebooks."""
    return any(g.role == "investigator" and g.principal_investigator and g.site_id == site_id for g in actor.grants)


def _require_principal_investigator(actor: Actor, site_id: uuid.UUID) -> None:
    if not is_principal_investigator(actor, site_id):
        raise Forbidden("Only the principal investigator of the subject's site signs.")


def _reauthenticate(session: Session, actor: Actor, username: str | None, password: str | None) -> None:
    """The signer's own username and password again; a wrong one counts toward the login throttle."""
    if not username or not password:
        raise Unauthorized(REAUTHENTICATE)
    attempt = auth.count_password_check(session, actor.username, actor.client_address)
    user = session.get(User, actor.user_id)
    valid = runtime.of(session).password_hasher.verify(user.password_hash if user else None, password)
    if not (valid and user is not None and user.status == "active" and usernames.normalize(username) == actor.username):
        raise Unauthorized(REAUTHENTICATE, after_rollback=[
            auth.failed_login_writes(actor.username, actor.client_address, actor.user_id, actor.request_id)])
    auth.password_check_passed(session, attempt)


# --- what is signed ----------------------------------------------------------------------------

def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _values(session: Session, entry: Entry) -> dict[str, Any]:
    return unseal(session, _study(session).form(entry.form_id, entry.form_version), entry)


def _entry_payload(session: Session, entry: Entry, *, signer: str, meaning: str, signed_at: datetime) -> dict[str, Any]:
    return {"entry": str(entry.id), "entry_version": entry.version, "values": _values(session, entry),
            "signer": signer, "meaning": meaning, "time": _time(signed_at)}


def _casebook_entries(session: Session, subject_id: uuid.UUID) -> list[Entry]:
    return list(session.scalars(sa.select(Entry).where(Entry.subject_id == subject_id).order_by(Entry.id)))


def _casebook_payload(session: Session, subject: Subject, entries: list[Entry], *, signer: str, meaning: str,
                      signed_at: datetime) -> dict[str, Any]:
    return {"subject": str(subject.id),
            "entries": [{"id": str(e.id), "version": e.version, "values": _values(session, e)}
                        for e in sorted(entries, key=lambda e: str(e.id))],
            "signer": signer, "meaning": meaning, "time": _time(signed_at)}


def _payload(session: Session, row: Signature) -> dict[str, Any]:
    """What the row claims was signed, rebuilt from the data as they stand now."""
    if row.entry_id is not None:
        entry = session.get(Entry, row.entry_id)
        return _entry_payload(session, entry, signer=row.signer_username, meaning=row.meaning, signed_at=row.signed_at)
    subject = session.get(Subject, row.subject_id)
    return _casebook_payload(session, subject, _casebook_entries(session, subject.id), signer=row.signer_username,
                             meaning=row.meaning, signed_at=row.signed_at)


def digest_valid(session: Session, row: Signature) -> bool | None:
    """Re-verify a signature's digest against the data it is attached to now; None when this node cannot load
    the data key it was made under (after rereading its key directory), which says nothing about the data."""
    ring = keys.ring_for_reading(session, row.key_id)
    if row.key_id not in ring.data_keys:
        log.error("signature %s: data key %s is not in this node's key ring", row.id, row.key_id)
        return None
    expected = crypto.signature_digest(ring, row.key_id, _payload(session, row))
    return hmac.compare_digest(expected, row.digest)


# --- signing -------------------------------------------------------------------------------------

def _check_signable(session: Session, entries: list[Entry], what: str) -> None:
    if not entries:
        raise Conflict(f"{what} has no entries to sign.")
    if any(e.status == "draft" for e in entries):
        raise Conflict(f"{what} has a draft entry; it must be complete before it is signed.")
    unresolved = session.scalar(sa.select(sa.func.count(Query.id)).where(
        Query.entry_id.in_([e.id for e in entries]), Query.state.in_(UNRESOLVED_QUERY_STATES)))
    if unresolved:
        raise Conflict(f"{what} has {unresolved} unresolved queries; they must be closed before signing.")


def _sign(session: Session, actor: Actor, subject: Subject, entry: Entry | None, meaning: str,
          payload: dict[str, Any], signed_at: datetime) -> Signature:
    ring = keys.ring_for_writing(session)
    key_id = ring.current_data_key_id
    row = Signature(subject_id=subject.id, site_id=subject.site_id, entry_id=entry.id if entry else None,
                    entry_version=entry.version if entry else None, signer_id=actor.user_id,
                    signer_username=actor.username, printed_name=actor.display_name, meaning=meaning,
                    signed_at=signed_at, digest=crypto.signature_digest(ring, key_id, payload), key_id=key_id)
    session.add(row)
    session.flush()
    audit.record(session, actor, "entry_signed" if entry else "casebook_signed",
                 entity_type="entry" if entry else "subject", entity_id=entry.id if entry else subject.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                 changes=[audit.change("signature", None, str(row.id)), audit.change("meaning", None, meaning),
                          audit.change("printed_name", None, row.printed_name),
                          *([audit.change("entry_version", None, entry.version)] if entry else [])])
    return row


def sign_entry(session: Session, actor: Actor, entry_id: uuid.UUID, *, username: str | None, password: str | None,
               meaning: str) -> SignatureView:
    """Sign one complete entry without unresolved queries, as the principal investigator of its site."""
    require(actor, "signatures:sign")
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope("signatures:sign")
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    subject = entry.subject
    _require_principal_investigator(actor, subject.site_id)
    _reauthenticate(session, actor, username, password)
    # Sign what the entry holds under its row lock: a save at the same moment either lands first (and is what
    # is signed) or waits, and then finds this signature to invalidate.
    lock_current(session, entry)
    _check_signable(session, [entry], "The entry")
    signed_at = clock.utcnow()
    payload = _entry_payload(session, entry, signer=actor.username, meaning=meaning, signed_at=signed_at)
    row = _sign(session, actor, subject, entry, meaning, payload, signed_at)
    status_table.refresh(session, subject, entry.event_key, entry.form_id)
    return SignatureView(row, True, subject.number)


def sign_casebook(session: Session, actor: Actor, number: str, *, username: str | None, password: str | None,
                  meaning: str) -> SignatureView:
    """Sign a subject's whole casebook (every entry, each complete and without unresolved queries)."""
    subject = get_subject(session, actor, number, "signatures:sign")
    _require_principal_investigator(actor, subject.site_id)
    _reauthenticate(session, actor, username, password)
    entries = _casebook_entries(session, subject.id)
    _check_signable(session, entries, "The casebook")
    signed_at = clock.utcnow()
    payload = _casebook_payload(session, subject, entries, signer=actor.username, meaning=meaning, signed_at=signed_at)
    row = _sign(session, actor, subject, None, meaning, payload, signed_at)
    _refresh_subject(session, subject)
    return SignatureView(row, True, subject.number)


def _refresh_subject(session: Session, subject: Subject) -> None:
    cells = session.execute(sa.select(Entry.event_key, Entry.form_id).where(Entry.subject_id == subject.id).distinct()).all()
    for event_key, form_id in cells:
        status_table.refresh(session, subject, event_key, form_id)


# --- reading -------------------------------------------------------------------------------------

def _views(session: Session, rows, number: str) -> list[SignatureView]:
    return [SignatureView(row, digest_valid(session, row), number) for row in rows]


def entry_signatures(session: Session, actor: Actor, entry_id: uuid.UUID) -> list[SignatureView]:
    """The signatures of an entry, and of casebooks that include it, each re-verified against the entry now."""
    require(actor, "signatures:read")
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope("signatures:read")
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    rows = session.scalars(sa.select(Signature).where(
        sa.or_(Signature.entry_id == entry.id,
               sa.and_(Signature.subject_id == entry.subject_id, Signature.entry_id.is_(None))))
        .order_by(Signature.signed_at, Signature.id))
    return _views(session, rows, entry.subject.number)


def subject_signatures(session: Session, actor: Actor, number: str) -> list[SignatureView]:
    """Every signature of a subject (casebook and single entries), each re-verified."""
    subject = get_subject(session, actor, number, "signatures:read")
    rows = session.scalars(sa.select(Signature).where(Signature.subject_id == subject.id)
                           .order_by(Signature.signed_at, Signature.id))
    return _views(session, rows, subject.number)


# --- after a change to saved data ------------------------------------------------------------------

def invalidate_for_change(session: Session, actor: Actor, entry: Entry, change_id: uuid.UUID) -> list[Signature]:
    """Invalidate the valid signatures over an entry that changed (its own, and its subject's casebook), audited."""
    subject = entry.subject
    rows = list(session.scalars(sa.select(Signature).where(
        Signature.invalidated_at.is_(None),
        sa.or_(Signature.entry_id == entry.id, sa.and_(Signature.subject_id == subject.id, Signature.entry_id.is_(None))))))
    now = clock.utcnow()
    for row in rows:
        row.invalidated_at, row.invalidated_by_change = now, change_id
        audit.record(session, actor, "signature_invalidated", entity_type="entry" if row.entry_id else "subject",
                     entity_id=row.entry_id or subject.id, chain=audit.subject_chain(subject.id),
                     site_code=subject.site.code, reason=f"data changed (audit record {change_id})",
                     changes=[audit.change("signature", str(row.id), None)])
    if any(row.entry_id is None for row in rows):
        session.flush()
        _refresh_subject(session, subject)  # a casebook signature counts in every cell of the subject
    return rows


def after_entry_change(session: Session, actor: Actor, entry: Entry, change_id: uuid.UUID,
                       changes: list[dict[str, Any]]) -> None:
    """What a saved change to an entry (or a new entry) undoes: the SDV marks of changed items and the
    signatures over the data. The entry's own form-status cell is refreshed by the save."""
    sdv.clear_changed(session, actor, entry, change_id, changes)
    invalidate_for_change(session, actor, entry, change_id)


def after_entry_created(session: Session, actor: Actor, entry: Entry, change_id: uuid.UUID, *,
                        casebook_signed: bool | None) -> None:
    """after_entry_change for a new entry: it has no SDV marks and no signature of its own yet, so only a valid
    casebook signature of its subject can be invalidated. `casebook_signed` False: the caller knows, as things
    stand under the subject's chain lock, that there is none (no read); None: not known (read as for a change)."""
    if casebook_signed is not False:
        invalidate_for_change(session, actor, entry, change_id)
