"""Case-form entries: create and replace them with validation, encryption, audit, automatic
queries and the form-status table, all in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc import runtime
from edc.ecrf import (
    FormDef,
    Study,
    ValidationContext,
    ValidationResult,
    evaluate_cross_form_warnings,
    evaluate_warnings,
    validate_entry,
)
from edc.ecrf.expressions import VISIT_FACTS
from edc.models.audit import AuditChainHead
from edc.models.entries import SUBJECT_LOG_KEY, Entry, Query
from edc.models.monitoring import Signature
from edc.models.subjects import Subject
from edc.problems import Conflict, Forbidden, NotFound, UnprocessableContent, field_error
from edc.security.permissions import Actor, require
from edc.services import audit, form_registry, identifying, locking, queries, safety, signatures, status_table, summaries
from edc.services.concurrency import check_locked_etag
from edc.services.rule_context import forms_read_by, load_values, validation_context
from edc.services.scope import get_subject, in_scope
from edc.services.sealing import seal, unseal

SITE_WRITERS = frozenset({"investigator", "coordinator"})  # site staff: enter every non-exclusive form
ANCHOR_COLUMNS = {"planned_infusion": "planned_infusion_date", "day0": "day0"}


@dataclass
class SaveOutcome:
    entry: Entry
    values: dict[str, Any]
    warnings: list[dict[str, Any]] = field(default_factory=list)
    opened: list[Any] = field(default_factory=list)
    answered: list[Any] = field(default_factory=list)
    queries: list[Any] = field(default_factory=list)  # every query on the entry after the save


def _study(session: Session) -> Study:
    return runtime.of(session).study


# --- reading -------------------------------------------------------------------------------

def _scope_entry(session: Session, actor: Actor, entry_id: uuid.UUID, permission: str) -> Entry:
    require(actor, permission)
    entry = session.get(Entry, entry_id)
    scope = actor.site_scope(permission)
    if entry is None or (scope is not None and entry.subject.site_id not in scope):
        raise NotFound("No such entry among your sites.")
    if not _may_touch_form(actor, _study(session), entry.form_id):
        raise NotFound("No such entry among your sites.")
    return entry


def _may_touch_form(actor: Actor, study: Study, form_id: str) -> bool:
    """A manufacturing-only account reaches only the product forms the study assigns to it."""
    if actor.is_system or set(actor.roles) != {"manufacturing"}:
        return True
    return "manufacturing" in study.form_roles.get(form_id, set())


def _may_write_form(actor: Actor, study: Study, form_id: str) -> bool:
    """Site staff write every form but the exclusive ones; other roles only the forms the study assigns them."""
    if actor.is_system:
        return True
    roles = set(actor.roles)
    if roles & study.form_roles.get(form_id, set()):
        return True
    return form_id not in study.exclusive_forms and bool(roles & SITE_WRITERS)


def may_write_form(actor: Actor, study: Study, form_id: str) -> bool:
    """Whether the actor's roles enter this form (what the page offers to save; the save checks it again)."""
    return _may_write_form(actor, study, form_id)


def get_entry(session: Session, actor: Actor, entry_id: uuid.UUID) -> tuple[Entry, dict[str, Any]]:
    """An entry and its values as the actor may see them (identifying items withheld unless theirs to see)."""
    entry = _scope_entry(session, actor, entry_id, "entries:read")
    return entry, _shown(session, actor, _study(session), entry)


def _shown(session: Session, actor: Actor, study: Study, entry: Entry) -> dict[str, Any]:
    values = unseal(session, study.form(entry.form_id, entry.form_version), entry)
    return identifying.withhold(values, identifying.hidden_from(study, actor, entry.form_id, entry.subject.site_id))


def list_entries(session: Session, actor: Actor, number: str, *, event: str | None = None,
                 form: str | None = None) -> list[tuple[Entry, dict[str, Any]]]:
    subject = get_subject(session, actor, number, "entries:read")
    study = _study(session)
    stmt = sa.select(Entry).where(Entry.subject_id == subject.id).order_by(Entry.created_at, Entry.id)
    if event is not None:
        stmt = stmt.where(Entry.event_key.startswith(f"{event}/", autoescape=True) if event else Entry.event_key == SUBJECT_LOG_KEY)
    if form:
        stmt = stmt.where(Entry.form_id == form)
    rows = [e for e in session.scalars(stmt) if _may_touch_form(actor, study, e.form_id)]
    return [(e, _shown(session, actor, study, e)) for e in rows]


