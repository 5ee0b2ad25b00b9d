"""Browser sessions: sign-in through the API's service and rules, the session cookie, CSRF on every write,
sign-out, the first-login password change and the setup link's page."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from datetime import timedelta

from conftest import PASSWORD, count_rows, make_user
from edc import clock
from edc.models.users import User
from edc.security import tokens

NEW_PASSWORD = "another-staple-ferry-7"


def audit_actions(session) -> list[str]:
    return list(session.scalars(sa.text("SELECT action FROM audit_records ORDER BY occurred_at, seq")))


def test_sign_in_sets_an_httponly_lax_session_cookie_and_shows_the_home_page(web, staff):
    response = web.login(staff["investigator"])
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("edc_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    home = web.text("/")
    assert "Investigator" in home and "investigator" in home
    assert web.client.get("/").headers["Cache-Control"] == "no-store"


def test_a_wrong_password_is_refused_like_the_api_and_audited(web, staff, session):
    web.get("/login")
    response = web.post("/login", {"username": staff["investigator"], "password": "wrong"})
    assert response.status_code == 401 and "Invalid username or password." in response.get_data(as_text=True)
    assert "edc_session" not in response.headers.get("Set-Cookie", "")
    assert "login_failed" in audit_actions(session)
    unknown = web.post("/login", {"username": "nobody", "password": "wrong"})
    assert unknown.status_code == 401 and unknown.get_data(as_text=True).count("Invalid username or password.") == 1


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(web, other_web, staff, session):
    web.login(staff["investigator"])
    sessions_before = count_rows(session, "auth_sessions")
    forged = web.post("/logout", csrf=False)
    assert forged.status_code == 403 and forged.mimetype == "text/html"
    assert "did not come from this site" in forged.get_data(as_text=True)
    other_web.login(staff["monitor"])  # another session's token is no good either
    assert web.post("/logout", {"csrf_token": other_web.csrf}).status_code == 403
    assert web.client.get("/").status_code == 200  # still signed in
    assert count_rows(session, "auth_sessions") == sessions_before + 1
    anonymous = other_web.client.post("/login", data={"username": staff["investigator"], "password": PASSWORD})
    assert anonymous.status_code == 403  # the login form is bound to its page too (login CSRF)


def test_sign_out_ends_the_session_everywhere(web, staff):
    web.login(staff["investigator"])
    cookie = web.client.get_cookie("edc_session").value
    response = web.post("/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/login?notice=signed_out"
    assert "edc_session=;" in response.headers["Set-Cookie"]
    web.client.set_cookie("edc_session", cookie)  # a copied cookie is dead too
    assert web.client.get("/").status_code == 302


def test_protected_pages_send_anonymous_browsers_to_sign_in_and_back(web, staff):
    response = web.client.get("/password?x=1")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/password?x%3D1"
    htmx = web.client.get("/", headers={"HX-Request": "true"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"].startswith("/login?next=/")
    web.get("/login")
    after = web.post("/login", {"username": staff["investigator"], "password": PASSWORD, "next": "/password"})
    assert after.headers["Location"] == "/password"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_the_return_address_is_never_another_site(web, staff, target):
    web.get("/login")
    response = web.post("/login", {"username": staff["investigator"], "password": PASSWORD, "next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_a_first_login_must_change_the_password_first(web, session, staff):
    make_user(session, "newcomer", [("coordinator", "ES01")], demo=False)
    response = web.login("newcomer")
    assert response.headers["Location"] == "/password"
    assert web.client.get("/").headers["Location"] == "/password"  # nothing else until it is changed
    page = web.text("/password")
    assert "Change your password before you continue." in page
    differ = web.post("/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": "x"})
    assert differ.status_code == 422 and 'aria-describedby="e-confirm_password"' in differ.get_data(as_text=True)
    weak = web.post("/password", {"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"})
    assert weak.status_code == 422 and 'id="e-new_password"' in weak.get_data(as_text=True)
    wrong = web.post("/password", {"current_password": "nope", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert wrong.status_code == 422 and "Does not match the current password." in wrong.get_data(as_text=True)
    done = web.post("/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["Location"] == "/?notice=password_changed"
    assert "Your password was changed." in web.text("/?notice=password_changed")


def test_the_setup_page_sets_a_first_password_with_the_mailed_token(web, session, staff):
    make_user(session, "invited", [("coordinator", "ES01")], demo=False)
    token, token_hash = tokens.new_opaque_token()
    user = session.query(User).filter_by(username="invited").one()
    user.setup_token_hash, user.setup_token_expires_at = token_hash, clock.utcnow() + timedelta(hours=1)
    session.commit()
    web.get("/setup")
    bad = web.post("/setup", {"token": "not-it", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert bad.status_code == 401 and "invalid or expired" in bad.get_data(as_text=True)
    done = web.post("/setup", {"token": token, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["Location"] == "/login?notice=password_set"
    web.login("invited", NEW_PASSWORD)
    assert web.client.get("/").status_code == 200


def test_the_language_choice_changes_the_page_and_arabic_is_right_to_left(web, staff):
    web.login(staff["investigator"])
    web.post("/language", {"lang": "ar", "next": "/"})
    page = web.text("/")
    assert '<html lang="ar" dir="rtl">' in page and "تسجيل الخروج" in page
    web.post("/language", {"lang": "xx", "next": "https://evil.example/"})
    assert '<html lang="ar"' in web.text("/")


def test_an_unknown_page_is_an_html_404_for_a_browser_and_problem_json_for_the_api(web, client):
    page = web.client.get("/no/such/page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html" and "Page not found" in page.get_data(as_text=True)
    assert client.get("/api/v1/no-such").mimetype == "application/problem+json"
