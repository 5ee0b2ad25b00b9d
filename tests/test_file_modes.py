"""Files the service creates are for its own account only: the umask create_app sets (the one start of the
service, the worker and every command), and explicit modes on the SQLite database and export files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from conftest import PASSWORD, login, make_app, make_user
from edc import runtime
from edc.extensions import db
from exports.conftest import seed_demo_study
from exports.test_jobs import START, Demo, finished
from test_demo_subjects import TRIAL_FORMS


def open_to_others(path: Path) -> int:
    """The group and other permission bits of a file or directory."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077


@pytest.fixture
def loose_umask():
    """A process umask that lets group and others read (the usual default), restored after the test."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_the_app_makes_its_sqlite_database_wal_and_key_files_owner_only(loose_umask, tmp_path):
    database = tmp_path / "data" / "edc.sqlite3"
    database.parent.mkdir()
    keys = tmp_path / "keys"
    app = make_app(f"sqlite:///{database}", str(keys))
    try:
        assert os.umask(0o077) == 0o077  # create_app set it
        runner = app.test_cli_runner()
        assert runner.invoke(args=["edc", "keys", "init", "--development"]).exit_code == 0
        assert runner.invoke(args=["edc", "init"]).exit_code == 0
        with app.app_context():
            runtime.bind(db.session, runtime.for_app(app))
            make_user(db.session, "monitor", [])
            login(app.test_client(), "monitor", PASSWORD)  # a write: the WAL is in use
            created = [database, Path(f"{database}-wal"), Path(f"{database}-shm"), *keys.rglob("*")]
            assert all(path.exists() for path in created[:3])
            assert {str(path): oct(open_to_others(path)) for path in created if open_to_others(path)} == {}
    finally:
        with app.app_context():
            db.engine.dispose()


def test_an_existing_sqlite_database_open_to_others_is_closed_on_connect(loose_umask, tmp_path, keys_dir):
    database = tmp_path / "old.sqlite3"
    sqlite3.connect(database).close()  # made before, under a loose umask
    assert open_to_others(database)
    app = make_app(f"sqlite:///{database}", keys_dir)
    os.umask(0o022)  # whatever the umask: the file is closed on the app's first connection
    try:
        with app.app_context():
            db.session.execute(db.text("SELECT 1"))
            db.session.rollback()
            assert [oct(open_to_others(path)) for path in tmp_path.glob("old.sqlite3*")] == ["0o0"] * 3
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def exporting(app_factory, session, fake_clock, tmp_path, seed_once) -> Demo:
    """The demo sites and accounts (no subjects: the dictionary and code lists are still written)."""
    fake_clock.now = START
    export_dir = tmp_path / "exports"
    app = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(export_dir))
    seed_once("demo study, no subjects, at START", lambda: seed_demo_study(app, 0, 0))
    return Demo(app, export_dir, session)


def test_export_files_are_owner_only_whatever_the_umask(exporting: Demo):
    demo = exporting
    previous = os.umask(0o022)
    try:
        asked = demo.asked()
        finished(demo, asked["id"])
    finally:
        os.umask(previous)
    written = [demo.export_dir, *demo.export_dir.rglob("*")]
    assert len(written) > 3
    assert {str(path): oct(open_to_others(path)) for path in written if open_to_others(path)} == {}
