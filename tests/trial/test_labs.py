"""The local laboratory form (lb) through the HTTP API: range flags, CTCAE laboratory grades and the range set
applied, from the subject's site laboratory, age band and the range version in force on the sample date
(forms/reference/lab_ranges.yaml, ctcae_v5.yaml; trial.md §4.1-4.2, §8.2 LB); hard limits; the form's checks.

The clock is fixed at 2026-11-20 (tests/trial/conftest.py). The default subject (ES01, born April 2016) is
127 months old on 2026-11-03: band 72-<144 months. ES01's laboratory has two range sets, from 2024-01-01 and
from 2026-03-01 (ALT upper limit 30 then 25 U/L in that band).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import count_rows, problem
from edc import runtime
from edc.exports.csv_files import write_csv
from edc.exports.source import Selection
from edc.extensions import db

LB = {"LBDAT": "2026-11-03", "WBC": 1.2, "ANC": 0.4, "LYM": 0.3, "HGB": 7.9, "PLT": 20, "SODIUM": 138, "K": 2.9,
      "CREAT": 0.5, "ALT": 28, "AST": 30, "BILI": 0.6, "FIBRINO": 45, "INR": 1.3, "CRP": 85.0, "FERRITIN": 2500,
      "IGG": 300}


def lb(**changes):
    return {**LB, **changes}


def refused(trial, session, number, data, pointer, **kwargs):
    before = (count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records"))
    errors = problem(trial.save(number, "lb", data, event="SCR", **kwargs), 422)["errors"]
    assert pointer in {error["pointer"] for error in errors}, errors
    assert (count_rows(session, "entries"), count_rows(session, "queries"), count_rows(session, "audit_records")) == before


def opened(body, check):
    return [query for query in body["queries_opened"] if query["check"] == check]


def open_on(trial, number, entry_id, check):
    return [q for q in trial.open_queries(number, check) if q["entry_id"] == entry_id]


def answered(trial, number, entry_id, check):
    return [q for q in trial.queries(number) if q["entry_id"] == entry_id and q["check"] == check
            and q["state"] == "answered"]


def test_lb_derives_flags_grades_and_the_range_set_applied(trial):
    number = trial.enrol()
    body = trial.saved(number, "lb", LB, event="SCR")
    data = body["data"]
    assert data["LBNRREF"] == "ES01_CDB 2026-03-01 72-<144 months"
    assert (data["ANC_NRIND"], data["ANC_TOXGR"]) == ("LOW", 4)           # < 0.5 x10^9/L
    assert (data["WBC_NRIND"], data["WBC_TOXGR"]) == ("LOW", 3)           # < 2.0
    assert (data["LYM_NRIND"], data["LYM_TOXGR"]) == ("LOW", 3)           # < 0.5
    assert (data["HGB_NRIND"], data["HGB_TOXGR"]) == ("LOW", 3)           # < 8.0 g/dL
    assert (data["PLT_NRIND"], data["PLT_TOXGR"]) == ("LOW", 4)           # < 25
    assert (data["K_NRIND"], data["K_TOXGR"]) == ("LOW", 3)               # hypokalaemia < 3.0 mmol/L
    assert (data["SODIUM_NRIND"], data["SODIUM_TOXGR"]) == ("NORMAL", 0)
    assert (data["ALT_NRIND"], data["ALT_TOXGR"]) == ("HIGH", 1)          # ULN 25 from 2026-03-01
    assert (data["AST_NRIND"], data["AST_TOXGR"]) == ("NORMAL", 0)
    assert (data["FIBRINO_NRIND"], data["FIBRINO_TOXGR"]) == ("LOW", 4)   # < 50 mg/dL
    assert (data["INR_NRIND"], data["INR_TOXGR"]) == ("HIGH", 1)          # > 1.2
    assert (data["CRP_NRIND"], data["FERRITIN_NRIND"], data["IGG_NRIND"]) == ("HIGH", "HIGH", "LOW")
    assert "IGG_TOXGR" not in data and "HGB" in data and "ALB_NRIND" not in data
    assert body["queries_opened"] == []
    # The stored entry holds the derived values (what the cm form's IVIG rule and exports read).
    stored = trial.entry(body["id"])["data"]
    assert stored["IGG"] == 300 and stored["LBDAT"] == "2026-11-03" and stored["ANC_TOXGR"] == 4


def test_the_range_set_in_force_on_the_sample_date_applies(trial):
    number = trial.enrol()
    before = trial.saved(number, "lb", {"LBDAT": "2026-02-28", "ALT": 28}, event="UNS")
    after = trial.saved(number, "lb", {"LBDAT": "2026-03-01", "ALT": 28}, event="UNS", instance=2)
    assert before["data"]["LBNRREF"] == "ES01_CDB 2024-01-01 72-<144 months"
    assert (before["data"]["ALT_NRIND"], before["data"]["ALT_TOXGR"]) == ("NORMAL", 0)      # ULN 30
    assert after["data"]["LBNRREF"] == "ES01_CDB 2026-03-01 72-<144 months"
    assert (after["data"]["ALT_NRIND"], after["data"]["ALT_TOXGR"]) == ("HIGH", 1)          # ULN 25


@pytest.mark.parametrize("birth_month, band, wbc_flag", [
    (12, "12-<72 months", "NORMAL"),      # born Dec 2020: 71 months on 2026-11-03 (WBC up to 15.5)
    (11, "72-<144 months", "HIGH"),       # born Nov 2020: 72 months, the next band (WBC up to 13.5)
])
def test_the_subjects_age_band_at_the_sample_date_applies(trial, birth_month, band, wbc_flag):
    number = trial.enrol(birth_year=2020, birth_month=birth_month)
    body = trial.saved(number, "lb", {"LBDAT": "2026-11-03", "WBC": 14.5}, event="SCR")
    assert body["data"]["LBNRREF"] == f"ES01_CDB 2026-03-01 {band}"
    assert (body["data"]["WBC_NRIND"], body["data"]["WBC_TOXGR"]) == (wbc_flag, 0)


def test_each_site_uses_its_own_laboratory(trial):
    number = trial.enrol(site="IT01", consent_date="2026-11-02")
    body = trial.saved(number, "lb", {"LBDAT": "2026-11-03", "CRP": 5.5}, event="SCR", role="investigator_IT01")
    assert body["data"]["LBNRREF"] == "IT01_OPBG 2024-01-01 72-<144 months"
    assert body["data"]["CRP_NRIND"] == "NORMAL"                          # IT01 CRP up to 6 mg/L (ES01: 5)
    es01 = trial.saved(trial.enrol(), "lb", {"LBDAT": "2026-11-03", "CRP": 5.5}, event="SCR")
    assert es01["data"]["CRP_NRIND"] == "HIGH"


def test_a_correction_recomputes_the_flags_and_grade(trial):
    number = trial.enrol()
    body = trial.saved(number, "lb", lb(), event="SCR")
    response = trial.update(body["id"], lb(ANC=1.6, WBC=4.0), reason="transcription error")
    assert response.status_code == 200, response.get_json()
    data = trial.entry(body["id"])["data"]
    assert (data["ANC_NRIND"], data["ANC_TOXGR"], data["WBC_TOXGR"]) == ("NORMAL", 0, 1)


def test_a_result_coded_not_done_derives_nothing(trial):
    number = trial.enrol()
    body = trial.saved(number, "lb", {"LBDAT": "2026-11-03", "ANC": {"missing": "ND"}}, event="SCR")
    assert body["data"]["ANC"] == {"missing": "ND"} and "ANC_NRIND" not in body["data"] and "ANC_TOXGR" not in body["data"]


@pytest.mark.parametrize("changes, pointer", [
    ({"ANC": -0.1}, "/data/ANC"),                 # negative counts are impossible
    ({"PLT": -1}, "/data/PLT"),
    ({"WBC": -0.5}, "/data/WBC"),
    ({"K": 25.0}, "/data/K"),                     # implausible
    ({"HGB": 40.0}, "/data/HGB"),
    ({"LBDAT": None}, "/data/LBDAT"),             # the sample date is required
    ({"LBDAT": {"missing": "ND"}}, "/data/LBDAT"),
    ({"LBDAT": "2026-11-21"}, "/data/LBDAT"),     # not in the future
    ({"ANC_NRIND": "LOW"}, "/data/ANC_NRIND"),    # derived by the server only
    ({"ANC_TOXGR": 0}, "/data/ANC_TOXGR"),
    ({"LBNRREF": "ES01_CDB"}, "/data/LBNRREF"),
])
def test_impossible_values_are_refused(trial, session, changes, pointer):
    refused(trial, session, trial.enrol(), lb(**changes), pointer)


@pytest.mark.parametrize("check, changes, items", [
    ("LB_ANC_WBC", {"ANC": 3.5, "WBC": 3.0}, {"ANC", "WBC"}),
    ("LB_LYM_WBC", {"LYM": 3.5, "WBC": 3.0, "ANC": 0.4}, {"LYM", "WBC"}),
])
def test_a_differential_above_the_white_count_opens_a_query(trial, check, changes, items):
    number = trial.enrol()
    body = trial.saved(number, "lb", lb(**changes), event="SCR")
    assert {query["item"] for query in opened(body, check)} == items
    trial.update(body["id"], lb())
    assert not open_on(trial, number, body["id"], check) and answered(trial, number, body["id"], check)


@pytest.mark.parametrize("text", ["call 612345678", "mail jane.doe@example.org"])
def test_identifiers_in_the_comment_open_a_query(trial, text):
    """X12: e-mail addresses and long digit runs in free text."""
    number = trial.enrol()
    body = trial.saved(number, "lb", lb(LBCOM=text), event="SCR")
    assert [query["item"] for query in opened(body, "LB_COM_ID")] == ["LBCOM"]
    trial.update(body["id"], lb(LBCOM="Haemolysed sample, repeated"))
    assert not open_on(trial, number, body["id"], "LB_COM_ID") and answered(trial, number, body["id"], "LB_COM_ID")


def test_viral_loads_are_asked_only_when_detected(trial, session):
    number = trial.enrol()
    refused(trial, session, number, lb(CMVPCR="NOTDET", CMVLOAD=1200), "/data/CMVLOAD")
    body = trial.saved(number, "lb", lb(CMVPCR="DET", CMVLOAD=1200, HBSAG="NEG", HIVSER="NEG"), event="SCR")
    assert body["data"]["CMVLOAD"] == 1200


# ================================================================ CTCAE v5.0 grades, case by case (ctcae_cases.csv)
#
# tests/trial/ctcae_cases.csv is the clinician's table: one row per case, the CTCAE v5.0 wording it tests and the
# grade written out from that wording (never from the engine's thresholds), with what decides it (x ULN, x LLN,
# x baseline, an absolute value, NONE for grade 0). Each analyte is entered in the one unit the form accepts (the
# study unit on the item); the CTCAE wording is quoted in that unit where CTCAE gives it. Scenarios (ES01's
# laboratory, range set of 2026-03-01):
#   child:             born April 2016, 127 months on 2026-11-03 (band 72-<144 months), no baseline
#   teenager:          born January 2012, 178 months (band 144-<216 months: bilirubin ULN 1.2 mg/dL)
#   no range:          the child's sample of 2023-06-01, before the laboratory's first range set
#   baseline normal:   the child with a screening sample (2026-11-02) inside the ranges
#   baseline abnormal: the child with a screening sample outside them (creatinine 0.20 is below its range: it
#                      tests the "x baseline" criterion, which does not depend on the baseline's normality)
# The cases of a scenario are packed into as few lb entries as their items allow, saved over HTTP at unscheduled
# visits, and each derived grade and criterion compared with the table.

CASES_FILE = Path(__file__).with_name("ctcae_cases.csv")
SAMPLE_DAY = "2026-11-03"
SCENARIOS = {
    "child": {"birth": (2016, 4), "date": SAMPLE_DAY, "baseline": None},
    "teenager": {"birth": (2012, 1), "date": SAMPLE_DAY, "baseline": None},
    "no range": {"birth": (2016, 4), "date": "2023-06-01", "baseline": None},
    "baseline normal": {"birth": (2016, 4), "date": SAMPLE_DAY,
                        "baseline": {"HGB": 13.0, "CREAT": 0.40, "ALT": 20, "AST": 30, "BILI": 0.50, "ALP": 200,
                                     "FIBRINO": 300}},
    "baseline abnormal": {"birth": (2016, 4), "date": SAMPLE_DAY,
                          "baseline": {"HGB": 16.0, "CREAT": 0.20, "ALT": 50, "AST": 60, "BILI": 2.00, "ALP": 500,
                                       "FIBRINO": 160}},
}
LABELS = {"ANC": "Neutrophils (absolute)", "WBC": "White blood cells", "LYM": "Lymphocytes (absolute)",
          "HGB": "Haemoglobin", "PLT": "Platelets", "SODIUM": "Sodium", "K": "Potassium", "CREAT": "Creatinine",
          "ALT": "Alanine aminotransferase", "ALB": "Albumin", "APTT": "Activated partial thromboplastin time",
          "FIBRINO": "Fibrinogen", "CACORR": "Calcium (total)", "LDH": "Lactate dehydrogenase"}


def read_cases() -> list[dict[str, Any]]:
    with CASES_FILE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["items"] = {name: json.loads(value) for name, value in
                        (pair.split("=") for pair in row["values"].split())}
        row["grade"] = int(row["grade"]) if row["grade"] else None
        row["decided_by"] = row["decided_by"] or None
    return rows


CASES = read_cases()


def pack(cases: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group the cases into entries whose items do not collide (first fit)."""
    entries: list[list[dict[str, Any]]] = []
    for case in cases:
        slot = next((entry for entry in entries
                     if not any(set(case["items"]) & set(other["items"]) for other in entry)), None)
        if slot is None:
            entries.append(slot := [])
        slot.append(case)
    return entries


