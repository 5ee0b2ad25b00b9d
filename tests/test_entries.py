"""Case-form entries through the API: validation, drafts, concurrency, encryption, audit, queries, scope."""

import random
import uuid
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BACKEND, bearer, count_rows, login, make_user, problem
from edc.extensions import db
from edc.models import AuditRecord, Entry, Query

SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
VITALS = {"VSDAT": "2026-11-10", "TEMP": 37.2, "HR": 110, "SBP": 100, "DBP": 60, "SPO2": 98}


@pytest.fixture
def site_staff(session, staff):
    make_user(session, "crc-it01", [("coordinator", "IT01")])
    make_user(session, "mfg", [("manufacturing", None)])
    make_user(session, "safety", [("safety", None)])
    return {**staff, "coordinator_it": "crc-it01", "manufacturing": "mfg", "safety": "safety"}


@pytest.fixture
def inv(client, site_staff):
    return bearer(login(client, site_staff["investigator"]))


@pytest.fixture
def subject(client, inv):
    return client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]


def post_entry(client, headers, number, form, data, event=None, complete=True, **extra):
    body = {"form": form, "data": data, "complete": complete, **extra}
    if event:
        body["event"] = event
    return client.post(f"/api/v1/subjects/{number}/entries", json=body, headers=headers)


def test_create_and_read_an_entry(client, inv, subject):
    response = post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/entries/{body['id']}" and response.headers["ETag"]
    assert body["form_version"] == "2" and body["status"] == "complete" and body["event"] == "SCR"
    read = client.get(response.headers["Location"], headers=inv)
    assert read.get_json()["data"]["TEMP"] == 37.2 and read.headers["ETag"] == response.headers["ETag"]


def test_second_entry_of_a_non_repeating_form_is_409_pointing_at_the_first(client, inv, subject):
    first = post_entry(client, inv, subject, "vitals", VITALS, event="SCR").get_json()
    body = problem(post_entry(client, inv, subject, "vitals", VITALS, event="SCR"), 409)
    assert body["existing"] == f"/api/v1/entries/{first['id']}"


def test_repeating_forms_and_repeatable_events_take_many_entries(client, inv, subject):
    ae = {"AETERM": "Fever", "AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "POSSIBLE"}
    assert post_entry(client, inv, subject, "ae", ae).status_code == 201
    assert post_entry(client, inv, subject, "ae", {**ae, "AETERM": "Rash"}).status_code == 201
    assert post_entry(client, inv, subject, "vitals", VITALS, event="UNS", event_instance=1).status_code == 201
    assert post_entry(client, inv, subject, "vitals", VITALS, event="UNS", event_instance=2).status_code == 201
    problem(post_entry(client, inv, subject, "vitals", VITALS, event="SCR", event_instance=2), 422)
    listed = client.get(f"/api/v1/subjects/{subject}/entries?form=ae", headers=inv).get_json()
    assert [e["data"]["AETERM"] for e in listed] == ["Fever", "Rash"]


@pytest.mark.parametrize("body, pointer", [
    ({"form": "nope", "event": "SCR", "data": {}}, "/form"),
    ({"form": "vitals", "event": "NOPE", "data": {}}, "/event"),
    ({"form": "infusion", "event": "SCR", "data": {}}, "/form"),
    ({"form": "vitals", "data": {}}, "/event"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "TEMP": 50}}, "/data/TEMP"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "TEMP": "hot"}}, "/data/TEMP"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "HR": 80.5}}, "/data/HR"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "VSDAT": "2026-11"}}, "/data/VSDAT"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "VSDAT": "2999-01-01"}}, "/data/VSDAT"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "UNKNOWN": 1}}, "/data/UNKNOWN"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "SBP": 60, "DBP": 80}}, "/data/SBP"),
    ({"form": "vitals", "event": "SCR", "data": {**VITALS, "VSCOMM": "x" * 5000}}, "/data/VSCOMM"),
    ({"form": "vitals", "event": "SCR", "data": {"TEMP": 37.0}, "complete": True}, "/data/VSDAT"),
    ({"form": "ae", "data": {"AETERM": "x", "AESTDAT": "2026-11", "AEONGO": True, "AEENDAT": "2026-11", "AETOXGR": "1",
                             "AESER": "N", "AEREL": "POSSIBLE"}}, "/data/AEENDAT"),
    ({"form": "ae", "data": {"AETERM": "x", "AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": "9", "AESER": "N", "AEREL": "POSSIBLE"}},
     "/data/AETOXGR"),
    ({"form": "ae", "data": {"AETERM": "x", "AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": 1, "AESER": "N", "AEREL": "POSSIBLE"}},
     "/data/AETOXGR"),
    ({"form": "infusion", "event": "D0", "data": {"INFDAT": "2026-11-20", "PRODUCT_ID": "ARI-000001", "WEIGHT": 20,
                                                  "DOSE": 1, "TOTAL_CELLS": 20}}, "/data/TOTAL_CELLS"),
])
def test_bad_entries_are_422_and_change_nothing(client, inv, subject, session, body, pointer):
    before = (count_rows(session, "entries"), count_rows(session, "audit_records"), count_rows(session, "queries"))
    response = client.post(f"/api/v1/subjects/{subject}/entries", json={"complete": True, **body}, headers=inv)
    errors = problem(response, 422)["errors"]
    assert pointer in {e["pointer"] for e in errors}, errors
    assert (count_rows(session, "entries"), count_rows(session, "audit_records"), count_rows(session, "queries")) == before


