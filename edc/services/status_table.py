"""The form-status table (subject × event instance × form), kept current in every write's transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock
from edc.models.entries import Entry, FormStatus, Query
from edc.models.monitoring import SdvMark, Signature
from edc.models.subjects import Subject


def refresh(session: Session, subject: Subject, event_key: str, form_id: str) -> None:
    """Recount one cell from its entries, open queries, SDV marks, signatures and locks, and upsert it:
    two statements, by index. A cell is verified, signed or locked when every entry in it is; it also
    counts its entries verified whole and its item marks, which SDV progress adds up."""
    in_cell = sa.and_(Entry.subject_id == subject.id, Entry.event_key == event_key, Entry.form_id == form_id)
    entry_verified = sa.exists().where(SdvMark.entry_id == Entry.id, SdvMark.item_id.is_(None), SdvMark.cleared_at.is_(None))
    entry_signed = sa.exists().where(Signature.entry_id == Entry.id, Signature.invalidated_at.is_(None))
    casebook_signed = sa.exists().where(Signature.subject_id == subject.id, Signature.entry_id.is_(None),
                                        Signature.invalidated_at.is_(None))
    entry_locked = sa.or_(Entry.locked_at.is_not(None), Entry.frozen_by_cut.is_not(None))
    counts = session.execute(
        sa.select(
            sa.func.count(Entry.id),
            sa.func.count(Entry.id).filter(Entry.status == "complete"),
            sa.select(sa.func.count(Query.id)).join(Entry, Query.entry_id == Entry.id)
            .where(in_cell, Query.state == "open").scalar_subquery(),
            sa.func.count(Entry.id).filter(entry_verified),
            sa.func.count(Entry.id).filter(sa.or_(entry_signed, casebook_signed)),
            sa.func.count(Entry.id).filter(entry_locked),
            sa.select(sa.func.count(SdvMark.id)).join(Entry, SdvMark.entry_id == Entry.id)
            .where(in_cell, SdvMark.item_id.is_not(None), SdvMark.cleared_at.is_(None)).scalar_subquery(),
        ).where(in_cell)
    ).one()
    entries, complete, open_queries, verified, signed, locked, items_verified = (
        counts[0], counts[1], counts[2] or 0, counts[3], counts[4], counts[5], counts[6] or 0)
    every = (lambda n: bool(entries) and n == entries)
    values = {
        "subject_id": subject.id, "event_key": event_key, "form_id": form_id, "site_id": subject.site_id,
        "state": "complete" if every(complete) else "draft",
        "entries": entries, "open_queries": open_queries, "updated_at": clock.utcnow(),
        "verified": every(verified), "entries_verified": verified, "items_verified": items_verified,
        "signed": every(signed), "locked": subject.locked_at is not None or every(locked),
    }
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(FormStatus)
    changing = ("state", "entries", "open_queries", "updated_at", "verified", "entries_verified", "items_verified",
                "signed", "locked")
    session.execute(
        insert.values(**values).on_conflict_do_update(
            index_elements=["subject_id", "event_key", "form_id"],
            set_={name: insert.excluded[name] for name in changing},
        )
    )
