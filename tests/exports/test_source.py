"""edc.exports.source: the selected casebooks, streamed in a stable order, from live entries or a data cut."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from edc.extensions import db
from edc.models import Entry, Site, Subject
from edc.exports import source



def test_casebooks_stream_every_selected_subject_in_number_order_with_values_opened(demo):
    session = db.session
    books = list(source.casebooks(session, source.Selection(), batch=2))
    numbers = [book.subject.number for book in books]
    assert numbers == sorted(numbers) and len(numbers) == 3
    assert sum(len(b.entries) for b in books) == session.scalar(sa.select(sa.func.count(Entry.id)))
    for book in books:
        times = [(e.created_at, str(e.id)) for e in book.entries]
        assert times == sorted(times)
        assert all(isinstance(e.values, dict) and not any(isinstance(v, dict) and "sealed" in v for v in e.values.values())
                   for e in book.entries)
    again = [(b.subject.number, [(e.id, e.values) for e in b.entries]) for b in source.casebooks(session, source.Selection())]
    assert again == [(b.subject.number, [(e.id, e.values) for e in b.entries]) for b in books]


def test_selection_by_site_form_status_and_since(demo):
    session = db.session
    site_id = session.scalar(sa.select(Subject.site_id).order_by(Subject.number).limit(1))
    at_site = list(source.casebooks(session, source.Selection(site_ids=frozenset({site_id}))))
    assert at_site and {b.subject.site_id for b in at_site} == {site_id}
    ae_only = list(source.casebooks(session, source.Selection(forms=frozenset({"ae"}))))
    assert {e.form_id for b in ae_only for e in b.entries} == {"ae"}
    assert source.form_versions(session, source.Selection(forms=frozenset({"ae"}))).keys() == {"ae"}
    assert list(source.casebooks(session, source.Selection(statuses=frozenset({"no-such-status"})))) == []
    latest = session.scalar(sa.select(sa.func.max(Entry.updated_at)))
    assert list(source.casebooks(session, source.Selection(since=latest + timedelta(seconds=1)))) == []
    assert session.scalar(sa.select(sa.func.count(Site.id))) >= 1
