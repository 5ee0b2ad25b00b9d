"""FHIR Bulk Data $export end to end over HTTP: kick-off, polling, manifest, NDJSON files, _type, _since,
cancel, and the errors (OperationOutcome) the protocol names."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from edc.models import ExportJob
from exports.conftest import seed_demo_study, seed_demo_subjects
from exports.test_jobs import START, Demo, withdraw_first_subject
from test_demo_subjects import TRIAL_FORMS

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def bulk(app_factory, session, fake_clock, tmp_path, seed_once):
    fake_clock.now = START
    app = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(tmp_path / "exports"), export_max_active_per_user=2)
    seed_once("demo study, no subjects, at START", lambda: seed_demo_study(app, 0, 0))
    return Demo(app, tmp_path / "exports", session)


@pytest.fixture
def study(bulk, seed_once):
    """With two synthetic subjects: what the content tests export."""
    seed_once("demo study, 2 subjects, seed 3, at START",
              lambda: seed_demo_subjects(bulk.app, 2, 3))
    return bulk


def kick_off(bulk: Demo, path: str = "/fhir/$export", username: str = "stat", headers=ASYNC, **params):
    return bulk.client.get(path, query_string=params, headers={**bulk.as_(username), **headers})


def status_path(response) -> str:
    assert response.status_code == 202, response.get_json()
    location = response.headers["Content-Location"]
    assert location.startswith("http://localhost/fhir/bulk-status/")
    return urlsplit(location).path


def outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.data
    assert response.content_type == "application/fhir+json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code, body
    return body


def test_kick_off_poll_manifest_and_files(study):
    status = status_path(kick_off(study))
    waiting = study.client.get(status, headers=study.as_("stat"))
    assert waiting.status_code == 202 and waiting.headers["Retry-After"] == "2"
    assert waiting.headers["X-Progress"].startswith("queued") and len(waiting.headers["X-Progress"]) < 100
    study.work()
    done = study.client.get(status, headers=study.as_("stat"))
    assert done.status_code == 200 and done.content_type == "application/json"
    manifest = done.get_json()
    assert manifest["request"] == "http://localhost/fhir/$export" and manifest["requiresAccessToken"] is True
    assert manifest["error"] == [] and manifest["transactionTime"]
    types = {item["type"] for item in manifest["output"]}
    assert {"Patient", "Organization", "ResearchStudy", "AdverseEvent", "Observation"} <= types
    for item in manifest["output"]:
        path = urlsplit(item["url"]).path
        assert study.client.get(path).status_code == 401  # requiresAccessToken
        file = study.client.get(path, headers=study.as_("stat"))
        assert file.status_code == 200 and file.mimetype == "application/fhir+ndjson"
        lines = file.get_data(as_text=True).splitlines()
        file.close()
        assert len(lines) == item["count"] and {json.loads(line)["resourceType"] for line in lines} == {item["type"]}
    patients = next(item for item in manifest["output"] if item["type"] == "Patient")
    assert patients["count"] == 2


def test_status_manifest_and_file_urls_are_at_public_base_url_whatever_the_host(study):
    # public_base_url is http://localhost in the tests; the Host names a port (not compared by the host check),
    # which a URL made from the Host would repeat.
    host = {"Host": "localhost:8443"}
    location = kick_off(study, headers={**ASYNC, **host}, _type="Patient").headers["Content-Location"]
    assert location.startswith("http://localhost/fhir/bulk-status/")
    study.work()
    manifest = study.client.get(urlsplit(location).path, headers={**study.as_("stat"), **host}).get_json()
    assert manifest["request"] == "http://localhost/fhir/$export?_type=Patient"
    assert [item["url"] for item in manifest["output"]] == [
        f"http://localhost/fhir/bulk-files/{manifest['extension']['export']}/Patient.ndjson"]


def test_a_kick_off_for_another_host_is_refused_and_queues_nothing(bulk):
    refused = kick_off(bulk, headers={**ASYNC, "Host": "attacker.example"})
    outcome(refused, 400, "invalid")
    assert "attacker" not in refused.get_data(as_text=True)
    assert bulk.session.query(ExportJob).count() == 0


def test_patient_level_type_and_output_format(study):
    status = status_path(kick_off(study, "/fhir/Patient/$export", _type="Patient,AdverseEvent",
                                  _outputFormat="application/ndjson"))
    study.work()
    manifest = study.client.get(status, headers=study.as_("stat")).get_json()
    assert sorted(item["type"] for item in manifest["output"]) == ["AdverseEvent", "Patient"]
    assert manifest["request"].startswith("http://localhost/fhir/Patient/$export?")
    # The Patient compartment has no Organization: asking for one there is a 400.
    outcome(kick_off(study, "/fhir/Patient/$export", _type="Organization"), 400, "invalid")


def test_since_exports_only_subjects_changed_after_it(study, fake_clock):
    fake_clock.advance(days=1)
    study.headers.clear()
    withdraw_first_subject(study)
    since = (START + timedelta(hours=12)).isoformat().replace("+00:00", "Z")
    status = status_path(kick_off(study, _since=since, _type="Patient"))
    study.work()
    manifest = study.client.get(status, headers=study.as_("stat")).get_json()
    assert [(item["type"], item["count"]) for item in manifest["output"]] == [("Patient", 1)]


def test_delete_cancels_and_later_polls_are_404(bulk):
    status = status_path(kick_off(bulk))
    cancelled = bulk.client.delete(status, headers=bulk.as_("stat"))
    assert cancelled.status_code == 202 and cancelled.content_type == "application/fhir+json"
    assert cancelled.get_json()["issue"][0]["diagnostics"] == "The export was cancelled."
    outcome(bulk.client.get(status, headers=bulk.as_("stat")), 404, "not-found")
    bulk.work()
    assert not bulk.export_dir.exists() or list(bulk.export_dir.iterdir()) == []


@pytest.mark.parametrize("headers, params, code", [
    ({}, {}, "invalid"),  # no Prefer: respond-async
    (ASYNC, {"_outputFormat": "text/csv"}, "invalid"),
    (ASYNC, {"_type": "Nonsense"}, "invalid"),
    (ASYNC, {"_since": "yesterday"}, "invalid"),
    (ASYNC, {"_typeFilter": "Observation?code=x"}, "invalid"),
])
def test_bad_kick_offs_are_400_operation_outcomes_and_queue_nothing(bulk, headers, params, code):
    outcome(kick_off(bulk, headers=headers, **params), 400, code)
    from edc.models import ExportJob

    assert bulk.session.query(ExportJob).count() == 0


def test_lenient_handling_ignores_unsupported_parameters_and_says_so(study):
    accepted = kick_off(study, headers={**ASYNC, "Prefer": "respond-async, handling=lenient"}, _elements="id",
                        _type="Patient", _until="2026-12-01T00:00:00Z")
    status = status_path(accepted)
    warnings = [issue for issue in accepted.get_json()["issue"] if issue["severity"] == "warning"]
    assert [(w["code"], w["diagnostics"].split()[1]) for w in warnings] == [("not-supported", "_until"),
                                                                           ("not-supported", "_elements")]
    study.work()
    manifest = study.client.get(status, headers=study.as_("stat")).get_json()
    [error_file] = manifest["error"]
    assert error_file["type"] == "OperationOutcome" and error_file["count"] == 1
    assert study.client.get(urlsplit(error_file["url"]).path).status_code == 401  # requiresAccessToken
    served = study.client.get(urlsplit(error_file["url"]).path, headers=study.as_("stat"))
    assert served.status_code == 200 and served.mimetype == "application/fhir+ndjson"
    [line] = served.get_data(as_text=True).splitlines()
    assert json.loads(line)["issue"] == warnings
    # Without ignored parameters, no error file.
    plain = status_path(kick_off(study, _type="Patient"))
    study.work()
    assert study.client.get(plain, headers=study.as_("stat")).get_json()["error"] == []
    job_id = plain.rsplit("/", 1)[1]
    outcome(study.client.get(f"/fhir/bulk-errors/{job_id}/OperationOutcome.ndjson", headers=study.as_("stat")),
            404, "not-found")


def test_every_exported_resource_carries_meta_last_updated(study):
    status = status_path(kick_off(study))
    study.work()
    manifest = study.client.get(status, headers=study.as_("stat")).get_json()
    undated = []
    for item in manifest["output"]:
        file = study.client.get(urlsplit(item["url"]).path, headers=study.as_("stat"))
        for line in file.get_data(as_text=True).splitlines():
            resource = json.loads(line)
            stamp = resource.get("meta", {}).get("lastUpdated")
            if stamp is None:
                undated.append(resource["resourceType"])
            else:
                assert stamp.endswith("Z") and stamp <= manifest["transactionTime"].replace("+00:00", "Z"), stamp
        file.close()
    # Made from the form definitions, not from a record: documented in docs/fhir.md.
    assert set(undated) <= {"ResearchStudy", "Medication"} and "ResearchStudy" in undated


def test_unknown_job_and_other_users_job_are_404_and_the_limit_is_429(bulk):
    outcome(bulk.client.get(f"/fhir/bulk-status/{uuid.uuid4()}", headers=bulk.as_("stat")), 404, "not-found")
    status = status_path(kick_off(bulk))
    outcome(bulk.client.get(status, headers=bulk.as_("dm")), 404, "not-found")
    status_path(kick_off(bulk))
    refused = kick_off(bulk)
    outcome(refused, 429, "throttled")
    assert int(refused.headers["Retry-After"]) >= 1


def test_roles_without_fhir_read_are_403_operation_outcomes(bulk):
    outcome(kick_off(bulk, username="mon.es01"), 403, "forbidden")
    outcome(bulk.client.get("/fhir/$export", headers=ASYNC), 401, "login")
