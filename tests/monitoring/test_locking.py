"""Locks and data cuts through the API: data managers lock entries, subjects and the study; locked data
answer 409 to every write and stay unchanged; data cuts freeze and snapshot what was entered up to a
cut-off, reconstructing values changed since from the audit trail."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import count_rows, problem
from edc import runtime
from edc.models.audit import AuditRecord
from edc.models.entries import Entry, FormStatus
from edc.models.monitoring import DataCutEntry
from edc.services import audit, locking

VS = {"VSDAT": "2026-11-20", "TEMP": 36.8, "HR": 96, "SYSBP": 105, "DIABP": 65, "RESP": 20, "OXYSAT": 98,
      "WEIGHT": 32.0, "HEIGHT": 140.0}
DM = {"RFICDAT": "2026-11-02", "BRTHYY": 2016, "BRTHMO": 4, "SEX": "F", "DEVDELAY": "N", "WEIGHT": 32.0, "HEIGHT": 140.0}
DM_MANAGER = "data_manager"


def _post(trial, path, body=None, role=DM_MANAGER):
    return trial.client.post(f"/api/v1{path}", json=body if body is not None else {}, headers=trial.headers[role])


def _snapshot(session) -> tuple:
    """What a refused write must leave untouched: every entry's data and version, and the row counts."""
    session.expire_all()
    entries = sorted((str(e.id), e.version, repr(e.data), e.status) for e in session.scalars(sa.select(Entry)))
    return (entries, count_rows(session, "audit_records"), count_rows(session, "queries"), count_rows(session, "subjects"),
            count_rows(session, "form_status"))


def _cell_locked(session, entry_id) -> bool:
    session.expire_all()
    entry = session.get(Entry, uuid.UUID(entry_id))
    return session.scalars(sa.select(FormStatus.locked).where(
        FormStatus.subject_id == entry.subject_id, FormStatus.event_key == entry.event_key,
        FormStatus.form_id == entry.form_id)).one()


def _audit(trial, entry_id):
    response = trial.client.get(f"/api/v1/entries/{entry_id}/audit", headers=trial.headers[DM_MANAGER])
    assert response.status_code == 200
    return response.get_json()


def _vs(trial, number, **change):
    return trial.saved(number, "vs", {**VS, **change}, event="SCR")


def _cut_entries(trial, session, cut_id):
    return _read_cut(session, cut_id, runtime.for_app(trial.client.application))


def _reader_bind(session):
    """A bind with transactions (server-side cursors need one; the test session runs in autocommit)."""
    bind = session.get_bind()
    return bind.execution_options(isolation_level="REPEATABLE READ") if bind.dialect.name == "postgresql" else bind


def _read_cut(session, cut_id, rt):
    """The service exports use, in a transaction of its own (the test session runs in autocommit)."""
    with Session(_reader_bind(session)) as reader:
        runtime.bind(reader, rt)
        return list(locking.cut_entries(reader, uuid.UUID(cut_id)))


def _assert_audit_verifies(session, trial):
    with Session(_reader_bind(session)) as reader:
        runtime.bind(reader, runtime.for_app(trial.client.application))
        reports = audit.verify_all(reader)
    assert reports and all(report.ok for report in reports), [r for r in reports if not r.ok]


# --- entry locks -----------------------------------------------------------------------------------

