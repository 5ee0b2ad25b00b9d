"""Fixtures of the whole suite. tests/README.md says which lives how long and why; in short:

- per session: the keys, the migrated template database, the study of each of the repository's forms
  folders (loaded and checked once), and each snapshot taken by `seed_once`;
- per test: a database of its own (SQLite: a copy of the template file; PostgreSQL: the run's database,
  emptied with DELETE after the test), the apps built on it, a client, a session bound to the runtime.

The backend comes from EDC_TEST_BACKEND (sqlite by default; postgresql needs EDC_TEST_DATABASE_URL).
"""

from __future__ import annotations

import copy
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from edc import clock, create_app, runtime
from edc.database import install_sqlite_pragmas
from edc.ecrf import Study, load_study
from edc.extensions import db
from edc.security import keyring, passwords
from edc.security.permissions import Actor
from edc.services import sites as site_service
from edc.services import users as user_service

PASSWORD = "correct-staple-ferry-9"
BACKEND = os.environ.get("EDC_TEST_BACKEND", "sqlite")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_FORMS = PROJECT_ROOT / "tests" / "demo_forms"   # the default of config/testing.toml
TRIAL_FORMS = PROJECT_ROOT / "forms"
# The OWASP-strength argon2id of every other environment, for tests marked real_password_hashing.
REAL_PASSWORD_HASHING = {"argon2_time_cost": passwords.OWASP_TIME_COST,
                         "argon2_memory_kib": passwords.OWASP_MEMORY_KIB,
                         "argon2_parallelism": passwords.OWASP_PARALLELISM}


def _backend_url() -> str | None:
    if BACKEND == "postgresql":
        url = os.environ.get("EDC_TEST_DATABASE_URL")
        if not url:
            raise pytest.UsageError("EDC_TEST_BACKEND=postgresql needs EDC_TEST_DATABASE_URL")
        return url
    if BACKEND != "sqlite":
        raise pytest.UsageError(f"unknown EDC_TEST_BACKEND {BACKEND}")
    return None


def pytest_report_header(config):
    return f"edc test backend: {BACKEND}"


def pytest_collection_modifyitems(config, items):
    if BACKEND == "postgresql":
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only behaviour; runs in the PostgreSQL pass")
    for item in items:
        if "postgresql_only" in item.keywords:
            item.add_marker(skip)


_STUDIES: dict[Path, Study] = {}


def shared_study(forms_dir: str | Path) -> Study | None:
    """The study of the repository's demo or trial forms folder, loaded once per session; None for any other
    folder (a test's own copy is loaded by create_app, as in production)."""
    path = Path(forms_dir).resolve()
    if path not in (DEMO_FORMS, TRIAL_FORMS):
        return None
    if path not in _STUDIES:
        _STUDIES[path] = load_study(path)
    return _STUDIES[path]


def make_app(database_url: str, keys_dir: str, **overrides):
    study = shared_study(overrides.get("forms_dir", DEMO_FORMS))
    return create_app({"env": "testing", "database_url": database_url, "keys_dir": keys_dir, **overrides}, study=study)


def upgrade(app) -> None:
    from flask_migrate import upgrade as alembic_upgrade

    with app.app_context():
        alembic_upgrade()
        db.session.remove()
        db.engine.dispose()


