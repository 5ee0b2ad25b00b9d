"""Items a form marks `identifying` never leave the site: over the API their values reach only the subject's
site staff, data managers and the roles that enter the form; every other reader gets {"withheld": "identifying"}
in entries, listings and the audit trail, and the value in no byte of any answer."""

import pytest

from conftest import bearer, login, make_user
from edc.services.identifying import withhold, withhold_changes

SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
VITALS = {"VSDAT": "2026-11-10", "TEMP": 37.2, "HR": 110, "SBP": 100, "DBP": 60, "SPO2": 98, "VSCOMM": "calm"}
CANARY, CANARY_2 = "CANARY-NURSE-3e9a41", "CANARY-NURSE-b07c5d"
WITHHELD = {"withheld": "identifying"}

SEE = ("investigator", "coordinator", "data_manager")
# The ES01 monitor account also holds IT01's investigator role: site staff elsewhere see nothing more here.
WITHHELD_FROM = ("monitor", "safety", "auditor", "monitor_and_other_site_investigator")


@pytest.fixture
def readers(client, session, staff):
    """Logged-in headers of every role that reads ES01's entries."""
    make_user(session, "crc", [("coordinator", "ES01")])
    make_user(session, "safety", [("safety", None)])
    make_user(session, "mon-inv", [("monitor", "ES01"), ("investigator", "IT01")])
    usernames = {**staff, "coordinator": "crc", "safety": "safety", "monitor_and_other_site_investigator": "mon-inv"}
    return {role: bearer(login(client, usernames[role])) for role in (*SEE, *WITHHELD_FROM)}


@pytest.fixture
def vitals(client, readers):
    """A subject's screening vitals: MEASURED_BY entered, then corrected (so the audit trail holds both)."""
    inv = readers["investigator"]
    number = client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]
    created = client.post(f"/api/v1/subjects/{number}/entries", headers=inv,
                          json={"form": "vitals", "event": "SCR", "data": {**VITALS, "MEASURED_BY": CANARY}, "complete": True})
    assert created.status_code == 201, created.get_json()
    changed = client.put(created.headers["Location"], headers={**inv, "If-Match": created.headers["ETag"]},
                         json={"data": {**VITALS, "MEASURED_BY": CANARY_2}, "complete": True, "reason": "wrong nurse"})
    assert changed.status_code == 200, changed.get_json()
    return number, created.headers["Location"]


def _measured_by_changes(records):
    return [(c["old"], c["new"]) for r in records for c in r["changes"] if c["field"] == "MEASURED_BY"]


@pytest.mark.parametrize("role", SEE)
def test_site_staff_and_data_managers_see_identifying_items(client, readers, vitals, role):
    number, url = vitals
    headers = readers[role]
    assert client.get(url, headers=headers).get_json()["data"]["MEASURED_BY"] == CANARY_2
    [listed] = client.get(f"/api/v1/subjects/{number}/entries", headers=headers).get_json()
    assert listed["data"]["MEASURED_BY"] == CANARY_2
    expected = [(None, CANARY), (CANARY, CANARY_2)]
    assert _measured_by_changes(client.get(f"{url}/audit", headers=headers).get_json()) == expected
    assert _measured_by_changes(client.get(f"/api/v1/subjects/{number}/audit", headers=headers).get_json()) == expected


@pytest.mark.parametrize("role", WITHHELD_FROM)
def test_other_readers_get_identifying_items_withheld_and_never_their_value(client, readers, vitals, role):
    number, url = vitals
    headers = readers[role]
    bodies = []

    def get(path):
        response = client.get(path, headers=headers)
        bodies.append((path, response.status_code, response.get_data()))
        return response

    read = get(url)
    assert read.status_code == 200
    data = read.get_json()["data"]
    assert data == {**VITALS, "MEASURED_BY": WITHHELD}
    # Withholding changes no version: a writer's If-Match compares the same ETag.
    assert read.headers["ETag"] == client.get(url, headers=readers["investigator"]).headers["ETag"]
    [listed] = get(f"/api/v1/subjects/{number}/entries").get_json()
    assert listed["data"] == data
    assert get(f"/api/v1/subjects/{number}/casebook").status_code == 200
    expected = [(None, WITHHELD), (WITHHELD, WITHHELD)]
    entry_audit = get(f"{url}/audit").get_json()
    assert _measured_by_changes(entry_audit) == expected
    assert {"field": "VSCOMM", "old": None, "new": "calm"} in entry_audit[0]["changes"]
    assert _measured_by_changes(get(f"/api/v1/subjects/{number}/audit").get_json()) == expected
    for path in (f"/api/v1/subjects/{number}", f"{url}/sdv", f"{url}/signatures", f"/api/v1/subjects/{number}/signatures",
                 f"/api/v1/queries?subject={number}", "/api/v1/safety/clocks?state=all", "/api/v1/reports/completeness"):
        get(path)
    for path, status, raw in bodies:
        assert status < 500, (path, status)
        assert CANARY.encode() not in raw and CANARY_2.encode() not in raw, (role, path)


def test_withholding_reaches_into_repeating_group_rows():
    hidden = frozenset({"WHO"})
    rows = [{"DOSE": 1, "WHO": "Dr A"}, {"DOSE": 2}]
    assert withhold({"GRP": rows, "WHO": None, "X": [1]}, hidden) == {
        "GRP": [{"DOSE": 1, "WHO": WITHHELD}, {"DOSE": 2}], "WHO": None, "X": [1]}
    assert withhold_changes([{"field": "GRP", "old": None, "new": rows}], hidden) == [
        {"field": "GRP", "old": None, "new": [{"DOSE": 1, "WHO": WITHHELD}, {"DOSE": 2}]}]