def test_data_manager_locks_and_unlocks_an_entry(monitoring, session):
    number = monitoring.enrol()
    saved = _vs(monitoring, number)
    entry = saved["id"]

    locked = _post(monitoring, f"/entries/{entry}/lock", {"reason": "reviewed"})
    assert locked.status_code == 200, locked.get_json()
    # A lock is no change of data: the version (and what a signature covers) stays.
    assert locked.get_json()["version"] == saved["version"] and monitoring.entry(entry)["version"] == saved["version"]
    assert locked.get_json()["locked"] is True and locked.get_json()["locked_by"] == "data-manager"
    assert _cell_locked(session, entry)

    before = _snapshot(session)
    body = problem(monitoring.update(entry, {**VS, "HR": 120}), 409)
    assert "locked" in body["detail"]
    assert _snapshot(session) == before
    assert monitoring.entry(entry)["data"]["HR"] == 96

    for reason in (None, "", "   "):
        errors = problem(_post(monitoring, f"/entries/{entry}/unlock", {"reason": reason}), 422)["errors"]
        assert [e["pointer"] for e in errors] == ["/reason"]
    assert problem(_post(monitoring, f"/entries/{entry}/unlock", {}), 422)["errors"][0]["pointer"] == "/reason"
    assert _snapshot(session) == before

    unlocked = _post(monitoring, f"/entries/{entry}/unlock", {"reason": "late lab correction"})
    assert unlocked.status_code == 200 and unlocked.get_json()["locked"] is False
    assert not _cell_locked(session, entry)
    assert monitoring.update(entry, {**VS, "HR": 120}).status_code == 200

    records = {r["action"]: r for r in _audit(monitoring, entry)}
    assert records["entry_locked"]["reason"] == "reviewed" and records["entry_locked"]["actor"] == "data-manager"
    assert records["entry_unlocked"]["reason"] == "late lab correction"
    assert [c["field"] for c in records["entry_unlocked"]["changes"]] == ["@locked"]


def test_locking_a_draft_entry_is_409_and_says_why(monitoring, session):
    number = monitoring.enrol()
    entry = monitoring.saved(number, "vs", {"VSDAT": "2026-11-20", "HR": 96}, event="SCR", complete=False)["id"]
    before = _snapshot(session)
    assert "draft" in problem(_post(monitoring, f"/entries/{entry}/lock"), 409)["detail"]
    assert _snapshot(session) == before


def test_locking_twice_and_unlocking_an_open_entry_are_409(monitoring):
    entry = _vs(monitoring, monitoring.enrol())["id"]
    problem(_post(monitoring, f"/entries/{entry}/unlock", {"reason": "none"}), 409)
    assert _post(monitoring, f"/entries/{entry}/lock").status_code == 200
    problem(_post(monitoring, f"/entries/{entry}/lock"), 409)


# --- subject locks ---------------------------------------------------------------------------------

def test_a_locked_subject_refuses_every_write(monitoring, session):
    number = monitoring.enrol()
    vs = _vs(monitoring, number)["id"]
    dm = monitoring.saved(number, "dm", DM, event="SCR")["id"]
    assert _post(monitoring, f"/entries/{dm}/lock").status_code == 200

    locked = _post(monitoring, f"/subjects/{number}/lock", {"reason": "casebook complete"})
    assert locked.status_code == 200 and locked.get_json()["locked"] is True
    assert _cell_locked(session, vs) and _cell_locked(session, dm)

    before = _snapshot(session)
    assert number in problem(monitoring.update(vs, {**VS, "HR": 130}), 409)["detail"]
    problem(monitoring.save(number, "ps", {"PSDAT": "2026-11-20", "LANSKY": 80}, event="SCR"), 409)
    problem(monitoring.save(number, "ps", {"PSDAT": "2026-11-20", "LANSKY": 80}, event="SCR", role="coordinator_ES01"), 409)
    assert _snapshot(session) == before

    problem(_post(monitoring, f"/subjects/{number}/unlock", {"reason": " "}), 422)
    assert _snapshot(session) == before
    unlocked = _post(monitoring, f"/subjects/{number}/unlock", {"reason": "query on baseline labs"})
    assert unlocked.status_code == 200 and unlocked.get_json()["locked"] is False
    # The entry locked on its own stays locked; the other cell opens again.
    assert not _cell_locked(session, vs) and _cell_locked(session, dm)
    problem(monitoring.update(dm, {**DM, "WEIGHT": 33.0}), 409)
    assert monitoring.update(vs, {**VS, "HR": 130}).status_code == 200

    response = monitoring.client.get(f"/api/v1/subjects/{number}/audit", headers=monitoring.headers[DM_MANAGER])
    actions = {r["action"]: r for r in response.get_json()}
    assert actions["subject_locked"]["reason"] == "casebook complete"
    assert actions["subject_unlocked"]["reason"] == "query on baseline labs"


