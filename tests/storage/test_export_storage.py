"""Export files behind the storage interface, on both backends: the local directory and S3-compatible object
storage (moto's server, started by the session). Exports are written by the real worker, published to storage
and streamed back through edc's HTTP API; a file storage no longer has is 410 Gone, never a 500; deleting a
job deletes its objects; a failed write says why in words that name no path."""

from __future__ import annotations

import errno
import hashlib
import socket
from pathlib import Path

import pytest

from edc.exports import csv_files
from edc.services import exports
from edc.settings import SettingsError, load_settings
from exports.conftest import seed_demo_study, seed_demo_subjects
from exports.test_jobs import START, Demo, finished
from storage.conftest import BUCKET, unused_bucket
from test_demo_subjects import TRIAL_FORMS

BACKENDS = ("local", "s3")
SUBJECTS = 2  # the seeded snapshot the export job tests use too
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


class Stored(Demo):
    """The demo study on one storage backend, and a look into that storage from outside edc."""

    def __init__(self, app, export_dir: Path, session, backend: str, s3) -> None:
        super().__init__(app, export_dir, session)
        self.backend, self.s3 = backend, s3

    def keys(self, job_id: str) -> set[str]:
        """The names storage holds for a job, read directly from the directory or the bucket."""
        if self.backend == "s3":
            return {key.split("/", 1)[1] for key in self.s3.keys(prefix=f"{job_id}/")}
        directory = self.export_dir / job_id
        return {path.name for path in directory.iterdir()} if directory.is_dir() else set()

    def remove(self, job_id: str, names: set[str]) -> None:
        """Files lost behind edc's back (a restore without export storage, an operator's clean-up)."""
        for name in names:
            if self.backend == "s3":
                self.s3.client.delete_object(Bucket=BUCKET, Key=f"{job_id}/{name}")
            else:
                (self.export_dir / job_id / name).unlink()

    def get(self, path: str, username: str = "stat", **headers):
        response = self.client.get(path, headers={**self.as_(username), **headers})
        response.get_data()
        response.close()  # a streamed response holds its storage stream open until closed
        return response


def stored_demo(request, app_factory, session, fake_clock, tmp_path, seed_once, **settings) -> Stored:
    backend = request.param if hasattr(request, "param") else "s3"
    s3 = request.getfixturevalue("s3") if backend == "s3" else None
    fake_clock.now = START
    storage = s3.settings(**settings) if s3 else {}
    app = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(tmp_path / "exports"), **storage)
    seed_once("demo study, no subjects, at START", lambda: seed_demo_study(app, 0, 0))
    seed_once(f"demo study, {SUBJECTS} subjects, seed 2, at START", lambda: seed_demo_subjects(app, SUBJECTS, 2))
    return Stored(app, tmp_path / "exports", session, backend, s3)


@pytest.fixture(params=BACKENDS)
def study(request, app_factory, session, fake_clock, tmp_path, seed_once) -> Stored:
    """The demo study with SUBJECTS subjects, its exports kept on each backend in turn."""
    return stored_demo(request, app_factory, session, fake_clock, tmp_path, seed_once)


@pytest.fixture
def s3_study(request, app_factory, session, fake_clock, tmp_path, seed_once) -> Stored:
    return stored_demo(request, app_factory, session, fake_clock, tmp_path, seed_once)


def test_an_export_is_published_to_object_storage_and_streams_back_through_edc(s3_study):
    asked = s3_study.asked(include_audit=True)
    finished(s3_study, asked["id"])
    manifest = s3_study.manifest(asked["id"])
    listed = manifest["files"] + [manifest["archive"]]
    assert s3_study.keys(asked["id"]) == {f["name"] for f in listed} | {"manifest.json"}
    assert not any(s3_study.export_dir.iterdir())  # the worker's scratch directory is gone once published
    for entry in listed:
        response = s3_study.get(f"/api/v1/exports/{asked['id']}/files/{entry['name']}")
        assert response.status_code == 200 and response.headers["ETag"] == f'"{entry["sha256"]}"'
        assert hashlib.sha256(response.get_data()).hexdigest() == entry["sha256"]
        assert int(response.headers["Content-Length"]) == entry["bytes"]
    url = f"/api/v1/exports/{asked['id']}/files/{manifest['archive']['name']}"
    whole = s3_study.get(url).get_data()
    part = s3_study.get(url, Range="bytes=100-1099")
    assert part.status_code == 206 and part.get_data() == whole[100:1100]
    assert s3_study.get(url, **{"If-None-Match": f'"{manifest["archive"]["sha256"]}"'}).status_code == 304


