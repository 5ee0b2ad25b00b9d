"""Safety-reporting clocks (trial reference §4.4, CTR Art. 41/42), kept as rows in the same
transaction as the entry save that moves them.

Which form is the adverse-event log, which is the sponsor's review and which of their items say what
comes from study.yaml `safety:` (edc.ecrf.definitions.SafetyDef); a study without it has no clocks.

- sae_initial: a serious AE with an investigator awareness time (`awareness`) must reach the sponsor
  within params.sae_report_hours; the clock stops the first time the AE entry (with its SAE
  supplement) is saved complete, and is cancelled if the AE is no longer serious.
- susar_7d / susar_15d: once the safety role's review (`review`) records expectedness, a
  serious, suspected related (params.suspected_related_codes), unexpected AE has an expedited
  report due params.susar_fatal_days (`fatal_or_life_threatening`) or params.susar_other_days
  after the sponsor's first knowledge (`first_knowledge`); it stops when the review records the
  submission (`submitted`). This clock follows the data: it is re-derived whenever the AE or one
  of its reviews is saved, so a 15-day clock becomes a 7-day one when the AE turns fatal.

Concurrent saves of one subject's entries are serialised by the subject's audit chain head,
which each save locks before it reaches these functions, so the reads here see the latest
committed AE and reviews and a clock row is never created twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc import clock, runtime
from edc.ecrf.definitions import SafetyDef
from edc.problems import NotFound, field_error
from edc.models.entries import Entry, Query
from edc.models.safety import CANCELLED, FAMILY_OF, SafetyClock
from edc.models.sites import Site
from edc.models.subjects import Subject
from edc.security.permissions import Actor, require
from edc.services import audit, notifications, sealing
from edc.services.pagination import Page, paginate
from edc.services.scope import get_subject

STATES = ("open", "overdue", "all")


# --- keeping the clocks in step with the entries --------------------------------------------

def sync_clocks(session: Session, actor: Actor, subject: Subject, entry: Entry, values: dict[str, Any]) -> None:
    """Start, move, stop or cancel the clocks an entry save affects (only AE and SAE-review entries)."""
    safety = _safety(session)
    if safety is None:
        return
    if entry.form_id == safety.adverse_events.form:
        _sync_sae(session, actor, subject, entry, values, safety)
        _sync_susar(session, actor, subject, entry, values, safety)
    elif safety.review is not None and entry.form_id == safety.review.form:
        for ae in _aes_touched_by_review(session, subject, values, safety):
            _sync_susar(session, actor, subject, ae, _values(session, ae), safety)


def reference_errors(session: Session, subject: Subject, form_id: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """A sponsor review must name an adverse-event entry of the same subject (checked before saving)."""
    safety = _safety(session)
    review = safety.review if safety else None
    if review is None or form_id != review.form or values.get(review.adverse_event) is None:
        return []
    reference = _uuid(values[review.adverse_event])
    ae = session.get(Entry, reference) if reference else None
    if ae is None or ae.subject_id != subject.id or ae.form_id != safety.adverse_events.form:
        return [field_error(f"/data/{review.adverse_event}", "Name the id of an adverse event entry of this subject.")]
    return []


def _safety(session: Session) -> SafetyDef | None:
    """The study's safety items (study.yaml `safety:`), when it names an adverse-event form."""
    safety = runtime.of(session).study.safety
    return safety if safety is not None and safety.adverse_events is not None else None


def _sync_sae(session: Session, actor: Actor, subject: Subject, ae: Entry, values: dict[str, Any],
              safety: SafetyDef) -> None:
    events, yes, no = safety.adverse_events, safety.yes, safety.no
    if events.serious is None or events.awareness is None:
        return
    existing = _clock(session, ae.id, "sae")
    serious, aware = values.get(events.serious), _moment(values.get(events.awareness))
    if serious == yes and aware is not None:
        wanted = {"kind": "sae_initial", "started_at": aware,
                  "due_at": aware + timedelta(hours=_parameter(session, "sae_report_hours"))}
        if existing is None or existing.stop_reason in CANCELLED:
            wanted.update(stopped_at=None, stop_reason=None)
        stopped = existing is not None and existing.stop_reason not in (None, *CANCELLED)
        if ae.status == "complete" and not stopped:  # the first complete save stops it for good
            wanted.update(stopped_at=clock.utcnow(), stop_reason="complete")
        _apply(session, actor, subject, ae, existing, wanted)
    elif serious == no and existing is not None and existing.stopped_at is None:
        _apply(session, actor, subject, ae, existing, {"stopped_at": clock.utcnow(), "stop_reason": "not_serious"})
    # Seriousness not yet known (a draft): an existing clock keeps running.