def test_ten_megabyte_text_is_refused(client, inv, subject, session):
    response = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": "x" * 10_000_000}, event="SCR")
    problem(response, 413)
    assert count_rows(session, "entries") == 0


def test_draft_may_miss_required_items_but_complete_may_not(client, inv, subject):
    draft = post_entry(client, inv, subject, "vitals", {"TEMP": 37.0}, event="SCR", complete=False)
    assert draft.status_code == 201 and draft.get_json()["status"] == "draft"
    entry = draft.get_json()
    problem(client.put(f"/api/v1/entries/{entry['id']}", json={"data": {"TEMP": 37.0}, "complete": True},
                       headers={**inv, "If-Match": draft.headers["ETag"]}), 422)


def test_missing_data_code_counts_as_answered(client, inv, subject):
    data = {**VITALS, "SPO2": {"missing": "ND", "note": "probe unavailable"}}
    body = post_entry(client, inv, subject, "vitals", data, event="SCR").get_json()
    assert body["data"]["SPO2"] == {"missing": "ND", "note": "probe unavailable"}


def test_put_needs_if_match_and_refuses_stale_etags(client, inv, subject):
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR", complete=False)
    url, etag = created.headers["Location"], created.headers["ETag"]
    problem(client.put(url, json={"data": {**VITALS, "HR": 90}}, headers=inv), 428)
    first = client.put(url, json={"data": {**VITALS, "HR": 90}}, headers={**inv, "If-Match": etag})
    assert first.status_code == 200 and first.headers["ETag"] != etag
    problem(client.put(url, json={"data": {**VITALS, "HR": 95}}, headers={**inv, "If-Match": etag}), 412)
    assert client.get(url, headers=inv).get_json()["data"]["HR"] == 90


def test_changing_a_completed_entry_needs_a_reason(client, inv, subject, session):
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    url, etag = created.headers["Location"], created.headers["ETag"]
    before = count_rows(session, "audit_records")
    body = problem(client.put(url, json={"data": {**VITALS, "HR": 90}, "complete": True}, headers={**inv, "If-Match": etag}), 422)
    assert body["errors"][0]["pointer"] == "/reason"
    assert count_rows(session, "audit_records") == before
    changed = client.put(url, json={"data": {**VITALS, "HR": 90}, "complete": True, "reason": "transcription error"},
                         headers={**inv, "If-Match": etag})
    assert changed.status_code == 200
    history = client.get(f"{url}/audit", headers=inv).get_json()
    assert history[-1]["action"] == "entry_updated" and history[-1]["reason"] == "transcription error"
    assert history[-1]["changes"] == [{"field": "HR", "old": 110, "new": 90}]


