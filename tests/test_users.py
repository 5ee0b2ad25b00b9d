"""Accounts and role assignments: created by admins, disabled never deleted, roles effective at once."""

import pytest
import sqlalchemy as sa

from account_mail import give_email, mailed_setup_token
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


def test_admin_creates_a_user_whose_setup_link_is_mailed_to_the_user_only(client, admin, session):
    response = client.post("/api/v1/users", json={"username": "crc.it01", "display_name": "Coordinator IT01",
                                                  "email": "crc.it01@hospital.example"}, headers=admin)
    assert response.status_code == 201 and response.headers["Location"].endswith("/api/v1/users/crc.it01")
    body = response.get_json()
    assert set(body) == {"user", "setup_link_sent_to", "setup_link_expires_at"}
    assert body["setup_link_sent_to"] == "crc.it01@hospital.example"
    assert body["user"]["password_set"] is False and body["user"]["roles"] == []
    token = mailed_setup_token(session, "crc.it01")
    assert token not in response.get_data(as_text=True)
    stored = session.scalars(sa.select(User).where(User.username == "crc.it01")).one()
    assert stored.setup_token_hash != token and stored.password_hash is None


@pytest.mark.parametrize("email, status", [(None, 422), ("not-an-address", 422), ("two@at@example.org", 422),
                                           ("x" * 250 + "@example.org", 422), ("bell\u0007@example.org", 422)])
def test_a_new_account_needs_a_valid_email_address(client, admin, session, email, status):
    payload = {"username": "no.mail", "display_name": "No Mail"}
    if email is not None:
        payload["email"] = email
    body = problem(client.post("/api/v1/users", json=payload, headers=admin), status)
    assert "/email" in {e["pointer"] for e in body["errors"]}
    assert count_rows(session, "users") == 6 and count_rows(session, "outbox") == 0


def test_username_is_never_reused_even_after_disable(client, admin):
    client.post("/api/v1/users", json={"username": "temp.user", "display_name": "Temp", "email": "t@example.org"},
                headers=admin)
    client.post("/api/v1/users/temp.user/disable", json={"reason": "left"}, headers=admin)
    problem(client.post("/api/v1/users", json={"username": "temp.user", "display_name": "Again", "email": "t@example.org"},
                        headers=admin), 409)
    assert client.get("/api/v1/users/temp.user", headers=admin).get_json()["status"] == "disabled"


def test_users_have_no_delete(client, admin):
    response = client.delete("/api/v1/users/auditor", headers=admin)
    problem(response, 405)


@pytest.mark.parametrize("username", ["A", "has space", "UPPER", "x" * 65, "-lead"])
def test_bad_usernames_are_422(client, admin, username):
    body = problem(client.post("/api/v1/users", json={"username": username, "display_name": "X", "email": "x@example.org"},
                               headers=admin), 422)
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


def test_reset_mails_a_new_setup_token_and_ends_sessions(client, admin, staff, session):
    email = give_email(session, staff["monitor"])
    monitor = login(client, staff["monitor"])
    response = client.post(f"/api/v1/users/{staff['monitor']}/reset", json={"reason": "forgot password"}, headers=admin)
    reset = response.get_json()
    assert response.status_code == 200 and set(reset) == {"setup_link_sent_to", "setup_link_expires_at"}
    assert reset["setup_link_sent_to"] == email
    token = mailed_setup_token(session, staff["monitor"])
    assert token not in response.get_data(as_text=True)
    problem(client.get("/api/v1/me", headers=bearer(monitor)), 401)
    problem(client.post("/api/v1/auth/login", json={"username": staff["monitor"], "password": "correct-staple-ferry-9"}), 401)
    assert client.post("/api/v1/auth/setup", json={"token": token, "new_password": "fresh-start-passphrase"}).status_code == 204
    login(client, staff["monitor"], "fresh-start-passphrase")


def test_an_account_without_email_is_reset_only_at_the_command_line(client, admin, staff, session):
    body = problem(client.post(f"/api/v1/users/{staff['monitor']}/reset", json={"reason": "forgot"}, headers=admin), 409)
    assert "command line" in body["detail"]
    assert session.scalar(sa.select(User.password_hash).where(User.username == staff["monitor"])) is not None
    assert count_rows(session, "outbox") == 0


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
    result = runner.invoke(args=["edc", "users", "create", "--name", "X", "--email", "x@example.org", "--", username])
    assert result.exit_code == 1 and "/username" in result.output
    assert count_rows(session, "users") == 0


def test_accounts_are_created_under_the_one_normal_form_of_their_name(session):
    user, _ = users.create_user(session, SYSTEM, username=" \uff2e\uff35\uff32\uff33\uff25.ES01\u3000", display_name="Nurse",
                                temporary_password="temporary-pass-1234")
    assert user.username == "nurse.es01"


def test_demo_and_system_usernames_keep_to_the_rules():
    assert all(usernames.is_acceptable(name) for name, _, _ in DEMO_ACCOUNTS)


# --- separation of duties: no administrator holds a clinical role; the registry role is never granted ----------

@pytest.mark.parametrize("holder, role, site, held", [
    ("monitor", "admin", None, "monitor"),                 # a clinical account made administrator
    ("auditor", "admin", None, "auditor"),
    ("statistician", "admin", None, "statistician"),
    ("admin2", "investigator", "ES01", "admin"),           # an administrator given a clinical role
    ("admin2", "data_manager", None, "admin"),
    ("admin2", "safety", None, "admin"),
    ("admin2", "manufacturing", None, "admin"),
])
def test_admin_and_a_clinical_role_never_meet_on_one_account(client, admin, staff, session, holder, role, site, held):
    make_user(session, "admin2", [("admin", None)])
    username = staff.get(holder, holder)
    before = count_rows(session, "role_assignments")
    body = problem(grant(client, admin, username, role=role, **({"site": site} if site else {})), 409)
    assert "separation of duties" in body["detail"] and held in body["detail"] and role in body["detail"]
    assert count_rows(session, "role_assignments") == before


def test_the_registry_role_is_never_granted_to_a_person(client, admin, staff, session):
    before = count_rows(session, "role_assignments")
    body = problem(grant(client, admin, staff["statistician"], role="registry"), 422)
    assert body["errors"][0]["pointer"] == "/role" and "FHIR client" in body["errors"][0]["detail"]
    make_user(session, "fresh")
    problem(grant(client, admin, "fresh", role="registry"), 422)
    assert count_rows(session, "role_assignments") == before


def test_a_role_may_be_granted_again_once_the_conflicting_one_is_revoked(client, admin, staff, session):
    assignment = session.scalars(sa.select(RoleAssignment.id).join(User).where(User.username == staff["auditor"])).one()
    assert client.delete(f"/api/v1/users/{staff['auditor']}/roles/{assignment}", headers=admin).status_code == 204
    assert grant(client, admin, staff["auditor"], role="admin").status_code == 201