def _sync_susar(session: Session, actor: Actor, subject: Subject, ae: Entry, values: dict[str, Any],
                safety: SafetyDef) -> None:
    events, review, yes, no = safety.adverse_events, safety.review, safety.yes, safety.no
    if review is None or None in (events.serious, events.causality, review.expected, review.first_knowledge):
        return
    existing = _clock(session, ae.id, "susar")
    reviews = _reviews_of(session, subject, ae.id, safety)
    if not reviews and existing is None:
        return
    expectedness = {r.get(review.expected) for r in reviews} & {yes, no}
    # Any review calling the event unexpected makes it unexpected: correct that review to undo it.
    unexpected = no in expectedness if expectedness else None
    causality = values.get(events.causality)
    related = causality in _parameter(session, "suspected_related_codes") if isinstance(causality, str) else None
    serious = {yes: True, no: False}.get(values.get(events.serious))
    first_knowledge = _earliest(r.get(review.first_knowledge) for r in reviews)
    if serious and related and unexpected and first_knowledge is not None:
        fatal = any(values.get(item) == yes for item in events.fatal_or_life_threatening)
        days = _parameter(session, "susar_fatal_days" if fatal else "susar_other_days")
        submitted = _earliest(r.get(review.submitted) for r in reviews) if review.submitted else None
        _apply(session, actor, subject, ae, existing, {
            "kind": "susar_7d" if fatal else "susar_15d", "started_at": first_knowledge,
            "due_at": first_knowledge + timedelta(days=days),
            "stopped_at": submitted, "stop_reason": "submitted" if submitted else None,
        })
    elif existing is not None and existing.stopped_at is None and (
            not reviews or serious is False or related is False or unexpected is False):
        _apply(session, actor, subject, ae, existing, {"stopped_at": clock.utcnow(), "stop_reason": "not_susar"})
    # Otherwise the decision is still open (e.g. causality unknown, no first-knowledge time yet).


def _aes_touched_by_review(session: Session, subject: Subject, values: dict[str, Any], safety: SafetyDef) -> list[Entry]:
    """The AE the review names (same subject only), and those whose SUSAR clock it may have fed."""
    found: dict[uuid.UUID, Entry] = {}
    reference = _uuid(values.get(safety.review.adverse_event))
    if reference is not None:
        ae = session.get(Entry, reference)
        if ae is not None and ae.subject_id == subject.id and ae.form_id == safety.adverse_events.form:
            found[ae.id] = ae
    stmt = (sa.select(Entry).join(SafetyClock, SafetyClock.ae_entry_id == Entry.id)
            .where(SafetyClock.subject_id == subject.id, SafetyClock.family == "susar"))
    for ae in session.scalars(stmt):
        found.setdefault(ae.id, ae)
    return list(found.values())


def _reviews_of(session: Session, subject: Subject, ae_id: uuid.UUID, safety: SafetyDef) -> list[dict[str, Any]]:
    review = safety.review
    stmt = (sa.select(Entry).where(Entry.subject_id == subject.id, Entry.form_id == review.form)
            .order_by(Entry.created_at, Entry.id))
    reviews = (_values(session, entry) for entry in session.scalars(stmt))
    return [values for values in reviews if _uuid(values.get(review.adverse_event)) == ae_id]


def _values(session: Session, entry: Entry) -> dict[str, Any]:
    study = runtime.of(session).study
    return sealing.unseal(session, study.form(entry.form_id, entry.form_version), entry)


def _clock(session: Session, ae_id: uuid.UUID, family: str) -> SafetyClock | None:
    return session.scalars(sa.select(SafetyClock).where(SafetyClock.ae_entry_id == ae_id, SafetyClock.family == family)).one_or_none()


AUDITED = ("kind", "due_at", "stopped_at", "stop_reason")  # never the clinical values behind them


def _apply(session: Session, actor: Actor, subject: Subject, ae: Entry, existing: SafetyClock | None,
           wanted: dict[str, Any]) -> None:
    """Create or change a clock and write one audit record of what changed."""
    if existing is None:
        row = SafetyClock(id=uuid.uuid4(), subject_id=subject.id, site_id=subject.site_id, ae_entry_id=ae.id,
                          family=FAMILY_OF[wanted["kind"]], **wanted)
        session.add(row)
        changes = [audit.change("ae_entry", None, str(ae.id))]
        changes += [audit.change(name, None, _plain(getattr(row, name))) for name in AUDITED if getattr(row, name) is not None]
        action = "safety_clock_started"
        if row.family == "sae":
            notifications.sae_opened(session, subject, row)
    else:
        row, before = existing, {name: getattr(existing, name) for name in wanted}
        if all(before[name] == value for name, value in wanted.items()):
            return
        for name, value in wanted.items():
            setattr(row, name, value)
        changes = [audit.change(name, _plain(before[name]), _plain(wanted[name]))
                   for name in AUDITED if name in wanted and before[name] != wanted[name]]
        action = _action(before, wanted)
    session.flush()
    if changes:
        audit.record(session, actor, action, entity_type="safety_clock", entity_id=row.id,
                     chain=audit.subject_chain(subject.id), site_code=subject.site.code, changes=changes)