def test_soft_range_opens_an_automatic_query_answered_by_the_fix(client, inv, subject, session):
    created = post_entry(client, inv, subject, "vitals", {**VITALS, "TEMP": 40.6}, event="SCR")
    body = created.get_json()
    assert body["warnings"] and body["queries_opened"][0]["item"] == "TEMP" and body["queries_opened"][0]["state"] == "open"
    fixed = client.put(created.headers["Location"], json={"data": VITALS, "complete": True, "reason": "misread thermometer"},
                       headers={**inv, "If-Match": created.headers["ETag"]}).get_json()
    [answered] = fixed["queries_answered"]
    assert answered["state"] == "answered"
    change = session.get(AuditRecord, uuid.UUID(answered["answered_by_change"]))
    assert change.action == "entry_updated" and change.entity_id == body["id"]
    casebook = client.get(f"/api/v1/subjects/{subject}/casebook", headers=inv).get_json()
    assert casebook["queries"][0]["state"] == "answered"


def test_cross_form_warning_opens_and_resolves_from_either_side(client, inv, subject, session):
    aph = post_entry(client, inv, subject, "apheresis", {"APHDAT": "2026-11-05", "PRODUCT_ID": "ARI-000001", "CD3_COUNT": 4},
                     event="APH")
    assert aph.status_code == 201, aph.get_json()
    inf = post_entry(client, inv, subject, "infusion", {"INFDAT": "2026-11-20", "PRODUCT_ID": "ARI-000002", "WEIGHT": 20.0,
                                                        "DOSE": 1.0}, event="D0")
    assert inf.status_code == 201, inf.get_json()
    body = inf.get_json()
    assert body["data"]["TOTAL_CELLS"] == 20.0
    [query] = [q for q in body["queries_opened"] if q["check"] == "PRODUCT_MATCH"]
    assert query["critical"] is True and query["item"] == "PRODUCT_ID"
    infusion_before = client.get(inf.headers["Location"], headers=inv).get_json()
    # Correcting the apheresis side resolves the infusion's query and leaves the infusion's data alone.
    client.put(aph.headers["Location"], json={"data": {"APHDAT": "2026-11-05", "PRODUCT_ID": "ARI-000002", "CD3_COUNT": 4},
                                              "complete": True, "reason": "label misread"},
               headers={**inv, "If-Match": aph.headers["ETag"]})
    infusion_after = client.get(inf.headers["Location"], headers=inv).get_json()
    assert infusion_after["data"] == infusion_before["data"] and infusion_after["version"] == infusion_before["version"]
    assert [q["state"] for q in infusion_after["queries"] if q["check"] == "PRODUCT_MATCH"] == ["answered"]


def test_encrypted_items_never_reach_the_database_in_clear(client, inv, subject, database_url, session, app):
    canary = "CANARY-VSCOMM-9f81c2"
    who = "CANARY-NURSE-55aa10"
    created = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": canary, "MEASURED_BY": who}, event="SCR")
    client.put(created.headers["Location"], json={"data": {**VITALS, "VSCOMM": canary + "-2", "MEASURED_BY": who}, "complete": True,
                                                  "reason": "typo"}, headers={**inv, "If-Match": created.headers["ETag"]})
    assert client.get(created.headers["Location"], headers=inv).get_json()["data"]["VSCOMM"] == canary + "-2"
    history = client.get(f"{created.headers['Location']}/audit", headers=inv).get_json()
    assert {"field": "VSCOMM", "old": canary, "new": canary + "-2"} in history[-1]["changes"]
    if BACKEND == "sqlite":
        from edc.extensions import db

        with app.app_context():
            db.engine.dispose()  # checkpoint the WAL into the file
        path = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    else:
        url = sa.engine.make_url(database_url)
        raw = subprocess.run(["pg_dump", "-h", url.host, "-p", str(url.port or 5432), "-U", url.username, url.database],
                             check=True, capture_output=True).stdout
    assert raw and canary.encode() not in raw and who.encode() not in raw


def test_a_ciphertext_moved_to_another_entry_fails_cleanly(client, inv, subject, session):
    a = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": "secret A"}, event="SCR").get_json()
    b = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": "secret B"}, event="D7").get_json()
    a_id, b_id = uuid.UUID(a["id"]), uuid.UUID(b["id"])
    stored_a = session.scalars(sa.select(Entry.data).where(Entry.id == a_id)).one()
    stored_b = dict(session.scalars(sa.select(Entry.data).where(Entry.id == b_id)).one())
    stored_b["VSCOMM"] = stored_a["VSCOMM"]
    session.execute(sa.update(Entry.__table__).where(Entry.__table__.c.id == b_id).values(data=stored_b))
    session.commit()
    response = client.get(f"/api/v1/entries/{b['id']}", headers=inv)
    text = response.get_data(as_text=True)
    problem(response, 500)
    assert "secret A" not in text and "Traceback" not in text
    assert client.get(f"/api/v1/entries/{a['id']}", headers=inv).get_json()["data"]["VSCOMM"] == "secret A"