class EntryPlace(NamedTuple):
    id: uuid.UUID
    event_key: str
    form_id: str
    status: str
    created_at: datetime
    updated_at: datetime


def entry_places(session: Session, actor: Actor, number: str) -> list[EntryPlace]:
    """A subject's entries without their values (where each is, its status and dates), oldest first: what a
    casebook links to; the forms the actor does not reach are left out as in list_entries."""
    subject = get_subject(session, actor, number, "entries:read")
    study = _study(session)
    rows = session.execute(sa.select(Entry.id, Entry.event_key, Entry.form_id, Entry.status, Entry.created_at,
                                     Entry.updated_at).where(Entry.subject_id == subject.id)
                           .order_by(Entry.created_at, Entry.id))
    return [EntryPlace(*row) for row in rows if _may_touch_form(actor, study, row.form_id)]


# --- writing -------------------------------------------------------------------------------

def _writer_check(actor: Actor, study: Study, form_id: str) -> None:
    require(actor, "entries:write")
    if not _may_write_form(actor, study, form_id):
        raise Forbidden("Your role does not enter this form.")


def _resolve_place(study: Study, form_id: str, event: str | None, instance: int) -> tuple[FormDef, str]:
    """The form's latest version and the event key it is entered at."""
    errors = []
    try:
        form = study.form(form_id)
    except KeyError:
        raise UnprocessableContent(errors=[field_error("/form", f"No form {form_id} in this study.")]) from None
    if event is None:
        if form_id not in study.subject_logs and form_id not in study.repeating_forms:
            errors.append(field_error("/event", f"{form_id} is entered at a visit; name the event."))
        event_key = SUBJECT_LOG_KEY
    else:
        try:
            event_def = study.event(event)
        except KeyError:
            raise UnprocessableContent(errors=[field_error("/event", f"No event {event} in the schedule.")]) from None
        if form_id not in event_def.forms:
            errors.append(field_error("/form", f"{form_id} is not scheduled at {event}."))
        if instance != 1 and not event_def.repeatable:
            errors.append(field_error("/event_instance", f"{event} happens once."))
        event_key = f"{event}/{instance}"
    if errors:
        raise UnprocessableContent(errors=errors)
    return form, event_key


def _evaluated(session: Session, subject: Subject, form: FormDef, data: dict[str, Any], complete: bool,
               context: ValidationContext) -> tuple[ValidationResult, UnprocessableContent | None]:
    """Validate and derive an entry's values as a save would, and why the save would refuse them (or None):
    invalid values first, then values that name records (an SAE review's AE entry) that are not this subject's."""
    result = validate_entry(form, data, complete=complete, context=context)
    if result.errors:
        return result, UnprocessableContent("The entry has invalid values.", errors=result.errors)
    errors = safety.reference_errors(session, subject, form.id, result.values)
    if errors:
        return result, UnprocessableContent("The entry refers to a record that does not exist.", errors=errors)
    return result, None


def _validated(session: Session, subject: Subject, form: FormDef, data: dict[str, Any], complete: bool,
               context: ValidationContext) -> ValidationResult:
    result, refusal = _evaluated(session, subject, form, data, complete, context)
    if refusal is not None:
        raise refusal
    return result


def reason_required(session: Session, entry: Entry) -> bool:
    """Whether a change to this entry's saved data needs a reason (once completed, or by the study's setting)."""
    return entry.ever_completed or bool(_study(session).settings.get("reason_required_after_first_save", False))


@dataclass
class Preview:
    """What saving these values would give, without saving: the values with their calculated and derived items,
    the errors that would refuse the save, the warnings whose automatic queries it would open, the items show_if
    hides (rows as GROUP/index/ITEM) and the required items still unanswered."""

    values: dict[str, Any]
    errors: list[dict[str, str]]
    warnings: list[dict[str, Any]]
    hidden: set[str]
    missing_required: list[str]


