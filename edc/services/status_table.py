"""The form-status table (subject × event instance × form), kept current in every write's transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock
from edc.models.entries import FormStatus
from edc.models.subjects import Subject

_COLUMNS = FormStatus.__table__.c

# One statement, the same on PostgreSQL and SQLite (both have INSERT ... SELECT ... ON CONFLICT DO UPDATE and
# aggregate FILTER), written once as SQL: SQLAlchemy compiles its dialect upserts afresh on every execution (their
# statements have no cache key), while this text and its compiled form are cached. `WHERE true` keeps SQLite from
# reading ON CONFLICT as a join constraint of the FROM clause.
_UPSERT = sa.text("""
INSERT INTO form_status (subject_id, event_key, form_id, site_id, state, entries, open_queries, verified,
                         entries_verified, items_verified, signed, locked, updated_at)
SELECT :subject_id, :event_key, :form_id, :site_id,
       CASE WHEN n.entries > 0 AND n.complete = n.entries THEN 'complete' ELSE 'draft' END,
       n.entries, n.open_queries, n.entries > 0 AND n.verified = n.entries, n.verified, n.items_verified,
       n.entries > 0 AND n.signed = n.entries, :subject_locked OR (n.entries > 0 AND n.locked = n.entries),
       :updated_at
FROM (
    SELECT count(e.id) AS entries,
           count(e.id) FILTER (WHERE e.status = 'complete') AS complete,
           (SELECT count(q.id) FROM queries AS q JOIN entries AS qe ON q.entry_id = qe.id
            WHERE qe.subject_id = :subject_id AND qe.event_key = :event_key AND qe.form_id = :form_id
              AND q.state = 'open') AS open_queries,
           count(e.id) FILTER (WHERE EXISTS (
               SELECT 1 FROM sdv_marks AS m WHERE m.entry_id = e.id AND m.item_id IS NULL AND m.cleared_at IS NULL
           )) AS verified,
           count(e.id) FILTER (WHERE EXISTS (
               SELECT 1 FROM signatures AS s WHERE s.entry_id = e.id AND s.invalidated_at IS NULL
           ) OR EXISTS (
               SELECT 1 FROM signatures AS c
               WHERE c.subject_id = :subject_id AND c.entry_id IS NULL AND c.invalidated_at IS NULL
           )) AS signed,
           count(e.id) FILTER (WHERE e.locked_at IS NOT NULL OR e.frozen_by_cut IS NOT NULL) AS locked,
           (SELECT count(im.id) FROM sdv_marks AS im JOIN entries AS ie ON im.entry_id = ie.id
            WHERE ie.subject_id = :subject_id AND ie.event_key = :event_key AND ie.form_id = :form_id
              AND im.item_id IS NOT NULL AND im.cleared_at IS NULL) AS items_verified
    FROM entries AS e
    WHERE e.subject_id = :subject_id AND e.event_key = :event_key AND e.form_id = :form_id
) AS n
WHERE true
ON CONFLICT (subject_id, event_key, form_id) DO UPDATE SET
    state = excluded.state, entries = excluded.entries, open_queries = excluded.open_queries,
    updated_at = excluded.updated_at, verified = excluded.verified, entries_verified = excluded.entries_verified,
    items_verified = excluded.items_verified, signed = excluded.signed, locked = excluded.locked
""").bindparams(
    sa.bindparam("subject_id", type_=_COLUMNS.subject_id.type),
    sa.bindparam("event_key", type_=_COLUMNS.event_key.type),
    sa.bindparam("form_id", type_=_COLUMNS.form_id.type),
    sa.bindparam("site_id", type_=_COLUMNS.site_id.type),
    sa.bindparam("subject_locked", type_=_COLUMNS.locked.type),
    sa.bindparam("updated_at", type_=_COLUMNS.updated_at.type),
)


def refresh(session: Session, subject: Subject, event_key: str, form_id: str) -> None:
    """Recount one cell from its entries, open queries, SDV marks, signatures and locks, and upsert it: one
    statement, by index. A cell is verified, signed or locked when every entry in it is (locked also when the
    subject is); it also counts its entries verified whole and its item marks, which SDV progress adds up."""
    session.flush()  # what an ORM statement's autoflush did: the recount must see this transaction's changes
    session.execute(_UPSERT, {"subject_id": subject.id, "event_key": event_key, "form_id": form_id,
                              "site_id": subject.site_id, "subject_locked": subject.locked_at is not None,
                              "updated_at": clock.utcnow()})
