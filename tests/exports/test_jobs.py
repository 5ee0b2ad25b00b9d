"""Export jobs through the HTTP API and the worker: ask (202), follow, manifest, download, cancel, limits,
scope, a worker that stopped mid-job, reproducible output, data cuts. Real writers, real files."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import BACKEND, bearer, login
from edc.extensions import db
from edc.models import AuditRecord, ExportJob, Subject
from edc.services import exports
from edc.services.demo import DEMO_PASSWORD
from exports.conftest import registry_headers, seed_demo_study, seed_demo_subjects
from test_demo_subjects import TRIAL_FORMS, invoke

START = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
LIMIT = 3


class Demo:
    def __init__(self, app, export_dir: Path, session) -> None:
        self.app, self.export_dir, self.session = app, export_dir, session
        self.client = app.test_client()
        self.headers: dict[str, dict[str, str]] = {}

    def as_(self, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
        if username not in self.headers:
            self.headers[username] = bearer(login(self.client, username, password))
        return self.headers[username]

    def ask(self, username: str = "stat", **body):
        body.setdefault("format", "csv")
        return self.client.post("/api/v1/exports", json=body, headers=self.as_(username))

    def asked(self, username: str = "stat", **body) -> dict:
        response = self.ask(username, **body)
        assert response.status_code == 202, response.get_json()
        assert response.headers["Location"] == f"/api/v1/exports/{response.get_json()['id']}"
        return response.get_json()

    def status(self, job_id: str, username: str = "stat"):
        return self.client.get(f"/api/v1/exports/{job_id}", headers=self.as_(username))

    def work(self) -> None:
        result = invoke(self.app, "worker", "--once")
        assert result.exit_code == 0, result.output

    def manifest(self, job_id: str, username: str = "stat") -> dict:
        response = self.client.get(f"/api/v1/exports/{job_id}/manifest", headers=self.as_(username))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def download(self, job_id: str, name: str, username: str = "stat") -> bytes:
        response = self.client.get(f"/api/v1/exports/{job_id}/files/{name}", headers=self.as_(username))
        assert response.status_code == 200, response.get_json()
        data = response.get_data()
        response.close()  # a streamed file response holds the file open until closed
        return data

    def job(self, job_id: str) -> ExportJob:
        self.session.expire_all()
        return self.session.get(ExportJob, uuid.UUID(job_id))


SUBJECTS = 2


@pytest.fixture
def demo(app_factory, session, fake_clock, tmp_path, seed_once):
    """The demo sites and accounts, no subjects (requests, rights, limits)."""
    fake_clock.now = START
    export_dir = tmp_path / "exports"
    app = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(export_dir), export_max_active_per_user=LIMIT,
                      export_lease_seconds=60, export_max_attempts=2)
    seed_once("demo study, no subjects, at START", lambda: seed_demo_study(app, 0, 0))
    return Demo(app, export_dir, session)


@pytest.fixture
def study(demo, seed_once):
    """The demo with SUBJECTS synthetic subjects (complete casebooks to Day 28): what the exports write."""
    seed_once(f"demo study, {SUBJECTS} subjects, seed 2, at START",
              lambda: seed_demo_subjects(demo.app, SUBJECTS, 2))
    return demo


def finished(demo: Demo, job_id: str, username: str = "stat") -> dict:
    demo.work()
    body = demo.status(job_id, username).get_json()
    assert body["state"] == "completed", body
    return body


# --- the happy path -------------------------------------------------------------------------------

def test_a_csv_export_is_queued_run_by_the_worker_and_its_files_match_the_manifest(study):
    asked = study.asked(include_audit=True)
    assert asked["state"] == "queued" and asked["progress"]["subjects_done"] == 0
    body = finished(study, asked["id"])
    assert body["progress"] == {"subjects_done": SUBJECTS, "subjects_total": SUBJECTS, "percent": 100.0}
    manifest = study.manifest(asked["id"])
    assert manifest["format"] == "csv" and manifest["requested_by"] == "stat" and manifest["subjects"] == SUBJECTS
    assert manifest["filters"]["include_audit"] is True
    assert manifest["form_versions"] and all(versions for versions in manifest["form_versions"].values())
    names = {f["name"] for f in manifest["files"]}
    assert {"dictionary.csv", "codelists.csv", "items_long.csv", "audit_trail.csv", "signatures.csv"} <= names
    for listed in manifest["files"] + [manifest["archive"]]:
        data = study.download(asked["id"], listed["name"])
        assert hashlib.sha256(data).hexdigest() == listed["sha256"] and len(data) == listed["bytes"]
    with zipfile.ZipFile(io.BytesIO(study.download(asked["id"], manifest["archive"]["name"]))) as archive:
        assert sorted(archive.namelist()) == sorted(names | {"manifest.json"})
        assert {info.date_time for info in archive.infolist()} == {exports.ZIP_TIME}
        inside = json.loads(archive.read("manifest.json"))
        assert inside["files"] == manifest["files"]
    assert body["links"]["manifest"] == f"/api/v1/exports/{asked['id']}/manifest"
    records = study.session.scalars(sa.select(AuditRecord).where(AuditRecord.entity_id == asked["id"])
                                   .order_by(AuditRecord.seq)).all()
    downloads = len(manifest["files"]) + 2  # every file, the archive, and the archive again
    assert [r.action for r in records] == ["export_requested", "export_completed"] + ["export_downloaded"] * downloads
    first = records[2]
    assert first.actor_username == "stat"
    assert first.changes == [{"field": "file", "old": None, "new": manifest["files"][0]["name"]},
                             {"field": "range", "old": None, "new": None}]


def test_a_resumed_download_is_audited_with_its_byte_range_and_a_304_is_not(study):
    asked = study.asked()
    finished(study, asked["id"])
    listed = study.manifest(asked["id"])["files"][0]
    path = f"/api/v1/exports/{asked['id']}/files/{listed['name']}"
    part = study.client.get(path, headers={**study.as_("stat"), "Range": "bytes=0-9"})
    assert part.status_code == 206 and len(part.get_data()) == 10
    part.close()
    unchanged = study.client.get(path, headers={**study.as_("stat"), "If-None-Match": f'"{listed["sha256"]}"'})
    unchanged.close()  # a streamed response holds its storage stream until closed, as a WSGI server does
    assert unchanged.status_code == 304
    records = study.session.scalars(sa.select(AuditRecord).where(AuditRecord.entity_id == asked["id"],
                                                                 AuditRecord.action == "export_downloaded")).all()
    assert [r.changes[1]["new"] for r in records] == [f"bytes 0-9/{listed['bytes']}"]


def test_odm_and_fhir_exports_complete_with_their_files(study):
    odm = study.asked(format="odm")
    fhir = study.asked(format="fhir", types=["Patient", "AdverseEvent"])
    study.work()
    assert [f["name"] for f in study.manifest(odm["id"])["files"]] == ["odm.xml"]
    files = {f["name"]: f["records"] for f in study.manifest(fhir["id"])["files"]}
    assert files["Patient.ndjson"] == SUBJECTS and set(files) == {"Patient.ndjson", "AdverseEvent.ndjson"}


def test_exports_are_reproducible_byte_for_byte_except_the_documented_run_metadata(study):
    first, second = study.asked(), study.asked()
    study.work()
    a, b = study.manifest(first["id"]), study.manifest(second["id"])
    assert a["files"] == b["files"]  # every CSV file: same name, SHA-256, size, rows
    for listed in a["files"]:
        assert study.download(first["id"], listed["name"]) == study.download(second["id"], listed["name"])
    zips = [zipfile.ZipFile(io.BytesIO(study.download(m["export"], m["archive"]["name"]))) for m in (a, b)]
    differing = {info.filename for info in zips[0].infolist()
                 if zips[0].read(info.filename) != zips[1].read(info.filename)}
    assert differing == {"manifest.json"}  # the export id and times only


# --- scope, rights and bad input -------------------------------------------------------------------

def test_a_monitor_exports_only_their_sites_and_another_site_is_404(study):
    denied = study.ask("mon.es01", sites=["LB01"])
    assert denied.status_code == 404 and denied.content_type == "application/problem+json"
    asked = study.asked("mon.es01")
    finished(study, asked["id"], "mon.es01")
    in_scope = study.session.scalar(sa.select(sa.func.count(Subject.id)).join(Subject.site)
                                   .where(sa.text("sites.code IN ('ES01', 'IT01')")))
    assert study.manifest(asked["id"], "mon.es01")["subjects"] == in_scope


@pytest.mark.parametrize("username, body, status, pointer", [
    ("stat", {"format": "xlsx"}, 422, "/format"),
    ("stat", {"format": "csv", "forms": ["nosuchform"]}, 422, "/forms"),
    ("stat", {"format": "csv", "statuses": ["asleep"]}, 422, "/statuses"),
    ("stat", {"format": "csv", "types": ["Patient"]}, 422, "/types"),
    ("stat", {"format": "fhir", "include_audit": True}, 422, "/include_audit"),
    ("stat", {"format": "odm", "spreadsheet_safe": True}, 422, "/spreadsheet_safe"),
    ("stat", {"format": "csv", "since": "2026-09-01T00:00:00"}, 422, None),  # no time zone
    ("stat", {"format": "csv", "data_cut": "no-such-cut"}, 404, None),
    ("inv.es01", {"format": "csv", "sites": ["IT01"]}, 404, None),
    ("admin", {"format": "csv"}, 403, None),
    ("safety", {"format": "csv"}, 403, None),
])
def test_bad_requests_get_a_clear_answer_and_queue_nothing(demo, username, body, status, pointer):
    response = demo.client.post("/api/v1/exports", json=body, headers=demo.as_(username))
    assert response.status_code == status, response.get_json()
    assert response.content_type == "application/problem+json"
    if pointer:
        assert pointer in {e["pointer"] for e in response.get_json()["errors"]}
    assert demo.session.scalar(sa.select(sa.func.count(ExportJob.id))) == 0


def test_the_registry_client_exports_fhir_only(demo):
    headers = registry_headers(demo.client, demo.session, "registry-es")
    assert demo.client.post("/api/v1/exports", json={"format": "csv"}, headers=headers).status_code == 403
    # Its token (it has no password session) is for the FHIR surface only: Bulk Data $export there.
    assert demo.client.post("/api/v1/exports", json={"format": "fhir"}, headers=headers).status_code == 403
    assert demo.client.get("/fhir/$export", headers={**headers, "Prefer": "respond-async"}).status_code == 202


def test_unknown_deleted_and_other_users_jobs_are_404(demo):
    asked = demo.asked()
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        assert demo.status(job_id).status_code == 404
    assert demo.status(asked["id"], "dm").status_code == 404  # someone else's
    assert demo.client.get(f"/api/v1/exports/{asked['id']}/manifest", headers=demo.as_("stat")).status_code == 409
    assert demo.client.delete(f"/api/v1/exports/{asked['id']}", headers=demo.as_("stat")).status_code == 204
    assert demo.status(asked["id"]).status_code == 404
    demo.work()
    assert demo.job(asked["id"]).state == "cancelled" and not (demo.export_dir / asked["id"]).exists()


def test_a_file_not_in_the_manifest_is_404_and_no_path_reaches_the_disk(study):
    asked = study.asked()
    finished(study, asked["id"])
    for name in ("../../etc/passwd", "manifest.json.bak", "..%2Fkeys"):
        response = study.client.get(f"/api/v1/exports/{asked['id']}/files/{name}", headers=study.as_("stat"))
        assert response.status_code == 404


def test_deleting_a_finished_export_removes_its_files(study):
    asked = study.asked()
    finished(study, asked["id"])
    assert (study.export_dir / asked["id"]).is_dir()
    assert study.client.delete(f"/api/v1/exports/{asked['id']}", headers=study.as_("stat")).status_code == 204
    assert not (study.export_dir / asked["id"]).exists() and study.status(asked["id"]).status_code == 404
    actions = study.session.scalars(sa.select(AuditRecord.action).where(AuditRecord.entity_id == asked["id"])
                                   .order_by(AuditRecord.seq)).all()
    assert actions == ["export_requested", "export_completed", "export_deleted"]  # nothing was downloaded


# --- limits -----------------------------------------------------------------------------------------

def test_more_active_exports_than_the_limit_get_429_and_nothing_is_queued(demo):
    for _ in range(LIMIT):
        demo.asked()
    refused = demo.ask()
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert demo.session.scalar(sa.select(sa.func.count(ExportJob.id))) == LIMIT
    demo.asked("dm")  # the limit is per user
    demo.work()
    demo.asked()  # finished jobs no longer count


def test_ten_concurrent_exports_by_one_user_queue_exactly_the_limit(demo):
    headers = demo.as_("stat")
    statuses: list[int] = []

    def ask() -> None:
        client = demo.app.test_client()
        statuses.append(client.post("/api/v1/exports", json={"format": "csv"}, headers=headers).status_code)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if BACKEND == "postgresql":  # SQLite serialises writers: some may see "database is locked" (503) instead
        assert sorted(statuses) == [202] * LIMIT + [429] * (10 - LIMIT)
    else:
        assert statuses.count(202) == LIMIT and set(statuses) <= {202, 429, 503}
    assert demo.session.scalar(sa.select(sa.func.count(ExportJob.id))) == LIMIT


# --- cancellation and failures -------------------------------------------------------------------------

def test_cancel_mid_job_stops_the_worker_and_leaves_no_files(study, monkeypatch):
    asked = study.asked()
    monkeypatch.setattr(exports, "HEARTBEAT_SECONDS", 0.0)  # check for cancellation after every subject
    original = exports._progress

    def cancel_after_first_subject(session, job, attempt):
        report = original(session, job, attempt)

        def progress(done: int) -> None:
            if done == 1:
                response = study.client.delete(f"/api/v1/exports/{asked['id']}", headers=study.as_("stat"))
                assert response.status_code == 204
            report(done)

        return progress

    monkeypatch.setattr(exports, "_progress", cancel_after_first_subject)
    study.work()
    job = study.job(asked["id"])
    assert job.state == "cancelled" and job.manifest is None and job.subjects_done < SUBJECTS
    assert list(study.export_dir.iterdir()) == []  # neither the work directory nor a final one


def lease_runs_out(session, job_id: str) -> None:
    """The job's worker has been silent for longer than the lease, by the lease clock (the database's on
    PostgreSQL, which a fake clock does not move)."""
    job = session.get(ExportJob, uuid.UUID(job_id), populate_existing=True)
    job.heartbeat_at -= timedelta(seconds=61)
    session.commit()


def test_a_worker_that_stopped_mid_job_is_replaced_and_the_job_runs_again(study):
    asked = study.asked()
    with study.app.app_context():
        from edc import runtime

        runtime.bind(db.session, runtime.for_app(study.app))
        job = exports.claim_next(db.session)  # a worker claims it, writes part of a file, and is killed
        work = exports._work_directory(db.session, job)
        work.mkdir(parents=True)
        (work / "items_long.csv").write_text("half a file")
        db.session.remove()
    study.work()  # within the lease: the job is someone else's, left alone
    assert study.job(asked["id"]).state == "running"
    lease_runs_out(study.session, asked["id"])
    study.headers.clear()
    study.work()
    job = study.job(asked["id"])
    assert job.state == "completed" and job.attempts == 2
    assert not work.exists() and (study.export_dir / asked["id"] / "items_long.csv").read_text() != "half a file"


def test_a_job_whose_worker_stops_every_time_is_marked_failed_never_complete(demo):
    asked = demo.asked()
    with demo.app.app_context():
        from edc import runtime

        runtime.bind(db.session, runtime.for_app(demo.app))
        for _ in range(2):  # two attempts (export_max_attempts), each abandoned
            job = exports.claim_next(db.session)
            assert job is not None and job.id == uuid.UUID(asked["id"])
            exports._work_directory(db.session, job).mkdir(parents=True)
            lease_runs_out(db.session, asked["id"])
        db.session.remove()
    demo.work()
    job = demo.job(asked["id"])
    assert job.state == "failed" and "giving up" in job.error and job.manifest is None
    assert list(demo.export_dir.iterdir()) == []
    demo.headers.clear()
    response = demo.client.get(f"/api/v1/exports/{asked['id']}/manifest", headers=demo.as_("stat"))
    assert response.status_code == 409 and "failed" in response.get_json()["detail"]


def test_a_writer_error_fails_the_job_and_removes_its_files(demo, monkeypatch):
    asked = demo.asked()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports, "_manifest", broken)  # everything written, then the last step fails
    demo.work()
    job = demo.job(asked["id"])
    assert job.state == "failed" and "RuntimeError" in job.error and "disk full" not in job.error
    assert list(demo.export_dir.iterdir()) == []


# --- data cuts and since ---------------------------------------------------------------------------------

def test_an_export_of_a_data_cut_is_the_same_after_later_entries(study, fake_clock):
    cut = study.client.post("/api/v1/data-cuts", json={"name": "interim-1", "cutoff_at": START.isoformat(),
                                                       "reason": "interim analysis"}, headers=study.as_("dm"))
    assert cut.status_code == 201, cut.get_json()
    first = study.asked(data_cut="interim-1")
    finished(study, first["id"])
    fake_clock.advance(days=1)
    study.headers.clear()
    assert invoke(study.app, "seed-demo", "--subjects", "1", "--seed", "9").exit_code == 0  # data after the cut
    second = study.asked(data_cut="interim-1")
    finished(study, second["id"])
    a, b = study.manifest(first["id"]), study.manifest(second["id"])
    assert a["files"] == b["files"] and a["filters"]["data_cut"]["name"] == "interim-1"
    live = study.asked()
    finished(study, live["id"])
    assert study.manifest(live["id"])["subjects"] == a["subjects"] + 1


def withdraw_first_subject(demo: Demo) -> str:
    """A change made now (the synthetic casebooks are dated in the past): the first subject is withdrawn."""
    number = demo.session.scalar(sa.select(Subject.number).order_by(Subject.number).limit(1))
    headers = demo.as_("dm")
    tag = demo.client.get(f"/api/v1/subjects/{number}", headers=headers).headers["ETag"]
    response = demo.client.post(f"/api/v1/subjects/{number}/status", json={"status": "withdrawn", "reason": "consent withdrawn"},
                                headers={**headers, "If-Match": tag})
    assert response.status_code == 200, response.get_json()
    return number


def test_since_exports_only_what_changed_after_it(study, fake_clock):
    fake_clock.advance(days=1)
    study.headers.clear()
    withdraw_first_subject(study)
    asked = study.asked(since=(START + timedelta(hours=12)).isoformat())
    finished(study, asked["id"])
    assert study.manifest(asked["id"])["subjects"] == 1