def preview_entry(session: Session, actor: Actor, *, data: dict[str, Any], complete: bool,
                  entry_id: uuid.UUID | None = None, number: str | None = None, form: str | None = None,
                  event: str | None = None, event_instance: int = 1) -> Preview:
    """Evaluate an entry as update_entry (entry_id) or create_entry (number, form, event) would, writing nothing:
    the same permission and scope checks, the same validation context, rules and derivations."""
    study = _study(session)
    if entry_id is not None:
        entry = _scope_entry(session, actor, entry_id, "entries:write")
        _writer_check(actor, study, entry.form_id)
        subject, form_def = entry.subject, study.form(entry.form_id, entry.form_version)
        context = validation_context(session, subject, entry.form_id, exclude=entry.id, event_key=entry.event_key)
    else:
        _writer_check(actor, study, form or "")
        subject = get_subject(session, actor, number or "", "entries:write")
        form_def, event_key = _resolve_place(study, form or "", event, event_instance)
        context = validation_context(session, subject, form_def.id, exclude=None, event_key=event_key)
    result, refusal = _evaluated(session, subject, form_def, data, complete, context)
    errors = list(refusal.errors or []) if refusal is not None else []
    return Preview(values=result.values, errors=errors, warnings=result.warnings, hidden=result.hidden,
                   missing_required=result.missing_required)


class SubjectToEnter(NamedTuple):
    """A subject read for a new entry, with what the save would otherwise read in statements of their own."""

    subject: Subject
    study_locked_at: datetime | None  # the study lock in force (locking.STUDY_LOCKED_AT), None when open
    casebook_signed: bool             # the subject has a valid casebook signature
    chain_seq: int | None             # the head of the subject's audit chain when this was read


def get_subject_to_enter(session: Session, actor: Actor, number: str) -> SubjectToEnter:
    """scope.get_subject(..., "entries:write"), reading in the same statement the study lock in force, whether
    the subject's casebook is signed and the head of its audit chain (see create_entry for their use)."""
    require(actor, "entries:write")
    dialect = session.get_bind().dialect.name
    stmt = _TO_ENTER.get(dialect)
    if stmt is None:
        stmt = _TO_ENTER[dialect] = _to_enter_statement(dialect)
    row = session.execute(stmt, {"number": number.upper()}).one_or_none()
    subject = in_scope(actor, row[0] if row is not None else None, number, "entries:write")
    return SubjectToEnter(subject, row.study_locked_at, bool(row.casebook_signed), row.chain_seq)


_TO_ENTER: dict[str, sa.Select] = {}  # per dialect, built at first use: the chain's name is spelt per dialect


def _to_enter_statement(dialect: str) -> sa.Select:
    # audit.subject_chain(subjects.id) in SQL. PostgreSQL's text form of a UUID is Python's (lower-case hex digits,
    # hyphenated); SQLite keeps a UUID as its 32 hex digits, hyphenated here.
    text = sa.cast(Subject.id, sa.String)
    if dialect == "sqlite":
        parts = [sa.func.substr(text, start, length, type_=sa.String)
                 for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))]
        text = sa.func.lower(parts[0] + "-" + parts[1] + "-" + parts[2] + "-" + parts[3] + "-" + parts[4],
                             type_=sa.String)
    chain = sa.literal(audit.subject_chain(""), sa.String) + text
    return (
        sa.select(
            Subject,
            locking.STUDY_LOCKED_AT.label("study_locked_at"),
            sa.exists().where(Signature.subject_id == Subject.id, Signature.entry_id.is_(None),
                              Signature.invalidated_at.is_(None)).label("casebook_signed"),
            sa.select(AuditChainHead.seq).where(AuditChainHead.chain == chain).scalar_subquery().label("chain_seq"),
        )
        .where(Subject.number == sa.bindparam("number"))
        .options(joinedload(Subject.site))
    )


