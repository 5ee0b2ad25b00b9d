"""Records found by their public identifier, only within the caller's sites: outside them a 404, never a 403
(no existence oracle).

Most use cases start here (entries, signatures, safety, queries, locks, the audit trail), so it sits below
them and imports none.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc.models.subjects import Subject
from edc.problems import NotFound
from edc.security.permissions import Actor, require


_BY_NUMBER = sa.select(Subject).where(Subject.number == sa.bindparam("number")).options(joinedload(Subject.site))


def get_subject(session: Session, actor: Actor, number: str, permission: str = "subjects:read") -> Subject:
    """A subject by study number, only within the caller's sites (404 otherwise)."""
    require(actor, permission)
    return in_scope(actor, session.scalars(_BY_NUMBER, {"number": number.upper()}).one_or_none(), number, permission)


def in_scope(actor: Actor, subject: Subject | None, number: str, permission: str) -> Subject:
    """The subject read for `number` when the actor may reach it with `permission`; a 404 otherwise."""
    scope = actor.site_scope(permission)
    if subject is None or (scope is not None and subject.site_id not in scope):
        raise NotFound(f"No subject {number} among your sites.")
    return subject
