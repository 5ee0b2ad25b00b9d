"""The case form in a real browser (Chromium against gunicorn on PostgreSQL with the demo study): a coordinator
meets a hard error and a soft warning on a screening form as they leave its fields, saves a draft and completes
it; an investigator fills daily CRS forms over several days and sees the ASTCT grades the server derives, the
same as the API's; the Arabic form is drawn right to left (screenshot in the artifacts directory)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from browser.conftest import login, page_weight
from edc.services.demo import DEMO_PASSWORD


def api_headers(page, username: str) -> dict[str, str]:
    response = page.request.post("/api/v1/auth/login", data={"username": username, "password": DEMO_PASSWORD})
    assert response.status == 200, response.text()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def enrol(page, username: str, site: str = "ES01") -> str:
    """A new subject through the API (the enrolment page is tested on its own)."""
    response = page.request.post("/api/v1/subjects", headers=api_headers(page, username), data={
        "site": site, "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": today().isoformat()})
    assert response.status == 201, response.text()
    return response.json()["number"]


def today():
    return datetime.now(UTC).date()


def evaluated(page, act) -> None:
    """Do `act` and wait until the server's evaluation it causes is swapped into the page."""
    page.evaluate("window.edcSettled = false; document.body.addEventListener('htmx:afterSettle', "
                  "() => { window.edcSettled = true; }, {once: true})")
    act()
    for _ in range(400):   # page.wait_for_function evaluates a string, which the page's CSP refuses (no eval)
        if page.evaluate("() => window.edcSettled === true"):
            return
        page.wait_for_timeout(25)
    raise AssertionError("the evaluation was not swapped in within 10 s")


def leave(page, selector: str, value: str) -> None:
    """Type a value and leave the field (Tab): the server evaluates the form as the field is left."""
    evaluated(page, lambda: (page.fill(selector, value), page.press(selector, "Tab")))


def choose(page, name: str, code: str) -> None:
    evaluated(page, lambda: page.check(f"input[name='{name}'][value='{code}']"))


def select(page, name: str, code: str) -> None:
    evaluated(page, lambda: page.select_option(f"select[name='{name}']", code))


def test_a_coordinator_meets_a_hard_error_and_a_warning_saves_a_draft_and_completes_it(page, artifacts_dir):
    number = enrol(page, "crc.es01")
    login(page, "crc.es01")
    page.goto(f"/subjects/{number}/enter?form=vs&event=SCR")
    leave(page, "#f-VSDAT", today().isoformat())
    leave(page, "#f-TEMP", "36.8")
    leave(page, "#f-SYSBP", "60")
    assert page.evaluate("() => document.activeElement.id") == "m-SYSBP"   # its missing-data code: the swap kept the place
    leave(page, "#f-DIABP", "80")
    error = page.locator("#e-SYSBP")
    assert "systolic pressure must be higher" in error.inner_text()
    assert page.get_attribute("#f-SYSBP", "aria-invalid") == "true"
    assert "e-SYSBP" in page.get_attribute("#f-SYSBP", "aria-describedby")
    assert page.input_value("#f-DIABP") == "80"                      # what was typed survives the swap
    page.screenshot(path=str(artifacts_dir / "case-form-error.png"), full_page=True)
    leave(page, "#f-DIABP", "40")
    assert page.locator("#e-SYSBP").count() == 0
    leave(page, "#f-HR", "210")                                      # above the soft maximum: a warning
    assert "210" in page.locator("#w-HR").inner_text()
    with page.expect_navigation():
        page.click("button[value=draft]")
    assert re.search(r"/entries/[0-9a-f-]{36}", page.url)
    assert "its warnings opened queries" in page.inner_text("main")   # a draft's warnings open queries too
    assert page.locator(".entry-state .badge").first.inner_text() == "Form draft"
    for selector, value in (("#f-RESP", "20"), ("#f-OXYSAT", "98"), ("#f-WEIGHT", "32"), ("#f-HEIGHT", "140")):
        leave(page, selector, value)
    with page.expect_navigation():
        page.click("button[value=complete]")
    assert page.locator(".entry-state .badge").first.inner_text() == "Form complete"
    assert "The form was saved." in page.inner_text("main")
    hr = page.locator("#f-HR").locator("xpath=ancestor::div[contains(@class,'item')]/following-sibling::div[1]")
    assert "open query" in hr.inner_text()