@pytest.fixture
def prefixed_s3_study(request, app_factory, session, fake_clock, tmp_path, seed_once) -> Stored:
    return stored_demo(request, app_factory, session, fake_clock, tmp_path, seed_once, storage_s3_prefix="edc/")


def test_a_bulk_data_export_is_read_from_object_storage_under_the_key_prefix(prefixed_s3_study):
    study = prefixed_s3_study
    kick = study.client.get("/fhir/$export", query_string={"_type": "Patient"}, headers={**study.as_("stat"), **ASYNC})
    assert kick.status_code == 202
    study.work()
    status = study.get(kick.headers["Content-Location"].removeprefix("http://localhost"))
    assert status.status_code == 200
    output = status.get_json()["output"]
    assert [o["type"] for o in output] == ["Patient"]
    job_id = status.get_json()["extension"]["export"]
    assert study.s3.keys(prefix=f"edc/{job_id}/") == {f"edc/{job_id}/Patient.ndjson", f"edc/{job_id}/manifest.json"}
    ndjson = study.get(output[0]["url"].removeprefix("http://localhost"))
    assert ndjson.status_code == 200 and len(ndjson.get_data().splitlines()) == SUBJECTS


def test_files_missing_from_storage_are_410_and_the_job_says_so(study):
    asked = study.asked()
    finished(study, asked["id"])
    manifest = study.manifest(asked["id"])
    lost = manifest["files"][0]["name"]
    study.remove(asked["id"], {lost})
    response = study.get(f"/api/v1/exports/{asked['id']}/files/{lost}")
    assert response.status_code == 410 and response.content_type == "application/problem+json"
    assert "ask for the export again" in response.get_json()["detail"] and str(study.export_dir) not in response.get_data(True)
    job = study.status(asked["id"]).get_json()
    assert job["state"] == "completed" and job["files_missing"] is True and "files" not in job["links"]
    assert study.client.get("/api/v1/exports", headers=study.as_("stat")).get_json()["items"][0]["files_missing"] is True


def test_a_bulk_export_restored_without_its_files_is_410_not_500(study):
    kick = study.client.get("/fhir/$export", query_string={"_type": "Patient"}, headers={**study.as_("stat"), **ASYNC})
    status_url = kick.headers["Content-Location"].removeprefix("http://localhost")
    study.work()
    output = study.get(status_url).get_json()["output"]
    job_id = status_url.rsplit("/", 1)[1]
    study.remove(job_id, study.keys(job_id))  # the database came back from a backup; export storage did not
    for url in (status_url, output[0]["url"].removeprefix("http://localhost")):
        response = study.get(url)
        assert response.status_code == 410 and response.get_json()["resourceType"] == "OperationOutcome"


def test_deleting_an_export_deletes_its_objects(study):
    asked = study.asked()
    finished(study, asked["id"])
    assert "items_long.csv" in study.keys(asked["id"])
    assert study.client.delete(f"/api/v1/exports/{asked['id']}", headers=study.as_("stat")).status_code == 204
    assert study.keys(asked["id"]) == set() and study.status(asked["id"]).status_code == 404


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_object_storage_is_503_with_retry_after_never_500(s3_study, app_factory):
    asked = s3_study.asked()
    finished(s3_study, asked["id"])
    endpoint = f"http://127.0.0.1:{closed_port()}"
    down = Stored(app_factory(forms_dir=TRIAL_FORMS, export_dir=str(s3_study.export_dir),
                              **s3_study.s3.settings(storage_s3_endpoint_url=endpoint, storage_s3_max_attempts=1)),
                  s3_study.export_dir, s3_study.session, "s3", s3_study.s3)
    for path in (f"/api/v1/exports/{asked['id']}", f"/api/v1/exports/{asked['id']}/files/items_long.csv",
                 f"/api/v1/exports/{asked['id']}/manifest"):
        response = down.get(path)
        if path.endswith("manifest"):  # the manifest lives in the database: still readable
            assert response.status_code == 200
            continue
        assert response.status_code == 503 and response.content_type == "application/problem+json", path
        assert int(response.headers["Retry-After"]) > 0 and "could not be reached" in response.get_json()["detail"]
        assert endpoint.split("//")[1] not in response.get_data(as_text=True)
    assert down.client.delete(f"/api/v1/exports/{asked['id']}", headers=down.as_("stat")).status_code == 503
    assert s3_study.status(asked["id"]).get_json()["files_missing"] is False  # nothing deleted, the job stays


