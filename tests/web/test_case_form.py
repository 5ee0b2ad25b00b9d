"""The case form page through Flask's test client: every trial form drawn in English and Arabic, the evaluation
as the user leaves a field (the services' preview: the same values, errors and warnings as a real save), drafts,
completion, reasons for change, If-Match conflicts, retries without duplicates, scope and roles."""

from __future__ import annotations

import html
import re
import uuid

import pytest
import sqlalchemy as sa

from conftest import PASSWORD, count_rows
from edc import runtime
from edc.extensions import db
from edc.models.users import User
from edc.problems import UnprocessableContent
from edc.services import auth
from edc.services import entries as entry_service
from trial import conftest as trial_conftest
from trial.test_baseline_forms import MH, PE
from trial.test_safety_forms import ICANS_EXAMPLES, enrol_aged, icans
from web.conftest import WebClient

trial = trial_conftest.trial   # the trial forms, sites ES01 and IT01, one account per role, the clock at 2026-11-20

DAY = "2026-11-19"
ENTRY_URL = re.compile(r"/entries/([0-9a-f-]{36})")


def username(account: str) -> str:
    return account.lower().replace("_", "-")


def browser_of(trial, account: str, lang: str | None = None) -> WebClient:
    web = WebClient(trial.client.application.test_client())
    if lang:
        web.client.set_cookie("edc_lang", lang)
    web.login(username(account))
    return web


def crs_fields(temp="38.5", **changes) -> dict[str, str]:
    """A daily CRS form's fields as a browser posts them (grade 1 at 38.5 °C with nothing else)."""
    fields = {"v.CRSDAT": DAY, "v.TMAX": temp, "v.ANTIPYR": "N", "v.TOCI": "N", "v.STEROID": "N", "v.SBPMIN": "100",
              "v.HYPOT": "NONE", "v.NPRESS": "0", "v.O2DEV": "NONE", "v.CRSDEATH": "N", "v.ICUADM": "N"}
    if float(temp) >= 38.0:
        fields["v.FEVEROTH"] = "N"
    fields["v.CRSGRINV"] = "1" if float(temp) >= 38.0 else "0"
    return {**fields, **changes}


def enter_url(number: str, form: str, event: str | None = None, instance: int = 1) -> str:
    place = f"&event={event}&instance={instance}" if event else ""
    return f"/subjects/{number}/enter?form={form}{place}"


def new_form(web: WebClient, url: str) -> dict[str, str]:
    """GET a new entry's form and return its hidden fields (CSRF token kept by the client, the form token)."""
    page = web.text(url)
    token = re.search(r'name="form_token" value="([0-9a-f-]{36})"', page)
    return {"form_token": token.group(1)} if token else {}


def writer_of(study, form_id: str) -> str:
    if form_id in study.exclusive_forms:
        return "manufacturing" if "manufacturing" in study.form_roles[form_id] else "safety"
    return "coordinator_ES01"


def place_of(study, form_id: str) -> tuple[str | None, int]:
    if form_id in study.subject_logs or form_id in study.repeating_forms:
        return None, 1
    return next(e.id for e in study.events if form_id in e.forms), 1


def study_of(trial):
    return runtime.for_app(trial.client.application).study


def test_every_trial_form_renders_in_english_and_arabic(trial):
    number = trial.enrol()
    study = study_of(trial)
    browsers: dict[tuple[str, str], WebClient] = {}
    for form_id in study.form_ids:
        account = writer_of(study, form_id)
        event, instance = place_of(study, form_id)
        form = study.form(form_id)
        for lang in ("en", "ar"):
            web = browsers.get((account, lang)) or browsers.setdefault((account, lang), browser_of(trial, account, lang))
            page = web.text(enter_url(number, form_id, event, instance))
            assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in page
            assert html_text(form.title.get(lang) or form.title["en"]) in page
            for field_id in re.findall(r'<(?:input|select|textarea) id="([^"]+)"', page):   # radios sit in their label
                assert f'for="{field_id}"' in page, (form_id, field_id)


def html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ the preview is the save