def create_entry(session: Session, actor: Actor, number: str, *, form: str, data: dict[str, Any], complete: bool,
                 event: str | None = None, event_instance: int = 1) -> SaveOutcome:
    """Enter a new case form for a subject of one of the caller's sites."""
    study = _study(session)
    _writer_check(actor, study, form)
    target = get_subject_to_enter(session, actor, number)
    subject = target.subject
    locking.ensure_writable(session, subject, study_locked_at=target.study_locked_at)
    form_def, event_key = _resolve_place(study, form, event, event_instance)
    form_registry.ensure_released(session, form_def)
    slot = None if form_def.repeating else f"{event_key}|{form}"
    if slot is not None:
        existing = session.scalar(sa.select(Entry.id).where(Entry.subject_id == subject.id, Entry.unique_slot == slot))
        if existing is not None:
            raise Conflict(f"{form} already has an entry here; change it instead.", existing=f"/api/v1/entries/{existing}")
    result = _validated(session, subject, form_def, data, complete,
                        validation_context(session, subject, form, exclude=None, event_key=event_key))
    entry = Entry(id=uuid.uuid4(), subject=subject, event_key=event_key, form_id=form, form_version=form_def.version,
                  unique_slot=slot, status="complete" if complete else "draft", ever_completed=complete,
                  created_by=actor.username, updated_by=actor.username, data={})
    entry.data = seal(session, form_def, entry.id, result.values)
    session.add(entry)
    session.flush()
    changes = _diff({}, result.values)
    record = audit.record(session, actor, "entry_created", entity_type="entry", entity_id=entry.id,
                          chain=audit.subject_chain(subject.id), site_code=subject.site.code,
                          changes=[audit.change("@status", None, entry.status), *changes],
                          encrypted_fields=_encrypted_change_fields(form_def, changes))
    # Whether the casebook is signed, as read with the subject, still holds under the chain lock the record took
    # when no record was appended to the subject's chain in between: signing and invalidating are recorded there.
    casebook_signed = target.casebook_signed if record.seq - 1 == target.chain_seq else None
    signatures.after_entry_created(session, actor, entry, record.id, casebook_signed=casebook_signed)
    return _after_save(session, actor, subject, entry, form_def, result, record, new_entry=True)


def update_entry(session: Session, actor: Actor, entry_id: uuid.UUID, *, data: dict[str, Any], complete: bool,
                 expected_etag: str, reason: str | None = None) -> SaveOutcome:
    """Replace an entry's item set (If-Match); a complete entry's changes need a reason."""
    study = _study(session)
    entry = _scope_entry(session, actor, entry_id, "entries:write")
    _writer_check(actor, study, entry.form_id)
    locking.ensure_writable(session, entry.subject, entry)  # takes the entry's row lock and re-reads it
    check_locked_etag(entry, expected_etag, "This entry")
    subject = entry.subject
    form_def = study.form(entry.form_id, entry.form_version)
    old_values = unseal(session, form_def, entry)
    context = validation_context(session, subject, entry.form_id, exclude=entry.id, event_key=entry.event_key)
    result = _validated(session, subject, form_def, data, complete, context)
    changes = _diff(old_values, result.values)
    new_status = "complete" if complete else "draft"
    if new_status != entry.status:
        changes.insert(0, audit.change("@status", entry.status, new_status))
    if not changes:
        return SaveOutcome(entry=entry, values=old_values, warnings=result.warnings, queries=queries.for_entry(session, entry.id))
    if reason_required(session, entry) and not (reason or "").strip():
        raise UnprocessableContent("Changing saved data needs a reason.",
                                   errors=[field_error("/reason", "Say why the data change (e.g. 'transcription error').")])
    entry.data = seal(session, form_def, entry.id, result.values)
    entry.status, entry.ever_completed = new_status, entry.ever_completed or complete
    entry.updated_by = actor.username
    session.flush()
    record = audit.record(session, actor, "entry_updated", entity_type="entry", entity_id=entry.id,
                          chain=audit.subject_chain(subject.id), site_code=subject.site.code, reason=reason,
                          changes=changes, encrypted_fields=_encrypted_change_fields(form_def, changes))
    signatures.after_entry_change(session, actor, entry, record.id, changes)
    return _after_save(session, actor, subject, entry, form_def, result, record)


def _after_save(session, actor, subject, entry, form_def, result, record, *, new_entry: bool = False) -> SaveOutcome:
    opened, answered = queries.sync_automatic(session, actor, entry, result.warnings, fixing_change=record.id,
                                              new_entry=new_entry)
    changed_facts = _apply_anchors(session, actor, subject, entry, result.values)
    _recheck_dependants(session, actor, subject, entry, record.id, changed_facts=changed_facts)
    safety.sync_clocks(session, actor, subject, entry, result.values)
    status_table.refresh(session, subject, entry.event_key, entry.form_id)
    summaries.after_entry_saved(session, subject, entry, moved_anchor=bool(changed_facts))
    return SaveOutcome(entry=entry, values=result.values, warnings=result.warnings, opened=opened, answered=answered,
                       queries=opened if new_entry else queries.for_entry(session, entry.id))


