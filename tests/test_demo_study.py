"""`flask edc seed-demo --study` (what `make serve` runs on an empty database): a dozen subjects at the four
sites at different stages, a CRS episode treated with tocilizumab, one SAE, open queries (automatic and
manual), source data verification and a casebook signed by the principal investigator of ES01."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from edc import runtime
from edc.extensions import db
from edc.models import Entry, Subject
from edc.models.entries import Query
from edc.models.monitoring import SdvMark, Signature
from edc.services import demo_subjects, sealing, signatures
from test_demo_subjects import TRIAL_FORMS, invoke

TODAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def study(app_factory, fake_clock, seed_once):
    """The demo study seeded once per session (then restored from its snapshot), in a bound app context."""
    fake_clock.now = TODAY
    app = app_factory(forms_dir=TRIAL_FORMS)

    def seed():
        result = invoke(app, "seed-demo", "--if-empty", "--study")
        assert result.exit_code == 0, result.output
        assert "seeded 4 sites and 12 demo accounts" in result.output and "seeded the demo study" in result.output

    seed_once("demo study (seed-demo --study), seed 0, at TODAY", seed)
    with app.app_context():
        runtime.bind(db.session, runtime.for_app(app))
        yield app
        db.session.rollback()


def entries_of(number: str) -> list[Entry]:
    return list(db.session.scalars(sa.select(Entry).join(Subject, Entry.subject_id == Subject.id)
                                   .where(Subject.number == number).order_by(Entry.created_at, Entry.id)))


def values_of(entry: Entry) -> dict:
    return sealing.unseal(db.session, runtime.of(db.session).study.form(entry.form_id, entry.form_version), entry)


def by_stage() -> dict[str, list[str]]:
    """Stage -> study numbers, in the order of DEMO_STUDY (same seed, same day)."""
    stages: dict[str, list[str]] = {}
    for number, stage, _ in demo_subjects.study_subjects(TODAY):
        stages.setdefault(stage, []).append(number)
    return stages


def story(name: str) -> str:
    (number,) = [number for number, _, told in demo_subjects.study_subjects(TODAY) if told == name]
    return number


def test_the_study_has_twelve_subjects_at_the_four_sites_at_their_stages(study):
    subjects = {s.number: s for s in db.session.scalars(sa.select(Subject))}
    assert len(subjects) == 12
    assert Counter(number[:4] for number in subjects) == {"ES01": 3, "IT01": 3, "LB01": 3, "JO01": 3}
    assert max(s.registration_date for s in subjects.values()) < TODAY.date()
    stages = by_stage()
    assert set(stages) == set(demo_subjects.STAGES)

    def events(number):
        return {entry.event_key.split("/")[0] for entry in entries_of(number) if entry.event_key}

    (screening,) = stages["screening"]
    assert subjects[screening].status == "screening"
    book = entries_of(screening)
    drafts = [e.form_id for e in book if e.status == "draft"]
    assert drafts and {e.form_id for e in book if e.status == "complete"} >= {"ic", "dm"}
    assert events(screening) == {"SCR"} and "ie" not in {e.form_id for e in book}

    (screened,) = stages["screened"]
    assert subjects[screened].status == "enrolled" and events(screened) == {"SCR"}
    assert "ie" in {e.form_id for e in entries_of(screened)}
    (apheresis,) = stages["apheresis"]
    assert events(apheresis) == {"SCR", "APH"}
    (lymphodepletion,) = stages["lymphodepletion"]
    assert {"APH", "LD"} <= events(lymphodepletion) and not events(lymphodepletion) & {"INF1", "D7"}
    for stage, day, visits in (("day3", 3, {"INF3"}), ("day7", 7, {"INF3", "D7"}), ("day14", 14, {"D14"}),
                               ("day21", 21, {"D21"})):
        for number in stages[stage]:
            book = entries_of(number)
            assert visits <= events(number) and "D28" not in events(number), (stage, number)
            daily = [e for e in book if e.form_id == "crs_daily"]
            assert len(daily) == day + 1, (stage, number, len(daily))
            assert all(e.status == "complete" for e in book)
    for number in stages["day28"]:
        assert {"D28"} <= events(number) and sum(e.form_id == "crs_daily" for e in entries_of(number)) == 29
    # Everything before the stage, nothing after: no entry dated today or later.
    assert max(db.session.scalars(sa.select(Entry.created_at))) < TODAY


def test_a_crs_episode_treated_with_tocilizumab_and_one_sae(study):
    crs = story("crs2")
    assert crs.startswith("ES01") and crs in by_stage()["day7"]
    book = entries_of(crs)
    grades = [values_of(e)["CRSGRDRV"] for e in book if e.form_id == "crs_daily"]
    assert max(grades) == 2
    medications = [values_of(e) for e in book if e.form_id == "cm"]
    assert any(m["CMTRT"] == "Tocilizumab" and m.get("CMCRSAGT") == "TOCILIZUMAB" for m in medications)
    assert any(values_of(e)["AECAT"] == "CRS" for e in book if e.form_id == "ae")

    serious = [(e, values_of(e)) for e in db.session.scalars(sa.select(Entry).where(Entry.form_id == "ae"))]
    serious = [(e, v) for e, v in serious if v.get("AESER") == "Y"]
    assert len(serious) == 1 and serious[0][1]["AECAT"] == "CRS"
    assert serious[0][0].subject.number == story("sae")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.form_id == "sae_review")) == 1


def test_open_queries_sdv_and_the_signed_casebook(study):
    crs, signed = story("crs2"), story("signed")
    numbers = dict(db.session.execute(sa.select(Subject.id, Subject.number)).all())
    open_queries = list(db.session.scalars(sa.select(Query).where(Query.state == "open")))
    automatic = [q for q in open_queries if q.origin == "auto" and numbers[q.subject_id] == crs]
    assert any(q.form_id == "vs" and q.item_id == "HR" for q in automatic)
    (manual,) = [q for q in open_queries if q.origin == "manual"]
    assert (numbers[manual.subject_id], manual.form_id, manual.item_id, manual.opened_by) == \
        (crs, "lb", "PLT", "mon.es01")

    book = entries_of(signed)
    verified = set(db.session.scalars(sa.select(SdvMark.entry_id).where(SdvMark.item_id.is_(None))))
    assert {e.id for e in book} <= verified
    (signature,) = db.session.scalars(sa.select(Signature))
    assert (numbers[signature.subject_id], signature.entry_id, signature.signer_username, signature.meaning) == \
        (signed, None, "inv.es01", "approval")
    assert signatures.digest_valid(db.session, signature) is True


def test_the_demo_accounts_still_log_in(study):
    client = study.test_client()
    for username in ("crc.es01", "mon.es01"):
        response = client.post("/api/v1/auth/login", json={"username": username, "password": "ari0001-demo-only"})
        assert response.status_code == 200, response.get_data(as_text=True)


def test_the_demo_study_is_refused_when_the_study_has_subjects(study):
    result = study.test_cli_runner().invoke(args=["edc", "seed-demo", "--study"])
    assert result.exit_code == 1 and "already has subjects" in result.output


def test_study_and_subjects_options_are_exclusive(study):
    result = study.test_cli_runner().invoke(args=["edc", "seed-demo", "--study", "--subjects", "2"])
    assert result.exit_code == 2 and "--study" in result.output
