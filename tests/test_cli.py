"""`flask edc ...` commands call the same services as the API."""

import json

import pytest
import sqlalchemy as sa

from account_mail import mailed_setup_token
from conftest import BACKEND, bearer, login, make_site, problem
from edc.models import RoleAssignment, Site, User
from edc.services.demo import DEMO_ACCOUNTS, DEMO_PASSWORD, DEMO_SITES


def invoke(runner, *args, **kwargs):
    return runner.invoke(args=["edc", *args], catch_exceptions=False, **kwargs)


def test_seed_demo_creates_the_four_sites_and_every_demo_role(runner, client, session):
    result = invoke(runner, "seed-demo")
    assert result.exit_code == 0, result.output
    assert sorted(session.scalars(sa.select(Site.code))) == sorted(code for code, *_ in DEMO_SITES)
    assert len(session.scalars(sa.select(User)).all()) == len(DEMO_ACCOUNTS)
    me = client.get("/api/v1/me", headers=bearer(login(client, "mon.es01", DEMO_PASSWORD))).get_json()
    assert me["sites"] == ["ES01", "IT01"] and me["must_change_password"] is False
    inv = client.get("/api/v1/me", headers=bearer(login(client, "inv.es01", DEMO_PASSWORD))).get_json()
    assert inv["roles"][0]["principal_investigator"] is True
    pis = session.scalars(sa.select(RoleAssignment).where(RoleAssignment.principal_investigator)).all()
    assert len(pis) == 1


def test_seed_demo_refuses_a_database_that_is_not_empty(runner, session):
    make_site(session, "ES01")
    assert invoke(runner, "seed-demo").exit_code == 1
    result = invoke(runner, "seed-demo", "--if-empty")
    assert result.exit_code == 0 and "skipped" in result.output


def test_seed_demo_is_refused_in_production(tmp_path, session):
    from edc import create_app
    from edc.security import keyring

    keys = tmp_path / "prod"
    keyring.ensure_keys(keys, development=False)
    url = session.get_bind().url.render_as_string(hide_password=False)
    app = create_app({"env": "production", "database_url": url, "keys_dir": str(keys), "allow_sqlite_in_production": True,
                      "public_base_url": "https://edc.example.org"})
    for args in (["seed-demo"], ["seed-demo", "--if-empty", "--study"]):   # the second: what `make serve` runs
        result = app.test_cli_runner().invoke(args=["edc", *args])
        assert result.exit_code == 1 and "never created in production" in result.output
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
    from edc.extensions import db

    with app.app_context():
        db.engine.dispose()


def test_users_create_mails_the_setup_link_and_shows_the_token_to_the_operator(runner, client, session):
    result = invoke(runner, "users", "create", "dm2", "--name", "Second Data Manager", "--email", "dm2@example.org")
    assert result.exit_code == 0, result.output
    assert "mailed to dm2@example.org" in result.output and "for the operator at the server only" in result.output
    token = result.output.strip().rsplit(" ", 1)[-1]
    assert token == mailed_setup_token(session, "dm2")
    assert client.post("/api/v1/auth/setup", json={"token": token, "new_password": "data-manager-passphrase"}).status_code == 204
    assert "for the operator at the server" in " ".join(invoke(runner, "users", "create", "--help").output.split())


def test_users_create_needs_an_email_address(runner, session):
    assert invoke(runner, "users", "create", "nomail", "--name", "No Mail").exit_code == 2
    result = invoke(runner, "users", "create", "badmail", "--name", "Bad Mail", "--email", "nowhere")
    assert result.exit_code == 1 and "/email" in result.output
    assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_users_reset_shows_the_token_to_the_operator_even_without_an_email(runner, client, staff):
    tokens = login(client, staff["monitor"])
    result = invoke(runner, "users", "reset", staff["monitor"], "--reason", "lost password")
    assert result.exit_code == 0, result.output
    assert "mailed" not in result.output and "for the operator at the server only" in result.output
    problem(client.get("/api/v1/me", headers=bearer(tokens)), 401)
    token = result.output.strip().rsplit(" ", 1)[-1]
    assert client.post("/api/v1/auth/setup", json={"token": token, "new_password": "fresh-start-passphrase"}).status_code == 204
    login(client, staff["monitor"], "fresh-start-passphrase")
    assert "for the operator at the server" in " ".join(invoke(runner, "users", "reset", "--help").output.split())


def test_users_create_with_a_temporary_password(runner, client):
    result = invoke(runner, "users", "create", "ops", "--name", "Ops", "--email", "ops@example.org", "--temporary-password",
                    input="temporary-pass-1234\ntemporary-pass-1234\n")
    assert result.exit_code == 0, result.output
    assert login(client, "ops", "temporary-pass-1234")["password_change_required"] is True