def test_audit_replay_reproduces_the_current_data(client, inv, subject):
    rng = random.Random(20261126)
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR", complete=False)
    url, etag = created.headers["Location"], created.headers["ETag"]
    for step in range(25):
        data = {**VITALS, "TEMP": round(rng.uniform(35.5, 39.5), 1), "HR": rng.randint(60, 170)}
        for optional in ("SPO2", "VSCOMM"):
            if rng.random() < 0.4:
                data.pop(optional, None)
            elif optional == "VSCOMM":
                data["VSCOMM"] = f"note {step}"
        response = client.put(url, json={"data": data, "complete": rng.random() < 0.5, "reason": f"edit {step}"},
                              headers={**inv, "If-Match": etag})
        assert response.status_code == 200, response.get_json()
        etag = response.headers["ETag"]
    replayed: dict = {}
    for record in client.get(f"{url}/audit", headers=inv).get_json():
        for change in record["changes"]:
            if change["field"].startswith("@"):
                continue
            if change["new"] is None:
                replayed.pop(change["field"], None)
            else:
                replayed[change["field"]] = change["new"]
    assert replayed == client.get(url, headers=inv).get_json()["data"]


def test_manufacturing_writes_only_its_product_forms(client, site_staff, subject):
    mfg = bearer(login(client, site_staff["manufacturing"]))
    aph = post_entry(client, mfg, subject, "apheresis", {"APHDAT": "2026-11-05", "PRODUCT_ID": "ARI-000001"}, event="APH")
    assert aph.status_code == 201, aph.get_json()
    problem(post_entry(client, mfg, subject, "vitals", VITALS, event="SCR"), 403)
    inv = bearer(login(client, site_staff["investigator"]))
    post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    forms_seen = {e["form"] for e in client.get(f"/api/v1/subjects/{subject}/entries", headers=mfg).get_json()}
    assert forms_seen == {"apheresis"}


READERS = {"investigator": 200, "coordinator_it": 404, "monitor": 200, "data_manager": 200, "auditor": 200, "safety": 200,
           "statistician": 403, "admin": 403}


@pytest.mark.parametrize("role, status", READERS.items())
def test_entry_and_subject_reads_by_role(client, site_staff, inv, subject, role, status):
    entry = post_entry(client, inv, subject, "vitals", VITALS, event="SCR").get_json()
    headers = bearer(login(client, site_staff[role]))
    for url in (f"/api/v1/entries/{entry['id']}", f"/api/v1/subjects/{subject}/entries", f"/api/v1/subjects/{subject}",
                f"/api/v1/subjects/{subject}/casebook"):
        response = client.get(url, headers=headers)
        assert response.status_code == status, (url, response.get_json())


WRITERS = {"investigator": 201, "coordinator_it": 404, "monitor": 403, "data_manager": 403, "auditor": 403, "safety": 403,
           "statistician": 403, "admin": 403}


@pytest.mark.parametrize("role, status", WRITERS.items())
def test_entry_writes_by_role(client, site_staff, inv, subject, session, role, status):
    headers = bearer(login(client, site_staff[role]))
    response = post_entry(client, headers, subject, "vitals", VITALS, event="SCR")
    assert response.status_code == status, response.get_json()
    if status != 201:
        assert count_rows(session, "entries") == 0
        created = post_entry(client, inv, subject, "vitals", VITALS, event="D7")
        put = client.put(created.headers["Location"], json={"data": VITALS, "complete": True, "reason": "x"},
                         headers={**headers, "If-Match": created.headers["ETag"]})
        assert put.status_code == status


