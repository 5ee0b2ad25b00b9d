"""Login, refresh rotation, logout, password change, setup tokens and throttling."""

import pytest
import sqlalchemy as sa

from account_mail import mailed_setup_token
from conftest import PASSWORD, bearer, count_rows, login, make_site, make_user, problem
from edc.models import AuthSession, LoginThrottle, RefreshToken, User
from edc.security import tokens

NEW_PASSWORD = "a-brand-new-passphrase-42"


def test_login_issues_a_short_lived_es256_access_token(client, staff, app):
    import jwt

    body = login(client, staff["admin"])
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] <= 900 and body["expires_in"] <= 900
    assert body["token_type"] == "Bearer" and body["refresh_token"]


def test_refresh_tokens_are_stored_hashed_only(client, staff, session):
    body = login(client, staff["admin"])
    stored = session.scalars(sa.select(RefreshToken.token_hash)).all()
    assert body["refresh_token"] not in stored
    assert tokens.opaque_token_hash(body["refresh_token"]) in stored


def test_unknown_user_and_wrong_password_answer_the_same(client, staff):
    wrong = client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "not-the-password"})
    unknown = client.post("/api/v1/auth/login", json={"username": "nobody-here", "password": "not-the-password"})
    a, b = problem(wrong, 401), problem(unknown, 401)
    for body in (a, b):
        body.pop("request_id")
    assert a == b
    assert wrong.headers.get("WWW-Authenticate") == unknown.headers.get("WWW-Authenticate")


def test_refresh_rotates_and_the_old_token_is_spent(client, staff):
    first = login(client, staff["admin"])
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200


def test_reused_refresh_token_revokes_the_family(client, staff, session):
    first = login(client, staff["admin"])
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}), 401)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401)
    problem(client.get("/api/v1/me", headers=bearer(second)), 401)
    assert session.scalars(sa.select(AuthSession.revoked_reason)).one() == "refresh_token_reuse"


def test_unknown_refresh_token_is_401(client, staff):
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": "made-up"}), 401)


def test_refresh_token_expires_when_idle(client, staff, fake_clock, app):
    body = login(client, staff["admin"])
    fake_clock.advance(seconds=app.config["EDC"]["refresh_idle_seconds"] + 1)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}), 401)


def test_session_ends_at_its_absolute_lifetime_even_when_used(client, staff, fake_clock, app):
    settings = app.config["EDC"]
    body = login(client, staff["admin"])
    step = settings["refresh_idle_seconds"] - 60
    elapsed = 0
    while elapsed + step < settings["refresh_absolute_seconds"]:
        fake_clock.advance(seconds=step)
        elapsed += step
        body = client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}).get_json()
        assert body.get("refresh_token"), body
    fake_clock.advance(seconds=settings["refresh_absolute_seconds"] - elapsed + 1)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}), 401)


def test_access_token_expires(client, staff, fake_clock, app):
    body = login(client, staff["admin"])
    fake_clock.advance(seconds=app.config["EDC"]["access_token_seconds"] + app.config["EDC"]["jwt_leeway_seconds"] + 1)
    problem(client.get("/api/v1/me", headers=bearer(body)), 401)


def test_logout_revokes_access_and_refresh(client, staff):
    body = login(client, staff["admin"])
    assert client.post("/api/v1/auth/logout", headers=bearer(body)).status_code == 204
    problem(client.get("/api/v1/me", headers=bearer(body)), 401)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}), 401)


def test_password_change_revokes_other_sessions_only(client, staff):
    mine, other = login(client, staff["auditor"]), login(client, staff["auditor"])
    response = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                           headers=bearer(mine))
    assert response.status_code == 204
    assert client.get("/api/v1/me", headers=bearer(mine)).status_code == 200
    problem(client.get("/api/v1/me", headers=bearer(other)), 401)
    problem(client.post("/api/v1/auth/login", json={"username": staff["auditor"], "password": PASSWORD}), 401)
    login(client, staff["auditor"], NEW_PASSWORD)


def test_password_change_with_wrong_current_password_is_refused_and_counted(client, staff, session):
    body = login(client, staff["auditor"])
    response = client.post("/api/v1/auth/password", json={"current_password": "wrong-wrong-wrong", "new_password": NEW_PASSWORD},
                           headers=bearer(body))
    assert problem(response, 422)["errors"][0]["pointer"] == "/current_password"
    assert session.get(LoginThrottle, f"user:{staff['auditor']}@127.0.0.1").failures == 1
    login(client, staff["auditor"])


def test_password_policy_rejects_short_and_common_passwords(client, staff):
    body = login(client, staff["auditor"])
    for weak in ("short-pw", "password1234", "Qwertyuiopasdfgh", "auditor-is-my-password"):
        response = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": weak},
                               headers=bearer(body))
        assert problem(response, 422)["errors"][0]["pointer"] == "/new_password", weak
    # No composition rules: a long passphrase of lower-case words is fine.
    ok = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "lemon river quietly sings"},
                     headers=bearer(body))
    assert ok.status_code == 204


@pytest.mark.real_password_hashing
def test_stored_hashes_are_argon2id_at_owasp_strength(client, staff, session):
    stored = session.scalars(sa.select(User.password_hash).where(User.username == staff["admin"])).one()
    assert stored.startswith("$argon2id$")
    params = dict(p.split("=") for p in stored.split("$")[3].split(","))
    assert int(params["m"]) >= 19456 and int(params["t"]) >= 2


