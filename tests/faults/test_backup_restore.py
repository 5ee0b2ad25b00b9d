"""Backup and restore as docs/operations.md gives them: the database (pg_dump on PostgreSQL, the backup API on
SQLite) and the key ring, kept apart; restored into a new database with the keys, the audit trail verifies and the
CSV and FHIR exports of the restored study are byte-identical to the original's (the manifest and the CSV zip,
which carries the manifest, hold the run's own metadata: the export's id and when it was asked for). With another
key ring, the restored trail does not verify.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import BACKEND, bearer, login, make_app
from edc.extensions import db
from edc.security import keyring
from edc.services.demo import DEMO_PASSWORD
from exports.conftest import START
from faults.harness import audit_verify
from test_demo_subjects import TRIAL_FORMS, invoke

START_KEY = "demo study, 3 subjects, seed 2, at START"  # the same seed as tests/exports' `demo` fixture


def seed_demo_study(app) -> None:
    assert invoke(app, "seed-demo").exit_code == 0
    result = invoke(app, "seed-demo", "--subjects", "3", "--seed", "2")
    assert result.exit_code == 0, result.output


def back_up(database_url: str, backup_dir: Path) -> Path:
    """The database's backup file: pg_dump's custom format, or a SQLite copy made with the backup API."""
    if BACKEND == "postgresql":
        target = backup_dir / "edc.dump"
        subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", _libpq(database_url)],
                       check=True, timeout=120)
        return target
    target = backup_dir / "edc.sqlite3"
    source, copy = sqlite3.connect(database_url.removeprefix("sqlite:///")), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return target


def restore(backup: Path, database_url: str, workdir: Path) -> str:
    """Restore a backup file into a new database; its URL."""
    if BACKEND == "postgresql":
        url = sa.make_url(database_url).set(database=f"{sa.make_url(database_url).database}_restore")
        _admin(database_url, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)', f'CREATE DATABASE "{url.database}"')
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={_libpq(url)}", str(backup)],
                       check=True, timeout=120)
        return url.render_as_string(hide_password=False)
    target = workdir / "restored.sqlite3"
    shutil.copyfile(backup, target)
    return f"sqlite:///{target}"


def drop_restored(url: str) -> None:
    if BACKEND == "postgresql":
        _admin(url, f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')


def _libpq(url) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(url, *statements: str) -> None:
    engine = sa.create_engine(sa.make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def exported_files(app, export_dir: Path) -> dict[str, dict[str, bytes]]:
    """A CSV and a FHIR export of everything, asked by the demo statistician and run by the worker: per format,
    the bytes of every data file the manifest lists."""
    client = app.test_client()
    stat = bearer(login(client, "stat", DEMO_PASSWORD))
    jobs = {fmt: client.post("/api/v1/exports", json={"format": fmt}, headers=stat).get_json()["id"] for fmt in ("csv", "fhir")}
    result = app.test_cli_runner().invoke(args=["edc", "worker", "--once"])
    assert result.exit_code == 0, result.output
    files = {}
    for fmt, job_id in jobs.items():
        manifest = client.get(f"/api/v1/exports/{job_id}/manifest", headers=stat).get_json()
        files[fmt] = {f["name"]: (export_dir / job_id / f["name"]).read_bytes() for f in manifest["files"]}
    return files


@pytest.fixture
def restored_apps():
    """Apps built on restored databases, disposed (and the databases dropped) after the test."""
    built = []

    def build(url, keys_dir, **settings):
        app = make_app(url, keys_dir, forms_dir=TRIAL_FORMS, **settings)
        built.append((app, url))
        return app

    yield build
    for app, url in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    for url in {url for _, url in built}:
        drop_restored(url)


def test_a_backup_restored_with_its_key_ring_verifies_and_exports_byte_identical_files(
        app_factory, seed_once, fake_clock, database_url, keys_dir, restored_apps, tmp_path):
    fake_clock.now = START
    original = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(tmp_path / "exports-original"))
    seed_once(START_KEY, lambda: seed_demo_study(original))
    database_backup = back_up(database_url, tmp_path)
    key_backup = shutil.copytree(keys_dir, tmp_path / "key-ring-backup")  # kept apart from the database backup

    restored_url = restore(database_backup, database_url, tmp_path)
    restored = restored_apps(restored_url, str(key_backup), export_dir=str(tmp_path / "exports-restored"))

    assert audit_verify(original)[0] == 0
    code, output = audit_verify(restored)
    assert code == 0 and ", 0 broken" in output, output
    before, after = exported_files(original, tmp_path / "exports-original"), exported_files(restored, tmp_path / "exports-restored")
    assert before["csv"] and before["fhir"]
    assert before == after

    other_keys = tmp_path / "another-key-ring"
    keyring.ensure_keys(other_keys, development=True)
    code, output = audit_verify(restored_apps(restored_url, str(other_keys)))
    assert code == 1 and "BROKEN" in output and ", 0 broken" not in output, output  # the data needs its own keys