def test_casebook_shows_schedule_and_form_states(client, inv, subject):
    post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    post_entry(client, inv, subject, "screening", {"CONSDAT": "2026-11-02"}, event="SCR", complete=False)
    book = client.get(f"/api/v1/subjects/{subject}/casebook", headers=inv).get_json()
    scr = next(e for e in book["events"] if e["event"] == "SCR")
    assert scr["due"] and scr["window"]["to"]
    states = {f["form"]: f["state"] for f in scr["forms"]}
    assert states == {"vitals": "complete", "screening": "draft"}
    d7 = next(e for e in book["events"] if e["event"] == "D7")
    assert d7["due"] is None and {f["state"] for f in d7["forms"]} == {"not_started"}


def test_study_and_form_definitions(client, inv):
    study = client.get("/api/v1/study", headers=inv).get_json()
    assert [e["id"] for e in study["events"]][:3] == ["SCR", "APH", "D0"]
    forms = {f["id"]: f for f in client.get("/api/v1/forms", headers=inv).get_json()}
    assert forms["vitals"]["versions"] == ["1", "2"]
    v1 = client.get("/api/v1/forms/vitals?version=1", headers=inv).get_json()
    assert v1["version"] == "1" and "SPO2" not in {i["id"] for i in v1["items"]}
    problem(client.get("/api/v1/forms/nope", headers=inv), 404)
    es = client.get("/api/v1/forms/vitals?lang=es", headers=inv).get_json()
    assert es["title"] == "Signos vitales"


def test_form_as_fhir_questionnaire(client, inv):
    from fhir.resources.R4B.questionnaire import Questionnaire

    response = client.get("/api/v1/forms/ae/questionnaire", headers=inv)
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    body = response.get_json()
    assert body["resourceType"] == "Questionnaire"
    questionnaire = Questionnaire.model_validate(body)
    assert [item.linkId for item in questionnaire.item]


def test_automatic_queries_are_rows_listed_on_the_entry(client, inv, subject, session):
    body = post_entry(client, inv, subject, "vitals", {**VITALS, "HR": 200}, event="SCR").get_json()
    rows = session.scalars(sa.select(Query).where(Query.entry_id == uuid.UUID(body["id"]))).all()
    assert [(q.origin, q.item_id, q.state) for q in rows] == [("auto", "HR", "open")]
    assert [q["item"] for q in client.get(f"/api/v1/entries/{body['id']}", headers=inv).get_json()["queries"]] == ["HR"]


ROLES_OWN_OTHER = ["investigator", "coordinator_it", "monitor", "data_manager", "auditor", "safety", "manufacturing",
                   "statistician", "admin"]
# (method, route, expected status per role); coordinator_it is staff of the other site (IT01).
ROUTE_MATRIX = {
    ("GET", "entry"): {"investigator": 200, "coordinator_it": 404, "monitor": 200, "data_manager": 200, "auditor": 200,
                       "safety": 200, "manufacturing": 404, "statistician": 403, "admin": 403},
    ("GET", "entry_audit"): {"investigator": 200, "coordinator_it": 404, "monitor": 200, "data_manager": 200, "auditor": 200,
                             "safety": 200, "manufacturing": 403, "statistician": 403, "admin": 403},
    ("GET", "subject_audit"): {"investigator": 200, "coordinator_it": 404, "monitor": 200, "data_manager": 200, "auditor": 200,
                               "safety": 200, "manufacturing": 403, "statistician": 403, "admin": 403},
    ("PUT", "entry"): {"investigator": 200, "coordinator_it": 404, "monitor": 403, "data_manager": 403, "auditor": 403,
                       "safety": 403, "manufacturing": 404, "statistician": 403, "admin": 403},
    ("POST", "status"): {"investigator": 200, "coordinator_it": 404, "monitor": 403, "data_manager": 200, "auditor": 403,
                         "safety": 403, "manufacturing": 403, "statistician": 403, "admin": 403},
}


