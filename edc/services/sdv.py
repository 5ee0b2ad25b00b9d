"""Source data verification: monitors mark items (or whole entries) verified against source; a later
change to a verified item clears its mark. The study file says per form what needs verifying."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf import FormDef, Study
from edc.ecrf.definitions import COMPUTED_TYPES
from edc.models.entries import Entry, FormStatus
from edc.models.monitoring import SdvMark
from edc.models.sites import Site
from edc.problems import Conflict, NotFound, UnprocessableContent, field_error
from edc.security.permissions import Actor, require
from edc.services import audit, status_table
from edc.services.sealing import unseal

ENTRY_MARK = "@entry"  # how a whole-entry mark appears in audit changes


@dataclass
class EntrySdv:
    entry: Entry
    requirement: str              # all | critical | none
    required_items: list[str]     # the items with a value that the requirement covers
    marks: list[SdvMark]          # active marks (item_id None: the whole entry)
    cleared: list[SdvMark] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return any(mark.item_id is None for mark in self.marks)


def _study(session: Session) -> Study:
    return runtime.of(session).study


def _verifiable(form: FormDef) -> set[str]:
    """Top-level items and repeating groups: what an entry's values and audit changes are keyed by."""
    return {item_id for item_id, item in form.items.items() if item.group is None} | set(form.groups)


def requirement_of(study: Study, form_id: str) -> str:
    requirement = study.sdv_requirement(form_id)
    return "critical" if isinstance(requirement, tuple) else requirement


def _covered(study: Study, form: FormDef) -> set[str]:
    """The items a whole-entry verification vouches for: the critical ones, or every item the site enters
    (computed items follow from those and have no source of their own)."""
    requirement = study.sdv_requirement(form.id)
    if isinstance(requirement, tuple):
        return set(requirement) & _verifiable(form)
    return {item_id for item_id in _verifiable(form) if item_id in form.groups or form.items[item_id].type not in COMPUTED_TYPES}


def _required(study: Study, form: FormDef, values: dict[str, Any]) -> list[str]:
    return sorted(item for item in _covered(study, form) if values.get(item) not in (None, "", []))


def _scoped_entry(session: Session, actor: Actor, entry_id: uuid.UUID, permission: str) -> Entry:
    require(actor, permission)
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope(permission)
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    return entry


def _marks(session: Session, entry_id: uuid.UUID, *, active: bool) -> list[SdvMark]:
    condition = SdvMark.cleared_at.is_(None) if active else SdvMark.cleared_at.is_not(None)
    return list(session.scalars(sa.select(SdvMark).where(SdvMark.entry_id == entry_id, condition)
                                .order_by(SdvMark.verified_at, SdvMark.item_id)))


def _state(session: Session, entry: Entry, *, history: bool = False) -> EntrySdv:
    study = _study(session)
    form = study.form(entry.form_id, entry.form_version)
    requirement = requirement_of(study, entry.form_id)
    return EntrySdv(entry=entry, requirement=requirement,
                    required_items=[] if requirement == "none" else _required(study, form, unseal(session, form, entry)),
                    marks=_marks(session, entry.id, active=True),
                    cleared=_marks(session, entry.id, active=False) if history else [])


def entry_sdv(session: Session, actor: Actor, entry_id: uuid.UUID) -> EntrySdv:
    """An entry's SDV requirement, its active marks and the cleared ones."""
    return _state(session, _scoped_entry(session, actor, entry_id, "sdv:read"), history=True)


