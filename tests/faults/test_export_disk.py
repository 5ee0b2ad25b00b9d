"""Export storage failing under an export: an export directory that cannot be created (its path runs through a
regular file, which holds even for root, unlike a chmod), and a disk that fills while the files are written (each
file the writer opens is /dev/full, whose writes fail with ENOSPC as on a full disk).

Either way the job fails cleanly with a message, nothing is published or left half-written, and the service keeps
answering.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import bearer, login
from edc.exports import csv_files

SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
AE = {"AETERM": "Fever", "AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "POSSIBLE"}


def fill_the_disk(monkeypatch) -> None:
    """Every CSV file of the export lands on /dev/full: the writer's writes fail with ENOSPC."""
    real_writer = csv_files.write_csv

    def writer_on_a_full_disk(session, selection, directory: Path, **kwargs):
        for name in ("ae.csv", "subjects.csv", csv_files.DICTIONARY_FILE, csv_files.CODELISTS_FILE, csv_files.LONG_FILE):
            os.symlink("/dev/full", directory / name)
        return real_writer(session, selection, directory, **kwargs)

    monkeypatch.setattr(csv_files, "write_csv", writer_on_a_full_disk)


@pytest.mark.parametrize("fault", ["export directory under a file", "disk full while writing"])
def test_an_export_meeting_a_storage_fault_fails_cleanly_and_the_service_keeps_answering(
        fault, app_factory, session, staff, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    export_dir = blocker / "exports" if fault == "export directory under a file" else tmp_path / "exports"
    if fault == "disk full while writing":
        fill_the_disk(monkeypatch)
    app = app_factory(export_dir=str(export_dir))
    client = app.test_client()
    inv = bearer(login(client, staff["investigator"]))
    number = client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]
    assert client.post(f"/api/v1/subjects/{number}/entries", json={"form": "ae", "data": AE, "complete": True},
                       headers=inv).status_code == 201
    stat = bearer(login(client, staff["statistician"]))
    job_id = client.post("/api/v1/exports", json={"format": "csv"}, headers=stat).get_json()["id"]

    result = app.test_cli_runner().invoke(args=["edc", "worker", "--once"])

    assert result.exit_code == 0, result.output
    job = client.get(f"/api/v1/exports/{job_id}", headers=stat).get_json()
    assert job["state"] == "failed" and job["error"] and job["links"].get("files") is None, job
    assert client.get(f"/api/v1/exports/{job_id}/manifest", headers=stat).status_code == 409
    published = sorted(p.name for p in export_dir.iterdir()) if export_dir.is_dir() else []
    assert published == []  # neither the export nor a work directory
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/v1/me", headers=stat).status_code == 200
    retry = client.post("/api/v1/exports", json={"format": "csv"}, headers=stat)
    assert retry.status_code == 202  # the failed job no longer counts against the active-job limit