def test_the_case_table_covers_every_graded_item_and_scenario():
    graded = {case["graded"] for case in CASES}
    assert graded == {"ANC", "WBC", "LYM", "HGB", "PLT", "SODIUM", "K", "CREAT", "ALT", "AST", "BILI", "ALP", "ALB",
                      "INR", "APTT", "FIBRINO", "CACORR", "CAION", "LDH"}
    assert {case["scenario"] for case in CASES} == set(SCENARIOS)
    assert len({case["case"] for case in CASES}) == len(CASES)


def test_ctcae_grades_agree_with_the_case_table(trial):
    """Every row of ctcae_cases.csv, one subject per scenario (one fixture: the trial accounts are costly)."""
    wrong = [problem for scenario in SCENARIOS for problem in graded_cases(trial, scenario)]
    assert wrong == []


def graded_cases(trial, scenario: str) -> list[str]:
    """Save the scenario's cases; return each disagreement with the table (and each missing range query)."""
    setting = SCENARIOS[scenario]
    number = trial.enrol(birth_year=setting["birth"][0], birth_month=setting["birth"][1])
    if setting["baseline"]:
        trial.saved(number, "lb", {"LBDAT": "2026-11-02", **setting["baseline"]}, event="SCR")
    wrong = []
    for instance, entry in enumerate(pack([case for case in CASES if case["scenario"] == scenario]), start=1):
        data = {"LBDAT": setting["date"]}
        for case in entry:
            data.update(case["items"])
        body = trial.saved(number, "lb", data, event="UNS", instance=instance)
        queries = {q["item"]: q["message"] for q in body["queries_opened"]}
        for case in entry:
            got = (body["data"].get(f"{case['graded']}_TOXGR"), body["data"].get(f"{case['graded']}_TOXBASIS"))
            if got != (case["grade"], case["decided_by"]):
                wrong.append(f"{case['case']} {case['values']} ({case['ctcae_v5_wording']}): "
                             f"expected {case['grade']} {case['decided_by']}, got {got[0]} {got[1]}")
            elif case["grade"] is None:
                expected = f"no reference range for {LABELS[case['graded']]} at ES01 on {setting['date']}"
                if queries.get(f"{case['graded']}_TOXGR") != expected:
                    wrong.append(f"{case['case']}: no query '{expected}' ({queries})")
    return wrong


