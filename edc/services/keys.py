"""The data key ring as use cases see it, the same on every node.

Which data key encrypts new values is recorded in the database (`flask edc keys rotate` writes it), not
taken from each node's own copy of the key directory: a node whose copy lacks that key rereads it before it
writes, and refuses the write (503) while the key has not reached it, rather than encrypt under an older
key. A stored value names its key; a node that does not hold it rereads its keys (rate-limited) first.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.keys import KEY_STATE_ROW, DataKeyState
from edc.problems import ServiceUnavailable
from edc.security.keyring import Keyring


class KeyRingBehind(ServiceUnavailable):
    """This node's key directory has not yet received the data key the database names as current."""


def recorded_key_id(session: Session) -> int | None:
    """The data key new values are encrypted under, as recorded; None before the first rotation."""
    return session.scalar(sa.select(DataKeyState.current_key_id).where(DataKeyState.id == KEY_STATE_ROW))


def record_current_key(session: Session, key_id: int) -> None:
    """Make data key `key_id` the one every node encrypts new values under (in the caller's transaction)."""
    row = session.get(DataKeyState, KEY_STATE_ROW)
    if row is None:
        session.add(DataKeyState(id=KEY_STATE_ROW, current_key_id=key_id, recorded_at=clock.utcnow()))
    else:
        row.current_key_id, row.recorded_at = key_id, clock.utcnow()
    session.flush()


def ring_for_writing(session: Session) -> Keyring:
    """The ring, encrypting under the recorded data key (reread first when this node does not hold it)."""
    rt = runtime.of(session)
    key_id = recorded_key_id(session)
    if key_id is None:
        return rt.keyring
    ring = rt.ring_holding(key_id)
    if key_id not in ring.data_keys:
        raise KeyRingBehind("This server's key ring is being updated; try again in a moment.",
                            headers={"Retry-After": "1"},
                            log_detail=f"data key {key_id} is current but not in this node's key directory yet")
    return ring.pinned_to(key_id)


def ring_for_reading(session: Session, key_id: Any) -> Keyring:
    """The ring, reread first (rate-limited) when it does not hold data key `key_id`."""
    return runtime.of(session).ring_holding(key_id)
