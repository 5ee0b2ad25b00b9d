"""Safety-reporting clocks through the HTTP API on the trial forms (trial.md §4.4, §8.2 AE, §8.3 X9).

The 24-hour SAE clock runs from the investigator's awareness (AEAWDTC) until the AE entry with its SAE
supplement is first saved complete; a SUSAR clock (7 days if fatal or life-threatening, else 15) runs from
the sponsor's first knowledge (SPAWDTC on the safety role's sae_review) until the review records the
submission (SUBMDTC). The clock is fixed at 2026-11-20 09:00 UTC (tests/trial/conftest.py); tests that
move it sign everyone in again, since access tokens live 15 minutes.
"""

from __future__ import annotations

import pytest

from conftest import bearer, login, problem

AWARE = "2026-11-20T08:30:00+01:00"          # 07:30 UTC, 1.5 h before the fixed clock
AWARE_UTC = "2026-11-20T07:30:00+00:00"
SAE_DUE = "2026-11-21T07:30:00+00:00"
SPONSOR_KNOWS = "2026-11-20T10:00:00+01:00"  # 09:00 UTC
SPONSOR_KNOWS_UTC = "2026-11-20T09:00:00+00:00"

CRITERIA = ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")
BASE = {"AECAT": "OTHER", "AETERM": "Febrile neutropenia", "AESTDAT": "2026-11-19", "AEONGO": "Y", "AETOXGR": "3",
        "AESI": "N", **{criterion: "N" for criterion in CRITERIA}, "AESHOSP": "Y", "AEREL": "RELATED",
        "AERELLD": "UNLIKELY", "AERELPROC": "UNRELATED", "AEACN": "NOT_APPLICABLE", "AEOUT": "RECOVERING", "AECONTRT": "Y"}
SAE_SUPPLEMENT = {"AEAWDTC": AWARE, "SAENARR": "Neutropenic fever on day 3; admitted for IV antibiotics.",
                  "SAERPTR": "INVESTIGATOR", "SAEFUNUM": 0}
FATAL = {"AESDTH": "Y", "AETOXGR": "5", "AEONGO": "N", "AEENDAT": "2026-11-20", "AEOUT": "FATAL", "SAEAUTOP": "N",
         "SAEDTHC": "Septic shock"}


def ae(**changes):
    """An AE entry's data: serious (hospitalisation) and related by default, with the SAE supplement when serious."""
    data = {**BASE, **changes}
    if any(data[criterion] == "Y" for criterion in CRITERIA):
        data = {**SAE_SUPPLEMENT, **data}
    return data


def review(ae_id, **changes):
    return {"AEREF": ae_id, "SPAWDTC": SPONSOR_KNOWS, "AEEXPECT": "N", **changes}


def clocks(trial, role="safety", **params):
    response = trial.client.get("/api/v1/safety/clocks", query_string=params, headers=trial.headers[role])
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def only(items, kind):
    found = [c for c in items if c["kind"] == kind]
    assert len(found) == 1, items
    return found[0]


def later(trial, fake_clock, **delta):
    """Move the clock on and sign every account in again (access tokens last 15 minutes)."""
    fake_clock.advance(**delta)
    for name in trial.headers:
        trial.headers[name] = bearer(login(trial.client, name.lower().replace("_", "-")))


def save_review(trial, number, data, complete=True):
    return trial.saved(number, "sae_review", data, role="safety", complete=complete)


def clock_audit(trial, number):
    response = trial.client.get(f"/api/v1/subjects/{number}/audit", query_string={"page_size": 200},
                                headers=trial.headers["data_manager"])
    assert response.status_code == 200, response.get_json()
    return [r for r in response.get_json() if r["entity_type"] == "safety_clock"]


# --- the 24-hour SAE clock ------------------------------------------------------------------------

