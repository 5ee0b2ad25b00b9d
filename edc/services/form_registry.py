"""Released form versions: the first entry of a version releases it; its content may never change."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf import FormDef, Study
from edc.models.entries import FormVersion
from edc.problems import Conflict


def ensure_released(session: Session, form: FormDef) -> None:
    """Record a version at its first use; refuse data for a released version whose content changed.

    A process checks each (form, version, hash) once: the definitions cannot change under a
    running process, and a changed file means a restart, hence a new check.
    """
    checked = runtime.of(session).released_checked
    key = (form.id, form.version, form.content_hash)
    if key in checked:
        return
    row = session.get(FormVersion, (form.id, form.version))
    if row is None:
        try:
            with session.begin_nested():  # another session may be releasing the same version right now
                session.add(FormVersion(form_id=form.id, version=form.version, content_hash=form.content_hash,
                                        released_at=clock.utcnow()))
        except IntegrityError:
            row = session.get(FormVersion, (form.id, form.version), populate_existing=True)
    if row is not None and row.content_hash != form.content_hash:
        raise Conflict(f"Form {form.id} version {form.version} was changed after release; "
                       "give the change a new version number.")
    checked.add(key)


def changed_versions(session: Session, study: Study) -> list[str]:
    """Released versions whose definition on disk no longer matches (empty when all is well)."""
    hashes = study.content_hashes()
    changed = []
    for row in session.scalars(sa.select(FormVersion).order_by(FormVersion.form_id, FormVersion.version)):
        current = hashes.get((row.form_id, row.version))
        if current is None:
            changed.append(f"{row.form_id} v{row.version} is released but no longer defined")
        elif current != row.content_hash:
            changed.append(f"{row.form_id} v{row.version} changed after release")
    return changed
