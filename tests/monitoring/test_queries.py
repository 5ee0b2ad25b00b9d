"""Queries (discrepancy management) through the HTTP API: raising, answering with the correcting change
linked, closing, re-opening and cancelling, each with its thread message and audit record; the automatic
queries of warnings; the listing with its filters; and every abuse, refused with nothing changed."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy as sa

from conftest import bearer, count_rows, login, problem
from monitoring.conftest import MONITORING_ACCOUNTS, username_of
from edc.models.audit import AuditRecord

TODAY = "2026-11-20"
VS = {"VSDAT": TODAY, "TEMP": 36.8, "HR": 96, "SYSBP": 105, "DIABP": 65, "RESP": 20, "OXYSAT": 98, "WEIGHT": 32.0,
      "HEIGHT": 140.0}
PE = {"PEDAT": TODAY, "PEEXAM": [{"PETESTCD": "GENERAL", "PEORRES": "NORMAL"},
                                 {"PETESTCD": "ABDOMEN", "PEORRES": "ABNORMAL", "PEDESC": "Spleen palpable",
                                  "PECLSIG": "N"}]}
IC = {"RFICDAT": "2026-11-02", "ICVERS": "V1_0", "LTFUCONS": "Y", "SAMPCONS": "Y"}


# ------------------------------------------------------------------------------------------------ helpers

def post(m, path, body, account):
    return m.client.post(f"/api/v1/queries{path}", json=body, headers=m.headers[account])


def raised(m, entry_id, item, account="monitor_ES01", **extra):
    response = post(m, "", {"entry_id": entry_id, "item": item, "message": f"Please check {item}.", **extra}, account)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def act(m, query_id, action, account, body=None, status=200):
    response = post(m, f"/{query_id}/{action}", body if body is not None else {"message": f"{action} it"}, account)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def read(m, query_id, account="monitor_ES01"):
    response = m.client.get(f"/api/v1/queries/{query_id}", headers=m.headers[account])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def vs_entry(m, number, **changes):
    return m.saved(number, "vs", {**VS, **changes}, event="SCR")


def audit_actions(session, query_id):
    return list(session.scalars(sa.select(AuditRecord.action).where(AuditRecord.entity_id == str(query_id))
                                .order_by(AuditRecord.chain, AuditRecord.seq)))


def latest_entry_change(m, entry_id):
    response = m.client.get(f"/api/v1/entries/{entry_id}/audit", headers=m.headers["investigator_ES01"])
    assert response.status_code == 200
    return response.get_json()[-1]["id"]


def open_queries_of_cell(m, number, form="vs", event="SCR"):
    casebook = m.client.get(f"/api/v1/subjects/{number}/casebook", headers=m.headers["investigator_ES01"]).get_json()
    [cell] = [f for e in casebook["events"] if e["event"] == event for f in e["forms"] if f["form"] == form]
    return cell["open_queries"]


def snapshot(session, query_id=None):
    """What an abuse must leave untouched: row counts, and the query's state and version."""
    session.expire_all()
    counts = tuple(count_rows(session, t) for t in ("queries", "query_messages", "audit_records", "outbox", "entries"))
    row = None
    if query_id is not None:
        row = session.execute(sa.text("SELECT state, version FROM queries WHERE id = :id"),
                              {"id": uuid.UUID(query_id).hex if session.get_bind().dialect.name == "sqlite"
                               else query_id}).one_or_none()
        assert row is not None
        row = tuple(row)
    return counts, row


def relogin(m):
    for name in MONITORING_ACCOUNTS:
        m.headers[name] = bearer(login(m.client, username_of(name)))


# ------------------------------------------------------------------------------------------------ lifecycle