def test_sae_saved_as_draft_opens_a_clock_due_24_hours_after_awareness(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(), complete=False)
    clock = only(clocks(trial), "sae_initial")
    assert clock["subject"] == number and clock["site"] == "ES01" and clock["ae_entry"] == entry["id"]
    assert clock["ae_entry_url"] == f"/api/v1/entries/{entry['id']}"
    assert clock["started_at"] == AWARE_UTC and clock["due_at"] == SAE_DUE
    assert clock["stopped_at"] is None and clock["stop_reason"] is None
    assert clock["state"] == "open" and clock["overdue"] is False and clock["hours_left"] == 22.5
    assert [c["id"] for c in clocks(trial, "investigator_ES01")] == [clock["id"]]


def test_sae_completed_within_24_hours_stops_its_clock_on_time(trial, fake_clock):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(), complete=False)
    later(trial, fake_clock, hours=5)
    assert trial.update(entry["id"], ae(), complete=True, reason=None).status_code == 200
    assert clocks(trial) == []
    clock = only(clocks(trial, state="all"), "sae_initial")
    assert clock["stop_reason"] == "complete" and clock["stopped_at"] == "2026-11-20T14:00:00+00:00"
    assert clock["state"] == "stopped" and clock["overdue"] is False and clock["hours_left"] is None


def test_sae_completed_after_25_hours_is_stopped_late(trial, fake_clock):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(), complete=False)
    later(trial, fake_clock, hours=25)
    assert trial.update(entry["id"], ae(), complete=True, reason=None).status_code == 200
    clock = only(clocks(trial, state="all"), "sae_initial")
    assert clock["stop_reason"] == "complete" and clock["state"] == "late" and clock["overdue"] is True


def test_clock_stops_only_the_first_time_the_sae_is_complete(trial, fake_clock):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    first = only(clocks(trial, state="all"), "sae_initial")
    assert first["stopped_at"] == "2026-11-20T09:00:00+00:00" and first["state"] == "stopped"
    later(trial, fake_clock, hours=30)
    assert trial.update(entry["id"], ae(AETERM="Febrile neutropenia with sepsis")).status_code == 200
    assert only(clocks(trial, state="all"), "sae_initial")["stopped_at"] == first["stopped_at"]


def test_open_clock_past_due_is_listed_as_overdue(trial, fake_clock):
    number = trial.enrol()
    trial.saved(number, "ae", ae(), complete=False)
    assert clocks(trial, state="overdue") == []
    later(trial, fake_clock, hours=30)
    overdue = only(clocks(trial, state="overdue"), "sae_initial")
    assert overdue["state"] == "overdue" and overdue["overdue"] is True and overdue["hours_left"] == -7.5
    assert [c["id"] for c in clocks(trial)] == [overdue["id"]]  # open includes overdue


def test_non_serious_ae_has_no_clock(trial):
    number = trial.enrol()
    trial.saved(number, "ae", ae(AESHOSP="N"))
    assert clocks(trial, state="all") == []


def test_ae_no_longer_serious_cancels_its_clock_and_the_audit_trail_keeps_no_clinical_values(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(), complete=False)
    assert trial.update(entry["id"], ae(AESHOSP="N"), complete=False).status_code == 200
    assert clocks(trial) == []
    clock = only(clocks(trial, state="all"), "sae_initial")
    assert clock["stop_reason"] == "not_serious" and clock["state"] == "cancelled" and clock["overdue"] is False
    records = clock_audit(trial, number)
    assert [r["action"] for r in records] == ["safety_clock_started", "safety_clock_cancelled"]
    assert all(r["entity_id"] == clock["id"] for r in records)
    fields = {c["field"] for r in records for c in r["changes"]}
    assert fields <= {"ae_entry", "kind", "due_at", "stopped_at", "stop_reason"}
    assert records[0]["changes"][0] == {"field": "ae_entry", "old": None, "new": entry["id"]}
    # Serious again: the same clock runs again.
    assert trial.update(entry["id"], ae(), complete=False).status_code == 200
    again = only(clocks(trial), "sae_initial")
    assert again["id"] == clock["id"] and again["state"] == "open"
    assert clock_audit(trial, number)[-1]["action"] == "safety_clock_reopened"