@pytest.mark.parametrize("route", ROUTE_MATRIX, ids=lambda r: f"{r[0]}-{r[1]}")
@pytest.mark.parametrize("role", ROLES_OWN_OTHER)
def test_every_subject_and_entry_route_by_role_and_site(client, site_staff, inv, subject, session, route, role):
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    entry_url = created.headers["Location"]
    headers = bearer(login(client, site_staff[role]))
    method, name = route
    if name == "entry":
        response = client.open(entry_url, method=method, headers={**headers, "If-Match": created.headers["ETag"]},
                               json={"data": {**VITALS, "HR": 99}, "complete": True, "reason": "check"} if method == "PUT" else None)
    elif name == "entry_audit":
        response = client.get(f"{entry_url}/audit", headers=headers)
    elif name == "subject_audit":
        response = client.get(f"/api/v1/subjects/{subject}/audit", headers=headers)
    else:
        etag = client.get(f"/api/v1/subjects/{subject}", headers=inv).headers["ETag"]
        response = client.post(f"/api/v1/subjects/{subject}/status", json={"status": "enrolled"},
                               headers={**headers, "If-Match": etag})
    assert response.status_code == ROUTE_MATRIX[route][role], response.get_json()
    if response.status_code >= 400:
        assert client.get(entry_url, headers=inv).get_json()["data"]["HR"] == VITALS["HR"]


vital_edit = st.fixed_dictionaries(
    {"TEMP": st.floats(min_value=35.0, max_value=39.9).map(lambda t: round(t, 1)), "HR": st.integers(50, 180)},
    optional={"SPO2": st.integers(92, 100), "VSCOMM": st.text("abcdeé ع", min_size=1, max_size=20),
              "MEASURED_BY": st.sampled_from(["Nurse A", "Nurse B"])},
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(vital_edit, st.booleans()), min_size=1, max_size=6))
def test_property_audit_replay_equals_current_data(client, inv, edits):
    """For any edit sequence, replaying the entry's audit changes from nothing gives its current data."""
    number = client.post("/api/v1/subjects", json=SUBJECT, headers=inv).get_json()["number"]
    created = post_entry(client, inv, number, "vitals", {**VITALS, **edits[0][0]}, event="SCR", complete=edits[0][1])
    assert created.status_code == 201, created.get_json()
    url, etag = created.headers["Location"], created.headers["ETag"]
    for data, complete in edits[1:]:
        response = client.put(url, json={"data": {**VITALS, **data}, "complete": complete, "reason": "edit"},
                              headers={**inv, "If-Match": etag})
        assert response.status_code == 200, response.get_json()
        etag = response.headers["ETag"]
    replayed: dict = {}
    for record in client.get(f"{url}/audit", headers=inv).get_json():
        for change in record["changes"]:
            if not change["field"].startswith("@"):
                replayed[change["field"]] = change["new"]
    current = client.get(url, headers=inv).get_json()["data"]
    assert {k: v for k, v in replayed.items() if v is not None} == current


def _statement_kind(sql: str) -> tuple[str, str]:
    """(verb, table) of a statement: the table written, or the first one read outside any subquery."""
    words = sql.split()
    if words[0] in ("INSERT", "UPDATE", "DELETE"):
        return words[0], words[2] if words[0] != "UPDATE" else words[1]
    depth = 0
    for index, word in enumerate(words):
        if depth == 0 and word == "FROM":
            return words[0], words[index + 1].strip("()")
        depth += word.count("(") - word.count(")")
    return words[0], ""


def test_a_new_entry_is_saved_in_few_statements(app, client, inv, subject):
    """The subject's read also carries the study lock and whether the casebook is signed; a new entry reads no SDV
    marks or signatures of its own; its form-status cell is recounted inside its upsert. Statements counted, not timed."""
    assert post_entry(client, inv, subject, "vitals", VITALS, event="UNS", event_instance=1).status_code == 201
    with app.app_context():
        engine = db.engine
    sent: list[str] = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        sent.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", remember)
    try:
        response = post_entry(client, inv, subject, "vitals", VITALS, event="UNS", event_instance=2)
    finally:
        sa.event.remove(engine, "before_cursor_execute", remember)
    assert response.status_code == 201, response.get_json()
    assert [_statement_kind(sql) for sql in sent if not sql.startswith(("BEGIN", "COMMIT"))] == [
        ("SELECT", "users"),               # the bearer's user, session and roles
        ("SELECT", "subjects"),            # the subject, its site, the study lock, a casebook signature, its chain head
        ("SELECT", "entries"),             # the slot of a non-repeating form is free
        ("INSERT", "entries"),
        ("SELECT", "audit_chain_heads"),   # the subject's chain, locked
        ("INSERT", "audit_records"),
        ("UPDATE", "audit_chain_heads"),
        ("INSERT", "form_status"),         # recounted and upserted in one statement
    ]