def verify(session: Session, actor: Actor, entry_id: uuid.UUID, *, items: list[str] | None = None,
           whole_entry: bool = False) -> EntrySdv:
    """Mark items of an entry, or the whole entry, verified against source; the entry's whole-entry mark
    follows once every required item is verified."""
    entry = _scoped_entry(session, actor, entry_id, "sdv:write")
    if entry.status == "draft":
        raise Conflict("A draft entry cannot be verified; the site must complete it first.")
    study = _study(session)
    form = study.form(entry.form_id, entry.form_version)
    verifiable = _verifiable(form)
    unknown = [f"/items/{index}" for index, item in enumerate(items or ()) if item not in verifiable]
    if unknown:
        raise UnprocessableContent("Unknown items.", errors=[field_error(pointer, f"{entry.form_id} has no such item.")
                                                             for pointer in unknown])
    state = _state(session, entry)
    already = {mark.item_id for mark in state.marks}
    wanted = set(items or ()) | (set(state.required_items) if whole_entry else set())
    new_items = sorted(wanted - already)
    if whole_entry or (state.required_items and set(state.required_items) <= already | wanted):
        if None not in already:
            new_items.append(None)
    now = clock.utcnow()
    subject = entry.subject
    for item in new_items:
        session.add(SdvMark(entry_id=entry.id, subject_id=subject.id, site_id=subject.site_id, form_id=entry.form_id,
                            item_id=item, entry_version=entry.version, verified_by=actor.username, verified_at=now))
    if new_items:
        session.flush()
        audit.record(session, actor, "sdv_verified", entity_type="entry", entity_id=entry.id,
                     chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                     changes=[audit.change(f"sdv:{item or ENTRY_MARK}", None, f"verified v{entry.version}")
                              for item in new_items])
        status_table.refresh(session, subject, entry.event_key, entry.form_id)
    return _state(session, entry, history=True)


def clear_changed(session: Session, actor: Actor, entry: Entry, change_id: uuid.UUID,
                  changes: list[dict[str, Any]]) -> list[SdvMark]:
    """Clear the marks of changed items, and the whole-entry mark when a covered item changed (or the entry
    went back to draft); audited, linked to the change. The caller refreshes the entry's form-status cell."""
    active = _marks(session, entry.id, active=True)
    if not active:
        return []
    changed = {c["field"] for c in changes if not c["field"].startswith("@")}
    cleared = [mark for mark in active if mark.item_id is not None and mark.item_id in changed]
    whole = [mark for mark in active if mark.item_id is None]
    if whole:
        study = _study(session)
        covered = _covered(study, study.form(entry.form_id, entry.form_version))
        if cleared or changed & covered or entry.status == "draft":
            cleared += whole
    if not cleared:
        return []
    now = clock.utcnow()
    for mark in cleared:
        mark.cleared_at, mark.cleared_by_change = now, change_id
    subject = entry.subject
    audit.record(session, actor, "sdv_cleared", entity_type="entry", entity_id=entry.id,
                 chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                 reason=f"data changed (audit record {change_id})",
                 changes=[audit.change(f"sdv:{mark.item_id or ENTRY_MARK}", f"verified v{mark.entry_version}", None)
                          for mark in cleared])
    return cleared


@dataclass
class ProgressRow:
    site: str
    form: str
    requirement: str
    entries: int            # entries of forms that require SDV
    entries_verified: int   # with an active whole-entry mark
    items_verified: int     # active item marks


def progress(session: Session, actor: Actor, *, site: str | None = None) -> list[ProgressRow]:
    """SDV progress per site and form, added up from the form-status cells (which count their marks)."""
    require(actor, "sdv:read")
    scope = actor.site_scope("sdv:read")
    study = _study(session)
    codes = dict(session.execute(sa.select(Site.id, Site.code)).all())
    site_ids = set(codes) if scope is None else set(scope)
    if site is not None:
        site_ids &= {site_id for site_id, code in codes.items() if code == site}
        if not site_ids:
            raise NotFound(f"No site {site} among your sites.")
    counts = {(site_id, form_id): (int(total or 0), int(whole or 0), int(item_marks or 0))
              for site_id, form_id, total, whole, item_marks in session.execute(
                  sa.select(FormStatus.site_id, FormStatus.form_id, sa.func.sum(FormStatus.entries),
                            sa.func.sum(FormStatus.entries_verified), sa.func.sum(FormStatus.items_verified))
                  .where(FormStatus.site_id.in_(site_ids)).group_by(FormStatus.site_id, FormStatus.form_id))}
    rows = []
    for (site_id, form_id), (total, whole, item_marks) in counts.items():
        requirement = requirement_of(study, form_id)
        if requirement == "none" and not (whole or item_marks):
            continue
        rows.append(ProgressRow(site=codes[site_id], form=form_id, requirement=requirement,
                                entries=total if requirement != "none" else 0,
                                entries_verified=whole, items_verified=item_marks))
    return sorted(rows, key=lambda row: (row.site, row.form))