def test_corrected_awareness_time_moves_the_due_time(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(), complete=False)
    assert trial.update(entry["id"], ae(AEAWDTC="2026-11-19T20:00:00+01:00"), complete=False).status_code == 200
    clock = only(clocks(trial), "sae_initial")
    assert clock["due_at"] == "2026-11-20T19:00:00+00:00"
    change = clock_audit(trial, number)[-1]
    assert change["action"] == "safety_clock_changed"
    assert change["changes"] == [{"field": "due_at", "old": SAE_DUE, "new": "2026-11-20T19:00:00+00:00"}]


# --- SUSAR clocks ----------------------------------------------------------------------------------

def test_review_saying_expected_starts_no_susar_clock(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    save_review(trial, number, review(entry["id"], AEEXPECT="Y"))
    assert [c["kind"] for c in clocks(trial, state="all")] == ["sae_initial"]


def test_serious_related_unexpected_event_gets_a_15_day_clock_from_sponsor_knowledge(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    save_review(trial, number, review(entry["id"]))
    clock = only(clocks(trial), "susar_15d")
    assert clock["ae_entry"] == entry["id"] and clock["started_at"] == SPONSOR_KNOWS_UTC
    assert clock["due_at"] == "2026-12-05T09:00:00+00:00" and clock["hours_left"] == 360.0


def test_fatal_or_life_threatening_susar_has_7_days(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(AESLIFE="Y", AETOXGR="4"))
    save_review(trial, number, review(entry["id"]))
    clock = only(clocks(trial), "susar_7d")
    assert clock["due_at"] == "2026-11-27T09:00:00+00:00"


def test_susar_that_becomes_fatal_turns_into_a_7_day_clock_on_the_same_row(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    save_review(trial, number, review(entry["id"]))
    before = only(clocks(trial), "susar_15d")
    assert trial.update(entry["id"], ae(**FATAL)).status_code == 200
    after = only(clocks(trial), "susar_7d")
    assert after["id"] == before["id"] and after["due_at"] == "2026-11-27T09:00:00+00:00"
    change = clock_audit(trial, number)[-1]
    assert change["action"] == "safety_clock_changed"
    assert {c["field"]: c["new"] for c in change["changes"]} == {"kind": "susar_7d", "due_at": "2026-11-27T09:00:00+00:00"}


@pytest.mark.parametrize("causality", ["UNLIKELY", "UNRELATED"])
def test_event_not_suspected_related_is_no_susar(trial, causality):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(AEREL=causality))
    save_review(trial, number, review(entry["id"]))
    assert [c["kind"] for c in clocks(trial, state="all")] == ["sae_initial"]


def test_possibly_related_counts_as_suspected(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(AEREL="POSSIBLE"))
    save_review(trial, number, review(entry["id"]))
    only(clocks(trial), "susar_15d")


def test_recorded_submission_stops_the_susar_clock(trial, fake_clock):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    reviewed = save_review(trial, number, review(entry["id"]))
    later(trial, fake_clock, days=3)
    submitted = "2026-11-22T16:00:00+01:00"
    response = trial.update(reviewed["id"], review(entry["id"], SUBMDTC=submitted), role="safety")
    assert response.status_code == 200, response.get_json()
    assert clocks(trial) == []
    clock = only(clocks(trial, state="all"), "susar_15d")
    assert clock["stopped_at"] == "2026-11-22T15:00:00+00:00" and clock["stop_reason"] == "submitted"
    assert clock["state"] == "stopped" and clock["overdue"] is False
    assert clock_audit(trial, number)[-1]["action"] == "safety_clock_stopped"


def test_removing_the_submission_time_reopens_the_susar_clock(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    reviewed = save_review(trial, number, review(entry["id"], SUBMDTC=SPONSOR_KNOWS))
    assert only(clocks(trial, state="all"), "susar_15d")["stop_reason"] == "submitted"
    assert trial.update(reviewed["id"], review(entry["id"]), role="safety").status_code == 200
    clock = only(clocks(trial), "susar_15d")
    assert clock["stopped_at"] is None and clock["state"] == "open"
    assert clock_audit(trial, number)[-1]["action"] == "safety_clock_reopened"


def test_with_several_reviews_the_earliest_first_knowledge_counts(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    save_review(trial, number, review(entry["id"], AEEXPECT="Y", SPAWDTC="2026-11-20T08:00:00+01:00"))
    assert [c["kind"] for c in clocks(trial, state="all")] == ["sae_initial"]  # expected: no SUSAR
    save_review(trial, number, review(entry["id"]))  # a later review calls it unexpected
    clock = only(clocks(trial), "susar_15d")
    assert clock["started_at"] == "2026-11-20T07:00:00+00:00" and clock["due_at"] == "2026-12-05T07:00:00+00:00"


def test_review_changed_to_expected_cancels_the_susar_clock(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae())
    reviewed = save_review(trial, number, review(entry["id"]))
    assert trial.update(reviewed["id"], review(entry["id"], AEEXPECT="Y"), role="safety").status_code == 200
    clock = only(clocks(trial, state="all"), "susar_15d")
    assert clock["stop_reason"] == "not_susar" and clock["state"] == "cancelled"


def test_review_must_name_an_ae_entry_of_the_same_subject(trial):
    mine, other = trial.enrol(), trial.enrol()
    entry = trial.saved(other, "ae", ae())
    for reference in (entry["id"], "00000000-0000-4000-8000-000000000000"):
        body = problem(trial.save(mine, "sae_review", review(reference), role="safety"), 422)
        assert [e["pointer"] for e in body["errors"]] == ["/data/AEREF"]
    assert trial.client.get(f"/api/v1/subjects/{mine}/entries", headers=trial.headers["safety"]).get_json() == []
    assert [c["kind"] for c in clocks(trial, state="all")] == ["sae_initial"]


# --- who sees what ---------------------------------------------------------------------------------

def test_site_roles_see_only_their_sites_clocks(trial):
    number = trial.enrol()
    trial.saved(number, "ae", ae(), complete=False)
    for role in ("investigator_ES01", "coordinator_ES01", "monitor_ES01", "data_manager", "safety"):
        assert len(clocks(trial, role)) == 1, role
    assert clocks(trial, "investigator_IT01") == []
    headers = trial.headers["investigator_IT01"]
    problem(trial.client.get("/api/v1/safety/clocks", query_string={"subject": number}, headers=headers), 404)
    problem(trial.client.get("/api/v1/safety/clocks", query_string={"site": "ES01"}, headers=headers), 404)
    assert len(clocks(trial, "safety", site="ES01", subject=number)) == 1
    assert clocks(trial, "safety", site="IT01") == []


@pytest.mark.parametrize("role", ["statistician", "manufacturing"])
def test_roles_without_clinical_safety_duties_are_403(trial, role):
    problem(trial.client.get("/api/v1/safety/clocks", headers=trial.headers[role]), 403)


def test_unknown_state_is_422(trial):
    body = problem(trial.client.get("/api/v1/safety/clocks", query_string={"state": "late"}, headers=trial.headers["safety"]), 422)
    assert body["errors"][0]["pointer"] == "/query/state"


def test_listing_is_paginated_soonest_due_first(trial):
    first, second = trial.enrol(), trial.enrol()
    trial.saved(first, "ae", ae(), complete=False)
    trial.saved(second, "ae", ae(AEAWDTC="2026-11-19T20:00:00+01:00"), complete=False)
    response = trial.client.get("/api/v1/safety/clocks", query_string={"page_size": 1}, headers=trial.headers["safety"])
    body = response.get_json()
    assert body["total"] == 2 and body["page_size"] == 1 and [c["subject"] for c in body["items"]] == [second]


def test_critical_open_queries_of_the_subject_are_listed(trial):
    number = trial.enrol()
    # The awareness is dated before the event started: a critical automatic query.
    trial.saved(number, "ae", ae(AEAWDTC="2026-11-17T10:00:00+01:00"), complete=False)
    clock = only(clocks(trial), "sae_initial")
    assert [(q["form"], q["item"]) for q in clock["critical_queries"]] == [("ae", "AEAWDTC")]
    assert clock["critical_queries"][0]["message"] and clock["critical_queries"][0]["id"]
    assert clock["state"] == "overdue"
