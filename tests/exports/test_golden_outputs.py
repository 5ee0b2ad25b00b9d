"""Golden outputs of the seeded demo study: the FHIR Bulk Data files, the safety report, the safety clocks and
the per-subject summary rows, compared byte for byte with files committed under tests/exports/golden/.

They pin what the engine makes of the trial's forms, so a change of how the engine is told which item is
what (forms/study.yaml) is seen to change nothing. Three subjects are seeded at a fixed clock (as the `demo`
fixture does); record ids come from uuid.uuid4, so the fixture replaces it with a seeded generator for
the test: every id (and so every uuid5 resource id) is then the same on every run and on both databases,
and nothing in the output needs normalising. Left out of the comparison: the summary rows' `fingerprint`
(a cache key of the counting rules, not an output) and the clocks' `hours_left` (recomputed per call;
the clock is fixed, so it would not vary, but it is a view of due_at).

To regenerate after an intended change of the output: EDC_REGENERATE_GOLDEN=1 pytest tests/exports/test_golden_outputs.py
then review the diff of tests/exports/golden/.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import bearer, login
from edc import runtime
from edc.exports.fhir_ndjson import write_ndjson
from edc.exports.source import Selection
from edc.extensions import db
from edc.models.subjects import Subject, SubjectSummary
from edc.services.demo import DEMO_PASSWORD
from exports.conftest import START, seed_demo_study
from test_demo_subjects import TRIAL_FORMS

GOLDEN = Path(__file__).resolve().parent / "golden"
SUMMARY_LEFT_OUT = {"subject_id", "site_id", "fingerprint"}


@pytest.fixture
def seeded(app_factory, fake_clock, monkeypatch, seed_once):
    """The `demo` fixture's three subjects, with record ids drawn from a seeded generator."""
    fake_clock.now = START
    app = app_factory(forms_dir=TRIAL_FORMS)

    def seed():
        ids = random.Random("edc-golden-outputs")
        with monkeypatch.context() as patch:
            patch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=ids.getrandbits(128), version=4))
            seed_demo_study(app, 3, 2)

    seed_once("demo study, 3 subjects, seed 2, at START, seeded record ids", seed)
    with app.app_context():
        runtime.bind(db.session, runtime.for_app(app))
        yield app
        db.session.rollback()


def compare(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("EDC_REGENERATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"no golden file {path}: run with EDC_REGENERATE_GOLDEN=1 once"
    expected = path.read_bytes()
    if data != expected:
        got, want = data.decode("utf-8").splitlines(), expected.decode("utf-8").splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{name} differs from the golden file at line {first + 1}:\n"
                    f"  golden: {want[first] if first < len(want) else '<end>'}\n"
                    f"  now:    {got[first] if first < len(got) else '<end>'}")


def as_json(value) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def test_fhir_bulk_files_of_the_demo_study_match_the_golden_files(seeded, tmp_path):
    out = tmp_path / "fhir"
    files = write_ndjson(db.session, Selection(), out)
    assert len(files) == 12
    for item in files:
        compare(f"fhir/{item.name}", (out / item.name).read_bytes())
    assert sorted(p.name for p in (GOLDEN / "fhir").iterdir()) == sorted(item.name for item in files)


def test_safety_report_clocks_and_summary_rows_of_the_demo_study_match_the_golden_file(seeded):
    client = seeded.test_client()
    headers = bearer(login(client, "safety", DEMO_PASSWORD))
    answers = {}
    for path in ("/api/v1/reports/safety", "/api/v1/reports/safety-clocks", "/api/v1/safety/clocks?state=all",
                 "/api/v1/reports/completeness?by_subject=true"):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.get_json()
        answers[path] = response.get_json()
    for clock_view in answers["/api/v1/safety/clocks?state=all"]["items"]:
        clock_view.pop("hours_left", None)
    db.session.expire_all()
    rows = {}
    for number, row in db.session.execute(sa.select(Subject.number, SubjectSummary)
                                          .join(SubjectSummary, SubjectSummary.subject_id == Subject.id)
                                          .order_by(Subject.number)):
        rows[number] = {c.name: getattr(row, c.name) for c in SubjectSummary.__table__.columns
                        if c.name not in SUMMARY_LEFT_OUT}
    assert answers["/api/v1/reports/safety"]["ae_total"] > 0 and answers["/api/v1/safety/clocks?state=all"]["items"]
    compare("safety.json", as_json({"api": answers, "subject_summaries": rows}))