def reset_postgres_schema(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS edc_refuse_audit_change() CASCADE")
    engine.dispose()


def table_names() -> list[str]:
    """Every table of the models, parents first."""
    return [table.name for table in db.metadata.sorted_tables]


def empty_postgres(url: str) -> None:
    """Delete every row (about 3 ms, where TRUNCATE of every table took about 48 ms)."""
    with _cleanup_engine(url).begin() as conn:
        # Replica mode skips the append-only triggers (and foreign keys) for this cleanup transaction only.
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for name in reversed(table_names()):
            conn.exec_driver_sql(f'DELETE FROM "{name}"')


_CLEANUP_ENGINES: dict[str, sa.Engine] = {}


def _cleanup_engine(url: str) -> sa.Engine:
    if url not in _CLEANUP_ENGINES:
        _CLEANUP_ENGINES[url] = sa.create_engine(url, pool_size=1)
    return _CLEANUP_ENGINES[url]


def pytest_sessionfinish(session, exitstatus):
    for engine in _CLEANUP_ENGINES.values():
        engine.dispose()


def row_counts(url: str) -> dict[str, int]:
    """Rows per table of the models."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {name: conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one() for name in table_names()}
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys")
    keyring.ensure_keys(path, development=True)
    return str(path)


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server for the whole session (tests/servers.py: moto's, on a free loopback port)."""
    from servers import s3_server as start_s3_server  # boto3 and moto load only for the tests that use it

    with start_s3_server() as s3:
        yield s3


@pytest.fixture(scope="session")
def template_database(tmp_path_factory, keys_dir) -> str:
    """A migrated database: a SQLite file to copy, or the PostgreSQL database itself."""
    url = _backend_url()
    if url:
        reset_postgres_schema(url)
        upgrade(make_app(url, keys_dir))
        return url
    path = tmp_path_factory.mktemp("template") / "edc.sqlite3"
    upgrade(make_app(f"sqlite:///{path}", keys_dir))
    return str(path)


@pytest.fixture(scope="session")
def test_database_url(template_database, tmp_path_factory) -> str:
    """One URL for every test of the session, so apps can be shared: the PostgreSQL database itself, or a
    SQLite file that each test gets afresh as a copy of the template."""
    if BACKEND == "postgresql":
        return template_database
    return f"sqlite:///{tmp_path_factory.mktemp('database') / 'edc.sqlite3'}"


@pytest.fixture
def database_url(template_database, test_database_url) -> str:
    """The test's database, just migrated and empty (PostgreSQL: emptied after the previous test)."""
    if BACKEND == "sqlite":
        _sqlite_copy(template_database, test_database_url.removeprefix("sqlite:///"))
    return test_database_url


@dataclass
class SharedApp:
    app: Any
    settings: dict[str, Any]  # app.config["EDC"] as built, handed out afresh to each test


_SHARED_APPS: dict[tuple, SharedApp] = {}
# Overrides an app can be shared under: one app per forms folder of the repository (and hashing strength).
SHAREABLE_OVERRIDES = {"forms_dir", *REAL_PASSWORD_HASHING}


def _shareable_key(overrides: dict[str, Any]) -> tuple | None:
    if not set(overrides) <= SHAREABLE_OVERRIDES or shared_study(overrides.get("forms_dir", DEMO_FORMS)) is None:
        return None
    return tuple(sorted({**overrides, "forms_dir": str(Path(overrides.get("forms_dir", DEMO_FORMS)).resolve())}.items()))


def _shared_app(key: tuple, database_url: str, keys_dir: str, overrides: dict[str, Any]):
    """The session's app for these overrides, as if new: its settings restored, its runtime (keys, caches of
    what the previous test's database held) dropped. Building an app costs about 0.15 s (the OpenAPI spec)."""
    shared = _SHARED_APPS.get(key)
    if shared is None:
        app = make_app(database_url, keys_dir, **overrides)
        shared = _SHARED_APPS[key] = SharedApp(app, copy.deepcopy(app.config["EDC"]))
    shared.app.config["EDC"] = copy.deepcopy(shared.settings)
    shared.app.extensions.pop(runtime.APP_KEY, None)
    return shared.app


@pytest.fixture
def app_factory(request, database_url, keys_dir):
    """Build apps on the test's database (e.g. with other settings or the trial forms); all are cleaned up.

    The first app a test asks for on the demo or the trial forms is the session's shared one for those forms,
    handed out as new; any other (other settings, a second app of the same kind, own=True) is built for the test.
    Passwords are hashed with the cheap parameters of config/testing.toml unless the test is marked
    real_password_hashing.
    """
    apps, shared_keys = [], set()
    real_hashing = REAL_PASSWORD_HASHING if request.node.get_closest_marker("real_password_hashing") else {}

    def build(*, own: bool = False, **overrides):
        """An app with these settings; own=True for one that no other test sees (to add a route, say)."""
        overrides = {**real_hashing, **overrides}
        key = None if own else _shareable_key(overrides)
        if key is not None and key not in shared_keys:
            shared_keys.add(key)
            app = _shared_app(key, database_url, keys_dir, overrides)
        else:
            app = make_app(database_url, overrides.pop("keys_dir", keys_dir), **overrides)
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    if BACKEND == "postgresql":
        empty_postgres(database_url)


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def session(app, database_url) -> Iterator[Session]:
    """A session of the test's own on the test database, bound to the runtime like a request's.

    No app context stays pushed (requests get their own context and session, as in production),
    and it runs in autocommit: every statement sees what the app committed, and an open read
    never holds a lock the app's writers wait for. Call expire_all() before re-reading an object.
    """
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(database_url)
        install_sqlite_pragmas(engine, transactions=False)
    else:
        engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with Session(engine, expire_on_commit=True) as own:
        runtime.bind(own, runtime.for_app(app))
        yield own
        own.rollback()
    engine.dispose()


@dataclass
class Snapshot:
    """What a database held after a seed: taken the first time, restored every later time."""

    before: dict[str, int]  # rows per table when the seed began: the state it must begin from every time
    content: Any            # SQLite: a database file; PostgreSQL: binary COPY data per table


_SNAPSHOTS: dict[str, Snapshot] = {}


@pytest.fixture(scope="session")
def snapshot_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("snapshots")


@pytest.fixture
def seed_once(database_url, snapshot_dir) -> Callable[[str, Callable[[], Any]], None]:
    """seed_once(key, seed): run seed() on the test's database the first time `key` is met in the session,
    and from then on restore what it left instead (milliseconds where seeding the demo study takes seconds).

    seed() must depend only on the key and on a database in the same state each time (checked by row counts):
    the same clock, the same settings, the same steps before it.
    """
    def seed(key: str, build: Callable[[], Any]) -> None:
        before = row_counts(database_url)
        snapshot = _SNAPSHOTS.get(key)
        if snapshot is None:
            build()
            _SNAPSHOTS[key] = Snapshot(before, _take_snapshot(database_url, snapshot_dir / f"{len(_SNAPSHOTS)}.sqlite3"))
            return
        assert before == snapshot.before, f"seed_once({key!r}) began from another state than when it was taken"
        _restore_snapshot(database_url, snapshot.content)

    return seed


def _take_snapshot(url: str, file: Path) -> Any:
    if url.startswith("sqlite"):
        _sqlite_copy(url.removeprefix("sqlite:///"), file)
        return file
    content = {}
    with _psycopg(url) as conn, conn.cursor() as cursor:
        for name in table_names():
            with cursor.copy(f'COPY "{name}" TO STDOUT (FORMAT binary)') as copy:
                content[name] = b"".join(bytes(block) for block in copy)
    return content


def _restore_snapshot(url: str, content: Any) -> None:
    if url.startswith("sqlite"):
        _sqlite_copy(content, url.removeprefix("sqlite:///"))
        return
    with _psycopg(url) as conn, conn.transaction(), conn.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for name in reversed(table_names()):
            cursor.execute(f'DELETE FROM "{name}"')
        for name, data in content.items():
            with cursor.copy(f'COPY "{name}" FROM STDIN (FORMAT binary)') as copy:
                copy.write(data)


def _sqlite_copy(source: str | Path, target: str | Path) -> None:
    """Copy a whole SQLite database with the backup API: consistent, and visible to connections already open."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _psycopg(url: str):
    import psycopg

    return psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "utcnow", fake)
    return fake


SYSTEM = Actor.system("tests")


def make_site(session, code="ES01", name=None, country=None, time_zone="Europe/Madrid"):
    site = site_service.create_site(session, SYSTEM, code=code, name=name or f"Hospital {code}",
                                    country=country or code[:2], time_zone=time_zone)
    session.commit()
    return site


def make_user(session, username, roles=(), password=PASSWORD, demo=True, display_name=None):
    """An account with a known password; roles are (role, site_code or None[, principal_investigator])."""
    kwargs = {"demo_password": password} if demo else {"temporary_password": password}
    user, _ = user_service.create_user(session, SYSTEM, username=username, display_name=display_name or username.title(), **kwargs)
    for role in roles:
        name, site, *pi = role
        user_service.grant_role(session, SYSTEM, username, role=name, site=site, principal_investigator=bool(pi and pi[0]))
    session.commit()
    return user


def login(client, username, password=PASSWORD, **headers) -> dict:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(tokens_or_token) -> dict[str, str]:
    token = tokens_or_token["access_token"] if isinstance(tokens_or_token, dict) else tokens_or_token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def staff(session):
    """Two sites and one account per kind of role; returns usernames by role."""
    make_site(session, "ES01")
    make_site(session, "IT01", time_zone="Europe/Rome")
    accounts = {
        "admin": [("admin", None)],
        "investigator": [("investigator", "ES01", True)],
        "monitor": [("monitor", "ES01")],
        "data_manager": [("data_manager", None)],
        "auditor": [("auditor", None)],
        "statistician": [("statistician", None)],
    }
    for username, roles in accounts.items():
        make_user(session, username.replace("_", "-"), roles)
    return {role: role.replace("_", "-") for role in accounts}


def problem(response, status: int) -> dict:
    """Assert a problem+json answer with a request id, and return its body."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["request_id"] and body["title"]
    return body


def count_rows(session, table: str) -> int:
    return session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def project_root() -> Path:
    return PROJECT_ROOT
