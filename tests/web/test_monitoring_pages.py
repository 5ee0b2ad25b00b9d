"""The monitoring pages through the test client: the query inbox and threads, SDV, signatures and an item's
history, each with the roles and site scope of the API (another site's entry or query is a 404, a role without
the permission a 403 page), written through the same services (what they store is read back over the API)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from conftest import PASSWORD
from monitoring.conftest import monitoring, username_of  # noqa: F401 (a fixture)
from trial.test_baseline_forms import MH, VS
from trial.test_treatment_forms import APH, COI
from web.conftest import WebClient


@pytest.fixture
def browsers(monitoring):  # noqa: F811 (the fixture imported above)
    """A signed-in browser per account, made on first use."""
    made: dict[str, WebClient] = {}

    def browser(account: str) -> WebClient:
        if account not in made:
            made[account] = WebClient(monitoring.client.application.test_client())
            made[account].login(username_of(account))
        return made[account]

    return browser


def vs_entry(monitoring, site: str = "ES01", **changes) -> str:  # noqa: F811
    number = monitoring.enrol(site=site)
    return monitoring.saved(number, "vs", {**VS, **changes}, event="SCR", role=f"investigator_{site}")["id"]


def open_query(monitoring, entry_id: str, item: str | None = "HR", account: str = "monitor_ES01", message: str = "Check HR.") -> str:  # noqa: F811
    response = monitoring.client.post("/api/v1/queries", json={"entry_id": entry_id, "item": item, "message": message},
                                      headers=monitoring.headers[account])
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def api_query(monitoring, query_id: str) -> dict:  # noqa: F811
    return monitoring.client.get(f"/api/v1/queries/{query_id}", headers=monitoring.headers["data_manager"]).get_json()


def body(response) -> str:
    return response.get_data(as_text=True)


def audit_actions(session) -> list[str]:
    return list(session.scalars(sa.text("SELECT action FROM audit_records ORDER BY occurred_at, seq")))


def test_the_inbox_shows_each_role_the_queries_of_its_sites(monitoring, browsers):  # noqa: F811
    es01, it01 = vs_entry(monitoring), vs_entry(monitoring, "IT01")
    open_es = open_query(monitoring, es01, message="Spanish open query")
    answered = open_query(monitoring, es01, "TEMP", message="Spanish answered query")
    assert monitoring.client.post(f"/api/v1/queries/{answered}/answer", json={"message": "Checked."},
                                  headers=monitoring.headers["coordinator_ES01"]).status_code == 200
    open_query(monitoring, it01, account="monitor_IT01", message="Italian open query")

    coordinator = browsers("coordinator_ES01").text("/queries")  # site staff start on the open queries, theirs to answer
    assert "Spanish open query" in coordinator and f"/queries/{open_es}" in coordinator
    assert "Spanish answered query" not in coordinator and "Italian open query" not in coordinator
    assert "Heart rate" in coordinator and "open queries wait for your answer" in coordinator
    everything = browsers("coordinator_ES01").text("/queries?state=all")
    assert "Spanish answered query" in everything and "Italian open query" not in everything

    monitor_it = browsers("monitor_IT01").text("/queries")
    assert "Italian open query" in monitor_it and "Spanish open query" not in monitor_it
    manager = browsers("data_manager")
    assert all(text in manager.text("/queries") for text in ("Spanish open query", "Spanish answered query", "Italian open query"))
    only_answered = manager.text("/queries?state=answered")
    assert "Spanish answered query" in only_answered and "open query" not in only_answered
    italian = manager.text("/queries?site=IT01")
    assert "Italian open query" in italian and "Spanish open query" not in italian
    spanish = monitoring.entry(es01)["subject"]
    by_subject = manager.text(f"/queries?state=all&subject={spanish.lower()}")
    assert "Spanish answered query" in by_subject and "Italian open query" not in by_subject
    assert browsers("monitor_IT01").get(f"/queries?subject={spanish}").status_code == 404
    paged = manager.text("/queries?state=all&page_size=2&page=2")
    assert "page 2 of 2" in paged and paged.count('href="/queries/') == 1 and 'rel="prev"' in paged

    assert browsers("monitor_IT01").get("/queries?site=ES01").status_code == 404  # not among their sites, as the API
    assert manager.get("/queries?state=bogus").status_code == 422
    assert manager.get("/queries?page=0").status_code == 422
    manager.client.set_cookie("edc_lang", "ar")
    arabic = manager.text("/queries")
    assert 'dir="rtl"' in arabic and "حالة الاستفسار" in arabic  # the page's words in the user's language
    refused = browsers("statistician").get("/queries")
    assert refused.status_code == 403 and refused.mimetype == "text/html"


def test_a_query_is_opened_from_the_form_answered_closed_reopened_and_cancelled_by_the_roles_that_may(
        monitoring, browsers, session):  # noqa: F811
    entry_id = vs_entry(monitoring)
    monitor, coordinator, manager = browsers("monitor_ES01"), browsers("coordinator_ES01"), browsers("data_manager")

    form = monitor.text(f"/entries/{entry_id}")  # the case form offers it next to each item
    assert f'action="/entries/{entry_id}/queries"' in form and 'name="item" value="HR"' in form
    opened = monitor.post(f"/entries/{entry_id}/queries", {"item": "HR", "message": "HR 96 at rest?"})
    assert opened.status_code == 303 and opened.headers["Location"] == f"/entries/{entry_id}?notice=query_opened"
    assert "The query was opened." in monitor.text(opened.headers["Location"])
    [query] = monitoring.client.get(f"/api/v1/entries/{entry_id}", headers=monitoring.headers["monitor_ES01"]).get_json()["queries"]
    assert query["item"] == "HR" and query["state"] == "open" and query["message"] == "HR 96 at rest?"
    query_id = query["id"]
    assert coordinator.post(f"/entries/{entry_id}/queries", {"item": "HR", "message": "x"}).status_code == 403
    unknown = monitor.post(f"/entries/{entry_id}/queries", {"item": "NOPE", "message": "What?"})
    assert unknown.status_code == 422 and "No item NOPE" in body(unknown) and 'aria-invalid="true"' in body(unknown)
    assert monitor.post(f"/entries/{entry_id}/queries", {"item": "HR", "message": "  "}).status_code == 422
    assert browsers("monitor_IT01").post(f"/entries/{entry_id}/queries", {"item": "HR", "message": "x"}).status_code == 404

    thread = f"/queries/{query_id}"
    page = coordinator.text(thread)
    assert "HR 96 at rest?" in page and "Heart rate" in page and "96 beats/min" in page
    assert f'href="/entries/{entry_id}"' in page and f"/entries/{entry_id}/items/HR/history" in page
    assert f'action="{thread}/answer"' in page and f'action="{thread}/close"' not in page
    assert f'action="{thread}/close"' not in monitor.text(thread)  # an open query is answered before it is closed
    assert browsers("monitor_IT01").get(thread).status_code == 404

    assert monitor.post(f"{thread}/answer", {"message": "Done."}).status_code == 403
    for action in ("close", "reopen", "cancel"):  # queries:manage: monitors and data managers only
        assert coordinator.post(f"{thread}/{action}", {"message": "x"}).status_code == 403
    assert browsers("auditor").post(f"{thread}/messages", {"message": "x"}).status_code == 403
    assert monitoring.update(entry_id, {**VS, "HR": 88}, reason="transcription error", role="coordinator_ES01").status_code == 200
    empty = coordinator.post(f"{thread}/answer", {"message": ""})
    assert empty.status_code == 422 and 'id="m-answer"' in body(empty) and 'aria-invalid="true"' in body(empty)
    answered = coordinator.post(f"{thread}/answer", {"message": "Corrected to 88."})
    assert answered.status_code == 303 and answered.headers["Location"] == f"{thread}?notice=query_answered"
    after = api_query(monitoring, query_id)
    assert after["state"] == "answered" and after["answered_by_change"]
    assert "The query was answered." in coordinator.text(answered.headers["Location"])

    assert coordinator.post(f"{thread}/messages", {"message": "Source is the nurse chart."}).status_code == 303
    monitor_view = monitor.text(thread)
    assert "Source is the nurse chart." in monitor_view and "88 beats/min" in monitor_view
    assert f'action="{thread}/close"' in monitor_view and f'action="{thread}/answer"' not in monitor_view
    assert monitor.post(f"{thread}/close", {}).headers["Location"] == f"{thread}?notice=query_closed"
    late = monitor.post(f"{thread}/cancel", {"message": "Too late"})  # the service's workflow refuses it, the page says why
    assert late.status_code == 409 and "cannot be cancelled" in body(late)
    assert monitor.post(f"{thread}/reopen", {"message": "Units?"}).headers["Location"] == f"{thread}?notice=query_reopened"
    assert manager.post(f"{thread}/cancel", {"message": "Raised in error."}).status_code == 303
    assert api_query(monitoring, query_id)["state"] == "cancelled"
    actions = audit_actions(session)
    for action in ("query_opened", "query_answered", "query_comment", "query_closed", "query_reopened", "query_cancelled"):
        assert action in actions
    forged = monitor.post(f"{thread}/reopen", {"message": "x", "csrf_token": "0" * 64})
    assert forged.status_code == 403


def test_a_query_on_an_item_of_a_repeating_groups_row(monitoring, browsers):  # noqa: F811
    entry_id = monitoring.saved(monitoring.enrol(), "mh", MH, event="SCR")["id"]
    monitor = browsers("monitor_ES01")
    assert 'value="MH/1/MHTERM"' in monitor.text(f"/entries/{entry_id}/queries")
    # The case form's field keys spell a row's item GROUP.<row>.ITEM: the same item.
    assert monitor.post(f"/entries/{entry_id}/queries", {"item": "MH.1.MHTERM", "message": "Which year?"}).status_code == 303
    assert monitor.post(f"/entries/{entry_id}/queries", {"item": "MH/7/MHTERM", "message": "?"}).status_code == 422
    [query] = monitoring.entry(entry_id)["queries"]
    assert query["item"] == "MH/1/MHTERM"
    thread = monitor.text(f"/queries/{query['id']}")
    assert "#2: " in thread and "Appendicectomy" in thread and f"/entries/{entry_id}/items/MH/history" in thread


def test_sdv_marks_items_and_the_whole_entry_and_shows_what_a_later_change_cleared(monitoring, browsers):  # noqa: F811
    entry_id = vs_entry(monitoring)
    monitor, coordinator = browsers("monitor_ES01"), browsers("coordinator_ES01")
    path = f"/entries/{entry_id}/sdv"
    page = monitor.text(path)
    assert "Heart rate" in page and 'name="items" value="HR"' in page and "entry not verified yet" in page

    marked = monitor.post(path, {"items": ["HR", "TEMP"]})
    assert marked.status_code == 303 and marked.headers["Location"] == f"{path}?notice=sdv_marked"
    page = monitor.text(marked.headers["Location"])
    assert page.count("item verified") == 2 and username_of("monitor_ES01") in page
    assert 'name="items" value="HR"' not in page
    assert monitor.post(path, {}).status_code == 422
    assert monitor.post(path, {"items": ["NOPE"]}).status_code == 422
    assert monitor.post(path, {"entry": "1"}).status_code == 303
    state = monitoring.client.get(f"/api/v1{path}", headers=monitoring.headers["monitor_ES01"]).get_json()
    assert state["verified"] and {m["item"] for m in state["marks"]} >= {"HR", "TEMP", None}

    assert monitoring.update(entry_id, {**VS, "HR": 90}, reason="re-measured").status_code == 200
    page = coordinator.text(path)  # site staff read the page, without the form
    assert "cleared by a later change" in page and "whole-entry verification cleared by a later change" in page
    assert 'name="items"' not in page and "Mark the ticked items verified" not in page
    assert coordinator.post(path, {"items": ["HR"]}).status_code == 403
    assert browsers("monitor_IT01").get(path).status_code == 404
    assert browsers("monitor_IT01").post(path, {"items": ["HR"]}).status_code == 404

    number = monitoring.enrol()
    draft = monitoring.saved(number, "vs", VS, event="SCR", complete=False)["id"]
    refused = monitor.post(f"/entries/{draft}/sdv", {"items": ["HR"]})
    assert refused.status_code == 409 and "draft entry cannot be verified" in body(refused)


def test_the_pi_signs_with_the_password_again_and_an_edit_invalidates_the_signature(monitoring, browsers, session):  # noqa: F811
    entry_id = vs_entry(monitoring)
    pi = browsers("investigator_ES01")
    path = f"/entries/{entry_id}/sign"
    form = pi.text(path)
    assert "Nothing is signed here yet." in form and 'name="password"' in form and "Approval of these data" in form

    wrong = pi.post(path, {"username": username_of("investigator_ES01"), "password": "not-my-password", "meaning": "approval"})
    assert wrong.status_code == 401 and "username and password, entered again" in body(wrong)
    assert "not-my-password" not in body(wrong)
    assert "login_failed" in audit_actions(session)  # the service's security record survives the refusal
    assert monitoring.client.get(f"/api/v1{path.replace('/sign', '/signatures')}",
                                 headers=monitoring.headers["monitor_ES01"]).get_json() == []
    assert pi.post(path, {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "bogus"}).status_code == 422

    signed = pi.post(path, {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "approval"})
    assert signed.status_code == 303 and signed.headers["Location"] == f"{path}?notice=signed"
    page = pi.text(signed.headers["Location"])
    assert "Your signature was recorded." in page and "signature valid" in page and "Approval of these data" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page)

    other_pi = browsers("subinvestigator_ES01")  # an investigator of the site who is not its PI
    assert other_pi.post(path, {"username": username_of("subinvestigator_ES01"), "password": PASSWORD,
                                "meaning": "review"}).status_code == 403
    monitor = browsers("monitor_ES01")
    assert "signature valid" in monitor.text(path) and 'name="password"' not in monitor.text(path)
    assert monitor.post(path, {"username": username_of("monitor_ES01"), "password": PASSWORD, "meaning": "review"}).status_code == 403
    assert browsers("investigator_IT01").get(path).status_code == 404

    number = monitoring.entry(entry_id)["subject"]
    assert f'href="/subjects/{number}"' in pi.text(path)
    casebook = f"/subjects/{number}/sign"
    signed = pi.post(casebook, {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "responsibility"})
    assert signed.status_code == 303, body(signed)[-1500:]
    assert signed.headers["Location"] == f"{casebook}?notice=signed"
    assert "Responsibility for these data" in pi.text(casebook) and "the whole casebook" in pi.text(casebook)

    assert monitoring.update(entry_id, {**VS, "HR": 91}, reason="late correction").status_code == 200
    page = pi.text(path)
    assert page.count("signature invalidated") == 2 and "signature valid<" not in page, page[page.find("<table"):page.find("</table>")]
    assert browsers("investigator_IT01").get(casebook).status_code == 404

    for _ in range(8):  # the login throttle holds the account after a few wrong passwords (config: 5 free)
        answer = pi.post(path, {"username": username_of("investigator_ES01"), "password": "guess", "meaning": "approval"})
        if answer.status_code != 401:
            break
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert "Too many failed password checks" in body(answer)


def test_an_items_history_shows_who_when_old_new_and_why_with_identifying_values_withheld(monitoring, browsers):  # noqa: F811
    entry_id = vs_entry(monitoring, "IT01")
    assert monitoring.update(entry_id, {**VS, "HR": 101}, reason="wrong patient chart", role="investigator_IT01").status_code == 200
    history = browsers("monitor_IT01").text(f"/entries/{entry_id}/items/HR/history")
    assert "Heart rate" in history and "96 beats/min" in history and "101 beats/min" in history
    assert "wrong patient chart" in history and username_of("investigator_IT01") in history and "investigator" in history
    assert re.search(r"\d\d:\d\d UTC", history) and "(UTC+0100)" in history  # Rome's wall clock in November
    assert browsers("monitor_ES01").get(f"/entries/{entry_id}/items/HR/history").status_code == 404
    assert browsers("monitor_IT01").get(f"/entries/{entry_id}/items/NOPE/history").status_code == 404
    assert browsers("statistician").get(f"/entries/{entry_id}/items/HR/history").status_code == 403

    number = monitoring.enrol()
    aph = monitoring.saved(number, "aph", APH, event="APH")["id"]
    assert COI in browsers("investigator_ES01").text(f"/entries/{aph}/items/COI/history")
    withheld = browsers("monitor_ES01").text(f"/entries/{aph}/items/COI/history")
    assert COI not in withheld and "withheld (identifying)" in withheld
