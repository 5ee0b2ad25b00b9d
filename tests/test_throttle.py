"""Failure throttling: one username form everywhere, locks per (account, address) so a third party cannot
lock the owner out, a per-address limit, a password change that is throttled like a login, and pruning."""

import pytest
import sqlalchemy as sa

from conftest import PASSWORD, bearer, login, problem
from edc.models import LoginThrottle

NEW_PASSWORD = "a-brand-new-passphrase-42"
ATTACKER = {"REMOTE_ADDR": "203.0.113.66"}
OWNER = {"REMOTE_ADDR": "198.51.100.7"}


def attempt(client, username, password, address=None):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password},
                       environ_base=address or {})


def lock_by_login(client, username, address=None) -> None:
    """Fail until the throttle answers 429 (the account is then locked from that address)."""
    for _ in range(50):
        if attempt(client, username, "wrong-password-x", address).status_code == 429:
            return
    raise AssertionError("never throttled")


def throttle_keys(session) -> set[str]:
    keys = set(session.scalars(sa.select(LoginThrottle.key)))
    session.rollback()
    return keys


def change_password(client, tokens, current, new):
    return client.post("/api/v1/auth/password", json={"current_password": current, "new_password": new},
                       headers=bearer(tokens))


def same_answer(a, b, status) -> None:
    first, second = problem(a, status), problem(b, status)
    first.pop("request_id"), second.pop("request_id")
    assert first == second
    assert a.headers.get("WWW-Authenticate") == b.headers.get("WWW-Authenticate")


# ------------------------------------------------------------------------------ password change


def test_lockout_reached_through_password_change_blocks_even_the_right_password(client, staff, app):
    tokens = login(client, staff["auditor"])
    for _ in range(app.config["EDC"]["throttle_account_free_attempts"] + 1):
        problem(change_password(client, tokens, "not-the-password-1", NEW_PASSWORD), 422)
    right = change_password(client, tokens, PASSWORD, NEW_PASSWORD)
    assert problem(right, 429) and int(right.headers["Retry-After"]) >= 1
    locked = attempt(client, staff["auditor"], PASSWORD)
    assert problem(locked, 429) and int(locked.headers["Retry-After"]) >= 1


def test_a_locked_account_cannot_guess_through_password_change(client, staff):
    tokens = login(client, staff["auditor"])
    lock_by_login(client, staff["auditor"])
    problem(change_password(client, tokens, PASSWORD, NEW_PASSWORD), 429)
    problem(change_password(client, tokens, "not-the-password-1", NEW_PASSWORD), 429)


@pytest.mark.parametrize("new", ["short-pw", "auditor-is-my-password", "password1234"])
def test_password_change_answers_alike_for_a_right_and_a_wrong_current_password(client, staff, new):
    tokens = login(client, staff["auditor"])
    same_answer(change_password(client, tokens, "not-the-password-1", new), change_password(client, tokens, PASSWORD, new),
                422)


def test_new_password_equal_to_the_guess_tells_nothing_about_the_current_one(client, staff):
    tokens = login(client, staff["auditor"])
    wrong = change_password(client, tokens, "not-the-password-1", "not-the-password-1")
    right = change_password(client, tokens, PASSWORD, PASSWORD)
    same_answer(wrong, right, 422)
    assert problem(wrong, 422)["errors"][0]["pointer"] == "/new_password"


# ------------------------------------------------------------------------------ one username form


VARIANTS = [" AUDITOR", "auditor ", " Auditor  ", "\uff41\uff55\uff44\uff49\uff54\uff4f\uff52", "\u3000auditor",
            "\uff21\uff35\uff24\uff29\uff34\uff2f\uff32\u2003"]


def test_username_variants_reach_the_same_account(client, staff):
    for variant in VARIANTS:
        tokens = login(client, variant)
        assert client.get("/api/v1/me", headers=bearer(tokens)).get_json()["username"] == staff["auditor"], repr(variant)


def test_username_variants_hit_the_same_throttle(client, staff, session):
    for variant in VARIANTS:
        problem(attempt(client, variant, "wrong-password-x"), 401)
    assert session.get(LoginThrottle, f"user:{staff['auditor']}@127.0.0.1").failures == len(VARIANTS)
    assert {k for k in throttle_keys(session) if k.startswith("user:")} == {"user:auditor@127.0.0.1", "user:auditor"}


