"""Enrolment under a study number, listing subjects within the caller's sites, status changes (one subject by
its number: scope.get_subject)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.sites import Site
from edc.models.subjects import DUPLICATE_INDEX, SEXES, Subject, SubjectCounter
from edc.problems import Conflict, NotFound, UnprocessableContent, field_error
from edc.security import crypto
from edc.security.permissions import Actor, require
from edc.services import audit, locking, summaries
from edc.services.concurrency import check_etag, unique_violation
from edc.services.pagination import Page, paginate
from edc.services.scope import get_subject

# Allowed status changes; withdrawal needs a reason.
TRANSITIONS: dict[str, frozenset[str]] = {
    "screening": frozenset({"enrolled", "screen_failed", "withdrawn", "deceased"}),
    "enrolled": frozenset({"withdrawn", "completed", "deceased"}),
    "screen_failed": frozenset(),
    "withdrawn": frozenset({"deceased"}),
    "completed": frozenset({"deceased"}),
    "deceased": frozenset(),
}
REASON_REQUIRED = frozenset({"withdrawn", "screen_failed"})
DUPLICATE_PURPOSE = "hospital-number"


def _site_in_scope(session: Session, actor: Actor, code: str, permission: str) -> Site:
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    scope = actor.site_scope(permission)
    if site is None or (scope is not None and site.id not in scope):
        raise NotFound(f"No site {code} among your sites.")
    return site


def _next_number(session: Session, site: Site) -> int:
    """Allocate the site's next number under a row lock: no gaps, no duplicates."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(SubjectCounter).values(site_id=site.id, last_number=0).on_conflict_do_nothing(index_elements=["site_id"]))
    counter = session.scalars(
        sa.select(SubjectCounter).where(SubjectCounter.site_id == site.id).with_for_update().execution_options(populate_existing=True)
    ).one()
    counter.last_number += 1
    return counter.last_number


def _refuse_duplicate(session: Session, site: Site, duplicate_index: str) -> None:
    """409 when the site has registered this hospital number: the same answer whether this check or the
    database's unique index (an enrolment committed at the same moment) finds the other subject."""
    existing = session.scalar(sa.select(Subject.number).where(Subject.site_id == site.id,
                                                              Subject.duplicate_index == duplicate_index))
    if existing:
        raise Conflict(f"This hospital number is already registered as {existing}.", existing=existing)


def _check_birth(birth_year: int, birth_month: int, consent_date: date) -> None:
    today = clock.utcnow().date()
    errors = []
    if not 1 <= birth_month <= 12:
        errors.append(field_error("/birth_month", "Must be 1 to 12."))
    if not today.year - 30 <= birth_year <= today.year:
        errors.append(field_error("/birth_year", f"Must be between {today.year - 30} and {today.year}."))
    if not errors and (birth_year, birth_month) > (consent_date.year, consent_date.month):
        errors.append(field_error("/birth_month", "Birth is after the consent date."))
    if consent_date > today:
        errors.append(field_error("/consent_date", "Must not be in the future."))
    if errors:
        raise UnprocessableContent(errors=errors)


def enrol(session: Session, actor: Actor, *, site: str, birth_year: int, birth_month: int, sex: str,
          consent_date: date, hospital_number: str | None = None) -> Subject:
    """Register a subject at one of the caller's sites and give it the site's next study number."""
    require(actor, "subjects:enrol")
    site_row = _site_in_scope(session, actor, site, "subjects:enrol")
    locking.ensure_study_open(session)
    if site_row.status != "active":
        raise Conflict(f"Site {site_row.code} is closed.")
    if sex not in SEXES:
        raise UnprocessableContent(errors=[field_error("/sex", f"Must be one of {', '.join(SEXES)}.")])
    _check_birth(birth_year, birth_month, consent_date)
    duplicate_index = None
    if hospital_number:
        duplicate_index = crypto.blind_index(runtime.of(session).keyring, f"{DUPLICATE_PURPOSE}:{site_row.code}", hospital_number)
        _refuse_duplicate(session, site_row, duplicate_index)
    seq = _next_number(session, site_row)
    subject = Subject(
        id=uuid.uuid4(), site=site_row, seq=seq, number=f"{site_row.code}-{seq:04d}", status="screening",
        birth_year=birth_year, birth_month=birth_month, sex=sex, consent_date=consent_date,
        registration_date=clock.utcnow().date(), duplicate_index=duplicate_index, created_by=actor.username,
    )
    try:
        with session.begin_nested():  # a duplicate enrolled at the same moment fails here, not the whole transaction
            session.add(subject)
            session.flush()
    except sa.exc.IntegrityError as exc:
        if duplicate_index is None or not unique_violation(exc, DUPLICATE_INDEX, "subjects", ("site_id", "duplicate_index")):
            raise
        _refuse_duplicate(session, site_row, duplicate_index)
        raise
    audit.record(session, actor, "subject_enrolled", entity_type="subject", entity_id=subject.id,
                 chain=audit.subject_chain(subject.id), site_code=site_row.code,
                 changes=[audit.change(name, None, _plain(getattr(subject, name)))
                          for name in ("number", "status", "birth_year", "birth_month", "sex", "consent_date", "registration_date")])
    summaries.refresh(session, subject)
    return subject


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def list_subjects(session: Session, actor: Actor, *, site: str | None = None, status: str | None = None,
                  page: int = 1, page_size: int = 50) -> Page[Subject]:
    require(actor, "subjects:read")
    stmt = sa.select(Subject).order_by(Subject.number)
    scope = actor.site_scope("subjects:read")
    if scope is not None:
        stmt = stmt.where(Subject.site_id.in_(scope))
    if site:
        stmt = stmt.where(Subject.site_id == _site_in_scope(session, actor, site, "subjects:read").id)
    if status:
        stmt = stmt.where(Subject.status == status)
    return paginate(session, stmt, page=page, page_size=page_size)


def change_status(session: Session, actor: Actor, number: str, *, status: str, reason: str | None,
                  expected_etag: str) -> Subject:
    """Move a subject along its allowed status transitions."""
    subject = get_subject(session, actor, number, "subjects:status")
    check_etag(session, subject, expected_etag, f"Subject {subject.number}")
    if status not in TRANSITIONS[subject.status]:
        raise Conflict(f"A subject cannot go from {subject.status} to {status}.")
    if status in REASON_REQUIRED and not (reason or "").strip():
        raise UnprocessableContent(errors=[field_error("/reason", f"A reason is required for {status}.")])
    old = subject.status
    subject.status, subject.status_reason = status, reason
    session.flush()
    audit.record(session, actor, "subject_status_changed", entity_type="subject", entity_id=subject.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code, reason=reason,
                 changes=[audit.change("status", old, status)])
    summaries.refresh(session, subject, safety=False)  # a subject who left has nothing more expected
    return subject
