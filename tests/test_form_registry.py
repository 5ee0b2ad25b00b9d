"""Released form versions (edc/services/form_registry.py): the first entry of a version releases it."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.models.entries import FormVersion
from edc.services import form_registry


@pytest.mark.postgresql_only
def test_two_transactions_releasing_one_version_at_once_both_go_on(app, database_url):
    """The second waits on the first's uncommitted row, then finds it instead of failing on the key."""
    engine = sa.create_engine(database_url)
    shared = runtime.for_app(app)
    form = shared.study.form(sorted(shared.study.all_forms)[0])
    first, second = Session(engine), Session(engine)
    for own in (first, second):
        runtime.bind(own, shared)
    outcome: list[object] = []

    def release_in_second():
        try:
            form_registry.ensure_released(second, form)
            second.commit()
            outcome.append("released")
        except Exception as error:  # reported to the test below
            outcome.append(error)

    try:
        form_registry.ensure_released(first, form)       # inserted, not yet committed
        shared.released_checked.clear()                  # as if the second were another process
        waiter = threading.Thread(target=release_in_second)
        waiter.start()
        waiter.join(0.5)
        assert outcome == []                             # waiting on the first's row
        first.commit()
        waiter.join(10)
        assert outcome == ["released"]
        with Session(engine) as check:
            rows = check.scalars(sa.select(FormVersion).where(FormVersion.form_id == form.id)).all()
            assert [(r.version, r.content_hash) for r in rows] == [(form.version, form.content_hash)]
    finally:
        first.close()
        second.close()
        engine.dispose()
