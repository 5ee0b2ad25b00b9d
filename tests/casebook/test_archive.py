"""The site archive at study close, end to end through the HTTP API and the export worker: refused before the lock,
built as one zip (a casebook PDF per subject with its audit trail, the CSV and ODM exports, a manifest of SHA-256s),
downloaded by the site's principal investigator and the data manager only, audited; a worker that stops mid-archive
leaves the job to be run again or failed, never reported complete."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from datetime import timedelta

import sqlalchemy as sa

from casebook.conftest import text_of
from edc import runtime
from edc.extensions import db
from edc.models import AuditRecord, ExportJob, Subject
from edc.services import exports


def site_numbers(book, code: str = "ES01") -> list[str]:
    return list(book.session.scalars(sa.select(Subject.number).where(Subject.number.startswith(f"{code}-"))
                                     .order_by(Subject.number)))


def ask(book, code: str = "ES01", username: str = "dm"):
    return book.client.post(f"/api/v1/sites/{code}/archive", headers=book.as_(username))


def lock_study(book) -> None:
    response = book.client.post("/api/v1/study/lock", headers=book.as_("dm"), json={"reason": "database lock"})
    assert response.status_code == 200, response.get_json()


def test_an_archive_is_refused_before_the_lock_and_to_anyone_but_a_data_manager(book):
    refused = ask(book)
    assert refused.status_code == 409 and refused.mimetype == "application/problem+json"
    assert "locked" in refused.get_json()["detail"]
    assert ask(book, username="inv.es01").status_code == 403
    assert ask(book, username="stat").status_code == 403
    assert ask(book, code="XX99").status_code == 404
    numbers = site_numbers(book)
    assert numbers
    for number in numbers[:-1]:  # a site with one subject still open is not locked
        assert book.client.post(f"/api/v1/subjects/{number}/lock", headers=book.as_("dm"), json={}).status_code == 200
    assert ask(book).status_code == 409
    assert book.client.post(f"/api/v1/subjects/{numbers[-1]}/lock", headers=book.as_("dm"), json={}).status_code == 200
    retry = {**book.as_("dm"), "Idempotency-Key": "archive-es01-1"}
    accepted = book.client.post("/api/v1/sites/ES01/archive", headers=retry)  # every subject locked: the site is
    assert accepted.status_code == 202, accepted.get_json()
    again = book.client.post("/api/v1/sites/ES01/archive", headers=retry)  # a retry after a lost answer
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == accepted.get_json()["id"]
    book.session.expire_all()
    assert book.session.scalar(sa.select(sa.func.count(ExportJob.id))) == 1


def test_the_archive_holds_every_casebook_the_exports_and_a_manifest_and_only_the_pi_and_dm_download_it(book):
    lock_study(book)
    asked = ask(book)
    assert asked.status_code == 202, asked.get_json()
    body = asked.get_json()
    assert asked.headers["Location"] == f"/api/v1/sites/ES01/archives/{body['id']}" and body["state"] == "queued"
    status = book.client.get(asked.headers["Location"], headers=book.as_("inv.es01"))  # the site's PI
    assert status.status_code == 200 and status.headers["Retry-After"]
    listed = book.client.get("/api/v1/sites/ES01/archives", headers=book.as_("inv.es01")).get_json()
    assert [a["id"] for a in listed["items"]] == [body["id"]] and listed["total"] == 1
    assert book.client.get("/api/v1/sites/IT01/archives", headers=book.as_("dm")).get_json()["total"] == 0
    assert book.client.get("/api/v1/sites/ES01/archives", headers=book.as_("inv.it01")).status_code == 404
    for outsider, expected in (("inv.it01", 404), ("mon.es01", 403), ("crc.es01", 403), ("stat", 403)):
        assert book.client.get(asked.headers["Location"], headers=book.as_(outsider)).status_code == expected, outsider
    book.work()
    done = book.client.get(asked.headers["Location"], headers=book.as_("inv.es01")).get_json()
    assert done["state"] == "completed", done
    (listed,) = done["files"]
    url = done["links"]["files"][0]
    response = book.client.get(url, headers=book.as_("inv.es01"))
    assert response.status_code == 200
    data = response.get_data()
    response.close()
    assert hashlib.sha256(data).hexdigest() == listed["sha256"] and len(data) == listed["bytes"]
    assert book.client.get(url, headers=book.as_("inv.it01")).status_code == 404
    again = book.client.get(url, headers=book.as_("dm"))
    assert again.status_code == 200 and again.get_data() == data
    again.close()

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["site"] == "ES01" and manifest["export"] == body["id"]
        assert sorted(f["name"] for f in manifest["files"]) == sorted(n for n in names if n != "manifest.json")
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"], entry["name"]
        numbers = site_numbers(book)
        assert [n for n in names if n.startswith("casebooks/")] == [f"casebooks/casebook-{n}.pdf" for n in numbers]
        assert {"csv/audit_trail.csv", "csv/signatures.csv", "csv/dictionary.csv", "odm/odm.xml"} <= set(names)
        text = text_of(archive.read(f"casebooks/casebook-{numbers[0]}.pdf"))
        assert f"Casebook of subject {numbers[0]}" in text and "Audit trail of this entry" in text
        assert "entry_created" in text
        subjects_in_csv = {line.split(",")[0] for line in archive.read("csv/items_long.csv").decode().splitlines()[1:]}
        assert subjects_in_csv == set(numbers)  # the site's subjects only

    book.session.expire_all()
    downloads = list(book.session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "export_downloaded")
                                          .order_by(AuditRecord.seq)))
    assert [d.actor_username for d in downloads] == ["inv.es01", "dm"]
    completed = book.session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "export_completed")).one()
    assert completed.entity_id == body["id"]


def lease_runs_out(session, job_id: str) -> None:
    job = session.get(ExportJob, uuid.UUID(job_id), populate_existing=True)
    job.heartbeat_at -= timedelta(seconds=61)
    session.commit()


def abandoned_attempt(book, job_id: str, attempt: int):
    """A worker claims the archive, writes part of its zip and is killed (its work directory stays behind)."""
    with book.app.app_context():
        runtime.bind(db.session, runtime.for_app(book.app))
        job = exports.claim_next(db.session)
        assert job is not None and str(job.id) == job_id and job.attempts == attempt
        work = exports._work_directory(db.session, job)
        work.mkdir(parents=True)
        (work / "MILENARI-P1-ES01-archive.zip").write_bytes(b"PK\x03\x04 half a zip")
        db.session.remove()
    return work


def test_a_worker_killed_mid_archive_leaves_it_to_run_again_and_then_failed_never_complete(book):
    lock_study(book)
    job_id = ask(book).get_json()["id"]
    abandoned_attempt(book, job_id, 1)
    book.work()  # within the lease: another worker's job, left alone
    assert book.session.get(ExportJob, uuid.UUID(job_id), populate_existing=True).state == "running"
    lease_runs_out(book.session, job_id)
    abandoned_attempt(book, job_id, 2)  # taken up again, and killed again
    lease_runs_out(book.session, job_id)
    book.work()  # out of attempts (export_max_attempts = 2): failed, with nothing published
    job = book.session.get(ExportJob, uuid.UUID(job_id), populate_existing=True)
    assert job.state == "failed" and job.manifest is None and "giving up" in job.error
    assert not any(book.export_dir.glob(f"*{job_id}*"))
    answer = book.client.get(f"/api/v1/sites/ES01/archives/{job_id}", headers=book.as_("dm")).get_json()
    assert answer["state"] == "failed" and answer["files"] == [] and "files" not in answer["links"]


def test_a_worker_killed_once_is_replaced_and_the_archive_completes(book):
    lock_study(book)
    job_id = ask(book).get_json()["id"]
    work = abandoned_attempt(book, job_id, 1)
    lease_runs_out(book.session, job_id)
    book.work()
    job = book.session.get(ExportJob, uuid.UUID(job_id), populate_existing=True)
    assert job.state == "completed" and job.attempts == 2 and not work.exists()
    (listed,) = job.manifest["files"]
    published = book.export_dir / job_id / listed["name"]
    assert hashlib.sha256(published.read_bytes()).hexdigest() == listed["sha256"]
    with zipfile.ZipFile(published) as archive:
        assert archive.testzip() is None
