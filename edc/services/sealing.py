"""Sealing of stored entry values: the items a form marks `identifying` or `encrypt` are kept as AES-256-GCM
envelopes ({"sealed": ...}) bound to their entry and item path (key rotation re-encrypts them: rotation.py).

It sits below the use cases: saving an entry seals, and everything that reads entry values (monitoring,
safety, data cuts, summaries, exports) unseals through this module, never through another use case.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from edc.ecrf import FormDef
from edc.models.entries import Entry
from edc.problems import Problem
from edc.security import crypto
from edc.services import keys

SEALED = "sealed"  # an encrypted item value: {"sealed": <AES-GCM envelope>}


class StoredValueUnreadable(Problem):
    """A ciphertext does not open where it is stored (moved, altered or its key is gone)."""

    status, title = 500, "Stored Value Unreadable"


def _paths(form: FormDef, values: dict[str, Any]):
    """Yield (container, key, field path) for every encrypted value present."""
    encrypted = form.encrypted_items
    if not encrypted:  # most forms: nothing to walk (exports open every entry through here)
        return
    for key in list(values):
        item = form.items.get(key)
        if key in encrypted and (item is None or item.group is None):
            yield values, key, key
        elif key in form.groups and isinstance(values[key], list):
            for index, row in enumerate(values[key]):
                for item_id in list(row):
                    if item_id in encrypted:
                        yield row, item_id, f"{key}/{index}/{item_id}"


def seal(session: Session, form: FormDef, entry_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    """Values as stored: encrypted items become envelopes bound to this entry and item."""
    stored = copy.deepcopy(values)
    ring = None  # read only for a value to encrypt: most forms have none
    for container, key, path in _paths(form, stored):
        if container[key] is not None:
            ring = ring or keys.ring_for_writing(session)
            container[key] = {SEALED: crypto.encrypt_value(ring, container[key], table="entries", record_id=str(entry_id), field=path)}
    return stored


class StoredDocument(NamedTuple):
    """What unseal() reads of an entry kept elsewhere than its row (an export read, a data-cut snapshot):
    the id its ciphertexts are bound to, and the stored document."""

    id: uuid.UUID
    data: dict[str, Any]


def unseal(session: Session, form: FormDef, entry: Entry | StoredDocument, *, in_place: bool = False) -> dict[str, Any]:
    """Stored values opened; a ciphertext moved from elsewhere fails cleanly, showing nothing.

    `in_place` opens the caller's own copy of the data (rows read for an export) instead of a deep copy."""
    values = entry.data if in_place else copy.deepcopy(entry.data)
    for container, key, path in _paths(form, values):
        sealed = container[key]
        if isinstance(sealed, dict) and set(sealed) == {SEALED}:
            ring = keys.ring_for_reading(session, crypto.envelope_key_id(sealed[SEALED]))
            try:
                container[key] = crypto.decrypt_value(ring, sealed[SEALED], table="entries", record_id=str(entry.id), field=path)
            except crypto.DecryptionError:
                raise StoredValueUnreadable(
                    "A stored value of this entry cannot be opened; it has been reported to the data manager.",
                    log_detail=f"entry {entry.id} item {path}: ciphertext integrity failure",
                ) from None
    return values
