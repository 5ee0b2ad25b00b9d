"""What becomes a notification: a new SAE, and a safety clock close to its due time (6 hours in the trial).

Each writes an outbox record (kind, site, subject number, due time; never clinical values) in the
caller's transaction; the mailer delivers it later. The critical-query notification is written by
the query workflow.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.models.safety import SafetyClock
from edc.models.subjects import Subject
from edc.services import outbox

WARNING_PARAMETER = "safety_clock_warning_hours"   # forms/study.yaml parameters (6 in the trial)


def sae_opened(session: Session, subject: Subject, sae_clock: SafetyClock) -> None:
    """Enqueue the 'sae_new' notification when an SAE's 24-hour clock is first created."""
    outbox.enqueue(session, "sae_new", dedupe_key=str(sae_clock.ae_entry_id), site_id=subject.site_id,
                   subject_number=subject.number, due_at=sae_clock.due_at)


def enqueue_due_clocks(session: Session, now: datetime) -> int:
    """Enqueue one 'safety_clock_due' record per running clock due within the study's warning time
    (safety_clock_warning_hours), or already past due.

    Reads the open clocks by their due-time index. The dedupe key holds the clock and its due time,
    so a clock moved to a new due time (e.g. a SUSAR turning fatal) is announced again.
    """
    parameters = runtime.of(session).study.parameters
    if WARNING_PARAMETER not in parameters:  # a study without the parameter has no clock reminders
        return 0
    due_soon = timedelta(hours=parameters[WARNING_PARAMETER])
    stmt = (sa.select(SafetyClock.id, SafetyClock.site_id, SafetyClock.due_at, Subject.number)
            .join(Subject, Subject.id == SafetyClock.subject_id)
            .where(SafetyClock.stopped_at.is_(None), SafetyClock.due_at <= now + due_soon)
            .order_by(SafetyClock.due_at))
    added = 0
    for clock_id, site_id, due_at, number in session.execute(stmt):
        added += outbox.enqueue(session, "safety_clock_due", dedupe_key=f"{clock_id}:{due_at.isoformat()}",
                                site_id=site_id, subject_number=number, due_at=due_at)
    return added
