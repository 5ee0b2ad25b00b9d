"""Monitoring in a real browser, on the demo study served by gunicorn: a monitor opens a query on an item of the
case form, the coordinator corrects the value on the case form and answers, the monitor closes the query; SDV
is marked and cleared by a later change; the PI signs (a wrong password is refused first), and an edit
invalidates the signature on the page.

The entry under review is made through the JSON API with a demo account's token (entering it is the case
form's own scenario); the later changes that clear SDV and invalidate the signature go through the API too.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from browser.conftest import login, page_weight
from browser.test_case_form import leave
from edc.services import demo_subjects
from edc.services.demo import DEMO_PASSWORD

MONITOR, COORDINATOR, PI = "mon.es01", "crc.es01", "inv.es01"
LATER_PAGES_BUDGET = 50_000  # bytes transferred by a page once the stylesheet and htmx are cached (docs/web.md)


class Api:
    """The JSON API of the server under test, as one demo account (through the browser's request context)."""

    def __init__(self, page, username: str) -> None:
        self.request = page.request
        answer = self.request.post("/api/v1/auth/login", data={"username": username, "password": DEMO_PASSWORD})
        assert answer.status == 200, answer.text()
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def post(self, path: str, body: dict) -> dict:
        answer = self.request.post(path, data=body, headers=self.headers)
        assert answer.status in (200, 201), (path, answer.status, answer.text())
        return answer.json()

    def change_entry(self, entry_id: str, data: dict, reason: str) -> dict:
        current = self.request.get(f"/api/v1/entries/{entry_id}", headers=self.headers)
        answer = self.request.put(f"/api/v1/entries/{entry_id}", data={"data": data, "complete": True, "reason": reason},
                                  headers={**self.headers, "If-Match": current.headers["etag"]})
        assert answer.status == 200, answer.text()
        return answer.json()


def vital_signs(today: date) -> dict:
    return {"VSDAT": today.isoformat(), "TEMP": 36.8, "HR": 96, "SYSBP": 105, "DIABP": 65, "RESP": 20, "OXYSAT": 98,
            "WEIGHT": 32.0, "HEIGHT": 140.0}


def submit(page, form: str, button: str | None = None) -> None:
    """Submit a form with its button (by its text), as a user does, and wait for the page it leads to."""
    target = page.locator(form)
    target = target.get_by_role("button", name=button) if button else target.locator("button[type=submit]").first
    with page.expect_navigation():
        target.click()


def test_a_query_is_raised_answered_and_closed_sdv_is_cleared_and_an_edit_invalidates_the_signature(new_page):
    monitor, coordinator, pi = new_page(), new_page(), new_page()
    site_api = Api(coordinator, COORDINATOR)
    today = date.today()
    number = site_api.post("/api/v1/subjects", {"site": "ES01", "birth_year": today.year - 10, "birth_month": 4, "sex": "F",
                                                "consent_date": (today - timedelta(days=18)).isoformat()})["number"]
    values = vital_signs(today)
    entry = site_api.post(f"/api/v1/subjects/{number}/entries",
                          {"form": "vs", "event": "SCR", "event_instance": 1, "data": values, "complete": True})
    entry_id = entry["id"]

    # The monitor raises a query on the heart rate, from the case form.
    login(monitor, MONITOR)
    monitor.goto(f"/entries/{entry_id}")
    monitor.locator("details.open-query", has=monitor.locator("#qm-HR")).locator("summary").click()
    monitor.fill("#qm-HR", "HR 96 at rest? Please check the nurse chart.")
    with monitor.expect_navigation():
        monitor.click("button[form=qf-HR]")
    assert monitor.url.endswith(f"/entries/{entry_id}?notice=query_opened")
    assert "The query was opened." in monitor.inner_text("main")
    monitor.goto("/queries")
    assert number in monitor.inner_text("main")
    with monitor.expect_navigation():
        monitor.get_by_role("link", name=re.compile("HR 96 at rest")).click()
    thread_url = monitor.url
    assert "Heart rate" in monitor.inner_text("main") and "96 beats/min" in monitor.inner_text("main")

    # The coordinator corrects the value on the case form, with the reason, then answers on the thread.
    login(coordinator, COORDINATOR)
    coordinator.goto(f"/entries/{entry_id}")
    leave(coordinator, "#f-HR", "88")
    coordinator.fill("#f-reason", "transcription error")
    with coordinator.expect_navigation():
        coordinator.click("button[value=complete]")
    assert "The form was saved." in coordinator.inner_text("main")
    coordinator.goto("/queries")
    with coordinator.expect_navigation():
        coordinator.get_by_role("link", name=re.compile("HR 96 at rest")).click()
    assert "88 beats/min" in coordinator.inner_text("main")
    coordinator.fill("#m-answer", "Corrected to 88 from the nurse chart.")
    submit(coordinator, "form[action$='/answer']")
    assert "The query was answered." in coordinator.inner_text("main")

    # The monitor closes it.
    monitor.goto(thread_url)
    submit(monitor, "form[action$='/close']")
    assert "The query was closed." in monitor.inner_text("main") and "closed: resolved" in monitor.inner_text("main")
    weight = page_weight(monitor, "/queries")
    assert weight.total < LATER_PAGES_BUDGET, weight.describe()

    # SDV: the monitor verifies the heart rate and the weight; a later change of the heart rate clears its mark.
    monitor.goto(f"/entries/{entry_id}/sdv")
    monitor.check("#sdv-HR")
    monitor.check("#sdv-WEIGHT")
    submit(monitor, f"form[action='/entries/{entry_id}/sdv']", "Mark the ticked items verified")
    assert monitor.locator("tr.verified").count() == 2
    site_api.change_entry(entry_id, {**values, "HR": 86}, "re-measured at rest")
    monitor.reload()
    cleared = monitor.locator("tr.cleared")
    assert cleared.count() == 1 and "cleared by a later change" in cleared.inner_text()
    assert "Heart rate" in cleared.inner_text() and monitor.locator("tr.verified").count() == 1

    # The PI signs: a wrong password is refused, the right one signs.
    login(pi, PI)
    pi.goto(f"/entries/{entry_id}/sign")
    pi.select_option("#f-meaning", "approval")
    pi.fill("#f-username", PI)
    pi.fill("#f-password", "not-the-password")
    submit(pi, "form[method=post][action$='/sign']", "Sign with my password")
    assert "username and password, entered again" in pi.inner_text("main")
    assert pi.locator("#f-password").get_attribute("aria-invalid") == "true" and pi.input_value("#f-password") == ""
    pi.select_option("#f-meaning", "approval")
    pi.fill("#f-username", PI)
    pi.fill("#f-password", DEMO_PASSWORD)
    submit(pi, "form[method=post][action$='/sign']", "Sign with my password")
    signed = pi.locator("tr.sig-valid")
    assert "Your signature was recorded." in pi.inner_text("main") and signed.count() == 1
    assert "Approval of these data" in signed.inner_text() and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", signed.inner_text())

    # An edit invalidates the signature shown on the page.
    site_api.change_entry(entry_id, {**values, "HR": 87}, "late correction")
    pi.reload()
    assert pi.locator("tr.sig-valid").count() == 0 and pi.locator("tr.sig-invalidated").count() == 1
    assert "signature invalidated" in pi.inner_text("main")


def test_the_demo_studys_queries_marks_signatures_and_item_histories_are_drawn(web, page):
    """Every page of the monitoring work on the demo study's own data (automatic and manual queries, a subject
    verified and signed whole, values of every shape in the histories): each answers, none fails."""
    signed = next(number for number, _, story in demo_subjects.study_subjects(web.seeded_on) if story == "signed")
    login(page, MONITOR)
    page.goto("/queries?state=all&page_size=200")
    threads = sorted({link.get_attribute("href") for link in page.locator("main table a[href^='/queries/']").all()})
    assert len(threads) >= 2, "the demo study has an automatic and a monitor's query"
    entries_queried = set()
    for thread in threads:
        answer = page.request.get(thread)
        assert answer.status == 200, thread
        entries_queried.add(re.search(r'class="entry-tabs".*?href="(/entries/[0-9a-f-]{36})"', answer.text(), re.S).group(1))
    for entry in sorted(entries_queried):
        for suffix in ("/queries", "/sdv", "/sign"):
            assert page.request.get(entry + suffix).status == 200, entry + suffix

    api = Api(page, MONITOR)
    entries = page.request.get(f"/api/v1/subjects/{signed}/entries", headers=api.headers).json()
    one_per_form = {entry["form"]: entry for entry in entries}.values()
    assert len(one_per_form) > 5
    for entry in one_per_form:
        sdv = page.request.get(f"/entries/{entry['id']}/sdv").text()
        assert "whole entry verified" in sdv or "nothing (not required)" in sdv, entry["form"]
        # Each item holding more than a plain value (a repeating group, a missing-data code), and one that does not.
        shaped = [item for item, value in entry["data"].items() if isinstance(value, dict | list)]
        plain = [item for item, value in entry["data"].items() if not isinstance(value, dict | list)][:1]
        for item in shaped + plain:
            history = page.request.get(f"/entries/{entry['id']}/items/{item}/history")
            assert history.status == 200, (entry["form"], item, history.status)
    page.goto(f"/subjects/{signed}/sign")
    assert page.locator("tr.sig-valid").count() >= 1 and "the whole casebook" in page.inner_text("main")