def test_the_preview_gives_the_values_errors_and_warnings_a_real_save_gives(trial):
    number = trial.enrol()
    app = trial.client.application
    with app.app_context():
        runtime.bind(db.session, runtime.for_app(app))
        user = db.session.scalars(sa.select(User).where(User.username == "investigator-es01")).one()
        actor = auth.actor_for(user)
        # derived grade 1, the investigator's grade 2: a warning (CRS_GRADE_MATCH) and the calculated threshold
        data = {**api_crs(), "CRSGRINV": "2"}
        preview = entry_service.preview_entry(db.session, actor, number=number, form="crs_daily", data=data, complete=True)
        saved = entry_service.create_entry(db.session, actor, number, form="crs_daily", data=data, complete=True)
        assert preview.errors == [] and preview.values == saved.values and preview.warnings == saved.warnings
        assert saved.values["CRSGRDRV"] == 1 and {w["check"] for w in saved.warnings} == {"CRS_GRADE_MATCH"}
        # an existing entry's preview reads the same context as its update (the day's other assessment excluded)
        again = entry_service.preview_entry(db.session, actor, entry_id=saved.entry.id, data=data, complete=True)
        assert again.values == saved.values and again.warnings == saved.warnings
        # a hard error: the same pointers and messages as the refusal
        wrong = {**api_crs(), "HYPOT": "FLUIDS", "HYPOTOTH": "N", "NPRESS": 1, "CRSGRINV": "2"}
        refused = entry_service.preview_entry(db.session, actor, number=number, form="crs_daily", data=wrong, complete=True)
        with pytest.raises(UnprocessableContent) as raised:
            entry_service.create_entry(db.session, actor, number, form="crs_daily", data=wrong, complete=True)
        assert refused.errors == raised.value.errors and [e["pointer"] for e in refused.errors] == ["/data/NPRESS"]
        db.session.rollback()


def api_crs(temp: float = 38.5) -> dict:
    data = {"CRSDAT": DAY, "TMAX": temp, "ANTIPYR": "N", "TOCI": "N", "STEROID": "N", "SBPMIN": 100, "HYPOT": "NONE",
            "NPRESS": 0, "O2DEV": "NONE", "CRSDEATH": "N", "ICUADM": "N"}
    return {**data, "FEVEROTH": "N"} if temp >= 38.0 else data


# ------------------------------------------------------------------ evaluation as the user leaves a field

def derived_grade(page: str) -> str:
    found = re.search(r'<output id="f-CRSGRDRV"[^>]*>([^<]*)</output>', page)
    assert found, page[:2000]
    return found.group(1).strip()


