"""Signing in and out in Chromium: the login form, a refused password, the session cookie's attributes as the
browser holds them, and sign-out."""

from __future__ import annotations

from browser.conftest import DEMO_PASSWORD


def test_a_coordinator_signs_in_and_out_and_a_wrong_password_is_refused(page):
    page.goto("/password")
    assert "/login?next=/password" in page.url  # sent to sign in, and back afterwards
    page.fill("input[name=username]", "crc.es01")
    page.fill("input[name=password]", "not-the-password")
    page.click("main button[type=submit]")
    assert page.locator("#login-error").inner_text() == "Invalid username or password."
    page.fill("input[name=username]", "crc.es01")
    page.fill("input[name=password]", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert page.url.endswith("/password")  # back where it was going
    [cookie] = [c for c in page.context.cookies() if c["name"] == "edc_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    page.goto("/")
    assert "Demo Coordinator ES01" in page.inner_text("header")
    page.click("header button:has-text('Sign out')")
    page.wait_for_url("**/login?notice=signed_out")
    assert not [c for c in page.context.cookies() if c["name"] == "edc_session"]
    page.goto("/")
    assert "/login" in page.url