def test_full_lifecycle_keeps_the_thread_the_audit_trail_and_the_status_cell(monitoring, session):
    m = monitoring
    number = m.enrol()
    entry = vs_entry(m, number)
    query = raised(m, entry["id"], "HR")
    assert (query["state"], query["assignee_role"], query["origin"], query["subject"], query["site"]) == (
        "open", "site", "manual", number, "ES01")
    assert open_queries_of_cell(m, number) == 1

    note = post(m, f"/{query['id']}/messages", {"message": "Source says 69."}, "coordinator_ES01")
    assert note.status_code == 201 and note.get_json()["author_role"] == "coordinator"

    assert m.update(entry["id"], {**VS, "HR": 69}).status_code == 200
    change = latest_entry_change(m, entry["id"])
    answered = act(m, query["id"], "answer", "investigator_ES01", {"message": "Transcription error, corrected."})
    assert (answered["state"], answered["assignee_role"], answered["answered_by_change"]) == ("answered", "monitor", change)
    first_answered = answered["first_answered_at"]
    assert first_answered and open_queries_of_cell(m, number) == 0

    reopened = act(m, query["id"], "reopen", "monitor_ES01", {"message": "The source shows 96; please recheck."})
    assert (reopened["state"], reopened["assignee_role"], reopened["answered_at"]) == ("open", "site", None)
    assert reopened["first_answered_at"] == first_answered and open_queries_of_cell(m, number) == 1

    act(m, query["id"], "answer", "coordinator_ES01", {"message": "Rechecked: 69 is right."})
    closed = act(m, query["id"], "close", "monitor_ES01", {})
    assert (closed["state"], closed["closed_by"], closed["first_answered_at"]) == ("closed", "monitor-es01", first_answered)
    assert closed["closed_at"]

    thread = read(m, query["id"], "investigator_ES01")["messages"]
    assert [(t["action"], t["author"], t["author_role"]) for t in thread] == [
        ("open", "monitor-es01", "monitor"), ("comment", "coordinator-es01", "coordinator"),
        ("answer", "investigator-es01", "investigator"), ("reopen", "monitor-es01", "monitor"),
        ("answer", "coordinator-es01", "coordinator"), ("close", "monitor-es01", "monitor")]
    assert thread[2]["change_id"] == change and all(t["author_name"] and t["created_at"] for t in thread)
    assert audit_actions(session, query["id"]) == ["query_opened", "query_comment", "query_answered", "query_reopened",
                                                    "query_answered", "query_closed"]
    # The short form embedded in the entry and the casebook still works.
    assert [q["state"] for q in m.entry(entry["id"])["queries"]] == ["closed"]
    assert [q["id"] for q in m.queries(number)] == [query["id"]]


def test_a_data_manager_query_is_reviewed_by_the_data_manager_and_can_be_cancelled(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], None, account="data_manager")
    assert query["item"] is None
    answered = act(m, query["id"], "answer", "investigator_ES01", {"message": "Done."})
    assert answered["assignee_role"] == "data_manager" and answered["answered_by_change"] is None
    cancelled = act(m, query["id"], "cancel", "data_manager", {"message": "Raised in error."})
    assert cancelled["state"] == "cancelled" and cancelled["cancelled_at"]
    assert audit_actions(session, query["id"]) == ["query_opened", "query_answered", "query_cancelled"]


def test_an_automatic_query_is_answered_by_the_correction_and_closed_by_the_monitor(monitoring, session):
    m = monitoring
    number = m.enrol()
    entry = vs_entry(m, number, TEMP=41.5)
    [auto] = entry["queries_opened"]
    assert auto["item"] == "TEMP" and auto["origin"] == "auto"
    [opening] = read(m, auto["id"])["messages"]
    assert (opening["action"], opening["author_role"]) == ("open", "system")

    fixed = m.update(entry["id"], VS)
    assert fixed.status_code == 200
    change = latest_entry_change(m, entry["id"])
    query = read(m, auto["id"])
    assert (query["state"], query["answered_by_change"], query["assignee_role"]) == ("answered", change, "monitor")
    assert query["first_answered_at"] and query["messages"][-1]["change_id"] == change
    assert open_queries_of_cell(m, number) == 0

    act(m, auto["id"], "close", "investigator_ES01", {}, status=403)
    closed = act(m, auto["id"], "close", "monitor_ES01", {"message": "Correction verified."})
    assert closed["state"] == "closed"
    assert audit_actions(session, auto["id"]) == ["query_opened", "query_answered", "query_closed"]


