"""`flask edc seed-demo --subjects N`: synthetic subjects on the trial forms, saved through the entry services
so every rule runs; complete casebooks through Day 28, one SAE, one relapse, the same values for the same seed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from conftest import project_root
from edc import runtime
from edc.extensions import db
from edc.models import Entry, SafetyClock, Subject
from edc.services import demo_subjects, sealing

TRIAL_FORMS = str(project_root() / "forms")
TODAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
# Items whose values name the subject's own records (product ID and batch from the study number, the
# reviewed AE's entry id): they differ between two subjects made from the same story.
OWN_IDENTIFIERS = {"COI", "BATCHNO", "AEREF"}


@pytest.fixture
def trial_app(app_factory, fake_clock):
    fake_clock.now = TODAY
    return app_factory(forms_dir=TRIAL_FORMS)


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["edc", *args], catch_exceptions=False)


def casebooks(app) -> dict[str, list[tuple[str, str, dict]]]:
    """Every subject's entries as (event key, form, values), in the order they were saved."""
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        study = runtime.of(session).study
        books: dict[str, list[tuple[str, str, dict]]] = {}
        rows = session.execute(sa.select(Subject.number, Entry).join(Entry, Entry.subject_id == Subject.id)
                               .order_by(Subject.registration_date, Subject.number, Entry.created_at, Entry.id)).all()
        for number, entry in rows:
            values = sealing.unseal(session, study.form(entry.form_id, entry.form_version), entry)
            books.setdefault(number, []).append((entry.event_key, entry.form_id, values))
        session.rollback()
        return books


def scheduled_through_day_28(app) -> dict[str, list[str]]:
    """Event id -> forms, for the scheduled (not optional, not event-driven) visits up to Day 28."""
    study = runtime.for_app(app).study
    return {event.id: event.forms for event in study.events
            if not event.optional and not event.repeatable and (event.anchor != "day0" or event.day <= 28)
            and (event.anchor != "registration" or event.day == 0)}