@pytest.fixture
def absent_bucket_study(request, app_factory, session, fake_clock, tmp_path, seed_once) -> Stored:
    return stored_demo(request, app_factory, session, fake_clock, tmp_path, seed_once, storage_s3_bucket=unused_bucket())


def test_an_export_to_a_bucket_that_does_not_exist_fails_with_a_reason_naming_no_bucket(absent_bucket_study):
    study = absent_bucket_study
    asked = study.asked()
    study.work()
    job = study.status(asked["id"]).get_json()
    assert job["state"] == "failed"
    assert job["error"] == ("The export failed: export storage is not available (its bucket does not exist). "
                            "The error has been logged.")
    assert not any(study.export_dir.iterdir())


def test_a_full_disk_fails_the_export_with_that_reason_and_no_path(study, monkeypatch):
    """The CSV writer writes into /dev/full, which answers every write with ENOSPC, as a full disk does."""
    write_csv = csv_files.write_csv

    def onto_a_full_disk(session, selection, directory, **options):
        (Path(directory) / "items_long.csv").symlink_to("/dev/full")
        return write_csv(session, selection, directory, **options)

    monkeypatch.setattr(csv_files, "write_csv", onto_a_full_disk)
    asked = study.asked()
    study.work()
    job = study.status(asked["id"]).get_json()
    assert job["state"] == "failed"
    assert job["error"] == "The export failed: export storage is full. The error has been logged."
    assert study.keys(asked["id"]) == set() and not any(study.export_dir.iterdir())
    assert study.job(asked["id"]).manifest is None


@pytest.mark.parametrize("settings, message", [
    ({"storage_backend": "ftp"}, "storage_backend must be one of local, s3"),
    ({"storage_backend": "s3"}, "storage_backend s3 needs storage_s3_bucket"),
    ({"storage_s3_prefix": "/edc"}, "storage_s3_prefix must be empty or end in"),
    ({"storage_s3_addressing_style": "dns"}, "storage_s3_addressing_style must be"),
    ({"storage_s3_endpoint_url": "minio:9000"}, "storage_s3_endpoint_url must be"),
    ({"storage_s3_server_side_encryption": "yes"}, "storage_s3_server_side_encryption must be"),
    ({"storage_s3_max_attempts": 0}, "storage_s3_max_attempts must be at least 1"),
])
def test_malformed_storage_settings_refuse_to_start(settings, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({"env": "testing", **settings}, environ={})


def test_the_default_is_local_storage_in_export_dir():
    settings = load_settings({"env": "development"}, environ={})
    assert settings["storage_backend"] == "local" and settings["export_dir"].endswith("instance/exports")


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device", "/srv/edc/exports/.x.attempt-1/items_long.csv"), "export storage is full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/srv/edc/exports/x"), "export storage is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/edc/exports/x"), "export storage is not writable"),
    (PermissionError(errno.EPERM, "Operation not permitted", "/srv/edc/exports/x"), "export storage is not writable"),
    (OSError(errno.EROFS, "Read-only file system", "/srv/edc/exports/x"), "export storage is not writable"),
])
def test_each_storage_failure_reads_as_its_reason_without_the_path(error, reason):
    message = exports.failure_message(error)
    assert message == f"The export failed: {reason}. The error has been logged." and "/srv" not in message


def test_other_failures_name_only_the_kind_of_error():
    assert exports.failure_message(OSError(errno.EBADF, "Bad file descriptor", "/srv/x")) == (
        "The export failed (OSError); the error has been logged.")