# --- who may lock ----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["investigator_ES01", "coordinator_ES01", "monitor_ES01", "statistician", "auditor"])
def test_only_data_managers_lock_and_unlock(monitoring, session, role):
    number = monitoring.enrol()
    entry = _vs(monitoring, number)["id"]
    other = _vs(monitoring, monitoring.enrol())["id"]
    assert _post(monitoring, f"/entries/{other}/lock").status_code == 200
    before = _snapshot(session)
    for path, body in ((f"/entries/{entry}/lock", {}), (f"/entries/{other}/unlock", {"reason": "r"}),
                       (f"/subjects/{number}/lock", {}), (f"/subjects/{number}/unlock", {"reason": "r"}),
                       ("/data-cuts", {"name": "c1", "cutoff_at": "2026-11-20T09:00:00+00:00", "reason": "r"}),
                       ("/study/lock", {"reason": "r"}), ("/study/unlock", {"reason": "r"})):
        problem(_post(monitoring, path, body, role=role), 403)
    assert _snapshot(session) == before


def test_another_sites_locked_data_is_404_for_site_roles(monitoring, session):
    number = monitoring.enrol()
    entry = _vs(monitoring, number)["id"]
    assert _post(monitoring, f"/entries/{entry}/lock").status_code == 200
    assert _post(monitoring, f"/subjects/{number}/lock").status_code == 200
    before = _snapshot(session)
    # The scope check answers first: the lock is no oracle for another site's data.
    etag = monitoring.client.get(f"/api/v1/entries/{entry}", headers=monitoring.headers[DM_MANAGER]).headers["ETag"]
    body = {"data": {**VS, "HR": 120}, "complete": True, "reason": "correction"}
    problem(monitoring.client.put(f"/api/v1/entries/{entry}", json=body,
                                  headers={**monitoring.headers["investigator_IT01"], "If-Match": etag}), 404)
    problem(monitoring.save(number, "dm", DM, event="SCR", role="coordinator_IT01"), 404)
    problem(_post(monitoring, f"/entries/{uuid.uuid4()}/lock"), 404)
    problem(_post(monitoring, "/subjects/ES01-9999/lock"), 404)
    assert _snapshot(session) == before


# --- data cuts -------------------------------------------------------------------------------------