def test_seed_demo_subjects_gives_complete_casebooks_one_sae_and_one_relapse(trial_app):
    assert invoke(trial_app, "seed-demo").exit_code == 0
    result = invoke(trial_app, "seed-demo", "--subjects", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "seeded 3 demo subjects (seed 1)" in result.output

    books = casebooks(trial_app)
    assert len(books) == 3
    schedule = scheduled_through_day_28(trial_app)
    assert {"SCR", "APH", "MFG", "LD", "PRE", "INF1", "INF2", "INF3", "D7", "D14", "D21", "D28"} <= set(schedule)
    for number, book in books.items():
        present = {(key, form) for key, form, _ in book}
        missing = [f"{event}:{form}" for event, forms in schedule.items() for form in forms
                   if (f"{event}/1", form) not in present]
        assert not missing, (number, missing)
        crs_days = sorted(values["CRSDAT"] for _, form, values in book if form == "crs_daily")
        assert len(crs_days) == len(set(crs_days)) == 29, number
        assert sum(form == "icans_daily" for _, form, _ in book) >= 29
        assert any(form == "cm" for _, form, _ in book)
        starts = sorted(datetime.fromisoformat(values["EXSTDTC"]) for _, form, values in book if form == "inf")
        assert len(starts) == 3 and all(b - a >= timedelta(hours=24) for a, b in zip(starts, starts[1:]))

    all_entries = [(number, key, form, values) for number, book in books.items() for key, form, values in book]
    serious = [values for _, _, form, values in all_entries if form == "ae" and values.get("AESER") == "Y"]
    assert len(serious) == 1 and serious[0]["AECAT"] == "CRS" and serious[0]["AEOUT"] == "RECOVERED"
    assert sum(form == "sae_review" for _, _, form, _ in all_entries) == 1
    relapses = [(number, key) for number, key, form, _ in all_entries if form == "relapse"]
    assert len(relapses) == 1 and relapses[0][1] == "REL/1"
    relapse_forms = {form for number, key, form, _ in all_entries if (number, key) == relapses[0]}
    assert relapse_forms == {"relapse", "resp", "bca"}
    assert any(form == "crs_daily" and values["CRSGRDRV"] >= 1 for _, _, form, values in all_entries)
    assert any(form == "ae" and values["AECAT"] == "CRS" for _, _, form, values in all_entries)

    with trial_app.app_context():
        assert set(db.session.scalars(sa.select(Entry.status))) == {"complete"}
        assert set(db.session.scalars(sa.select(Subject.status))) == {"enrolled"}
        assert max(db.session.scalars(sa.select(Subject.registration_date))) < TODAY.date()
        clock = db.session.scalars(sa.select(SafetyClock)).one()
        assert clock.kind == "sae_initial" and clock.stop_reason == "complete" and clock.stopped_at <= clock.due_at
        mfg_writers = set(db.session.scalars(sa.select(Entry.created_by).where(Entry.form_id == "mfg")))
        assert mfg_writers == {"mfg"}
        db.session.rollback()
    assert invoke(trial_app, "audit", "verify").exit_code == 0


def test_the_same_seed_gives_the_same_values(trial_app):
    for _ in range(2):
        assert invoke(trial_app, "seed-demo", "--subjects", "1", "--seed", "4").exit_code == 0
    books = casebooks(trial_app)
    assert sorted(books) == ["ES01-0001", "ES01-0002"]

    def comparable(book):
        return sorted(json.dumps([key, form, {k: v for k, v in values.items() if k not in OWN_IDENTIFIERS}], sort_keys=True)
                      for key, form, values in book)

    assert comparable(books["ES01-0001"]) == comparable(books["ES01-0002"])
    # Another seed tells another story (the plans alone, without saving them again).
    story = [(p.registration, p.age_months, p.sex, p.crs, p.icans) for p in demo_subjects._plans(5, 4, TODAY)]
    assert story == [(p.registration, p.age_months, p.sex, p.crs, p.icans) for p in demo_subjects._plans(5, 4, TODAY)]
    assert story != [(p.registration, p.age_months, p.sex, p.crs, p.icans) for p in demo_subjects._plans(5, 5, TODAY)]


def test_subjects_need_the_demo_accounts(trial_app):
    from conftest import make_site

    with trial_app.app_context():
        runtime.bind(db.session, runtime.for_app(trial_app))
        make_site(db.session, "ES01")
    result = trial_app.test_cli_runner().invoke(args=["edc", "seed-demo", "--subjects", "1"])
    assert result.exit_code == 1 and "seed-demo" in result.output


def test_runs_over_disjoint_sites_build_what_one_run_builds(trial_app):
    assert invoke(trial_app, "seed-demo").exit_code == 0
    assert invoke(trial_app, "seed-demo", "--subjects", "4", "--seed", "2", "--site", "es01", "--site", "LB01").exit_code == 0
    assert invoke(trial_app, "seed-demo", "--subjects", "4", "--seed", "2", "--site", "IT01", "--site", "JO01").exit_code == 0
    # One run over every site numbers each site's subjects in order of registration.
    expected = {}
    for plan in demo_subjects._plans(4, 2, TODAY):
        number = f"{plan.site}-{sum(n.startswith(plan.site) for n in expected) + 1:04d}"
        expected[number] = (plan.registration, plan.sex)
    with trial_app.app_context():
        runtime.bind(db.session, runtime.for_app(trial_app))
        study = runtime.of(db.session).study
        built = {}
        for subject in db.session.scalars(sa.select(Subject)):
            dm = db.session.scalars(sa.select(Entry).where(Entry.subject_id == subject.id, Entry.form_id == "dm")).one()
            values = sealing.unseal(db.session, study.form("dm", dm.form_version), dm)
            built[subject.number] = (subject.registration_date, values["SEX"])
        db.session.rollback()
    assert built == expected


def test_an_unknown_site_is_refused(trial_app):
    assert invoke(trial_app, "seed-demo").exit_code == 0
    result = trial_app.test_cli_runner().invoke(args=["edc", "seed-demo", "--subjects", "2", "--site", "XX01"])
    assert result.exit_code == 1 and "XX01" in result.output
    with trial_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Subject.id))) == 0
        db.session.rollback()
