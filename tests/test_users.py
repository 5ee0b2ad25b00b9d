"""Accounts and role assignments: created by admins, disabled never deleted, roles effective at once."""

import pytest
import sqlalchemy as sa

from conftest import SYSTEM, bearer, count_rows, login, make_user, problem
from edc.models import RoleAssignment, User
from edc.problems import UnprocessableContent
from edc.security import usernames
from edc.services import users
from edc.services.demo import DEMO_ACCOUNTS


@pytest.fixture
def admin(client, staff):
    return bearer(login(client, staff["admin"]))


def grant(client, admin, username, **role):
    return client.post(f"/api/v1/users/{username}/roles", json=role, headers=admin)


def test_admin_creates_a_user_with_a_one_time_setup_token(client, admin, session):
    response = client.post("/api/v1/users", json={"username": "crc.it01", "display_name": "Coordinator IT01"}, headers=admin)
    assert response.status_code == 201 and response.headers["Location"].endswith("/api/v1/users/crc.it01")
    body = response.get_json()
    assert body["setup_token"] and body["user"]["password_set"] is False and body["user"]["roles"] == []
    stored = session.scalars(sa.select(User).where(User.username == "crc.it01")).one()
    assert stored.setup_token_hash != body["setup_token"] and stored.password_hash is None


def test_username_is_never_reused_even_after_disable(client, admin):
    client.post("/api/v1/users", json={"username": "temp.user", "display_name": "Temp"}, headers=admin)
    client.post("/api/v1/users/temp.user/disable", json={"reason": "left"}, headers=admin)
    problem(client.post("/api/v1/users", json={"username": "temp.user", "display_name": "Again"}, headers=admin), 409)
    assert client.get("/api/v1/users/temp.user", headers=admin).get_json()["status"] == "disabled"


def test_users_have_no_delete(client, admin):
    response = client.delete("/api/v1/users/auditor", headers=admin)
    problem(response, 405)


@pytest.mark.parametrize("username", ["A", "has space", "UPPER", "x" * 65, "-lead"])
def test_bad_usernames_are_422(client, admin, username):
    body = problem(client.post("/api/v1/users", json={"username": username, "display_name": "X"}, headers=admin), 422)
    assert body["errors"][0]["pointer"] == "/username"


def test_grant_site_role_and_list_it(client, admin, staff):
    response = grant(client, admin, staff["auditor"], role="monitor", site="IT01")
    assert response.status_code == 201 and response.get_json()["site"] == "IT01"
    roles = client.get(f"/api/v1/users/{staff['auditor']}", headers=admin).get_json()["roles"]
    assert {(r["role"], r["site"]) for r in roles} == {("auditor", None), ("monitor", "IT01")}


@pytest.mark.parametrize("role, pointer", [
    ({"role": "investigator"}, "/site"),
    ({"role": "data_manager", "site": "ES01"}, "/site"),
    ({"role": "coordinator", "site": "ES01", "principal_investigator": True}, "/principal_investigator"),
    ({"role": "wizard"}, "/role"),
    ({"role": "monitor", "site": "ZZ99"}, "/site"),
])
def test_inconsistent_role_grants_are_422(client, admin, staff, role, pointer, session):
    before = count_rows(session, "role_assignments")
    body = problem(grant(client, admin, staff["statistician"], **role), 422)
    assert pointer in {e["pointer"] for e in body["errors"]}
    assert count_rows(session, "role_assignments") == before


def test_one_principal_investigator_per_site(client, admin, session):
    make_user(session, "inv2.es01")
    problem(grant(client, admin, "inv2.es01", role="investigator", site="ES01", principal_investigator=True), 409)
    assert grant(client, admin, "inv2.es01", role="investigator", site="ES01").status_code == 201


def test_duplicate_grant_is_409(client, admin, staff):
    problem(grant(client, admin, staff["auditor"], role="auditor"), 409)


def test_admin_never_grants_or_revokes_own_roles(client, admin, staff, session):
    problem(grant(client, admin, staff["admin"], role="data_manager"), 403)
    own = session.scalars(sa.select(RoleAssignment.id).join(User).where(User.username == staff["admin"])).one()
    problem(client.delete(f"/api/v1/users/{staff['admin']}/roles/{own}", headers=admin), 403)
    problem(client.post(f"/api/v1/users/{staff['admin']}/disable", json={"reason": "x"}, headers=admin), 403)