def test_a_data_cut_freezes_entries_created_up_to_its_cutoff(monitoring, session, fake_clock):
    number = monitoring.enrol()
    early_body = _vs(monitoring, number)
    early = early_body["id"]
    draft = monitoring.saved(number, "ps", {"PSDAT": "2026-11-20"}, event="SCR", complete=False)["id"]
    fake_clock.advance(minutes=1)
    cutoff = fake_clock.now
    fake_clock.advance(minutes=1)
    late = monitoring.saved(number, "dm", DM, event="SCR")["id"]

    response = _post(monitoring, "/data-cuts", {"name": "interim-1", "cutoff_at": cutoff.isoformat(), "reason": "DSMB interim"})
    assert response.status_code == 201, response.get_json()
    cut = response.get_json()
    assert cut["entry_count"] == 2 and response.headers["Location"].endswith(cut["id"])

    body = problem(monitoring.update(early, {**VS, "HR": 120}), 409)
    assert "interim-1" in body["detail"] and body["data_cut"] == "interim-1"
    problem(monitoring.update(draft, {"PSDAT": "2026-11-20", "LANSKY": 80}), 409)
    assert monitoring.update(late, {**DM, "WEIGHT": 33.0}).status_code == 200
    assert _cell_locked(session, early) and not _cell_locked(session, late)

    detail = monitoring.client.get(f"/api/v1/data-cuts/{cut['id']}", headers=monitoring.headers["statistician"]).get_json()
    assert detail["entries_per_form"] == {"ps": 1, "vs": 1} and detail["name"] == "interim-1"
    listing = monitoring.client.get("/api/v1/data-cuts", headers=monitoring.headers["auditor"]).get_json()
    assert [c["name"] for c in listing] == ["interim-1"]
    problem(monitoring.client.get("/api/v1/data-cuts", headers=monitoring.headers["investigator_ES01"]), 403)
    problem(monitoring.client.get(f"/api/v1/data-cuts/{uuid.uuid4()}", headers=monitoring.headers[DM_MANAGER]), 404)

    snapshot = _cut_entries(monitoring, session, cut["id"])
    assert [(s.form_id, s.status) for s in snapshot] == [("ps", "draft"), ("vs", "complete")]
    assert snapshot[1].values == early_body["data"] and snapshot[1].subject == number and snapshot[1].site == "ES01"
    records = session.scalars(sa.select(AuditRecord).where(AuditRecord.chain == locking.STUDY_CHAIN)).all()
    assert [(r.action, r.reason) for r in records] == [("data_cut_created", "DSMB interim")]


def test_the_snapshot_stays_after_unlock_and_edit(monitoring, session, fake_clock):
    number = monitoring.enrol()
    entry = _vs(monitoring, number)["id"]
    fake_clock.advance(minutes=1)
    cut = _post(monitoring, "/data-cuts", {"name": "primary", "cutoff_at": fake_clock.now.isoformat(),
                                            "reason": "primary analysis"}).get_json()
    before = _cut_entries(monitoring, session, cut["id"])

    problem(_post(monitoring, f"/entries/{entry}/unlock", {"reason": ""}), 422)
    unlocked = _post(monitoring, f"/entries/{entry}/unlock", {"reason": "source document found"})
    assert unlocked.status_code == 200 and unlocked.get_json()["frozen_by_cut"] is None
    assert monitoring.update(entry, {**VS, "HR": 101}).status_code == 200

    after = _cut_entries(monitoring, session, cut["id"])
    assert after == before and after[0].values["HR"] == 96
    assert monitoring.entry(entry)["data"]["HR"] == 101
    unlock = next(r for r in _audit(monitoring, entry) if r["action"] == "entry_unlocked")
    assert unlock["reason"] == "source document found"
    assert unlock["changes"] == [{"field": "@frozen_by_cut", "old": cut["id"], "new": None}]


def test_a_past_cutoff_reconstructs_the_values_of_that_time(monitoring, session, fake_clock):
    number = monitoring.enrol()
    original = _vs(monitoring, number)
    vs = original["id"]
    ps = monitoring.saved(number, "ps", {"PSDAT": "2026-11-20"}, event="SCR", complete=False)["id"]
    fake_clock.advance(minutes=1)
    cutoff = fake_clock.now
    fake_clock.advance(minutes=1)
    without_height = {key: value for key, value in VS.items() if key != "HEIGHT"}
    assert monitoring.update(vs, {**without_height, "HR": 110}).status_code == 200
    assert monitoring.update(ps, {"PSDAT": "2026-11-20", "LANSKY": 90}).status_code == 200
    assert _post(monitoring, f"/entries/{vs}/lock").status_code == 200
    fake_clock.advance(minutes=1)

    first = _post(monitoring, "/data-cuts", {"name": "as-of-t0", "cutoff_at": cutoff.isoformat(), "reason": "r"})
    assert first.status_code == 201
    then = {s.form_id: s for s in _cut_entries(monitoring, session, first.get_json()["id"])}
    assert then["vs"].values == original["data"] and then["vs"].entry_version == 1 and then["vs"].status == "complete"
    assert then["ps"].values == {"PSDAT": "2026-11-20"} and then["ps"].status == "draft" and then["ps"].entry_version == 1

    # A later cut of the same entries sees the changes (locks and freezes are no new data versions).
    second = _post(monitoring, "/data-cuts", {"name": "now", "cutoff_at": fake_clock.now.isoformat(), "reason": "r"})
    now = {s.form_id: s for s in _cut_entries(monitoring, session, second.get_json()["id"])}
    assert now["vs"].values["HR"] == 110 and "HEIGHT" not in now["vs"].values and now["vs"].entry_version == 2
    assert now["ps"].values["LANSKY"] == 90 and now["ps"].status == "complete"
    session.expire_all()
    assert now["ps"].entry_version == session.get(Entry, uuid.UUID(ps)).version == 2

    _assert_audit_verifies(session, monitoring)
    # The first cut's snapshot did not move.
    assert {s.form_id: s for s in _cut_entries(monitoring, session, first.get_json()["id"])} == then