def _recheck_dependants(session: Session, actor: Actor, subject: Subject, changed: Entry, change_id: uuid.UUID,
                        *, changed_facts: set[str]) -> None:
    """Re-run the warning checks of the subject's other entries that read the changed form (or subject facts)."""
    study = _study(session)
    readers = set(study.cross_form_dependencies.get(changed.form_id, set()))
    for fact in (*changed_facts, *(VISIT_FACTS if changed_facts else ())):  # an anchor moves visit windows
        readers |= study.subject_fact_dependencies.get(fact, set())
    if not readers:
        return  # a form that reads its own other entries (entries.<form>) is its own reader
    # One read of every entry involved: the readers and the forms they read (a daily form that reads its own
    # other entries would otherwise reload them all for each of them).
    involved = readers.union(*(forms_read_by(study, form) for form in readers))
    loaded = load_values(session, subject, involved)
    rechecked = sorted(((e, v) for e, v in loaded if e.form_id in readers and e.id != changed.id),
                       key=lambda pair: (pair[0].created_at, pair[0].id))
    # Entries with no cross-form warning now and no cross-form query before have nothing to sync.
    with_queries = set(session.scalars(sa.select(Query.entry_id).where(
        Query.subject_id == subject.id, Query.origin == "auto", Query.rule_kind == "cross_form").distinct()))
    for other, values in rechecked:
        form_def = study.form(other.form_id, other.form_version)
        context = validation_context(session, subject, other.form_id, exclude=other.id, event_key=other.event_key,
                                     loaded=loaded)
        warnings = evaluate_cross_form_warnings(form_def, values, context)
        if not warnings and other.id not in with_queries:
            continue
        opened, answered = queries.sync_automatic(session, actor, other, warnings, fixing_change=change_id, only_cross_form=True)
        if opened or answered:  # only its open-query count can have moved
            status_table.refresh(session, subject, other.event_key, other.form_id)


def _apply_anchors(session: Session, actor: Actor, subject: Subject, entry: Entry, values: dict[str, Any]) -> set[str]:
    """Copy schedule anchor dates (planned infusion, Day 0) from the forms the study names."""
    changes, changed = [], set()
    for anchor, source in _study(session).anchors.items():
        if source["form"] != entry.form_id or (source["event"] and entry.event_key.split("/")[0] != source["event"]):
            continue
        column = ANCHOR_COLUMNS[anchor]
        raw = values.get(source["item"])
        new = date.fromisoformat(raw[:10]) if isinstance(raw, str) and len(raw) >= 10 else None
        if new != getattr(subject, column):
            changes.append(audit.change(column, _iso(getattr(subject, column)), _iso(new)))
            setattr(subject, column, new)
            changed.add(anchor)
    if changes:
        session.flush()
        audit.record(session, actor, "subject_anchor_changed", entity_type="subject", entity_id=subject.id,
                     chain=audit.subject_chain(subject.id), site_code=subject.site.code, changes=changes)
    return changed


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Changed top-level items (a repeating group counts as one item), in a stable order."""
    return [audit.change(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _encrypted_change_fields(form: FormDef, changes: list[dict[str, Any]]) -> frozenset[str]:
    encrypted = form.encrypted_items
    groups_with_secrets = {form.items[i].group for i in encrypted if form.items[i].group}
    return frozenset(c["field"] for c in changes if c["field"] in encrypted or c["field"] in groups_with_secrets)


def recheck_all(session: Session, actor: Actor) -> tuple[int, int]:
    """Re-run the current warning checks over every entry (after an amendment); no data changes."""
    study = _study(session)
    opened = answered = 0
    for entry in session.scalars(sa.select(Entry).order_by(Entry.subject_id, Entry.created_at)):
        form_def = study.form(entry.form_id, entry.form_version)
        context = validation_context(session, entry.subject, entry.form_id, exclude=entry.id, event_key=entry.event_key)
        warnings = evaluate_warnings(form_def, unseal(session, form_def, entry), context)
        new, done = queries.sync_automatic(session, actor, entry, warnings, fixing_change=None)
        opened, answered = opened + len(new), answered + len(done)
        status_table.refresh(session, entry.subject, entry.event_key, entry.form_id)
    return opened, answered