def test_rows_of_a_repeating_group_are_added_and_removed_in_place(page):
    number = enrol(page, "crc.es01")
    login(page, "crc.es01")
    url = f"/subjects/{number}/enter?form=pe&event=SCR"
    page.goto(url)
    evaluated(page, lambda: page.click("button[value='add:PEEXAM']"))
    evaluated(page, lambda: page.click("button[value='add:PEEXAM']"))
    assert page.locator("fieldset.row").count() == 2 and page.url.endswith(url)   # no page load: htmx swapped the body
    select(page, "v.PEEXAM.1.PETESTCD", "ABDOMEN")
    evaluated(page, lambda: page.click("button[value='remove:PEEXAM:0']"))
    assert page.locator("fieldset.row").count() == 1
    assert page.input_value("select[name='v.PEEXAM.0.PETESTCD']") == "ABDOMEN"   # the second row moved up


def test_an_investigator_fills_daily_crs_forms_and_sees_the_grades_the_api_derives(page):
    number = enrol(page, "inv.es01")
    headers = api_headers(page, "inv.es01")
    login(page, "inv.es01")
    days = [  # (days ago, Tmax, hypotension, O2 device, expected grade)
        (3, "38.4", "NONE", "NONE", 1),
        (2, "39.1", "FLUIDS", "NONE", 2),
        (1, "39.0", "NONE", "FACEMASK", 3),
    ]
    for ago, tmax, hypotension, device, grade in days:
        page.goto(f"/subjects/{number}/enter?form=crs_daily")
        leave(page, "#f-CRSDAT", (today() - timedelta(days=ago)).isoformat())
        leave(page, "#f-TMAX", tmax)
        choose(page, "v.FEVEROTH", "N")                             # shown once the fever is known
        for item in ("ANTIPYR", "TOCI", "STEROID", "CRSDEATH", "ICUADM"):
            choose(page, f"v.{item}", "N")
        leave(page, "#f-SBPMIN", "100")
        choose(page, "v.HYPOT", hypotension)
        if hypotension != "NONE":
            choose(page, "v.HYPOTOTH", "N")
        leave(page, "#f-NPRESS", "0")
        select(page, "v.O2DEV", device)
        if device != "NONE":
            choose(page, "v.HYPOXOTH", "N")
        assert page.inner_text("#f-CRSGRDRV") == str(grade)         # derived while the form is filled in
        select(page, "v.CRSGRINV", str(grade))
        with page.expect_navigation():
            page.click("button[value=complete]")
        saved = re.search(r"/entries/([0-9a-f-]{36})", page.url)
        assert saved, (ago, page.eval_on_selector_all(".error", "els => els.map(e => e.id)"))
        entry_id = saved.group(1)
        assert page.inner_text("#f-CRSGRDRV") == str(grade)
        api = page.request.get(f"/api/v1/entries/{entry_id}", headers=headers).json()
        assert api["data"]["CRSGRDRV"] == grade


def test_the_arabic_form_is_drawn_right_to_left(new_page, artifacts_dir):
    page = new_page(locale="ar")
    number = enrol(page, "inv.es01")
    login(page, "inv.es01")
    # The first load of a case form in a browser with nothing cached (signed in, the login page's stylesheet and
    # scripts not kept): the page, its stylesheet, htmx and edc.js, within the slow links' budget.
    page = new_page(locale="ar", storage_state=page.context.storage_state())
    weight = page_weight(page, f"/subjects/{number}/enter?form=crs_daily", ready="#form-body")
    served = {t.url.split("?")[0].rsplit("/", 1)[-1] for t in weight.transfers}
    assert {"edc.css", "edc.js", "htmx-2.0.11.min.js"} <= served, weight.describe()
    assert weight.total < 150_000, weight.describe()
    assert page.get_attribute("html", "dir") == "rtl" and page.get_attribute("html", "lang") == "ar"
    assert "أعلى درجة حرارة" in page.inner_text("label[for=f-TMAX]")
    assert page.evaluate("getComputedStyle(document.querySelector('#f-TMAX')).direction") == "ltr"
    assert page.evaluate("getComputedStyle(document.querySelector('main')).direction") == "rtl"
    page.screenshot(path=str(artifacts_dir / "case-form-ar.png"), full_page=True)
    assert (artifacts_dir / "case-form-ar.png").read_bytes()[:4] == b"\x89PNG"
