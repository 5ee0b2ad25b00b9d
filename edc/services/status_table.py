"""The form-status table (subject × event instance × form), kept current in every write's transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock
from edc.models.entries import Entry, FormStatus, Query
from edc.models.subjects import Subject


def refresh(session: Session, subject: Subject, event_key: str, form_id: str) -> None:
    """Recount one cell from its entries and open queries and upsert it: two statements, by index."""
    in_cell = sa.and_(Entry.subject_id == subject.id, Entry.event_key == event_key, Entry.form_id == form_id)
    counts = session.execute(
        sa.select(
            sa.func.count(Entry.id),
            sa.func.count(Entry.id).filter(Entry.status == "complete"),
            sa.select(sa.func.count(Query.id)).join(Entry, Query.entry_id == Entry.id)
            .where(in_cell, Query.state == "open").scalar_subquery(),
        ).where(in_cell)
    ).one()
    entries, complete, open_queries = counts[0], counts[1], counts[2] or 0
    values = {
        "subject_id": subject.id, "event_key": event_key, "form_id": form_id, "site_id": subject.site_id,
        "state": "complete" if entries and complete == entries else "draft",
        "entries": entries, "open_queries": open_queries, "updated_at": clock.utcnow(),
        "verified": False, "signed": False, "locked": False,
    }
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(FormStatus)
    changing = ("state", "entries", "open_queries", "updated_at")
    session.execute(
        insert.values(**values).on_conflict_do_update(
            index_elements=["subject_id", "event_key", "form_id"],
            set_={name: insert.excluded[name] for name in changing},
        )
    )
