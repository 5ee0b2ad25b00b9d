"""edc.exports.fhir_ndjson: Bulk Data NDJSON files (one per resource type) from the demo casebooks.

Every line is checked against the official R4 JSON schema (the `r4` fixture of conftest.py); the `_since`
rule is checked against what really changed: a full export before and after a change, compared line by line.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from edc import runtime
from edc.extensions import db
from edc.exports import fhir
from edc.exports.fhir_ndjson import MEDIA_TYPE, RESOURCE_TYPES, check_types, write_ndjson
from edc.exports.files import Cancelled
from edc.exports.source import Selection, casebooks
from edc.models import Entry, Subject
from edc.security.permissions import Actor
from edc.services import entries, sealing, subjects
from edc.services.concurrency import etag_of
from edc.services.fhir_export import casebook



def read_lines(directory, files) -> dict[str, list[dict]]:
    """Each file's resources by type, checking the file is what its ExportFile says."""
    out = {}
    for item in files:
        data = (directory / item.name).read_bytes()
        assert item.media_type == MEDIA_TYPE == "application/fhir+ndjson"
        assert item.size == len(data) and item.sha256 == hashlib.sha256(data).hexdigest()
        assert data.endswith(b"\n") and b"\n\n" not in data and b"\r" not in data
        lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert item.records == len(lines)
        kind = item.name.removesuffix(".ndjson")
        assert {r["resourceType"] for r in lines} == {kind}
        out[kind] = lines
    return out


def keyed(by_type: dict[str, list[dict]]) -> dict[str, dict]:
    return {f"{r['resourceType']}/{r['id']}": r for lines in by_type.values() for r in lines}


def references(value) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def test_every_line_is_valid_r4_and_each_type_has_its_file(demo, tmp_path, r4):
    session = db.session
    out = tmp_path / "out"
    files = write_ndjson(session, Selection(), out)
    names = [f.name for f in files]
    assert names == sorted(names) and sorted(p.name for p in out.iterdir()) == names
    by_type = read_lines(out, files)
    errors = [e for lines in by_type.values() for r in lines for e in r4.errors(r)]
    assert errors == [], "\n".join(errors[:20])
    assert set(by_type) == RESOURCE_TYPES  # the demo casebooks make every type
    # One line per resource: the unique resources of the subjects' $everything, study-wide ones once.
    study = runtime.of(session).study
    expected: dict[str, dict] = {}
    sites = set()
    for subject in session.scalars(sa.select(Subject).order_by(Subject.number)):
        sites.add(subject.site_id)
        for resource in fhir.subject_resources(study, subject, casebook(session, subject)):
            expected.setdefault(f"{resource.get_resource_type()}/{resource.id}", fhir.to_json(resource))
    written = keyed(by_type)
    assert sum(len(lines) for lines in by_type.values()) == len(written) == len(expected)
    assert written == expected  # entry records (exports.source) map exactly as Entry rows do
    counts = Counter({kind: len(lines) for kind, lines in by_type.items()})
    assert counts["Organization"] == len(sites) and counts["ResearchStudy"] == 1
    assert counts["Patient"] == counts["ResearchSubject"] == counts["Consent"] == 3
    lymphodepletion = [m for m in by_type["Medication"] if m["code"]["text"] != study.fhir.product.text]
    assert len(lymphodepletion) == len({m["id"] for m in lymphodepletion}) == 2  # fludarabine, cyclophosphamide
    assert [ref for ref in references(list(written.values())) if ref not in written] == []


def test_types_filter_and_unknown_types(demo, tmp_path):
    session = db.session
    full = write_ndjson(session, Selection(), tmp_path / "full")
    some = write_ndjson(session, Selection(), tmp_path / "some", types=frozenset({"Patient", "Observation"}))
    assert [f.name for f in some] == ["Observation.ndjson", "Patient.ndjson"]
    assert {f.name: f.sha256 for f in full if f.name in ("Observation.ndjson", "Patient.ndjson")} == \
        {f.name: f.sha256 for f in some}
    for bad in ({"Patient", "Encounter"}, {"patient"}, set()):
        with pytest.raises(ValueError):
            write_ndjson(session, Selection(), tmp_path / "bad", types=frozenset(bad))
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
    assert check_types(["Patient", " Observation"]) == {"Patient", "Observation"}


def test_reruns_are_byte_identical_with_deterministic_ids(demo, tmp_path):
    session = db.session
    first = write_ndjson(session, Selection(), tmp_path / "1")
    again = write_ndjson(session, Selection(), tmp_path / "2")
    assert [(f.name, f.sha256, f.size, f.records) for f in first] == [(f.name, f.sha256, f.size, f.records) for f in again]
    patients = read_lines(tmp_path / "1", [f for f in first if f.name == "Patient.ndjson"])["Patient"]
    subject_ids = session.scalars(sa.select(Subject.id).order_by(Subject.number)).all()
    assert [p["id"] for p in patients] == [fhir.patient_id_for(i) for i in subject_ids]


def test_progress_after_each_casebook_and_cancelling_stops_the_export(demo, tmp_path):
    session = db.session
    seen = []
    write_ndjson(session, Selection(), tmp_path / "done", progress=seen.append)
    assert seen == [1, 2, 3]

    def cancel_at_second(done):
        if done == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        write_ndjson(session, Selection(), tmp_path / "cancelled", progress=cancel_at_second)
    first = (tmp_path / "cancelled" / "Patient.ndjson").read_bytes()
    assert first.count(b"\n") == 2  # written as built, flushed and closed on the way out


