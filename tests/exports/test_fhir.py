"""FHIR R4 export of one subject: GET /fhir/Patient/{id}/$everything, its mapping and its R4 validity.

Every resource is checked against the official FHIR R4 JSON schema (the `r4` fixture of conftest.py).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from conftest import bearer, login
from edc import runtime
from edc.services.fhir_export import find_subject
from edc.problems import NotFound
from edc.exports import fhir
from edc.models.audit import AuditRecord
from edc.models.entries import Entry
from edc.models.sites import Site
from edc.models.subjects import Subject
from edc.security.permissions import Actor, Grant
from edc.services.demo import DEMO_PASSWORD
from exports.conftest import SCHEMA_URL, load_schema, registry_headers, seed_demo_study
from trial.conftest import TODAY, TRIAL_FORMS, trial  # noqa: F401  (the fixture)
from trial.test_safety_forms import ae

FHIR_JSON = "application/fhir+json"
CRITERIA = ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")
AE_BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition"


# ================================================================ the official R4 JSON schema (fixtures in conftest.py)


def test_a_schema_that_cannot_be_had_fails_the_run(tmp_path, r4_schema):
    tampered = tmp_path / "fhir.schema.json"
    tampered.write_bytes(b"{}")  # wrong hash: refetched, and a fetch that fails is a failure, not a skip
    with pytest.raises(pytest.fail.Exception, match="cannot fetch"):
        load_schema(tampered, SCHEMA_URL.replace("-0.9.8.tgz", "-0.0.0-missing.tgz"))
    assert tampered.read_bytes() == b"{}"


def test_the_schema_catches_r5_elements_and_bad_codes(r4):
    assert r4.errors({"resourceType": "Patient", "birthDate": "2016-04"}) == []
    assert r4.errors({"resourceType": "ResearchSubject", "status": "on-study", "subject": {"reference": "Patient/1"},
                      "study": {"reference": "ResearchStudy/1"}, "individual": {"reference": "Patient/1"}})
    assert r4.errors({"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}})


# ================================================================ helpers


def everything(client, subject_id: str, headers: dict):
    return client.get(f"/fhir/Patient/{subject_id}/$everything", headers=headers)


def resources_of(bundle: dict) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"]]


def by_type(bundle: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for resource in resources_of(bundle):
        out.setdefault(resource["resourceType"], []).append(resource)
    return out


def extensions(resource: dict, name: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == f"{AE_BACKPORT}/{name}"]


def seriousness_rule_holds(adverse_event: dict) -> bool:
    """fhir.md §4.5, aeClinRes-seriousness-1: serious iff at least one seriousness criterion (present)."""
    serious = adverse_event["seriousness"]["coding"][0]["code"] == "serious"
    criteria = [e for e in extensions(adverse_event, "seriousness-criteria")
                if any(x["url"] == "criterionPresent" and x["valueBoolean"] for x in e["extension"])]
    return serious == bool(criteria) and (serious or not extensions(adverse_event, "seriousness-criteria"))


def outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return body


# ================================================================ over HTTP, on entries saved through the API


@pytest.fixture
def fhir_trial(trial, session):  # noqa: F811
    trial.headers["registry"] = registry_headers(trial.client, session)
    return trial


def test_everything_bundle_is_a_searchset_of_valid_r4_for_the_export_roles(fhir_trial, session, r4):
    t = fhir_trial
    number = t.enrol()
    t.saved(number, "ae", ae())
    t.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 3, AESHOSP="Y"))
    for role in ("statistician", "data_manager", "registry"):
        response = everything(t.client, number, t.headers[role])
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == FHIR_JSON
        bundle = response.get_json(force=True)
        assert bundle["type"] == "searchset" and r4.errors(bundle) == []
        assert [r for r in resources_of(bundle) if r4.errors(r)] == []
    kinds = by_type(bundle)
    patient = kinds["Patient"][0]
    assert "name" not in patient and patient["birthDate"] == "2016-04"
    assert patient["identifier"][0]["value"] == number
    events = kinds["AdverseEvent"]
    assert sorted(e["seriousness"]["coding"][0]["code"] for e in events) == ["non-serious", "serious"]
    assert all(seriousness_rule_holds(e) for e in events)
    crs = next(e for e in events if e["seriousness"]["coding"][0]["code"] == "serious")
    grade = extensions(crs, "ae-grade")[0]["valueCodeableConcept"]["coding"]
    assert grade[0]["code"] == "C41340" and grade[1]["system"].endswith("/astct-crs-grade")
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [m["resource"]["resourceType"] for m in matches] == ["Patient"]
    exports = session.execute(sa.select(AuditRecord.actor_username, AuditRecord.entity_type, AuditRecord.site_code)
                              .where(AuditRecord.action == "fhir_exported").order_by(AuditRecord.seq)).all()
    assert exports == [("statistician", "subject", "ES01"), ("data-manager", "subject", "ES01"),
                       ("registry", "subject", "ES01")]
    # Identical on a second export, asked for by the exported Patient id.
    again = everything(t.client, patient["id"], t.headers["statistician"]).get_json(force=True)
    assert resources_of(again) == resources_of(bundle)


def test_errors_under_fhir_are_operation_outcomes(fhir_trial):
    t = fhir_trial
    number = t.enrol()
    unauthenticated = outcome(everything(t.client, number, {}), 401)
    assert unauthenticated["issue"][0]["code"] == "login"
    assert "Bearer" in everything(t.client, number, {}).headers["WWW-Authenticate"]
    outcome(everything(t.client, number, {"Authorization": "Bearer not-a-token"}), 401)
    for role in ("investigator_ES01", "monitor_ES01", "safety", "manufacturing"):
        assert outcome(everything(t.client, number, t.headers[role]), 403)["issue"][0]["code"] == "forbidden"
    for unknown in ("ES01-9999", str(uuid.uuid4()), "no such thing"):
        assert outcome(everything(t.client, unknown, t.headers["statistician"]), 404)["issue"][0]["code"] == "not-found"


def test_the_patient_is_found_by_study_number_subject_id_or_patient_id(fhir_trial, session):
    t = fhir_trial
    number = t.enrol()
    subject_id = session.scalar(sa.select(Subject.id).where(Subject.number == number))
    first = everything(t.client, number.lower(), t.headers["registry"]).get_json(force=True)
    patient_id = by_type(first)["Patient"][0]["id"]
    assert patient_id == fhir.patient_id_for(subject_id) != str(subject_id)
    for key in (str(subject_id), patient_id, number):
        again = everything(t.client, key, t.headers["registry"]).get_json(force=True)
        assert resources_of(again) == resources_of(first)


def test_site_scope_hides_subjects_of_other_sites(fhir_trial, session):
    """A caller whose fhir:read grant were limited to ES01 would not see an IT01 subject (404, no oracle)."""
    t = fhir_trial
    es01, it01 = t.enrol(site="ES01"), t.enrol(site="IT01")
    site_id = session.scalar(sa.select(Site.id).where(Site.code == "ES01"))
    scoped = Actor(username="x", display_name="x", grants=(Grant(role="registry", site_id=site_id, site_code="ES01"),))
    assert find_subject(session, scoped, es01).number == es01
    with pytest.raises(NotFound):
        find_subject(session, scoped, it01)
    other_id = session.scalar(sa.select(Subject.id).where(Subject.number == it01))
    for key in (str(other_id), fhir.patient_id_for(other_id)):
        with pytest.raises(NotFound):
            find_subject(session, scoped, key)
    global_reader = Actor(username="y", display_name="y", grants=(Grant(role="statistician"),))
    assert find_subject(session, global_reader, it01).number == it01


# ================================================================ the mapping as pure functions


def _subject_with(t, session, number: str, ae_values_list: list[dict]):
    """The trial study, the saved subject and in-memory AE entries (never written)."""
    study = runtime.for_app(t.client.application).study
    subject = session.scalars(sa.select(Subject).where(Subject.number == number)).one()
    stamp = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    casebook = [(Entry(id=uuid.UUID(int=index + 1), subject_id=subject.id, event_key="", form_id="ae", form_version="1",
                       data=values, status="complete", version=1, created_at=stamp, updated_at=stamp), values)
                for index, values in enumerate(ae_values_list)]
    return study, subject, casebook


@pytest.mark.parametrize("criteria", [(), *[(c,) for c in CRITERIA], ("AESLIFE", "AESHOSP")])
def test_an_adverse_event_is_serious_iff_at_least_one_criterion(fhir_trial, session, r4, criteria):
    number = fhir_trial.enrol()
    values = ae(**{c: "Y" for c in criteria}) | {"AESER": "Y" if criteria else "N"}
    study, subject, casebook = _subject_with(fhir_trial, session, number, [values])
    (event,) = [fhir.to_json(r) for r in fhir.subject_resources(study, subject, casebook)
                if r.get_resource_type() == "AdverseEvent"]
    assert r4.errors(event) == []
    assert seriousness_rule_holds(event)
    assert event["seriousness"]["coding"][0]["code"] == ("serious" if criteria else "non-serious")
    assert len(extensions(event, "seriousness-criteria")) == len(criteria)
    assert session.scalar(sa.select(sa.func.count()).select_from(Entry)) == 0  # nothing was written


def test_missing_data_codes_become_data_absent_reasons(fhir_trial, session, r4):
    number = fhir_trial.enrol()
    study, subject, _ = _subject_with(fhir_trial, session, number, [])
    values = {"RSDAT": "2026-11-16", "BMDONE": "Y", "BMDAT": "2026-11-16", "BMMRDMETH": "MFC", "BMMRDUND": "N",
              "BMMRDVAL": {"missing": "ND"}, "CNSSTAT": {"missing": "UNK"}, "RSORRES": {"missing": "NE"}}
    stamp = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    entry = Entry(id=uuid.UUID(int=7), subject_id=subject.id, event_key="D28/1", form_id="resp", form_version="1",
                  data=values, status="complete", version=1, created_at=stamp, updated_at=stamp)
    observations = [fhir.to_json(r) for r in fhir.subject_resources(study, subject, [(entry, values)])
                    if r.get_resource_type() == "Observation"]
    absent = {o["code"]["coding"][-1]["code"]: o["dataAbsentReason"]["coding"] for o in observations}
    assert {code: coding[0]["code"] for code, coding in absent.items()} == {
        "MRD-BM": "not-performed", "CNS-STATUS": "unknown", "RESPONSE": "unknown"}
    assert absent["RESPONSE"][1]["code"] == "NE" and absent["RESPONSE"][1]["system"].endswith("/missing-data")
    assert not [key for o in observations for key in o if key.startswith("value")]
    assert [e for o in observations for e in r4.errors(o)] == []


# The least each form needs for the mapper to make its resources; everything else that may carry a missing-data
# code carries one.
_REQUIRED = {"ic": {"RFICDAT": "2026-11-02"}, "dh": {"NRELAPSE": 1}, "aph": {"APHDAT": "2026-11-05", "COI": "ARI-000123"},
             "mfg": {"COI": "ARI-000123", "BATCHNO": "B2611-ES010001"},
             "ld": {"EC": [{"ECTRT": "FLUDARABINE", "ECSTDAT": "2026-11-10", "ECDOSE": {"missing": "ND"}}]},
             "inf": {"EXFRACT": 1, "EXOCCUR": "Y", "EXSTDTC": "2026-11-15T10:00:00+01:00", "COI": "ARI-000123"},
             "resp": {"RSDAT": "2026-11-16", "BMDONE": "Y", "BMDAT": "2026-11-16", "BMMRDUND": "N"},
             "bca": {"LBDAT": "2026-11-16", "BCA": "Y"}, "crs_daily": {"CRSDAT": "2026-11-16", "CRSGRINV": "1"},
             "ae": ae()}


def test_every_missing_data_code_the_forms_allow_still_gives_valid_r4(fhir_trial, session, r4):
    number = fhir_trial.enrol()
    study, subject, _ = _subject_with(fhir_trial, session, number, [])
    stamp = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    casebook = []
    for index, (form_id, required) in enumerate(_REQUIRED.items()):
        form = study.form(form_id)
        values = {item_id: {"missing": item.missing_codes[0]} for item_id, item in form.items.items()
                  if item.missing_codes and item.group is None and item_id not in required}
        values |= required
        entry = Entry(id=uuid.UUID(int=100 + index), subject_id=subject.id, event_key="", form_id=form_id,
                      form_version=form.version, data=values, status="draft", version=1, created_at=stamp,
                      updated_at=stamp)
        casebook.append((entry, values))
    resources = [fhir.to_json(r) for r in fhir.subject_resources(study, subject, casebook)]
    assert [e for r in resources for e in r4.errors(r)] == []
    kinds = Counter(r["resourceType"] for r in resources)
    assert kinds["MedicationAdministration"] == 2 and kinds["AdverseEvent"] == 1 and kinds["Procedure"] == 1
    fraction = next(r for r in resources if r["resourceType"] == "MedicationAdministration"
                    and "Fraction 1" in r["dosage"].get("text", ""))
    assert "dose" not in fraction["dosage"]
    assert fraction["dosage"]["extension"][0]["valueCode"] == "not-performed"
    observations = {o["code"]["coding"][-1]["code"]: o for o in resources if o["resourceType"] == "Observation"}
    assert observations["RESPONSE"]["dataAbsentReason"]["coding"][0]["code"] == "not-applicable"
    assert observations["BCELL-APLASIA"]["status"] == "preliminary"
    assert all("dataAbsentReason" in c for c in observations["BCELL-APLASIA"]["component"])


def test_an_unexpected_failure_is_a_fatal_operation_outcome(fhir_trial, monkeypatch):
    t = fhir_trial
    number = t.enrol()

    def broken(*args, **kwargs):
        raise RuntimeError("mapping bug")

    monkeypatch.setattr(fhir, "subject_resources", broken)
    response = everything(t.client, number, t.headers["statistician"])
    assert response.status_code == 500 and response.mimetype == FHIR_JSON
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "fatal"
    assert "mapping bug" not in response.get_data(as_text=True)


def test_encrypted_items_leave_only_when_released_and_identifying_items_never(fhir_trial, session, monkeypatch):
    number = fhir_trial.enrol()
    term = "Pyrexia after the second fraction"
    study, subject, casebook = _subject_with(fhir_trial, session, number, [ae(term)])

    def exported() -> str:
        return json.dumps([fhir.to_json(r) for r in fhir.subject_resources(study, subject, casebook)])

    assert term not in exported()          # the verbatim term is encrypted; the trial releases no encrypted item
    monkeypatch.setattr(study, "exported_encrypted", {"ae": frozenset({"AETERM"})})
    assert term in exported()              # released by study.yaml exports: encrypted_items
    monkeypatch.setattr(study.form("ae", "1").items["AETERM"], "identifying", True)
    assert term not in exported()          # identifying: never, released or not


# ================================================================ the demo casebooks, complete through Day 28


@pytest.fixture
def demo(app_factory, fake_clock, session, seed_once):
    """Two synthetic subjects (one SAE: a grade 4 CRS), saved through the entry services, and the export roles."""
    fake_clock.now = TODAY
    app = app_factory(forms_dir=TRIAL_FORMS)
    seed_once("demo study, 2 subjects, default seed, at TODAY", lambda: seed_demo_study(app, 2, 0))
    client = app.test_client()
    return client, {"statistician": bearer(login(client, "stat", DEMO_PASSWORD)),
                    "registry": registry_headers(client, session)}


def test_demo_casebooks_export_completely_as_valid_r4(demo, session, r4):
    client, headers = demo
    numbers = session.scalars(sa.select(Subject.number).order_by(Subject.number)).all()
    assert len(numbers) == 2
    bundles = {}
    for number in numbers:
        response = everything(client, number, headers["statistician"])
        assert response.status_code == 200 and response.mimetype == FHIR_JSON
        # Reproducible: the same data give the same bytes, whoever asks.
        assert everything(client, number, headers["registry"]).get_data() == response.get_data()
        bundles[number] = response.get_json(force=True)
    seen: Counter = Counter()
    serious = []
    for number, bundle in bundles.items():
        resources = resources_of(bundle)
        errors = [e for r in resources for e in r4.errors(r)]
        assert errors == [], "\n".join(errors[:20])
        assert r4.errors(bundle) == []
        ids = [(r["resourceType"], r["id"]) for r in resources]
        assert len(ids) == len(set(ids))
        local = {f"{kind}/{rid}" for kind, rid in ids}
        dangling = [ref for ref in _references(resources) if ref not in local]
        assert dangling == []
        kinds = by_type(bundle)
        seen.update({kind: len(items) for kind, items in kinds.items()})
        patient = kinds["Patient"][0]
        assert set(patient) <= {"resourceType", "id", "meta", "identifier", "gender", "birthDate",
                                "managingOrganization", "deceasedBoolean"}
        assert len(patient["birthDate"]) == 7 and patient["identifier"][0]["value"] == number
        other = next(n for n in numbers if n != number)
        assert other not in json.dumps(bundle)
        for event in kinds["AdverseEvent"]:
            assert seriousness_rule_holds(event), event
            if event["seriousness"]["coding"][0]["code"] == "serious":
                serious.append(event)
        assert kinds["Condition"][0]["code"]["coding"][0]["code"] == "277571004"
        _check_cart_doses(session, number, kinds)
        responses = [o for o in kinds["Observation"] if o["code"]["text"] == "Disease response"]
        screening = [o for o in responses if "dataAbsentReason" in o]
        assert screening and screening[0]["dataAbsentReason"]["coding"][0]["code"] == "not-applicable"
        assert {"CRS", "ICANS", "MRD", "B-cell", "CNS"} <= {_observation_kind(o) for o in kinds["Observation"]}
        assert len(kinds["MedicationAdministration"]) == 3 + 6  # three fractions, 3 days x 2 lymphodepletion drugs
        assert kinds["Procedure"][0]["code"]["text"] == "Leukapheresis"
    assert {"Organization", "ResearchStudy", "Patient", "ResearchSubject", "Consent", "Condition", "Medication",
            "MedicationAdministration", "Procedure", "Observation", "AdverseEvent", "Provenance"} <= set(seen)
    assert len(serious) == 1
    grade = extensions(serious[0], "ae-grade")[0]["valueCodeableConcept"]["coding"]
    assert grade[0]["code"] == "C41337"  # grade 4, on the ASTCT scale as well
    assert grade[1]["system"].endswith("/astct-crs-grade") and grade[1]["code"] == "4"


def _observation_kind(observation: dict) -> str:
    text = observation["code"]["text"]
    for kind in ("CRS", "ICANS", "MRD", "B-cell", "CNS"):
        if kind in text or (kind == "CRS" and text.startswith("Cytokine")) or (kind == "ICANS" and "neurotoxicity" in text) \
                or (kind == "MRD" and "residual" in text):
            return kind
    return text


def _references(value) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _check_cart_doses(session, number: str, kinds: dict) -> None:
    """The dose given is the number of viable CAR+ cells; the dose per kg travels in an extension and the text."""
    subject_id = session.scalar(sa.select(Subject.id).where(Subject.number == number))
    infusions = {str(e.id): e.data for e in session.scalars(
        sa.select(Entry).where(Entry.subject_id == subject_id, Entry.form_id == "inf"))}
    cart = next(m for m in kinds["Medication"] if m["code"]["text"].startswith("varnimcabtagene"))
    assert "batch" not in cart  # the batch number is encrypted (one patient's product) and not released
    fractions = [a for a in kinds["MedicationAdministration"]
                 if a["medicationReference"]["reference"] == f"Medication/{cart['id']}"]
    assert len(fractions) == 3
    doses = sorted(a["dosage"]["dose"]["value"] for a in fractions)
    assert doses == sorted(values["EXDOSE"] for values in infusions.values())
    for administration in fractions:
        dosage = administration["dosage"]
        assert dosage["dose"]["code"] == "10*6"
        per_kg = dosage["extension"][0]["valueQuantity"]
        assert per_kg["code"] == "10*6/kg" and f"{per_kg['value']} x10^6 viable CAR+ cells/kg" in dosage["text"]
