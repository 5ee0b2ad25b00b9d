"""Fixtures of the multi-node tests: a small deployment, as docs/deployment.md describes it, started once for
the module. Two gunicorn nodes (2 processes x 2 threads each) and two `flask edc worker` processes share one
PostgreSQL database of their own (created next to the run's database and migrated once), one key directory
and a bucket of the session's S3-compatible server; each process has its own scratch export directory, as on
separate machines. Requests reach the nodes over HTTP; the nodes trust one proxy hop, so a test gives its
client address in X-Forwarded-For.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import PASSWORD, REAL_PASSWORD_HASHING, SYSTEM, make_app, upgrade
from edc import runtime
from edc.extensions import db
from edc.security import keyring
from edc.services import sites as site_service
from edc.services import users as user_service
from servers import (S3_CREDENTIALS, Gunicorn, Process, S3Server, database_next_to, drop_database, flask_command,
                     http_call, recreate_database)

SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
VITALS = {"VSDAT": "2026-11-10", "TEMP": 37.2, "HR": 110, "SBP": 100, "DBP": 60, "SPO2": 98}
# Accounts of the deployment: (username, roles). Their passwords are hashed at full strength, so a password
# check takes as long as in production.
ACCOUNTS = [
    ("pi", [("investigator", "ES01", True)]),
    ("stat", [("statistician", None)]),
    ("monitor", [("monitor", "ES01")]),
    ("guessed", [("monitor", "ES01")]),      # the target of a burst of wrong passwords
    ("guessed-slowly", [("monitor", "ES01")]),  # the same guesses, one after the other
]


@dataclass
class Node:
    """One gunicorn node and the calls the tests make through it."""

    name: str
    server: Gunicorn

    def call(self, method: str, path: str, body=None, token: str | None = None, address: str = "192.0.2.1",
             raw: bool = False, **headers):
        sent = {"X-Forwarded-For": address, **headers}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return http_call(self.server.port, method, path, body, sent, timeout=30, raw=raw)

    def login(self, username: str, password: str = PASSWORD, address: str = "192.0.2.1"):
        return self.call("POST", "/api/v1/auth/login", {"username": username, "password": password}, address=address)

    def token(self, username: str) -> str:
        status, _, body = self.login(username)
        assert status == 200, (self.name, status, body)
        return body["access_token"]


@dataclass
class Deployment:
    database_url: str
    keys_dir: Path
    env: dict[str, str]
    s3: S3Server
    bucket: str
    nodes: list[Node]
    workers: list[Process]
    logs: Path
    scratch: dict[str, Path] = field(default_factory=dict)  # each process's own export directory

    @property
    def a(self) -> Node:
        return self.nodes[0]

    @property
    def b(self) -> Node:
        return self.nodes[1]

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url, poolclass=NullPool)

    def scalar(self, sql: str, **params):
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql), params).scalar()
        finally:
            engine.dispose()

    def command(self, *args: str) -> str:
        """Run a `flask ...` command of an operator on the deployment's database and keys (in this process:
        the same command, without the seconds a new process takes to build its app); its output."""
        app = make_app(self.database_url, str(self.keys_dir))
        try:
            result = app.test_cli_runner().invoke(args=list(args))
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output


def seed_accounts(database_url: str, keys_dir: Path) -> None:
    """One site and the accounts of ACCOUNTS, written through the services (passwords at full strength)."""
    app = make_app(database_url, str(keys_dir), **REAL_PASSWORD_HASHING)
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        site_service.create_site(session, SYSTEM, code="ES01", name="Hospital ES01", country="ES", time_zone="Europe/Madrid")
        for username, roles in ACCOUNTS:
            user_service.create_user(session, SYSTEM, username=username, display_name=username.title(), demo_password=PASSWORD)
            for role, site, *pi in roles:
                user_service.grant_role(session, SYSTEM, username, role=role, site=site, principal_investigator=bool(pi))
        session.commit()
        session.remove()
        db.engine.dispose()


def settings_env(settings: dict) -> dict[str, str]:
    return {f"EDC_{name.upper()}": value if isinstance(value, str) else json.dumps(value) for name, value in settings.items()}


@pytest.fixture(scope="module")
def deployment(s3_server: S3Server, test_database_url: str, tmp_path_factory) -> Iterator[Deployment]:
    """Two nodes and two workers on a database of their own, started once for the module."""
    root = tmp_path_factory.mktemp("deployment")
    database_url = database_next_to(test_database_url, "nodes")
    keys_dir = root / "keys"  # the module's own: a test adds keys to it
    keyring.ensure_keys(keys_dir, development=True)
    recreate_database(database_url)
    bucket = f"edc-nodes-{uuid.uuid4().hex[:8]}"
    s3_server.client.create_bucket(Bucket=bucket)
    env = {"EDC_ENV": "testing", "EDC_DATABASE_URL": database_url, "EDC_KEYS_DIR": str(keys_dir),
           "EDC_PUBLIC_BASE_URL": "http://127.0.0.1", "EDC_TRUSTED_PROXY_HOPS": "1",
           **settings_env(s3_server.settings(bucket)), **S3_CREDENTIALS}
    scratch = {name: root / f"exports-{name}" for name in ("a", "b", "worker1", "worker2")}
    nodes = [Node(name, Gunicorn({**env, "EDC_EXPORT_DIR": str(scratch[name])}, root / f"node-{name}.log", workers=2, threads=2))
             for name in ("a", "b")]
    workers = [Process(flask_command("edc", "worker"), {**env, "EDC_EXPORT_DIR": str(scratch[name])}, root / f"{name}.log")
               for name in ("worker1", "worker2")]
    deployed = Deployment(database_url, keys_dir, env, s3_server, bucket, nodes, workers, root, scratch)
    try:
        for process in [node.server for node in nodes] + workers:
            process.start()  # while they build their apps, the database is migrated: /readyz waits for it
        upgrade(make_app(database_url, str(keys_dir)))
        seed_accounts(database_url, keys_dir)
        for node in nodes:
            node.server.wait_ready()
        yield deployed
    finally:
        for process in [node.server for node in nodes] + workers:
            process.stop()
        drop_database(database_url)