def test_the_baseline_is_the_last_value_before_lymphodepletion_else_the_screening_value(trial):
    """study.yaml lab_baseline. ALT ULN 25: screening 50 is abnormal, the pre-lymphodepletion value 20 normal.
    ALT 76 is >3.0 - 5.0 x ULN (grade 2) against a normal baseline, 1.5 - 3.0 x baseline (grade 1) against 50."""
    number = trial.enrol()
    trial.saved(number, "lb", {"LBDAT": "2026-11-03", "ALT": 50}, event="SCR")
    trial.saved(number, "lb", {"LBDAT": "2026-11-10", "ALT": 20}, event="UNS")
    before_ld = trial.saved(number, "lb", {"LBDAT": "2026-11-17", "ALT": 76}, event="UNS", instance=2)
    assert (before_ld["data"]["ALT_TOXGR"], before_ld["data"]["ALT_TOXBASIS"]) == (1, "BASELINE")   # no LD yet: screening
    rows = [{"ECTRT": drug, "ECSTDAT": day, "ECDOSE": dose, "ECDOSADJ": "N"}
            for day in ("2026-11-11", "2026-11-12", "2026-11-13")
            for drug, dose in (("FLUDARABINE", 24.0), ("CYCLOPHOSPHAMIDE", 240.0))]
    trial.saved(number, "ld", {"WEIGHT": 20.0, "HEIGHT": 115.0, "EC": rows}, event="LD", complete=False)
    after_ld = trial.saved(number, "lb", {"LBDAT": "2026-11-18", "ALT": 76}, event="UNS", instance=3)
    assert (after_ld["data"]["ALT_TOXGR"], after_ld["data"]["ALT_TOXBASIS"]) == (2, "ULN")         # baseline 20 (2026-11-10)
    # The baseline sample itself, and anything before it, is graded on the range alone.
    screening = trial.entry(trial.saved(trial.enrol(), "lb", {"LBDAT": "2026-11-03", "ALT": 50}, event="SCR")["id"])
    assert (screening["data"]["ALT_TOXGR"], screening["data"]["ALT_TOXBASIS"]) == (1, "ULN")


