"""FHIR exports of the captured data: finding the subject within the caller's scope, opening its casebook,
mapping it (edc.exports.fhir) and auditing the export, in the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc import runtime
from edc.exports import fhir
from edc.models.entries import Entry
from edc.models.subjects import Subject
from edc.problems import Forbidden, NotFound
from edc.security import scopes
from edc.security.permissions import Actor, require
from edc.services import audit
from edc.services.sealing import unseal

PERMISSION = "fhir:read"


def find_subject(session: Session, actor: Actor, subject_id: str) -> Subject:
    """A subject by study number, subject id or exported Patient id, within the caller's sites (404 otherwise)."""
    require(actor, PERMISSION)
    scope = actor.site_scope(PERMISSION)
    stmt = sa.select(Subject).options(joinedload(Subject.site))
    if scope is not None:
        stmt = stmt.where(Subject.site_id.in_(scope))
    try:
        as_uuid = uuid.UUID(subject_id)
    except ValueError:
        as_uuid = None
    if as_uuid is None:
        subject = session.scalars(stmt.where(Subject.number == subject_id.upper())).one_or_none()
    else:
        subject = session.scalars(stmt.where(Subject.id == as_uuid)).one_or_none()
        if subject is None:  # the Patient id of an earlier export: uuid5 of the subject id, so look among the ids
            ids = session.scalars(stmt.with_only_columns(Subject.id)).all()
            match = next((i for i in ids if fhir.patient_id_for(i) == str(as_uuid)), None)
            subject = session.scalars(stmt.where(Subject.id == match)).one_or_none() if match else None
    if subject is None:
        raise NotFound(f"No patient {subject_id} among your sites.")
    return subject


def granted_types(actor: Actor) -> frozenset[str] | None:
    """The resource types a registry client's token may read (its SMART scope); None: any (a signed-in user)."""
    if actor.client_id is None:
        return None
    return scopes.resource_types(actor.scope or "", fhir.RESOURCE_TYPES)


def casebook(session: Session, subject: Subject) -> list[tuple[Entry, dict[str, Any]]]:
    """Every entry of the subject with its values opened; the mapper drops withheld items (Study.withheld_items)."""
    study = runtime.of(session).study
    rows = session.scalars(sa.select(Entry).where(Entry.subject_id == subject.id).order_by(Entry.created_at, Entry.id))
    return [(e, unseal(session, study.form(e.form_id, e.form_version), e)) for e in rows]


def patient_everything(session: Session, actor: Actor, subject_id: str, *, base_url: str, self_url: str) -> dict[str, Any]:
    """One subject as a searchset Bundle (R4 JSON); the export is recorded in the security audit trail."""
    allowed = granted_types(actor)
    if allowed is not None and "Patient" not in allowed:  # SMART: refuse what the scope does not cover
        raise Forbidden("The token's scope does not cover Patient.")
    subject = find_subject(session, actor, subject_id)
    resources = fhir.subject_resources(runtime.of(session).study, subject, casebook(session, subject))
    if allowed is not None:
        resources = [r for r in resources if r.get_resource_type() in allowed]
    bundle = fhir.everything_bundle(resources, base_url, self_url)
    audit.record(session, actor, "fhir_exported", entity_type="subject", entity_id=subject.id,
                 site_code=subject.site.code, changes=[audit.change("resources", None, len(resources))])
    return bundle