def test_a_confirmed_warning_does_not_reopen_on_every_save_but_a_new_failure_does(monitoring):
    m = monitoring
    number = m.enrol()
    entry = vs_entry(m, number, TEMP=41.5)
    [auto] = entry["queries_opened"]
    act(m, auto["id"], "answer", "investigator_ES01", {"message": "Confirmed: febrile at screening."})
    act(m, auto["id"], "close", "monitor_ES01", {})
    # An unrelated change: the confirmed warning still fires, but no duplicate query opens.
    again = m.update(entry["id"], {**VS, "TEMP": 41.5, "HR": 97}).get_json()
    assert again["queries_opened"] == [] and [q["state"] for q in again["queries"]] == ["closed"]
    # The value passes, then fails again: that is a new discrepancy.
    assert m.update(entry["id"], VS).get_json()["queries_opened"] == []
    [new] = m.update(entry["id"], {**VS, "TEMP": 42.0}).get_json()["queries_opened"]
    assert new["id"] != auto["id"] and new["state"] == "open"


def test_an_answer_links_the_named_change_only_if_it_changed_this_entry_after_the_query_opened(monitoring, session):
    m = monitoring
    number = m.enrol()
    entry = vs_entry(m, number)
    other = m.saved(number, "pe", PE, event="SCR")
    before_query = latest_entry_change(m, entry["id"])
    query = raised(m, entry["id"], "SYSBP")
    exam = [PE["PEEXAM"][0], {**PE["PEEXAM"][1], "PEDESC": "Spleen palpable 3 cm"}]
    assert m.update(other["id"], {**PE, "PEEXAM": exam}).status_code == 200      # another entry, after the query
    assert m.update(entry["id"], {**VS, "SYSBP": 110}).status_code == 200
    change = latest_entry_change(m, entry["id"])
    other_change = latest_entry_change(m, other["id"])
    for wrong in (before_query, other_change, str(uuid.uuid4())):
        before = snapshot(session, query["id"])
        body = problem(post(m, f"/{query['id']}/answer", {"message": "Fixed.", "change_id": wrong}, "investigator_ES01"), 422)
        assert body["errors"][0]["pointer"] == "/change_id"
        assert snapshot(session, query["id"]) == before
    answered = act(m, query["id"], "answer", "investigator_ES01", {"message": "Fixed.", "change_id": change})
    assert answered["answered_by_change"] == change


def test_the_default_link_is_the_latest_change_of_the_queried_item(monitoring):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "RESP")
    assert m.update(entry["id"], {**VS, "RESP": 22}).status_code == 200
    resp_change = latest_entry_change(m, entry["id"])
    assert m.update(entry["id"], {**VS, "RESP": 22, "HR": 90}).status_code == 200   # not the queried item
    answered = act(m, query["id"], "answer", "investigator_ES01", {"message": "Corrected."})
    assert answered["answered_by_change"] == resp_change


def test_a_row_item_of_a_group_can_be_queried_when_shown(monitoring):
    m = monitoring
    pe = m.saved(m.enrol(), "pe", PE, event="SCR")
    assert raised(m, pe["id"], "PEEXAM/1/PEDESC")["item"] == "PEEXAM/1/PEDESC"
    assert raised(m, pe["id"], "PEEXAM")["item"] == "PEEXAM"


# ------------------------------------------------------------------------------------------------ listing