def test_a_locked_account_stays_locked_under_every_variant(client, staff):
    lock_by_login(client, staff["auditor"])
    for variant in VARIANTS:
        problem(attempt(client, variant, PASSWORD), 429)


def test_names_that_break_the_username_rules_are_counted_under_the_address_only(client, staff, session):
    for typed in ["a b c", "<script>", "x", "mfg\u200b", "a" * 65, "bob\u2028INFO admin logged in"]:
        problem(attempt(client, typed, "wrong-password-x"), 401)
    assert throttle_keys(session) == {"addr:127.0.0.1"}
    assert session.get(LoginThrottle, "addr:127.0.0.1").failures == 6


def test_names_with_control_characters_are_refused_before_any_lookup(client, staff, session):
    for typed in ["\tauditor", "auditor\n", "bob\nINFO admin logged in", "audi\x00tor"]:
        assert problem(attempt(client, typed, PASSWORD), 422)["errors"][0]["pointer"] == "/username"
    assert throttle_keys(session) == set()


# ------------------------------------------------------------------------------ who a lock shuts out


def test_a_third_party_locks_only_itself_out(client, staff):
    lock_by_login(client, staff["auditor"], ATTACKER)
    problem(attempt(client, staff["auditor"], PASSWORD, ATTACKER), 429)
    assert attempt(client, staff["auditor"], PASSWORD, OWNER).status_code == 200


def test_one_address_guessing_many_accounts_is_locked_for_all_of_them(client, staff, app):
    for n in range(app.config["EDC"]["throttle_address_free_attempts"] + 1):
        attempt(client, f"guess-{n:02d}", "wrong-password-x", ATTACKER)
    problem(attempt(client, "another-guess", "wrong-password-x", ATTACKER), 429)
    problem(attempt(client, staff["auditor"], PASSWORD, ATTACKER), 429)
    assert attempt(client, staff["auditor"], PASSWORD, OWNER).status_code == 200


def test_guessing_spread_over_many_addresses_meets_the_account_ceiling(client, staff, app, monkeypatch):
    monkeypatch.setitem(app.config["EDC"], "throttle_account_ceiling_attempts", 12)
    for n in range(13):
        problem(attempt(client, staff["auditor"], "wrong-password-x", {"REMOTE_ADDR": f"192.0.2.{n + 1}"}), 401)
    problem(attempt(client, staff["auditor"], PASSWORD, OWNER), 429)


def test_a_right_password_gives_its_count_back(client, staff, session):
    # Every check is counted before it is made; a right one leaves the counters as they were.
    for _ in range(2):
        problem(attempt(client, "ghost-user", "wrong-password-x"), 401)
    login(client, staff["auditor"])
    assert {row.key: row.failures for row in session.scalars(sa.select(LoginThrottle))} == {
        "user:ghost-user@127.0.0.1": 2, "user:ghost-user": 2, "addr:127.0.0.1": 2}


# ------------------------------------------------------------------------------ pruning


def test_forgotten_counters_are_deleted_at_the_next_failure(client, staff, session, fake_clock, app):
    attempt(client, "ghost-user", "wrong-password-x", ATTACKER)
    assert "user:ghost-user" in throttle_keys(session)
    fake_clock.advance(seconds=app.config["EDC"]["throttle_forget_seconds"] + 1)
    attempt(client, "other-user", "wrong-password-x", OWNER)
    assert throttle_keys(session) == {"user:other-user@198.51.100.7", "user:other-user", "addr:198.51.100.7"}


def test_a_running_lock_is_not_pruned(client, staff, session, fake_clock, app, monkeypatch):
    monkeypatch.setitem(app.config["EDC"], "throttle_forget_seconds", 1)
    monkeypatch.setitem(app.config["EDC"], "throttle_base_seconds", 60)
    lock_by_login(client, staff["auditor"], ATTACKER)
    fake_clock.advance(seconds=2)
    attempt(client, "other-user", "wrong-password-x", OWNER)
    assert f"user:{staff['auditor']}@203.0.113.66" in throttle_keys(session)
    problem(attempt(client, staff["auditor"], PASSWORD, ATTACKER), 429)