def test_a_grade_that_needs_a_missing_range_opens_a_query_answered_once_it_can_be_derived(trial):
    number = trial.enrol()
    body = trial.saved(number, "lb", {"LBDAT": "2023-06-01", "ANC": 1.6, "INR": 1.3}, event="UNS")
    assert "ANC_TOXGR" not in body["data"] and (body["data"]["INR_TOXGR"], body["data"]["INR_TOXBASIS"]) == (1, "ABSOLUTE")
    assert [(q["item"], q["message"]) for q in body["queries_opened"]] == [
        ("ANC_TOXGR", "no reference range for Neutrophils (absolute) at ES01 on 2023-06-01")]
    check = body["queries_opened"][0]["check"]
    trial.update(body["id"], {"LBDAT": "2023-06-01", "ANC": 0.4, "INR": 1.3})
    assert trial.entry(body["id"])["data"]["ANC_TOXGR"] == 4                                    # < 0.5: no range needed
    assert not open_on(trial, number, body["id"], check) and answered(trial, number, body["id"], check)


def test_the_grade_and_what_decided_it_reach_the_fhir_and_csv_exports(trial, tmp_path):
    """ALT 151 U/L against an abnormal screening ALT of 50: >3.0 - 5.0 x baseline, grade 2 decided by the baseline."""
    number = trial.enrol()
    trial.saved(number, "lb", {"LBDAT": "2026-11-02", "ALT": 50}, event="SCR")
    trial.saved(number, "lb", {"LBDAT": "2026-11-03", "ALT": 151}, event="UNS")
    bundle = trial.client.get(f"/fhir/Patient/{number}/$everything", headers=trial.headers["statistician"]).get_json()
    alt = [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Observation"
           and entry["resource"]["code"]["coding"][0]["code"] == "1742-6"]
    graded = {o["valueQuantity"]["value"]: [c.get("valueInteger", c.get("valueCodeableConcept", {}).get("coding", [{}])[0]
                                                .get("code")) for c in o["component"]] for o in alt}
    assert graded == {50: [1, "ULN"], 151: [2, "BASELINE"]}
    app = trial.client.application
    with app.app_context():
        runtime.bind(db.session, runtime.for_app(app))
        files = {f.name: f for f in write_csv(db.session, Selection(), tmp_path)}
    with (tmp_path / "lb.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["ALT"]: (row["ALT_TOXGR"], row["ALT_TOXBASIS"]) for row in csv.DictReader(handle)}
    assert "lb.csv" in files and rows == {"50": ("1", "ULN"), "151": ("2", "BASELINE")}


def test_a_grade_whose_baseline_changes_later_is_queried_not_rewritten(trial):
    """Correcting the screening ALT from 20 (normal) to 50 (abnormal) turns the Day 3 ALT 76 from >3.0 - 5.0 x ULN
    (grade 2) into 1.5 - 3.0 x baseline (grade 1): the Day 3 entry keeps its data and gets a query."""
    number = trial.enrol()
    screening = trial.saved(number, "lb", {"LBDAT": "2026-11-02", "ALT": 20}, event="SCR")
    later = trial.saved(number, "lb", {"LBDAT": "2026-11-03", "ALT": 76}, event="UNS")
    assert later["data"]["ALT_TOXGR"] == 2 and not open_on(trial, number, later["id"], "derived_out_of_date")
    trial.update(screening["id"], {"LBDAT": "2026-11-02", "ALT": 50}, reason="transcription error")
    assert trial.entry(later["id"])["data"]["ALT_TOXGR"] == 2
    assert {q["item"] for q in open_on(trial, number, later["id"], "derived_out_of_date")} == {"ALT_TOXGR", "ALT_TOXBASIS"}
    trial.update(later["id"], {"LBDAT": "2026-11-03", "ALT": 76}, reason="derive the grade again")
    data = trial.entry(later["id"])["data"]
    assert (data["ALT_TOXGR"], data["ALT_TOXBASIS"]) == (1, "BASELINE")
    assert not open_on(trial, number, later["id"], "derived_out_of_date")