def test_identifying_items_never_leave(demo, tmp_path, monkeypatch):
    """The AE term is encrypted free text: released by the study it is exported; flagged identifying it is gone."""
    session = db.session
    study = runtime.of(session).study
    monkeypatch.setattr(study, "exported_encrypted", {"ae": frozenset({"AETERM"})})
    records = [e for book in casebooks(session, Selection(forms=frozenset({"ae"}))) for e in book.entries]
    terms = {json.dumps(e.values["AETERM"], ensure_ascii=False)[1:-1].encode() for e in records
             if isinstance(e.values.get("AETERM"), str)}
    assert terms

    def exported(name: str) -> bytes:
        return b"".join((tmp_path / name / f.name).read_bytes() for f in write_ndjson(session, Selection(), tmp_path / name))

    def event_texts(name: str) -> set[str]:
        lines = (tmp_path / name / "AdverseEvent.ndjson").read_text(encoding="utf-8").splitlines()
        return {json.loads(line)["event"]["text"] for line in lines}

    plain = exported("plain")
    assert all(term in plain for term in terms) and event_texts("plain") == {e.values["AETERM"] for e in records}
    for version in {e.form_version for e in records}:
        monkeypatch.setattr(study.form("ae", version).items["AETERM"], "identifying", True)
    hidden = exported("hidden")
    assert event_texts("hidden") == {"Adverse event"}
    coded = {b"Cytokine release syndrome"}  # also the NCIt display of the CRS coding, not the verbatim term
    assert not [term for term in terms - coded if term in hidden]
    patients = (tmp_path / "hidden" / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    assert not [p for p in map(json.loads, patients) if "name" in p or "address" in p]


def _change_a_response_and_withdraw_a_subject(session) -> tuple[str, str]:
    """Save one subject's last response form again as a draft, and withdraw another subject."""
    system = Actor.system("tests")
    numbers = session.scalars(sa.select(Subject.number).order_by(Subject.number)).all()
    first, second = numbers[0], numbers[1]
    entry = session.scalars(sa.select(Entry).join(Subject).where(Subject.number == first, Entry.form_id == "resp")
                            .order_by(Entry.created_at.desc()).limit(1)).one()
    form = runtime.of(session).study.form(entry.form_id, entry.form_version)
    values = {key: value for key, value in sealing.unseal(session, form, entry).items()
              if not (key in form.items and form.items[key].computed)}  # the server computes those
    entries.update_entry(session, system, entry.id, data=values, complete=False, expected_etag=etag_of(entry),
                         reason="tests: reopened")
    subject = session.scalars(sa.select(Subject).where(Subject.number == second)).one()
    subjects.change_status(session, system, second, status="withdrawn", reason="tests: consent withdrawn",
                           expected_etag=etag_of(subject))
    session.commit()
    return first, second


def test_since_keeps_every_resource_that_changed_and_little_else(demo, tmp_path, fake_clock):
    session = db.session
    before = keyed(read_lines(tmp_path / "before", write_ndjson(session, Selection(), tmp_path / "before")))
    latest = max(session.scalar(sa.select(sa.func.max(Entry.updated_at))), session.scalar(sa.select(sa.func.max(Subject.updated_at))))
    assert write_ndjson(session, Selection(since=latest), tmp_path / "nothing") == []

    fake_clock.now = latest + timedelta(days=1)
    since = fake_clock.now - timedelta(seconds=1)
    changed_subject, withdrawn = _change_a_response_and_withdraw_a_subject(session)
    session.expire_all()
    after = keyed(read_lines(tmp_path / "after", write_ndjson(session, Selection(), tmp_path / "after")))
    delta = keyed(read_lines(tmp_path / "delta", write_ndjson(session, Selection(since=since), tmp_path / "delta")))

    really_changed = {key for key, resource in after.items() if before.get(key) != resource}
    assert really_changed and really_changed <= set(delta)  # nothing that changed is left out
    assert all(delta[key] == after[key] for key in delta)  # and what is sent is the current state
    extra = set(delta) - really_changed
    kinds = Counter(key.split("/")[0] for key in extra)
    # Sent without changing: context (site, study), and subject-level resources rebuilt from a changed record
    # (Patient and Consent from the subject row, the Condition from the responses, Provenances of rebuilt
    # targets). Resources of the casebook itself follow their entries exactly.
    assert set(kinds) <= {"Organization", "ResearchStudy", "Patient", "Consent", "Condition", "Provenance"}, extra
    # The untouched subject sends nothing; the withdrawn one its enrolment, not its casebook.
    untouched = session.scalars(sa.select(Subject.id).where(Subject.number.notin_([changed_subject, withdrawn]))).one()
    assert fhir.patient_id_for(untouched) not in {key.split("/")[1] for key in delta}
    withdrawn_patient = fhir.patient_id_for(session.scalar(sa.select(Subject.id).where(Subject.number == withdrawn)))
    about_withdrawn = Counter(r["resourceType"] for r in delta.values()
                              if f"Patient/{withdrawn_patient}" in references(r) or r["id"] == withdrawn_patient)
    assert about_withdrawn["Patient"] == about_withdrawn["ResearchSubject"] == 1
    assert about_withdrawn["Observation"] == about_withdrawn["AdverseEvent"] == 0
    research_subject = next(r for r in delta.values() if r["resourceType"] == "ResearchSubject")
    assert research_subject["status"] == "withdrawn"
    statuses = Counter(r["status"] for r in delta.values() if r["resourceType"] == "Observation")
    assert statuses["preliminary"] >= 1 and "final" not in statuses  # only the reopened form's observations
    # With a type filter, the same rule.
    only = write_ndjson(session, Selection(since=since), tmp_path / "only", types=frozenset({"Observation"}))
    assert [f.name for f in only] == ["Observation.ndjson"]
    assert only[0].records == sum(1 for key in delta if key.startswith("Observation/"))
