"""Re-encrypting stored values under the newest data key: resumable, changes no data, hash or version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.models.audit import AuditValue
from edc.models.entries import Entry
from edc.security import crypto
from edc.security.permissions import Actor
from edc.services import audit
from edc.services.sealing import SEALED

BATCH = 200


@dataclass
class RotationReport:
    key_id: int
    entry_values: int = 0
    audit_values: int = 0


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
                # not a change of data, so ETags, signatures and locks stay valid.
                session.execute(sa.update(Entry.__table__).where(Entry.__table__.c.id == entry_id,
                                                                 Entry.__table__.c.version == version).values(data=resealed))
                report.entry_values += counter[0]
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


def rotate(session: Session, actor: Actor, commit) -> RotationReport:
    """Re-encrypt every value under an older key, committing in batches (safe to kill and rerun)."""
    ring = runtime.of(session).keyring
    report = RotationReport(key_id=ring.current_data_key_id)
    rotate_entries(session, report, commit)
    rotate_audit_values(session, report, commit)
    audit.record(session, actor, "keys_rotated", entity_type="keyring", entity_id=str(report.key_id),
                 changes=[audit.change("data_key", None, report.key_id), audit.change("entry_values", None, report.entry_values),
                          audit.change("audit_values", None, report.audit_values)])
    commit()
    return report
