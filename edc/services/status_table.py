"""The form-status table (subject × event instance × form), kept current in every write's transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock
from edc.models.entries import Entry, FormStatus, Query
from edc.models.subjects import Subject


def refresh(session: Session, subject: Subject, event_key: str, form_id: str) -> FormStatus:
    """Recount one cell from its entries and open queries (a handful of rows, by index)."""
    entries = session.execute(
        sa.select(Entry.status).where(Entry.subject_id == subject.id, Entry.event_key == event_key, Entry.form_id == form_id)
    ).scalars().all()
    open_queries = session.scalar(
        sa.select(sa.func.count()).select_from(Query).join(Entry, Query.entry_id == Entry.id)
        .where(Entry.subject_id == subject.id, Entry.event_key == event_key, Entry.form_id == form_id, Query.state == "open")
    )
    row = session.get(FormStatus, (subject.id, event_key, form_id))
    if row is None:
        row = FormStatus(subject_id=subject.id, event_key=event_key, form_id=form_id, site_id=subject.site_id, state="draft")
        session.add(row)
    row.entries = len(entries)
    row.state = "complete" if entries and all(s == "complete" for s in entries) else "draft"
    row.open_queries = open_queries or 0
    row.updated_at = clock.utcnow()
    session.flush()
    return row