def test_revoked_role_stops_working_on_the_next_request(client, admin, staff, session):
    auditor = bearer(login(client, staff["auditor"]))
    assert client.get("/api/v1/audit/security", headers=auditor).status_code == 200
    assignment = session.scalars(sa.select(RoleAssignment.id).join(User).where(User.username == staff["auditor"])).one()
    assert client.delete(f"/api/v1/users/{staff['auditor']}/roles/{assignment}", headers=admin).status_code == 204
    problem(client.get("/api/v1/audit/security", headers=auditor), 403)
    assert client.get("/api/v1/me", headers=auditor).get_json()["roles"] == []
    problem(client.delete(f"/api/v1/users/{staff['auditor']}/roles/{assignment}", headers=admin), 409)


def test_revoking_someone_elses_assignment_through_another_user_is_404(client, admin, staff, session):
    assignment = session.scalars(sa.select(RoleAssignment.id).join(User).where(User.username == staff["auditor"])).one()
    problem(client.delete(f"/api/v1/users/{staff['monitor']}/roles/{assignment}", headers=admin), 404)


def test_disabled_user_is_refused_at_once_even_with_a_valid_token(client, admin, staff):
    monitor = bearer(login(client, staff["monitor"]))
    client.post(f"/api/v1/users/{staff['monitor']}/disable", json={"reason": "contract ended"}, headers=admin)
    problem(client.get("/api/v1/me", headers=monitor), 401)


def test_reset_issues_a_new_setup_token_and_ends_sessions(client, admin, staff):
    monitor = login(client, staff["monitor"])
    reset = client.post(f"/api/v1/users/{staff['monitor']}/reset", json={"reason": "forgot password"}, headers=admin).get_json()
    assert set(reset) == {"setup_token", "setup_token_expires_at"}
    problem(client.get("/api/v1/me", headers=bearer(monitor)), 401)
    problem(client.post("/api/v1/auth/login", json={"username": staff["monitor"], "password": "correct-staple-ferry-9"}), 401)
    client.post("/api/v1/auth/setup", json={"token": reset["setup_token"], "new_password": "fresh-start-passphrase"})
    login(client, staff["monitor"], "fresh-start-passphrase")


def test_admin_responses_never_contain_password_material(client, admin):
    text = client.get("/api/v1/users?page_size=200", headers=admin).get_data(as_text=True)
    assert "argon2" not in text and "password_hash" not in text and "setup_token_hash" not in text


def test_only_admins_manage_accounts(client, staff):
    for role in ("investigator", "monitor", "data_manager", "auditor", "statistician"):
        headers = bearer(login(client, staff[role]))
        problem(client.post("/api/v1/users", json={"username": "sneaky", "display_name": "S"}, headers=headers), 403)
        problem(grant(client, headers, staff[role], role="admin"), 403)


def test_auditors_read_accounts(client, staff):
    body = client.get("/api/v1/users", headers=bearer(login(client, staff["auditor"]))).get_json()
    assert body["total"] == len(staff)


@pytest.mark.parametrize("username", ["has space", "bad/name", "mfg\u200b", "<b>x</b>", "x", "\uff41", "dr. who",
                                      "caf\u00e9", "a" * 65, "-lead", "line\nbreak"])
def test_every_way_of_creating_an_account_keeps_to_the_username_rules(runner, session, username):
    with pytest.raises(UnprocessableContent) as refused:
        users.create_user(session, SYSTEM, username=username, display_name="X", temporary_password="temporary-pass-1234")
    assert [e["pointer"] for e in refused.value.errors] == ["/username"]
    session.rollback()
    result = runner.invoke(args=["edc", "users", "create", "--name", "X", "--", username])
    assert result.exit_code == 1 and "/username" in result.output
    assert count_rows(session, "users") == 0


def test_accounts_are_created_under_the_one_normal_form_of_their_name(session):
    user, _ = users.create_user(session, SYSTEM, username=" \uff2e\uff35\uff32\uff33\uff25.ES01\u3000", display_name="Nurse",
                                temporary_password="temporary-pass-1234")
    assert user.username == "nurse.es01"


def test_demo_and_system_usernames_keep_to_the_rules():
    assert all(usernames.is_acceptable(name) for name, _, _ in DEMO_ACCOUNTS)