def test_the_evaluation_shows_the_crs_grade_the_api_derives(trial):
    number = trial.enrol()
    web = browser_of(trial, "investigator_ES01")
    url = enter_url(number, "crs_daily")
    hidden = new_form(web, url)
    assert derived_grade(web.text(url)) == "—"                         # nothing derived from an empty form
    examples = [(crs_fields("38.5"), 1), (crs_fields("39.0", **{"v.O2DEV": "FACEMASK", "v.HYPOXOTH": "N"}), 3),
                (crs_fields("38.6", **{"v.HYPOT": "VASO", "v.HYPOTOTH": "N", "v.NPRESS": "1"}), 3)]
    for fields, grade in examples:
        response = web.post(url.replace("/enter?", "/enter/evaluate?"), {**hidden, **fields},
                            headers={"HX-Request": "true"})
        assert response.status_code == 200
        fragment = response.get_data(as_text=True)
        assert fragment.lstrip().startswith("{#") is False and '<div id="form-body">' in fragment
        assert "<html" not in fragment                                # only the fragment is swapped in
        api = trial.save(number, "crs_daily", to_api(fields), complete=False).get_json()
        assert int(derived_grade(fragment)) == api["data"]["CRSGRDRV"] == grade
        assert "derived by the server" in fragment
    # show_if: the oxygen flow appears only for a nasal cannula, keeping what was typed elsewhere
    fragment = web.post(url.replace("/enter?", "/enter/evaluate?"),
                        {**hidden, **crs_fields("39.0", **{"v.O2DEV": "NC", "v.HYPOXOTH": "N"})},
                        headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'name="v.O2FLOW"' in fragment and 'value="39.0"' in fragment
    assert 'name="v.O2FLOW"' not in web.text(url)
    whole = web.post(url.replace("/enter?", "/enter/evaluate?"), {**hidden, **crs_fields("38.5")})   # not htmx
    assert "<html" in whole.get_data(as_text=True) and derived_grade(whole.get_data(as_text=True)) == "1"


@pytest.mark.parametrize("example", ["N2", "N4", "N6"])
def test_the_evaluation_shows_the_icans_grade_the_api_derives(trial, example):
    years, tool, score, loc, seizure, motor, icp, grade = ICANS_EXAMPLES[example]
    number = enrol_aged(trial, years)
    data = icans(tool, score, loc, seizure, motor, icp, grade=grade)
    web = browser_of(trial, "investigator_ES01")
    url = enter_url(number, "icans_daily")
    # the browser's date-time has no offset: the page gives it the site's (Madrid, +01:00 in November)
    fields = {f"v.{item}": "2026-11-19T08:30" if item == "NDTC" else str(value) for item, value in data.items()}
    fragment = web.post(url.replace("/enter?", "/enter/evaluate?"), {**new_form(web, url), **fields},
                        headers={"HX-Request": "true"}).get_data(as_text=True)
    shown = re.search(r'<output id="f-ICANSDRV"[^>]*>([^<]*)</output>', fragment).group(1).strip()
    assert shown == str(trial.saved(number, "icans_daily", data)["data"]["ICANSDRV"]) == str(grade)
    entry_id = entry_id_of(post_new(web, url, fields, "complete"))
    assert trial.entry(entry_id)["data"]["NDTC"] == data["NDTC"] == "2026-11-19T08:30:00+01:00"


def to_api(fields: dict[str, str]) -> dict:
    """The browser's fields of a CRS form as the API's JSON (numbers as numbers)."""
    data = {}
    for name, value in fields.items():
        item = name.removeprefix("v.")
        data[item] = float(value) if item in ("TMAX", "O2FLOW") else int(value) if item in ("SBPMIN", "NPRESS") else value
    return data


# ------------------------------------------------------------------ saving

def post_new(web: WebClient, url: str, fields: dict[str, str], action: str, hidden: dict[str, str] | None = None):
    return web.post(url, {**(hidden if hidden is not None else new_form(web, url)), **fields, "action": action})


def entry_id_of(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    return ENTRY_URL.search(response.headers["Location"]).group(1)


def test_a_hard_error_blocks_a_complete_save_and_is_tied_to_its_field(trial, session):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    url = enter_url(number, "crs_daily")
    before = count_rows(session, "entries")
    fields = crs_fields(**{"v.HYPOT": "FLUIDS", "v.HYPOTOTH": "N", "v.NPRESS": "1"})
    response = post_new(web, url, fields, "complete")
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and count_rows(session, "entries") == before
    assert re.search(r'<input id="f-NPRESS"[^>]*aria-describedby="e-NPRESS[^"]*"[^>]*aria-invalid="true"', page)
    assert re.search(r'<p class="error" id="e-NPRESS">Vasopressor count with no hypotension', page)
    assert 'value="FLUIDS" checked' in page and 'name="v.NPRESS" type="text" inputmode="numeric" dir="ltr" class="num" value="1"' in page
    # the same message when the page evaluates the form as the user leaves the field (htmx)
    fragment = web.post(url.replace("/enter?", "/enter/evaluate?"), fields, headers={"HX-Request": "true"})
    assert re.search(r'<p class="error" id="e-NPRESS">Vasopressor count with no hypotension', fragment.get_data(as_text=True))
    # a value of the wrong type is the engine's own message, the typed text kept
    response = post_new(web, url, crs_fields(**{"v.SBPMIN": "abc"}), "complete")
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and '<p class="error" id="e-SBPMIN">must be an integer;' in page
    assert 'value="abc"' in page and count_rows(session, "entries") == before


def test_a_warning_saves_and_opens_its_query_shown_beside_the_item(trial):
    number = trial.enrol()
    web = browser_of(trial, "investigator_ES01")
    url = enter_url(number, "crs_daily")
    entry_id = entry_id_of(post_new(web, url, crs_fields(**{"v.CRSGRINV": "2"}), "complete"))   # derived grade 1
    [query] = trial.open_queries(number, "CRS_GRADE_MATCH")
    assert query["entry_id"] == entry_id
    page = web.text(f"/entries/{entry_id}?notice=entry_saved_queries")
    assert "its warnings opened queries" in page
    item = page[page.index('id="f-CRSGRINV"'):]
    assert f'href="/queries/{query["id"]}"' in item[:4000] and "1 open query" in item[:4000]
    assert 'id="w-CRSGRINV"' in page          # the warning stays visible while it holds
    assert f'href="/entries/{entry_id}/items/CRSGRINV/history"' in page


def test_a_draft_saves_without_required_items_and_completing_needs_them(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    url = enter_url(number, "crs_daily")
    entry_id = entry_id_of(post_new(web, url, {"v.CRSDAT": DAY, "v.TMAX": "37.2"}, "draft"))
    assert trial.entry(entry_id)["status"] == "draft" and trial.entry(entry_id)["data"]["TMAX"] == 37.2
    page = web.text(f"/entries/{entry_id}")
    assert ">Form draft<" in page and 'name="etag"' in page
    etag = etag_in(page)
    response = web.post(f"/entries/{entry_id}", {"v.CRSDAT": DAY, "v.TMAX": "37.2", "etag": etag, "action": "complete"})
    assert response.status_code == 422 and "is required to complete the form" in response.get_data(as_text=True)
    fields = {k: v for k, v in crs_fields("37.2").items()}
    response = web.post(f"/entries/{entry_id}", {**fields, "etag": etag, "action": "complete"})
    assert entry_id_of(response) == entry_id and trial.entry(entry_id)["status"] == "complete"


def etag_in(page: str) -> str:
    return html.unescape(re.search(r'name="etag" value="([^"]+)"', page).group(1))


def test_a_change_after_completion_needs_a_reason(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    page = web.text(f"/entries/{entry_id}")
    assert 'id="f-reason"' in page and "Required to change a form that was completed" in page
    etag = etag_in(page)
    changed = {**crs_fields("37.4"), "etag": etag, "action": "complete"}
    response = web.post(f"/entries/{entry_id}", changed)
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and 'aria-invalid="true"' in page and 'id="e-reason"' in page
    assert 'value="37.4"' in page and trial.entry(entry_id)["data"]["TMAX"] == 37.2
    assert entry_id_of(web.post(f"/entries/{entry_id}", {**changed, "reason": "transcription error"})) == entry_id
    assert trial.entry(entry_id)["data"]["TMAX"] == 37.4


def test_someone_elses_change_is_shown_with_both_versions_and_can_be_reapplied(trial):
    number = trial.enrol()
    mine, theirs = browser_of(trial, "coordinator_ES01"), browser_of(trial, "investigator_ES01")
    entry_id = entry_id_of(post_new(mine, enter_url(number, "crs_daily"), {"v.CRSDAT": DAY, "v.TMAX": "37.2"}, "draft"))
    etag = etag_in(mine.text(f"/entries/{entry_id}"))
    their_etag = etag_in(theirs.text(f"/entries/{entry_id}"))
    assert entry_id_of(theirs.post(f"/entries/{entry_id}", {"v.CRSDAT": DAY, "v.TMAX": "38.9", "etag": their_etag,
                                                           "action": "draft"})) == entry_id
    response = mine.post(f"/entries/{entry_id}", {"v.CRSDAT": DAY, "v.TMAX": "37.6", "etag": etag, "action": "draft"})
    page = response.get_data(as_text=True)
    assert response.status_code == 412 and "Someone else changed this form" in page
    conflict = page[page.index("conflict-title"):page.index("</table>")]
    assert "38.9" in conflict and "37.6" in conflict                  # theirs (stored) and yours (sent)
    assert trial.entry(entry_id)["data"]["TMAX"] == 38.9
    new_etag = etag_in(page)
    assert new_etag != etag and 'value="37.6"' in page                # the form keeps yours, against their version
    assert entry_id_of(mine.post(f"/entries/{entry_id}", {"v.CRSDAT": DAY, "v.TMAX": "37.6", "etag": new_etag,
                                                         "action": "draft"})) == entry_id
    assert trial.entry(entry_id)["data"]["TMAX"] == 37.6


def test_a_retried_save_with_the_same_form_token_creates_one_entry(trial, session):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    url = enter_url(number, "crs_daily")
    hidden = new_form(web, url)
    before = count_rows(session, "entries")
    first = post_new(web, url, crs_fields("37.2"), "complete", hidden)
    again = post_new(web, url, crs_fields("37.2"), "complete", hidden)            # the answer was lost: sent again
    changed = post_new(web, url, crs_fields("37.3"), "complete", hidden)          # or sent again after an edit
    assert entry_id_of(first) == entry_id_of(again) == entry_id_of(changed)
    assert count_rows(session, "entries") == before + 1
    # a refused save leaves the token free for the corrected form
    hidden = new_form(web, url)
    assert post_new(web, url, crs_fields(**{"v.SBPMIN": "abc"}), "complete", hidden).status_code == 422
    assert entry_id_of(post_new(web, url, crs_fields("37.5", **{"v.CRSDAT": "2026-11-18"}), "complete", hidden))
    assert count_rows(session, "entries") == before + 2


def test_another_sites_entry_and_subject_are_404_and_a_monitor_cannot_save(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    rome = browser_of(trial, "investigator_IT01")
    assert rome.get(f"/entries/{entry_id}").status_code == 404
    assert rome.get(enter_url(number, "crs_daily")).status_code == 404
    assert rome.get(f"/entries/{uuid.uuid4()}").status_code == 404
    monitor = browser_of(trial, "monitor_ES01")
    page = monitor.text(f"/entries/{entry_id}")
    assert "Save as complete" not in page and 'name="v.TMAX"' not in page and "37.2" in page   # read-only
    assert 'action="/entries/' + entry_id + '/queries"' in page                             # may open a query
    response = monitor.post(f"/entries/{entry_id}", {"v.TMAX": "39", "etag": "x", "action": "draft"})
    assert response.status_code == 403 and trial.entry(entry_id)["data"]["TMAX"] == 37.2
    assert monitor.post(f"/entries/{entry_id}/evaluate", {"v.TMAX": "39"}).status_code == 403


def test_an_unknown_form_or_event_is_refused_like_the_api_and_an_existing_entry_is_opened(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    for url in (enter_url(number, "nosuchform"), enter_url(number, "vs", "NOSUCHEVENT"), enter_url(number, "vs")):
        response = web.get(url)
        assert response.status_code == 422, (url, response.status_code)
    url = enter_url(number, "vs", "SCR")
    entry_id = entry_id_of(post_new(web, url, {"v.TEMP": "36.8"}, "draft"))
    second = post_new(web, url, {"v.TEMP": "36.9"}, "draft", {})   # vs happens once at SCR: its entry opens
    assert second.status_code == 303 and second.headers["Location"] == f"/entries/{entry_id}"
    opened = web.get(url)                                            # and the blank form is never offered again
    assert opened.status_code == 303 and opened.headers["Location"] == f"/entries/{entry_id}"
    assert web.get(enter_url(number, "vs", "D28")).status_code == 200   # another visit's is still to enter


def test_rows_are_added_and_removed_without_javascript(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    study = study_of(trial)
    form_id, group = next((f, g) for f in study.form_ids for g in study.form(f).groups.values()
                          if f not in study.exclusive_forms and not study.form(f).groups[g.id].show_if)
    event, instance = place_of(study, form_id)
    url = enter_url(number, form_id, event, instance)
    hidden = new_form(web, url)
    page = post_new(web, url, {}, f"add:{group.id}", hidden).get_data(as_text=True)
    assert f'name="rows.{group.id}" value="1"' in page
    page = post_new(web, url, {f"rows.{group.id}": "1"}, f"add:{group.id}", hidden).get_data(as_text=True)
    assert f'name="rows.{group.id}" value="2"' in page and f'value="remove:{group.id}:1"' in page
    page = post_new(web, url, {f"rows.{group.id}": "2"}, f"remove:{group.id}:0", hidden).get_data(as_text=True)
    assert f'name="rows.{group.id}" value="1"' in page


def test_the_signature_and_sdv_marks_show_and_an_edit_shows_the_signature_invalidated(trial):
    number = trial.enrol()
    web = browser_of(trial, "investigator_ES01")
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    signed = trial.client.post(f"/api/v1/entries/{entry_id}/signatures", headers=trial.headers["investigator_ES01"],
                               json={"username": "investigator-es01", "password": PASSWORD, "meaning": "approval"})
    assert signed.status_code == 201, signed.get_json()
    verified = trial.client.post(f"/api/v1/entries/{entry_id}/sdv", json={"items": ["TMAX"]},
                                 headers=trial.headers["monitor_ES01"])
    assert verified.status_code == 200, verified.get_json()
    page = web.text(f"/entries/{entry_id}")
    manifestation = page[page.index('id="sig-title"'):page.index("</section>")]
    assert "Investigator-Es01" in manifestation and "approval" in manifestation and ">Valid signature<" in manifestation
    assert re.search(r'<time datetime="2026-11-20T09:00:00\+00:00">2026-11-20 09:00 UTC</time>', manifestation)
    tmax = page[page.index('id="f-TMAX"'):]
    assert "Source verified" in tmax[:3000]
    response = web.post(f"/entries/{entry_id}", {**crs_fields("37.4"), "etag": etag_in(page), "action": "complete",
                                                 "reason": "transcription error"})
    page = web.text(response.headers["Location"])
    manifestation = page[page.index('id="sig-title"'):page.index("</section>")]
    assert "Invalidated by a later change" in manifestation and ">Valid<" not in manifestation
    assert "Source verified" not in page[page.index('id="f-TMAX"'):][:3000]        # the change cleared the item's mark


def test_arabic_labels_with_numbers_left_to_right(trial):
    number = trial.enrol()
    web = browser_of(trial, "investigator_ES01", "ar")
    page = web.text(enter_url(number, "crs_daily"))
    assert '<html lang="ar" dir="rtl">' in page and "أعلى درجة حرارة" in page          # TMAX's Arabic label
    assert re.search(r'<input id="f-TMAX" name="v.TMAX" type="text" inputmode="decimal" dir="ltr"', page)
    assert re.search(r'<input id="f-CRSDAT" name="v.CRSDAT" type="date" dir="ltr"', page)
    assert "احفظ كمكتمل" in page                                                        # the page's own words
    refused = post_new(web, enter_url(number, "crs_daily"), crs_fields(**{
        "v.SBPMIN": "abc", "v.HYPOT": "FLUIDS", "v.HYPOTOTH": "N", "v.NPRESS": "1"}), "complete").get_data(as_text=True)
    assert '<p class="error" id="e-SBPMIN">يجب أن يكون عدداً صحيحاً' in refused          # the engine's words
    assert '<p class="error" id="e-NPRESS">عدد رافعات ضغط دون انخفاض ضغط' in refused      # the form check's own


def test_saved_rows_are_shown_to_their_writer_and_read_only_to_a_monitor(trial):
    number = trial.enrol()
    pe = trial.saved(number, "pe", PE, event="SCR")
    mh = trial.saved(number, "mh", MH, event="SCR")
    coordinator, monitor = browser_of(trial, "coordinator_ES01", "ar"), browser_of(trial, "monitor_ES01")
    page = coordinator.text(f"/entries/{pe['id']}")
    assert 'name="rows.PEEXAM" value="2"' in page and 'value="remove:PEEXAM:1"' in page
    assert re.search(r'name="v.PEEXAM.1.PEDESC"[^>]*>Spleen palpable', page)     # the row's show_if item, with its text
    page = coordinator.text(f"/entries/{mh['id']}")
    assert 'value="2021-03"' in page and 'placeholder="YYYY, YYYY-MM, YYYY-MM-DD"' in page   # a partial date
    page = monitor.text(f"/entries/{pe['id']}")
    assert "Spleen palpable 2 cm below the costal margin" in page and 'name="v.PEEXAM' not in page
    assert 'id="l-PEEXAM-0-PEDESC"' not in page and 'id="l-PEEXAM-1-PEDESC"' in page   # a normal finding has none
    assert 'href="/entries/' + pe["id"] + '/items/PEEXAM/history"' in page


def test_a_locked_entry_is_shown_locked_and_read_only_and_a_save_is_refused(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    etag = etag_in(web.text(f"/entries/{entry_id}"))
    locked = trial.client.post(f"/api/v1/entries/{entry_id}/lock", json={"reason": "review done"},
                               headers=trial.headers["data_manager"])
    assert locked.status_code == 200, locked.get_json()
    page = web.text(f"/entries/{entry_id}")
    assert ">Entry locked<" in page and "Save as complete" not in page and 'name="v.TMAX"' not in page
    response = web.post(f"/entries/{entry_id}", {**crs_fields("37.4"), "etag": etag, "action": "complete",
                                                 "reason": "late correction"})
    assert response.status_code == 409 and "This entry is locked" in response.get_data(as_text=True)
    assert trial.entry(entry_id)["data"]["TMAX"] == 37.2


def test_check_without_javascript_evaluates_a_saved_entry_and_enter_in_a_field_saves_nothing(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    url = enter_url(number, "pe", "SCR")
    page = web.text(url)
    # the form's first submit button (what Enter in a field presses) is "Check", before any row's button
    assert re.search(r'<form method="post"[^>]*class="case-form"[^>]*>\s*<input type="hidden" name="csrf_token"[^>]*>'
                     r'\s*(?:\{#.*?#\}\s*)?<button type="submit" name="action" value="check"', page)
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    etag = etag_in(web.text(f"/entries/{entry_id}"))
    response = web.post(f"/entries/{entry_id}", {**crs_fields("38.5"), "etag": etag, "action": "check"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and derived_grade(page) == "1" and 'name="v.FEVEROTH"' in page
    assert trial.entry(entry_id)["data"]["TMAX"] == 37.2 and trial.entry(entry_id)["version"] == 1


def test_an_entrys_queries_and_marks_are_read_in_a_fixed_number_of_statements(trial):
    number = trial.enrol()
    web = browser_of(trial, "coordinator_ES01")
    entry_id = entry_id_of(post_new(web, enter_url(number, "crs_daily"), crs_fields("37.2"), "complete"))
    app = trial.client.application

    def statements() -> int:
        seen = []
        with app.app_context():
            engine = db.engine
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        sa.event.listen(engine, "before_cursor_execute", listener)
        try:
            web.text(f"/entries/{entry_id}")
        finally:
            sa.event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    before = statements()
    assert before > 5                      # the page reads the entry, its context, queries, marks, signatures
    for item in ("TMAX", "SBPMIN", "HYPOT", "O2DEV"):
        opened = trial.client.post("/api/v1/queries", headers=trial.headers["monitor_ES01"],
                                   json={"entry_id": entry_id, "item": item, "message": f"Please check {item}."})
        assert opened.status_code == 201, opened.get_json()
    verified = trial.client.post(f"/api/v1/entries/{entry_id}/sdv", json={"items": ["TMAX", "SBPMIN", "HYPOT"]},
                                 headers=trial.headers["monitor_ES01"])
    assert verified.status_code == 200, verified.get_json()
    page = web.text(f"/entries/{entry_id}")
    assert page.count("1 open query") == 4 and page.count("Source verified") == 3
    assert statements() == before           # four queries and three marks more: not one statement more
