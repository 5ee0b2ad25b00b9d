"""Fixtures: a migrated database per test (SQLite file copy, or PostgreSQL truncated after
each test), the app, an HTTP client, a session bound to the runtime, and small factories.

The backend comes from EDC_TEST_BACKEND (sqlite by default; postgresql needs EDC_TEST_DATABASE_URL).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, create_app, runtime
from edc.database import install_sqlite_pragmas
from edc.extensions import db
from edc.security import keyring
from edc.security.permissions import Actor
from edc.services import sites as site_service
from edc.services import users as user_service

PASSWORD = "correct-staple-ferry-9"
BACKEND = os.environ.get("EDC_TEST_BACKEND", "sqlite")


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


def make_app(database_url: str, keys_dir: str, **overrides):
    return create_app({"env": "testing", "database_url": database_url, "keys_dir": keys_dir, **overrides})


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


def truncate_postgres(app) -> None:
    with app.app_context():
        db.session.remove()
        tables = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            # Replica mode skips the append-only triggers for this cleanup connection only.
            conn.exec_driver_sql("SET session_replication_role = replica")
            conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} CASCADE")
        db.engine.dispose()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys")
    keyring.ensure_keys(path, development=True)
    return str(path)


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


@pytest.fixture
def database_url(template_database, tmp_path) -> str:
    if BACKEND == "postgresql":
        return template_database
    target = tmp_path / "edc.sqlite3"
    shutil.copyfile(template_database, target)
    return f"sqlite:///{target}"


@pytest.fixture
def app_factory(database_url, keys_dir):
    """Build extra apps on the test's database (e.g. with other settings); all are cleaned up."""
    apps = []

    def build(**overrides):
        app = make_app(database_url, overrides.pop("keys_dir", keys_dir), **overrides)
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    if BACKEND == "postgresql" and apps:
        truncate_postgres(apps[0])


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
    return Path(__file__).resolve().parent.parent