def test_temporary_password_must_be_changed_before_anything_else(client, session):
    make_site(session, "ES01")
    make_user(session, "newcomer", [("auditor", None)], demo=False)
    body = login(client, "newcomer")
    assert body["password_change_required"] is True
    assert client.get("/api/v1/me", headers=bearer(body)).get_json()["must_change_password"] is True
    problem(client.get("/api/v1/sites", headers=bearer(body)), 403)
    client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer(body))
    assert client.get("/api/v1/sites", headers=bearer(body)).status_code == 200


def test_demo_accounts_are_exempt_from_the_first_login_change(client, staff):
    body = login(client, staff["investigator"])
    assert body["password_change_required"] is False


def test_setup_token_sets_the_first_password_once(client, staff, fake_clock, session):
    admin = bearer(login(client, staff["admin"]))
    client.post("/api/v1/users", json={"username": "nurse.es01", "display_name": "Nurse", "email": "nurse@es01.example"},
                headers=admin)
    token = mailed_setup_token(session, "nurse.es01")
    problem(client.post("/api/v1/auth/login", json={"username": "nurse.es01", "password": NEW_PASSWORD}), 401)
    assert client.post("/api/v1/auth/setup", json={"token": token, "new_password": NEW_PASSWORD}).status_code == 204
    problem(client.post("/api/v1/auth/setup", json={"token": token, "new_password": "another-long-passphrase"}), 401)
    assert login(client, "nurse.es01", NEW_PASSWORD)["password_change_required"] is False


def test_setup_token_expires(client, staff, fake_clock, app, session):
    admin = bearer(login(client, staff["admin"]))
    client.post("/api/v1/users", json={"username": "late.user", "display_name": "Late", "email": "late@example.org"},
                headers=admin)
    token = mailed_setup_token(session, "late.user")
    fake_clock.advance(seconds=app.config["EDC"]["setup_token_seconds"] + 1)
    problem(client.post("/api/v1/auth/setup", json={"token": token, "new_password": NEW_PASSWORD}), 401)


def test_twenty_wrong_passwords_lock_the_account_temporarily(client, staff, session, fake_clock, app):
    statuses = []
    for _ in range(20):
        response = client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "wrong-password-x"})
        problem(response, response.status_code)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            fake_clock.advance(seconds=int(response.headers["Retry-After"]))
    free = app.config["EDC"]["throttle_account_free_attempts"]
    assert statuses[:free] == [401] * free and 429 in statuses
    # Even the right password waits out a lock, but the lock is temporary.
    client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "wrong-password-x"})
    locked = client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": PASSWORD})
    assert problem(locked, 429)
    fake_clock.advance(seconds=app.config["EDC"]["throttle_max_seconds"] + 1)
    login(client, staff["admin"])


def test_lock_delays_grow_and_are_capped(client, staff, session, fake_clock, app):
    settings = app.config["EDC"]
    waits = []
    for _ in range(settings["throttle_account_free_attempts"] + 12):
        response = client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "wrong-password-x"})
        if response.status_code == 429:
            continue
        row = session.get(LoginThrottle, f"user:{staff['admin']}@127.0.0.1", populate_existing=True)
        if row.locked_until:
            waits.append(round((row.locked_until - fake_clock.now).total_seconds()))
            fake_clock.advance(seconds=waits[-1])
        session.rollback()
    assert waits == sorted(waits) and waits[0] == settings["throttle_base_seconds"]
    assert max(waits) == settings["throttle_max_seconds"]


def test_failure_counters_and_audit_survive_the_failed_request(client, staff, session):
    before = count_rows(session, "audit_records")
    problem(client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "nope-nope-nope"}), 401)
    assert session.get(LoginThrottle, f"user:{staff['admin']}").failures == 1
    assert count_rows(session, "audit_records") == before + 1


def test_successful_login_clears_the_account_counter_of_its_address(client, staff, session):
    client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "nope-nope-nope"})
    login(client, staff["admin"])
    session.expire_all()
    assert session.get(LoginThrottle, f"user:{staff['admin']}@127.0.0.1") is None
    # Guessing from elsewhere and by this address stays counted.
    assert session.get(LoginThrottle, f"user:{staff['admin']}").failures == 1
    assert session.get(LoginThrottle, "addr:127.0.0.1").failures == 1


def test_address_throttle_uses_only_trusted_proxy_hops(app_factory, staff, session):
    direct = app_factory().test_client()
    direct.post("/api/v1/auth/login", json={"username": "x", "password": "y"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert session.get(LoginThrottle, "addr:127.0.0.1") is not None
    assert session.get(LoginThrottle, "addr:203.0.113.9") is None

    proxied = app_factory(trusted_proxy_hops=1).test_client()
    proxied.post("/api/v1/auth/login", json={"username": "x", "password": "y"},
                 headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
    session.expire_all()
    assert session.get(LoginThrottle, "addr:203.0.113.9") is not None
    assert session.get(LoginThrottle, "addr:198.51.100.1") is None


def test_disabled_user_cannot_log_in(client, staff):
    admin = bearer(login(client, staff["admin"]))
    client.post(f"/api/v1/users/{staff['auditor']}/disable", json={"reason": "left the trial"}, headers=admin)
    problem(client.post("/api/v1/auth/login", json={"username": staff["auditor"], "password": PASSWORD}), 401)


def test_me_reads_roles_from_the_database_now(client, staff):
    me = client.get("/api/v1/me", headers=bearer(login(client, staff["investigator"]))).get_json()
    assert me["sites"] == ["ES01"] and me["roles"][0]["principal_investigator"] is True and me["all_sites"] is False