def test_the_listing_filters_and_pages_within_the_callers_sites(monitoring, fake_clock):
    m = monitoring
    es = m.enrol()
    it = m.enrol(site="IT01")
    es_vs, es_pe = vs_entry(m, es), m.saved(es, "pe", PE, event="SCR")
    it_vs = m.saved(it, "vs", VS, event="SCR", role="investigator_IT01")
    old = raised(m, es_vs["id"], "HR")
    fake_clock.advance(days=10)
    relogin(m)
    critical = raised(m, es_pe["id"], None, critical=True)
    fake_clock.advance(minutes=1)
    answered = raised(m, es_vs["id"], "TEMP")
    act(m, answered["id"], "answer", "investigator_ES01", {"message": "Confirmed."})
    fake_clock.advance(minutes=1)
    italian = raised(m, it_vs["id"], "HR", account="monitor_IT01")

    def ids(account="data_manager", **params):
        response = m.client.get("/api/v1/queries", query_string=params, headers=m.headers[account])
        assert response.status_code == 200, response.get_json()
        return [q["id"] for q in response.get_json()["items"]]

    assert ids() == [old["id"], critical["id"], answered["id"], italian["id"]]
    assert ids("monitor_ES01") == [old["id"], critical["id"], answered["id"]]
    assert ids("investigator_IT01") == [italian["id"]]
    assert ids(site="IT01") == [italian["id"]]
    assert ids(subject=es, form="pe") == [critical["id"]]
    assert ids(state="answered") == [answered["id"]]
    assert ids(assignee_role="monitor") == [answered["id"]]
    assert ids(critical="true") == [critical["id"]]
    assert ids(min_age_days=5) == [old["id"]]
    assert ids(max_age_days=5) == [critical["id"], answered["id"], italian["id"]]
    page = m.client.get("/api/v1/queries", query_string={"page": 2, "page_size": 3}, headers=m.headers["data_manager"]).get_json()
    assert (page["total"], page["page"], [q["id"] for q in page["items"]]) == (4, 2, [italian["id"]])
    assert page["items"][0]["age_days"] == 0 and page["items"][0]["subject"] == it
    # Another site's site or subject is not found, and bad filters are refused.
    problem(m.client.get("/api/v1/queries", query_string={"site": "IT01"}, headers=m.headers["monitor_ES01"]), 404)
    problem(m.client.get("/api/v1/queries", query_string={"subject": it}, headers=m.headers["monitor_ES01"]), 404)
    problem(m.client.get("/api/v1/queries", query_string={"state": "bogus"}, headers=m.headers["data_manager"]), 422)
    problem(m.client.get("/api/v1/queries", query_string={"colour": "red"}, headers=m.headers["data_manager"]), 422)
    problem(m.client.get("/api/v1/queries", headers=m.headers["statistician"]), 403)


# ------------------------------------------------------------------------------------------------ abuse