def test_bad_data_cuts_are_refused(monitoring, session, fake_clock):
    _vs(monitoring, monitoring.enrol())
    now = fake_clock.now
    assert _post(monitoring, "/data-cuts", {"name": "dup", "cutoff_at": now.isoformat(), "reason": "r"}).status_code == 201
    before = _snapshot(session), count_rows(session, "data_cuts"), count_rows(session, "data_cut_entries")
    assert "dup" in problem(_post(monitoring, "/data-cuts", {"name": "dup", "cutoff_at": now.isoformat(), "reason": "r"}), 409)["detail"]
    future = (now + timedelta(minutes=5)).isoformat()
    cases = [({"name": "f", "cutoff_at": future, "reason": "r"}, "/cutoff_at"),
             ({"name": "n", "cutoff_at": "2026-11-20T09:00:00", "reason": "r"}, "/cutoff_at"),
             ({"name": "b", "cutoff_at": now.isoformat(), "reason": "  "}, "/reason"),
             ({"name": " ", "cutoff_at": now.isoformat(), "reason": "r"}, "/name"),
             ({"name": "m", "cutoff_at": now.isoformat()}, "/reason"),
             ({"name": "x", "cutoff_at": now.isoformat(), "reason": "r", "extra": 1}, "/extra")]
    for body, pointer in cases:
        errors = problem(_post(monitoring, "/data-cuts", body), 422)["errors"]
        assert pointer in {e["pointer"] for e in errors}, (body, errors)
    assert (_snapshot(session), count_rows(session, "data_cuts"), count_rows(session, "data_cut_entries")) == before


# --- the study lock --------------------------------------------------------------------------------

def test_the_study_lock_blocks_writes_and_enrolment(monitoring, session):
    number = monitoring.enrol()
    entry = _vs(monitoring, number)["id"]
    state = monitoring.client.get("/api/v1/study/lock", headers=monitoring.headers["investigator_ES01"])
    assert state.status_code == 200 and state.get_json()["locked"] is False

    problem(_post(monitoring, "/study/lock", {"reason": "  "}), 422)
    locked = _post(monitoring, "/study/lock", {"reason": "last follow-up visit done"})
    assert locked.status_code == 200 and locked.get_json()["locked"] is True
    problem(_post(monitoring, "/study/lock", {"reason": "again"}), 409)
    state = monitoring.client.get("/api/v1/study/lock", headers=monitoring.headers["monitor_IT01"]).get_json()
    assert state["locked"] is True and state["reason"] == "last follow-up visit done" and state["locked_by"] == "data-manager"

    before = _snapshot(session)
    refused = problem(monitoring.update(entry, {**VS, "HR": 120}), 409)["detail"]
    assert refused.startswith("The study is locked (since ")
    # A new entry reads the study lock with its subject; it is refused with the same words.
    assert problem(monitoring.save(number, "dm", DM, event="SCR"), 409)["detail"] == refused
    body = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    problem(monitoring.client.post("/api/v1/subjects", json=body, headers=monitoring.headers["investigator_ES01"]), 409)
    problem(_post(monitoring, "/study/unlock", {}), 422)
    assert _snapshot(session) == before

    assert _post(monitoring, "/study/unlock", {"reason": "late SAE follow-up"}).status_code == 200
    problem(_post(monitoring, "/study/unlock", {"reason": "again"}), 409)
    assert monitoring.update(entry, {**VS, "HR": 120}).status_code == 200
    monitoring.enrol()
    records = session.scalars(sa.select(AuditRecord).where(AuditRecord.chain == locking.STUDY_CHAIN)
                              .order_by(AuditRecord.seq)).all()
    _assert_audit_verifies(session, monitoring)
    assert [(r.action, r.reason) for r in records] == [("study_locked", "last follow-up visit done"),
                                                       ("study_unlocked", "late SAE follow-up")]


