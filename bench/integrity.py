"""Checks that nothing was lost or half-written after a fault, shared by bench/fault_kill.py and tests/faults/.

Each takes an app of the database to check (its settings: database, keys, forms).
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa


def _rows(session, table, skip=("updated_at",)) -> dict[tuple, dict]:
    keys = [c.name for c in table.primary_key]
    return {tuple(row[k] for k in keys): {k: v for k, v in row.items() if k not in skip}
            for row in session.execute(sa.select(table)).mappings()}


def recount_differences(app) -> dict[str, list]:
    """Recount every form-status cell and subject summary with the services that keep them, inside a transaction
    that is rolled back; the cells and rows whose stored values differ from the recount."""
    from edc import runtime
    from edc.extensions import db
    from edc.models.entries import Entry, FormStatus
    from edc.models.subjects import Subject, SubjectSummary
    from edc.services import status_table, summaries

    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        try:
            stored = {t.name: _rows(session, t) for t in (FormStatus.__table__, SubjectSummary.__table__)}
            for subject in session.scalars(sa.select(Subject)).all():
                cells = set(session.execute(sa.select(Entry.event_key, Entry.form_id).where(Entry.subject_id == subject.id)))
                cells |= set(session.execute(sa.select(FormStatus.event_key, FormStatus.form_id)
                                             .where(FormStatus.subject_id == subject.id)))
                for event_key, form_id in cells:
                    status_table.refresh(session, subject, event_key, form_id)
                summaries.refresh(session, subject)
            session.flush()
            recounted = {t.name: _rows(session, t) for t in (FormStatus.__table__, SubjectSummary.__table__)}
        finally:
            session.rollback()
    return {name: [key for key in stored[name].keys() | recounted[name].keys()
                   if stored[name].get(key) != recounted[name].get(key)] for name in stored}


def half_written(app) -> dict[str, int]:
    """Entries without their creation record, creation records without their entry, entries recorded as created
    more than once, and audit values without their record: all must be 0."""
    from edc.extensions import db
    from edc.models.audit import AuditRecord, AuditValue
    from edc.models.entries import Entry

    with app.app_context():
        session = db.session
        entries = {str(i) for i in session.scalars(sa.select(Entry.id))}
        created = Counter(session.scalars(sa.select(AuditRecord.entity_id).where(AuditRecord.action == "entry_created")))
        orphans = session.scalar(sa.select(sa.func.count(AuditValue.id)).where(
            ~sa.exists().where(AuditRecord.id == AuditValue.record_id)))
        session.rollback()
    return {"entries without an entry_created record": len(entries - created.keys()),
            "entry_created records without their entry": len(created.keys() - entries),
            "entries created more than once": sum(1 for n in created.values() if n > 1),
            "audit values without their record": orphans}


def audit_verify(app) -> tuple[int, str]:
    """`flask edc audit verify`: (exit code, output)."""
    result = app.test_cli_runner().invoke(args=["edc", "audit", "verify"])
    return result.exit_code, result.output