def test_cli_reports_problems_in_one_line(runner):
    invoke(runner, "users", "create", "dup", "--name", "Dup", "--email", "dup@example.org")
    result = invoke(runner, "users", "create", "dup", "--name", "Dup", "--email", "dup@example.org")
    assert result.exit_code == 1 and "never reused" in result.output


def test_roles_grant_and_revoke(runner, client, session):
    make_site(session, "ES01")
    invoke(runner, "users", "create", "inv", "--name", "Inv", "--email", "inv@example.org", "--temporary-password",
           input="temporary-pass-1234\n" * 2)
    assert invoke(runner, "roles", "grant", "inv", "investigator", "--site", "es01", "--pi").exit_code == 0
    assert invoke(runner, "roles", "grant", "inv", "admin", "--site", "ES01").exit_code == 1
    assert invoke(runner, "roles", "revoke", "inv", "investigator", "--site", "ES01", "--reason", "moved").exit_code == 0
    assert invoke(runner, "roles", "revoke", "inv", "investigator", "--site", "ES01").exit_code == 1
    active = session.scalars(sa.select(RoleAssignment).where(RoleAssignment.revoked_at.is_(None))).all()
    assert active == []


def test_roles_grant_keeps_administrators_and_clinical_roles_apart(runner, staff, session):
    result = invoke(runner, "roles", "grant", staff["investigator"], "admin")
    assert result.exit_code == 1 and "separation of duties" in result.output and "investigator" in result.output
    result = invoke(runner, "roles", "grant", staff["admin"], "monitor", "--site", "ES01")
    assert result.exit_code == 1 and "separation of duties" in result.output
    result = invoke(runner, "roles", "grant", staff["statistician"], "registry")
    assert result.exit_code == 1 and "never granted" in result.output
    admins = session.scalars(sa.select(User.username).join(RoleAssignment)
                             .where(RoleAssignment.role == "admin", RoleAssignment.revoked_at.is_(None))).all()
    assert admins == [staff["admin"]]


def test_no_demo_account_holds_admin_with_another_role(runner, session):
    assert invoke(runner, "seed-demo").exit_code == 0
    roles_of_admins = session.execute(sa.select(User.username, RoleAssignment.role).join(RoleAssignment)
                                      .where(User.id.in_(sa.select(RoleAssignment.user_id)
                                                         .where(RoleAssignment.role == "admin")))).all()
    assert [tuple(row) for row in roles_of_admins] == [("admin", "admin")]


def test_users_disable_ends_sessions(runner, client, staff):
    tokens = login(client, staff["monitor"])
    assert invoke(runner, "users", "disable", staff["monitor"], "--reason", "left").exit_code == 0
    problem(client.get("/api/v1/me", headers=bearer(tokens)), 401)


def test_cli_actions_are_audited_as_the_system(runner, session):
    invoke(runner, "users", "create", "someone", "--name", "Someone", "--email", "someone@example.org")
    from edc.models import AuditRecord

    record = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "user_created")).one()
    assert record.actor_username == "system:cli" and record.actor_role == "system"


def test_init_is_idempotent(runner):
    result = invoke(runner, "init")
    assert result.exit_code == 0 and "head" in result.output


def test_keys_init_creates_missing_keys_only(runner, tmp_path, app):
    app.config["EDC"]["keys_dir"] = str(tmp_path / "k")
    first = invoke(runner, "keys", "init", "--development")
    assert "keyring.json" in first.output and "signing/dev-" in first.output
    assert "nothing created" in invoke(runner, "keys", "init").output


def test_audit_verify_and_anchor_on_a_fresh_trail(runner, staff):
    verify = invoke(runner, "audit", "verify")
    assert verify.exit_code == 0 and "0 broken" in verify.output
    anchor = json.loads(invoke(runner, "audit", "anchor").output)
    assert anchor["chain_count"] == len(anchor["chains"]) >= 1 and anchor["format"] == "edc-audit-anchor/1"


@pytest.mark.skipif(BACKEND != "sqlite", reason="the unmigrated-file case is SQLite's")
def test_init_creates_a_new_sqlite_database(tmp_path, keys_dir):
    from conftest import make_app
    from edc.extensions import db

    app = make_app(f"sqlite:///{tmp_path / 'new.sqlite3'}", keys_dir)
    assert app.test_cli_runner().invoke(args=["edc", "init"]).exit_code == 0
    assert app.test_client().get("/readyz").status_code == 200
    with app.app_context():
        db.engine.dispose()
