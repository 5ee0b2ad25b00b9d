"""Re-encrypting stored values under the newest data key: resumable, changes no data, hash or version.

The new key is first recorded in the database as the one every node encrypts new values under (services/keys.py),
then passes re-encrypt what is stored under older keys until a pass finds none left: a node that wrote under
the old key while the first pass ran is caught by the next one, and the rotation says when none is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.models.audit import AuditValue
from edc.models.entries import Entry
from edc.models.idempotency import IdempotentRequest
from edc.models.monitoring import OutboxMessage
from edc.problems import Conflict
from edc.security import crypto
from edc.security.permissions import Actor
from edc.services import audit, idempotency, keys, outbox
from edc.services.sealing import SEALED

BATCH = 200
MAX_PASSES = 5  # a pass after the first finds only what nodes wrote under the old key while the one before ran


@dataclass
class RotationReport:
    key_id: int
    entry_values: int = 0
    audit_values: int = 0
    outbox_secrets: int = 0
    stored_answers: int = 0
    rows_saved_meanwhile: int = 0  # rows under an older key saved by a writer before a pass re-encrypted them
    passes: int = 0
    finished: bool = False  # the last pass found no value left under an older key

    @property
    def values(self) -> int:
        return self.entry_values + self.audit_values + self.outbox_secrets + self.stored_answers


def _resealed(ring, node: Any, entry_id: str, path: str, counter: list[int]) -> Any:
    """A copy of stored entry data with every envelope under an old key re-encrypted."""
    if isinstance(node, dict) and set(node) == {SEALED}:
        envelope = node[SEALED]
        if envelope.get("kid") == ring.current_data_key_id:
            return node
        value = crypto.decrypt_value(ring, envelope, table="entries", record_id=entry_id, field=path)
        counter[0] += 1
        return {SEALED: crypto.encrypt_value(ring, value, table="entries", record_id=entry_id, field=path)}
    if isinstance(node, dict):
        return {k: _resealed(ring, v, entry_id, f"{path}/{k}" if path else k, counter) for k, v in node.items()}
    if isinstance(node, list):
        return [_resealed(ring, v, entry_id, f"{path}/{i}", counter) for i, v in enumerate(node)]
    return node


def rotate_entries(session: Session, report: RotationReport, commit) -> None:
    ring = runtime.of(session).keyring
    last_id = None
    while True:
        stmt = sa.select(Entry.id, Entry.data, Entry.version).order_by(Entry.id).limit(BATCH)
        if last_id is not None:
            stmt = stmt.where(Entry.id > last_id)
        rows = session.execute(stmt).all()
        if not rows:
            return
        for entry_id, data, version in rows:
            counter = [0]
            resealed = _resealed(ring, data, str(entry_id), "", counter)
            if counter[0]:
                # One row at a time, guarded by its version, and without bumping it: re-encryption is
                # not a change of data, so ETags, signatures and locks stay valid. A row saved meanwhile is
                # left to the next pass.
                updated = session.execute(sa.update(Entry.__table__).where(
                    Entry.__table__.c.id == entry_id, Entry.__table__.c.version == version).values(data=resealed)).rowcount
                if updated:
                    report.entry_values += counter[0]
                else:
                    report.rows_saved_meanwhile += 1
        last_id = rows[-1][0]
        commit()


def rotate_audit_values(session: Session, report: RotationReport, commit) -> None:
    ring = runtime.of(session).keyring
    while True:
        rows = session.scalars(sa.select(AuditValue).where(AuditValue.key_id != ring.current_data_key_id)
                               .order_by(AuditValue.id).limit(BATCH)).all()
        if not rows:
            return
        for row in rows:
            field = f"{row.record_id}/{row.field}/{row.side}"
            value = crypto.decrypt_value(ring, row.envelope, table="audit_values", record_id=str(row.id), field=field)
            row.envelope = crypto.encrypt_value(ring, value, table="audit_values", record_id=str(row.id), field=field)
            row.key_id = row.envelope["kid"]
            report.audit_values += 1
        commit()


def rotate_outbox_secrets(session: Session, report: RotationReport) -> None:
    """The setup links of account mails not sent yet (a sent mail keeps no secret)."""
    ring = runtime.of(session).keyring
    rows = session.execute(sa.select(OutboxMessage.id, OutboxMessage.sealed_secret)
                           .where(OutboxMessage.sealed_secret.is_not(None), OutboxMessage.status == "pending")).all()
    for record_id, envelope in rows:
        if crypto.envelope_key_id(envelope) == ring.current_data_key_id:
            continue
        where = dict(table=OutboxMessage.__tablename__, record_id=str(record_id), field=outbox.SECRET_FIELD)
        resealed = crypto.encrypt_value(ring, crypto.decrypt_value(ring, envelope, **where), **where)
        # Guarded by the status: a mail the mailer sent meanwhile has dropped its secret and keeps it dropped.
        report.outbox_secrets += session.execute(sa.update(OutboxMessage).where(
            OutboxMessage.id == record_id, OutboxMessage.status == "pending").values(sealed_secret=resealed)).rowcount


def rotate_stored_answers(session: Session, report: RotationReport) -> None:
    """The answers kept for Idempotency-Key retries (24 hours at most)."""
    ring = runtime.of(session).keyring
    rows = session.execute(sa.select(IdempotentRequest.id, IdempotentRequest.response)
                           .where(IdempotentRequest.response.is_not(None))).all()
    for record_id, envelope in rows:
        if crypto.envelope_key_id(envelope) == ring.current_data_key_id:
            continue
        where = dict(table=IdempotentRequest.__tablename__, record_id=str(record_id), field=idempotency.RESPONSE_FIELD)
        resealed = crypto.encrypt_value(ring, crypto.decrypt_value(ring, envelope, **where), **where)
        report.stored_answers += session.execute(sa.update(IdempotentRequest).where(IdempotentRequest.id == record_id)
                                                 .values(response=resealed)).rowcount


def _rotation_pass(session: Session, report: RotationReport, commit) -> int:
    """Re-encrypt what is stored under an older key; return how many values (or rows saved meanwhile) it found."""
    before = report.values + report.rows_saved_meanwhile
    rotate_entries(session, report, commit)
    rotate_audit_values(session, report, commit)
    rotate_outbox_secrets(session, report)
    rotate_stored_answers(session, report)
    commit()
    report.passes += 1
    return report.values + report.rows_saved_meanwhile - before


def rotate(session: Session, actor: Actor, commit) -> RotationReport:
    """Make the newest data key current on every node, then re-encrypt every value under an older key in
    committed batches (safe to kill and rerun), pass after pass until one finds none left (`finished`)."""
    ring = runtime.of(session).keyring
    report = RotationReport(key_id=ring.current_data_key_id)
    recorded = keys.recorded_key_id(session)
    if recorded is not None and recorded > report.key_id:
        raise Conflict(f"The database names data key {recorded} as current but this key directory's newest is "
                       f"{report.key_id}: rotate with the key directory the nodes use.")
    keys.record_current_key(session, report.key_id)
    commit()
    while report.passes < MAX_PASSES and not report.finished:
        report.finished = _rotation_pass(session, report, commit) == 0
    audit.record(session, actor, "keys_rotated", entity_type="keyring", entity_id=str(report.key_id),
                 changes=[audit.change("data_key", None, report.key_id), audit.change("entry_values", None, report.entry_values),
                          audit.change("audit_values", None, report.audit_values),
                          audit.change("outbox_secrets", None, report.outbox_secrets),
                          audit.change("stored_answers", None, report.stored_answers),
                          audit.change("finished", None, report.finished)])
    commit()
    return report
