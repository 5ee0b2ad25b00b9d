"""Source data verification through the API: the study file's per-form requirement, item and whole-entry
marks by a site's monitor, clearing by later changes (audited), and the progress report."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from conftest import count_rows, problem
from edc.ecrf import check_definitions, load_study
from edc.models.entries import Entry, FormStatus
from trial.conftest import TRIAL_FORMS
from trial.test_baseline_forms import VS
from trial.test_safety_forms import ae
from trial.test_treatment_forms import CM

MONITOR = "monitor_ES01"


def vs_entry(monitoring, number=None, *, complete=True, site="ES01") -> dict:
    number = number or monitoring.enrol(site=site)
    return monitoring.saved(number, "vs", VS, event="SCR", complete=complete, role=f"investigator_{site}")


def verify(monitoring, entry_id, body, role=MONITOR):
    return monitoring.client.post(f"/api/v1/entries/{entry_id}/sdv", json=body, headers=monitoring.headers[role])


def sdv_of(monitoring, entry_id, role=MONITOR) -> dict:
    response = monitoring.client.get(f"/api/v1/entries/{entry_id}/sdv", headers=monitoring.headers[role])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def cell_verified(session, entry_id) -> bool:
    session.expire_all()
    entry = session.get(Entry, uuid.UUID(entry_id))
    return session.get(FormStatus, (entry.subject_id, entry.event_key, entry.form_id)).verified


# ------------------------------------------------------------------------------------ the study file


def test_study_file_sets_sdv_per_form_with_all_as_default():
    study = load_study(TRIAL_FORMS)
    assert study.sdv_requirement("vs") == "all"            # not listed: the default
    assert study.sdv_requirement("cm") == "none" and study.sdv_requirement("dv") == "none"
    assert "EXDOSE" in study.sdv_requirement("inf") and "AETOXGR" in study.sdv_requirement("ae")


@pytest.mark.parametrize("change, message", [
    (("    cm: none", "    cm: none\n    nosuch: all"), "sdv: unknown form 'nosuch'"),
    (("EXWT, EXDOSE", "EXWT, NOSUCH"), "sdv: form 'inf' has no item 'NOSUCH'"),
    (("    cm: none", "    cm: some"), "is not all, none or a list of item ids"),
    (("  default: all", "  default: most"), "'most' is not one of all, none"),
])
def test_forms_check_names_bad_sdv_settings(tmp_path, change, message):
    root = Path(shutil.copytree(TRIAL_FORMS, tmp_path / "forms"))
    study_file = root / "study.yaml"
    assert change[0] in study_file.read_text()
    study_file.write_text(study_file.read_text().replace(*change))
    problems = check_definitions(root)
    assert any(message in p and "study.yaml" in p for p in problems), problems


def test_forms_check_command_reports_an_unknown_sdv_item(tmp_path, runner):
    root = Path(shutil.copytree(TRIAL_FORMS, tmp_path / "forms"))
    study_file = root / "study.yaml"
    study_file.write_text(study_file.read_text().replace("EXWT, EXDOSE", "EXWT, NOSUCH"))
    result = runner.invoke(args=["edc", "forms", "check", "--dir", str(root)])
    assert result.exit_code == 1 and "sdv: form 'inf' has no item 'NOSUCH'" in result.output


# ------------------------------------------------------------------------------------ marking


def test_items_then_the_rest_give_the_whole_entry_mark(monitoring, session):
    entry = vs_entry(monitoring)
    first = verify(monitoring, entry["id"], {"items": ["VSDAT", "TEMP"]})
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert body["requirement"] == "all" and body["verified"] is False
    assert {m["item"] for m in body["marks"]} == {"VSDAT", "TEMP"}
    assert "VSHYPOT" not in body["required_items"]          # derived: nothing to verify at source
    assert not cell_verified(session, entry["id"])
    rest = [item for item in body["required_items"] if item not in ("VSDAT", "TEMP")]
    done = verify(monitoring, entry["id"], {"items": rest}).get_json()
    assert done["verified"] is True
    assert None in {m["item"] for m in done["marks"]}
    assert all(m["verified_by"] == "monitor-es01" and m["entry_version"] == 1 for m in done["marks"])
    assert cell_verified(session, entry["id"])
    actions = [r["action"] for r in monitoring.client.get(f"/api/v1/entries/{entry['id']}/audit",
                                                          headers=monitoring.headers["auditor"]).get_json()]
    assert actions.count("sdv_verified") == 2


def test_whole_entry_at_once_and_repeats_add_nothing(monitoring, session):
    entry = vs_entry(monitoring)
    body = verify(monitoring, entry["id"], {"entry": True}).get_json()
    assert body["verified"] and {m["item"] for m in body["marks"]} == {*body["required_items"], None}
    before = count_rows(session, "sdv_marks")
    again = verify(monitoring, entry["id"], {"entry": True})
    assert again.status_code == 200 and count_rows(session, "sdv_marks") == before
    assert sdv_of(monitoring, entry["id"], role="investigator_ES01")["verified"] is True   # site staff read it


def test_draft_entry_is_not_verified(monitoring, session):
    entry = vs_entry(monitoring, complete=False)
    problem(verify(monitoring, entry["id"], {"entry": True}), 409)
    problem(verify(monitoring, entry["id"], {"items": ["TEMP"]}), 409)
    assert count_rows(session, "sdv_marks") == 0


@pytest.mark.parametrize("body, pointer", [
    ({"items": ["TEMP", "NOSUCH"]}, "/items/1"),
    ({"items": []}, "/items"),
    ({"items": ["TEMP"], "entry": True}, "/"),
    ({}, "/"),
    ({"entry": False}, "/"),
    ({"entry": True, "note": "x"}, "/note"),
])
def test_bad_requests_are_422_and_write_nothing(monitoring, session, body, pointer):
    entry = vs_entry(monitoring)
    before = count_rows(session, "audit_records")
    errors = problem(verify(monitoring, entry["id"], body), 422)["errors"]
    assert any(e["pointer"].startswith(pointer) for e in errors), errors
    assert count_rows(session, "sdv_marks") == 0 and count_rows(session, "audit_records") == before


@pytest.mark.parametrize("role, status", [
    ("monitor_IT01", 404), ("investigator_ES01", 403), ("coordinator_ES01", 403), ("data_manager", 403),
    ("auditor", 403),
])
def test_only_the_sites_monitor_verifies(monitoring, session, role, status):
    entry = vs_entry(monitoring)
    problem(verify(monitoring, entry["id"], {"entry": True}, role=role), status)
    assert count_rows(session, "sdv_marks") == 0


def test_other_sites_monitor_cannot_read_marks(monitoring):
    entry = vs_entry(monitoring)
    problem(monitoring.client.get(f"/api/v1/entries/{entry['id']}/sdv", headers=monitoring.headers["monitor_IT01"]), 404)


# ------------------------------------------------------------------------------------ clearing


def test_change_to_a_verified_item_clears_it_and_the_entry_mark_audited(monitoring, session):
    entry = vs_entry(monitoring)
    verify(monitoring, entry["id"], {"entry": True})
    assert cell_verified(session, entry["id"])
    response = monitoring.update(entry["id"], {**VS, "TEMP": 37.2}, reason="transcription error")
    assert response.status_code == 200, response.get_json()
    state = sdv_of(monitoring, entry["id"])
    assert state["verified"] is False
    assert {m["item"] for m in state["cleared"]} == {"TEMP", None}
    assert "TEMP" not in {m["item"] for m in state["marks"]} and "HR" in {m["item"] for m in state["marks"]}
    assert not cell_verified(session, entry["id"])
    trail = monitoring.client.get(f"/api/v1/entries/{entry['id']}/audit", headers=monitoring.headers["auditor"]).get_json()
    change = next(r for r in trail if r["action"] == "entry_updated")
    cleared = next(r for r in trail if r["action"] == "sdv_cleared")
    assert {m["cleared_by_change"] for m in state["cleared"]} == {change["id"]}
    assert {c["field"] for c in cleared["changes"]} == {"sdv:TEMP", "sdv:@entry"}
    assert change["id"] in cleared["reason"]
    # Verified again at the new version.
    again = verify(monitoring, entry["id"], {"items": ["TEMP"]}).get_json()
    assert again["verified"] is True and {m["entry_version"] for m in again["marks"] if m["item"] == "TEMP"} == {2}


def test_change_to_an_unverified_item_keeps_item_marks(monitoring):
    entry = vs_entry(monitoring)
    verify(monitoring, entry["id"], {"items": ["VSDAT"]})
    monitoring.update(entry["id"], {**VS, "HR": 101})
    state = sdv_of(monitoring, entry["id"])
    assert [m["item"] for m in state["marks"]] == ["VSDAT"] and state["cleared"] == []


def test_critical_item_forms_need_only_their_critical_items(monitoring):
    number = monitoring.enrol()
    event = monitoring.saved(number, "ae", ae())
    state = sdv_of(monitoring, event["id"])
    assert state["requirement"] == "critical"
    assert set(state["required_items"]) == {"AETERM", "AESTDAT", "AEENDAT", "AETOXGR", "AESER", "AEREL", "AEOUT", "AESDTH"}
    assert verify(monitoring, event["id"], {"items": state["required_items"]}).get_json()["verified"] is True
    # A change to an item outside the critical list keeps the entry verified; a critical one clears it.
    monitoring.update(event["id"], ae(AECONTRT="N"))
    assert sdv_of(monitoring, event["id"])["verified"] is True
    monitoring.update(event["id"], ae(AECONTRT="N", grade=3))
    after = sdv_of(monitoring, event["id"])
    assert after["verified"] is False and {m["item"] for m in after["cleared"]} == {"AETOXGR", None}


def test_forms_without_sdv_can_still_be_verified_whole(monitoring):
    cm = monitoring.saved(monitoring.enrol(), "cm", CM)
    state = sdv_of(monitoring, cm["id"])
    assert state["requirement"] == "none" and state["required_items"] == []
    assert verify(monitoring, cm["id"], {"entry": True}).get_json()["verified"] is True
    monitoring.update(cm["id"], {**CM, "CMDOSE": 250.0})
    assert sdv_of(monitoring, cm["id"])["verified"] is False


# ------------------------------------------------------------------------------------ progress


def progress(monitoring, role=MONITOR, **params):
    return monitoring.client.get("/api/v1/sdv/progress", query_string=params, headers=monitoring.headers[role])


def test_progress_per_site_and_form_is_site_scoped(monitoring):
    one = vs_entry(monitoring)
    two = vs_entry(monitoring)
    vs_entry(monitoring, site="IT01")
    monitoring.saved(one["subject"], "cm", CM)
    verify(monitoring, one["id"], {"entry": True})
    verify(monitoring, two["id"], {"items": ["TEMP", "HR"]})
    rows = progress(monitoring).get_json()["items"]
    assert {(r["site"], r["form"]) for r in rows} == {("ES01", "vs")}     # cm needs no SDV; IT01 is not theirs
    vs = rows[0]
    required = len(sdv_of(monitoring, one["id"])["required_items"])
    assert (vs["requirement"], vs["entries"], vs["entries_verified"], vs["items_verified"]) == ("all", 2, 1, required + 2)
    everything = progress(monitoring, "data_manager").get_json()["items"]
    assert {(r["site"], r["entries"], r["entries_verified"]) for r in everything} == {("ES01", 2, 1), ("IT01", 1, 0)}
    assert [r["site"] for r in progress(monitoring, "data_manager", site="IT01").get_json()["items"]] == ["IT01"]
    problem(progress(monitoring, site="IT01"), 404)
    problem(progress(monitoring, site="nope"), 422)
    problem(progress(monitoring, "statistician"), 403)