def test_a_cut_rebuilds_encrypted_values_and_keeps_them_sealed(client, staff, session, fake_clock):
    """Demo forms: vitals.VSCOMM is encrypted; the value as of the cut-off comes from the encrypted audit trail."""
    from conftest import bearer, login

    inv, dm = bearer(login(client, staff["investigator"])), bearer(login(client, staff["data_manager"]))
    subject = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    number = client.post("/api/v1/subjects", json=subject, headers=inv).get_json()["number"]
    vitals = {"VSDAT": "2026-11-10", "TEMP": 37.2, "HR": 110, "SBP": 100, "DBP": 60, "SPO2": 98}
    body = {"form": "vitals", "event": "SCR", "complete": True, "data": {**vitals, "VSCOMM": "CANARY-BEFORE-CUT"}}
    created = client.post(f"/api/v1/subjects/{number}/entries", json=body, headers=inv)
    fake_clock.advance(minutes=1)
    cutoff = fake_clock.now
    fake_clock.advance(minutes=1)
    changed = client.put(created.headers["Location"], headers={**inv, "If-Match": created.headers["ETag"]},
                         json={"data": {**vitals, "VSCOMM": "CANARY-AFTER-CUT"}, "complete": True, "reason": "typo"})
    assert changed.status_code == 200

    cut = client.post("/api/v1/data-cuts", json={"name": "c", "cutoff_at": cutoff.isoformat(), "reason": "r"}, headers=dm)
    assert cut.status_code == 201, cut.get_json()
    stored = session.scalars(sa.select(DataCutEntry.data)).one()
    assert "CANARY" not in repr(stored) and set(stored["VSCOMM"]) == {"sealed"}
    (snapshot,) = _read_cut(session, cut.get_json()["id"], runtime.of(session))
    assert snapshot.values["VSCOMM"] == "CANARY-BEFORE-CUT" and snapshot.entry_version == 1



def test_cut_entries_come_in_a_stable_order(monitoring, session, fake_clock):
    first, second = monitoring.enrol(), monitoring.enrol()
    rome = monitoring.enrol(site="IT01")
    monitoring.saved(second, "dm", DM, event="SCR")
    monitoring.saved(rome, "vs", VS, event="SCR", role="investigator_IT01")
    _vs(monitoring, first)
    monitoring.saved(first, "dm", DM, event="SCR")
    _vs(monitoring, second)
    fake_clock.advance(minutes=1)
    cut = _post(monitoring, "/data-cuts", {"name": "ordered", "cutoff_at": fake_clock.now.isoformat(), "reason": "r"})
    listed = [(s.subject, s.site, s.form_id) for s in _cut_entries(monitoring, session, cut.get_json()["id"])]
    assert listed == [(first, "ES01", "dm"), (first, "ES01", "vs"), (second, "ES01", "dm"), (second, "ES01", "vs"),
                      (rome, "IT01", "vs")]
    assert listed == [(s.subject, s.site, s.form_id) for s in _cut_entries(monitoring, session, cut.get_json()["id"])]