def _action(before: dict[str, Any], after: dict[str, Any]) -> str:
    if "stop_reason" in after and after["stop_reason"] != before["stop_reason"]:
        if after["stop_reason"] in CANCELLED:
            return "safety_clock_cancelled"
        return "safety_clock_stopped" if after["stop_reason"] else "safety_clock_reopened"
    return "safety_clock_changed"


def _parameter(session: Session, name: str) -> Any:
    parameters = runtime.of(session).study.parameters
    if name not in parameters:
        raise LookupError(f"study.yaml parameters lack {name}, which the safety clocks need")
    return parameters[name]


def _moment(value: Any) -> datetime | None:
    """A stored date-time item (ISO 8601 with offset) in UTC; None when absent or a missing-data code."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _earliest(values) -> datetime | None:
    moments = [m for m in map(_moment, values) if m is not None]
    return min(moments) if moments else None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# --- reading --------------------------------------------------------------------------------

@dataclass
class ClockView:
    """A clock as listed: the row, where it stands now, and its subject's critical open queries."""

    clock: SafetyClock
    subject: str
    site: str
    state: str           # open | overdue | stopped | late | cancelled
    overdue: bool        # open past its due time, or stopped after it
    hours_left: float | None
    critical_queries: list[Query] = field(default_factory=list)


def _state(row: SafetyClock, now: datetime) -> str:
    if row.stopped_at is None:
        return "overdue" if now > row.due_at else "open"
    if row.stop_reason in CANCELLED:
        return "cancelled"
    return "late" if row.stopped_at > row.due_at else "stopped"


def list_clocks(session: Session, actor: Actor, *, state: str = "open", site: str | None = None,
                subject: str | None = None, page: int = 1, page_size: int = 50) -> Page[ClockView]:
    """Safety clocks of the caller's sites, soonest due first: open (default), overdue, or all."""
    require(actor, "safety:read")
    if state not in STATES:
        raise ValueError(f"unknown clock state {state}")
    now = clock.utcnow()
    stmt = sa.select(SafetyClock).order_by(SafetyClock.due_at, SafetyClock.id)
    scope = actor.site_scope("safety:read")
    if scope is not None:
        stmt = stmt.where(SafetyClock.site_id.in_(scope))
    if site:
        site_row = session.scalars(sa.select(Site).where(Site.code == site.upper())).one_or_none()
        if site_row is None or (scope is not None and site_row.id not in scope):
            raise NotFound(f"No site {site} among your sites.")
        stmt = stmt.where(SafetyClock.site_id == site_row.id)
    if subject:
        stmt = stmt.where(SafetyClock.subject_id == get_subject(session, actor, subject, "safety:read").id)
    if state != "all":
        stmt = stmt.where(SafetyClock.stopped_at.is_(None))
    if state == "overdue":
        stmt = stmt.where(SafetyClock.due_at < now)
    result = paginate(session, stmt, page=page, page_size=page_size)
    subject_ids = {row.subject_id for row in result.items}
    subjects = {s.id: s for s in session.scalars(
        sa.select(Subject).where(Subject.id.in_(subject_ids)).options(joinedload(Subject.site)))} if subject_ids else {}
    critical: dict[uuid.UUID, list[Query]] = {}
    if subject_ids:
        open_critical = (sa.select(Query).where(Query.subject_id.in_(subject_ids), Query.critical.is_(True), Query.state == "open")
                         .order_by(Query.opened_at, Query.id))
        for query in session.scalars(open_critical):
            critical.setdefault(query.subject_id, []).append(query)
    views = []
    for row in result.items:
        owner = subjects[row.subject_id]
        hours_left = None if row.stopped_at is not None else round((row.due_at - now).total_seconds() / 3600, 1)
        current = _state(row, now)
        views.append(ClockView(clock=row, subject=owner.number, site=owner.site.code, state=current,
                               overdue=current in ("overdue", "late"), hours_left=hours_left,
                               critical_queries=critical.get(row.subject_id, [])))
    return Page(items=views, page=result.page, page_size=result.page_size, total=result.total)