def test_an_investigator_cannot_close_cancel_reopen_or_raise_a_query(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    act(m, query["id"], "answer", "investigator_ES01", {"message": "Checked."})
    before = snapshot(session, query["id"])
    for action in ("close", "reopen", "cancel"):
        problem(post(m, f"/{query['id']}/{action}", {"message": "x"}, "investigator_ES01"), 403)
    problem(post(m, "", {"entry_id": entry["id"], "item": "HR", "message": "x"}, "investigator_ES01"), 403)
    problem(post(m, f"/{query['id']}/answer", {"message": "x"}, "monitor_ES01"), 403)   # monitors do not answer
    assert snapshot(session, query["id"]) == before


def test_a_monitor_cannot_edit_data(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    before = snapshot(session)
    problem(m.update(entry["id"], {**VS, "HR": 70}, role="monitor_ES01"), 403)
    assert snapshot(session) == before and m.entry(entry["id"])["data"]["HR"] == 96


def test_illegal_transitions_are_409_and_change_nothing(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    before = snapshot(session, query["id"])
    problem(post(m, f"/{query['id']}/close", {}, "monitor_ES01"), 409)        # open -> closed skips the answer
    problem(post(m, f"/{query['id']}/reopen", {"message": "x"}, "monitor_ES01"), 409)
    assert snapshot(session, query["id"]) == before
    act(m, query["id"], "answer", "investigator_ES01", {"message": "Checked."})
    act(m, query["id"], "close", "monitor_ES01", {})
    before = snapshot(session, query["id"])
    body = problem(post(m, f"/{query['id']}/answer", {"message": "again"}, "investigator_ES01"), 409)   # closed -> answered
    assert body["state"] == "closed"
    problem(post(m, f"/{query['id']}/cancel", {"message": "x"}, "monitor_ES01"), 409)                    # cancel a closed one
    assert snapshot(session, query["id"]) == before


def test_a_cancelled_query_takes_no_comment_and_no_transition(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    act(m, query["id"], "cancel", "monitor_ES01", {"message": "Raised on the wrong subject."})
    before = snapshot(session, query["id"])
    problem(post(m, f"/{query['id']}/messages", {"message": "But..."}, "coordinator_ES01"), 409)
    problem(post(m, f"/{query['id']}/messages", {"message": "Note"}, "monitor_ES01"), 409)
    for action, account in (("answer", "investigator_ES01"), ("close", "monitor_ES01"), ("reopen", "monitor_ES01"),
                            ("cancel", "monitor_ES01")):
        problem(post(m, f"/{query['id']}/{action}", {"message": "x"}, account), 409)
    assert snapshot(session, query["id"]) == before


def test_queries_on_hidden_or_unknown_items_are_422(monitoring, session):
    m = monitoring
    number = m.enrol()                                    # 10 years old: the assent items are hidden
    ic = m.saved(number, "ic", IC, event="SCR")
    pe = m.saved(number, "pe", PE, event="SCR")
    before = snapshot(session)
    for entry_id, item in ((ic["id"], "ASSENTOBT"), (pe["id"], "PEEXAM/0/PEDESC")):
        body = problem(post(m, "", {"entry_id": entry_id, "item": item, "message": "x"}, "monitor_ES01"), 422)
        assert body["errors"][0]["pointer"] == "/item" and "hidden" in body["errors"][0]["detail"]
    for entry_id, item in ((ic["id"], "NOSUCH"), (pe["id"], "PEEXAM/7/PEDESC"), (pe["id"], "PEEXAM/0/HR"),
                           (pe["id"], "PETESTCD")):
        body = problem(post(m, "", {"entry_id": entry_id, "item": item, "message": "x"}, "monitor_ES01"), 422)
        assert body["errors"][0]["pointer"] == "/item"
    assert snapshot(session) == before


def test_another_sites_queries_and_data_are_not_found(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    before = snapshot(session, query["id"])
    problem(post(m, "", {"entry_id": entry["id"], "item": "HR", "message": "x"}, "monitor_IT01"), 404)
    problem(m.client.get(f"/api/v1/queries/{query['id']}", headers=m.headers["monitor_IT01"]), 404)
    problem(m.client.get(f"/api/v1/queries/{query['id']}", headers=m.headers["investigator_IT01"]), 404)
    problem(post(m, f"/{query['id']}/answer", {"message": "x"}, "investigator_IT01"), 404)
    problem(post(m, f"/{query['id']}/messages", {"message": "x"}, "coordinator_IT01"), 404)
    for action in ("close", "reopen", "cancel"):
        problem(post(m, f"/{query['id']}/{action}", {"message": "x"}, "monitor_IT01"), 404)
    problem(m.client.get(f"/api/v1/queries/{uuid.uuid4()}", headers=m.headers["data_manager"]), 404)
    assert snapshot(session, query["id"]) == before


def test_unknown_or_invalid_fields_are_422(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    before = snapshot(session, query["id"])
    for body in ({"entry_id": entry["id"], "item": "HR", "message": "x", "state": "closed"},
                 {"entry_id": entry["id"], "item": "HR"},
                 {"entry_id": entry["id"], "item": "HR", "message": ""},
                 {"entry_id": "not-a-uuid", "item": "HR", "message": "x"},
                 {"entry_id": entry["id"], "item": "../HR", "message": "x"},
                 {"entry_id": entry["id"], "item": f"{'G' * 40}/0/{'I' * 40}", "message": "x"}):
        problem(post(m, "", body, "monitor_ES01"), 422)
    problem(post(m, f"/{query['id']}/answer", {"message": "x", "assignee_role": "monitor"}, "investigator_ES01"), 422)
    problem(post(m, f"/{query['id']}/answer", {}, "investigator_ES01"), 422)
    problem(post(m, f"/{query['id']}/messages", {"message": "x", "author": "someone"}, "coordinator_ES01"), 422)
    problem(post(m, f"/{query['id']}/cancel", {}, "monitor_ES01"), 422)           # cancelling needs a reason
    assert snapshot(session, query["id"]) == before


def test_a_stale_if_match_is_refused(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    etag = m.client.get(f"/api/v1/queries/{query['id']}", headers=m.headers["monitor_ES01"]).headers["ETag"]
    act(m, query["id"], "answer", "investigator_ES01", {"message": "Checked."})
    before = snapshot(session, query["id"])
    response = m.client.post(f"/api/v1/queries/{query['id']}/close", json={},
                             headers={**m.headers["monitor_ES01"], "If-Match": etag})
    problem(response, 412)
    assert snapshot(session, query["id"]) == before


def test_concurrent_transitions_of_one_query_settle_it_once(monitoring, session):
    m = monitoring
    entry = vs_entry(m, m.enrol())
    query = raised(m, entry["id"], "HR")
    act(m, query["id"], "answer", "investigator_ES01", {"message": "Checked."})
    app, statuses = m.client.application, []

    def worker(action, account):
        response = app.test_client().post(f"/api/v1/queries/{query['id']}/{action}", json={"message": "now"},
                                          headers=m.headers[account])
        statuses.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(action, account)) for action in ("close", "cancel")
               for account in ("monitor_ES01", "data_manager") for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 7
    actions = [t["action"] for t in read(m, query["id"])["messages"]]
    assert actions[:2] == ["open", "answer"] and len(actions) == 3 and actions[2] in ("close", "cancel")


# ------------------------------------------------------------------------------------------------ notifications

def outbox_rows(session):
    session.expire_all()
    return [dict(row._mapping) for row in session.execute(sa.text(
        "SELECT kind, dedupe_key, subject_number, due_at, status FROM outbox ORDER BY created_at"))]


def test_a_critical_query_produces_exactly_one_outbox_record(monitoring, session):
    m = monitoring
    number = m.enrol()
    entry = vs_entry(m, number)
    raised(m, entry["id"], "HR")                              # not critical: no notification
    assert outbox_rows(session) == []
    query = raised(m, entry["id"], "TEMP", critical=True)
    act(m, query["id"], "answer", "investigator_ES01", {"message": "Checked."})
    act(m, query["id"], "reopen", "monitor_ES01", {"message": "Not yet."})   # re-opening does not notify again
    assert outbox_rows(session) == [{"kind": "critical_query", "dedupe_key": f"critical_query:{query['id']}",
                                     "subject_number": number, "due_at": None, "status": "pending"}]


def test_a_critical_automatic_query_produces_one_outbox_record(monitoring, session, fake_clock):
    m = monitoring
    number = m.enrol()                                        # registered today
    fake_clock.advance(days=3)
    relogin(m)
    ic = m.saved(number, "ic", {**IC, "RFICDAT": "2026-11-22"}, event="SCR")   # consent after registration
    [critical] = [q for q in ic["queries_opened"] if q["critical"]]
    m.update(ic["id"], {**IC, "RFICDAT": "2026-11-22", "SAMPCONS": "N"})     # still failing: no second record
    rows = outbox_rows(session)
    assert [(r["kind"], r["dedupe_key"], r["subject_number"]) for r in rows] == [
        ("critical_query", f"critical_query:{critical['id']}", number)]
