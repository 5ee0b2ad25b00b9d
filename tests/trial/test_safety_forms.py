"""The safety forms through the HTTP API: daily CRS and ICANS grading (trial.md §3, every §3.6 worked example),
the adverse event log with its SAE supplement, the sponsor's SAE review and the death form (§4, §8.2), and
the cross-form rules X6, X7, X8, X11 and X12 (§8.3).

The clock is fixed at 2026-11-20 09:00 UTC (tests/trial/conftest.py). Ages come from the subject's birth
year and month: a subject born in January of 2026 - n is n years and 10 months old on the assessment day.
"""

from __future__ import annotations

import pytest

from conftest import count_rows, problem, project_root
from edc.ecrf import load_study

TRIAL_FORMS = str(project_root() / "forms")

DAY = "2026-11-19"
ASSESSED_AT = "2026-11-19T08:30:00+01:00"
AWARE = "2026-11-19T10:00:00+01:00"


def enrol_aged(trial, years: int) -> str:
    """A subject who is `years` years (and 10 months) old on DAY."""
    return trial.enrol(birth_year=2026 - years, birth_month=1)


def rows(session):
    return count_rows(session, "entries"), count_rows(session, "audit_records"), count_rows(session, "queries")


def pointers(response) -> set[str]:
    return {error["pointer"] for error in problem(response, 422)["errors"]}


def checks_of(body) -> set[str]:
    """The checks of the automatic queries a save opened."""
    return {q["check"] for q in body["queries"] if q["state"] == "open"}


# ================================================================ CRS-DAILY (§3.1, §3.2, §8.2)

def crs(temp=38.5, treated="N", hypotension="NONE", pressors=0, device="NONE", flow=None, *, day=DAY, grade=None,
        **changes):
    """A complete daily CRS assessment; the items a show_if would hide are left out."""
    data = {"CRSDAT": day, "TMAX": temp, "ANTIPYR": "N", "TOCI": treated, "STEROID": "N", "SBPMIN": 100,
            "HYPOT": hypotension, "NPRESS": pressors, "O2DEV": device, "CRSDEATH": "N", "ICUADM": "N"}
    if temp >= 38.0:
        data["FEVEROTH"] = "N"
    if hypotension != "NONE":
        data["HYPOTOTH"] = "N"
    if device != "NONE":
        data["HYPOXOTH"] = "N"
    if device == "NC":
        data["O2FLOW"] = flow
    if grade is not None:
        data["CRSGRINV"] = str(grade)
    return {**data, **changes}


# id: (temp °C, CRS already treated with tocilizumab/steroid, hypotension, non-vasopressin pressors, O2 device,
#      flow L/min, expected ASTCT grade)
CRS_EXAMPLES = {
    "C1": (38.5, "N", "NONE", 0, "NONE", None, 1),
    "C2": (38.2, "N", "FLUIDS", 0, "NONE", None, 2),
    "C3": (39.0, "N", "NONE", 0, "NC", 2.0, 2),
    "C4": (38.4, "N", "NONE", 0, "BLOWBY", None, 2),
    "C6": (38.6, "N", "VASO", 1, "NONE", None, 3),       # norepinephrine + vasopressin: vasopressin not counted
    "C7": (39.0, "N", "VASO", 2, "NONE", None, 4),       # norepinephrine + epinephrine
    "C9": (38.3, "N", "NONE", 0, "NC", 6.0, 2),          # <= 6 L/min is low flow
    "C10": (38.0, "N", "NONE", 0, "NONE", None, 1),      # >= 38.0 inclusive
    "C11": (37.9, "N", "NONE", 0, "NC", 2.0, 0),         # no fever: not CRS
    "C13": (36.8, "Y", "NONE", 0, "CPAP", None, 4),      # treated: fever no longer required
    "C14": (38.7, "N", "NONE", 0, "FACEMASK", None, 3),
    "C15": (38.1, "N", "FLUIDS", 0, "BIPAP", None, 4),
    "ASTCT-3.2": (38.5, "N", "VASO", 1, "NC", 2.0, 3),   # febrile, one vasopressor, low-flow cannula
}


@pytest.mark.parametrize(("temp", "treated", "hypotension", "pressors", "device", "flow", "expected"),
                         [pytest.param(*example, id=key) for key, example in CRS_EXAMPLES.items()])
def test_crs_worked_example_gives_the_astct_grade(trial, temp, treated, hypotension, pressors, device, flow, expected):
    number = trial.enrol()
    body = trial.saved(number, "crs_daily", crs(temp, treated, hypotension, pressors, device, flow, grade=expected))
    assert body["data"]["CRSGRDRV"] == expected
    assert checks_of(body) == set()


def test_crs_worked_example_C17_death_due_to_crs_is_grade_5_whatever_else_is_missing(trial):
    number = trial.enrol()
    body = trial.saved(number, "crs_daily", {"CRSDAT": DAY, "TOCI": "Y", "CRSDEATH": "Y", "CRSGRINV": "5"},
                       complete=False)
    assert body["data"]["CRSGRDRV"] == 5
    assert checks_of(body) == set()


def test_investigator_crs_grade_differing_from_the_derived_grade_opens_a_query_answered_when_corrected(trial):
    number = trial.enrol()
    body = trial.saved(number, "crs_daily", crs(38.5, grade=2))                    # derived grade 1
    assert body["data"]["CRSGRDRV"] == 1
    [query] = trial.open_queries(number, "CRS_GRADE_MATCH")
    assert query["item"] == "CRSGRINV" and query["kind"] == "check" and query["entry_id"] == body["id"]
    assert trial.update(body["id"], crs(38.5, grade=1)).status_code == 200
    assert trial.open_queries(number, "CRS_GRADE_MATCH") == []
    assert [q["state"] for q in trial.queries(number) if q["check"] == "CRS_GRADE_MATCH"] == ["answered"]


@pytest.mark.parametrize(("changes", "pointer"), [
    pytest.param({"TMAX": 50}, "/data/TMAX", id="temperature-50"),
    pytest.param({"TMAX": 33.9}, "/data/TMAX", id="temperature-below-34"),
    pytest.param({"O2DEV": "NC", "HYPOXOTH": "N", "O2FLOW": -1}, "/data/O2FLOW", id="negative-oxygen-flow"),
    pytest.param({"NPRESS": -1}, "/data/NPRESS", id="negative-pressor-count"),
])
def test_impossible_crs_values_are_422_and_nothing_is_saved(trial, session, changes, pointer):
    number = trial.enrol()
    before = rows(session)
    assert pointer in pointers(trial.save(number, "crs_daily", crs(grade=1, **changes)))
    assert rows(session) == before


def test_vasopressor_count_with_no_hypotension_requiring_vasopressors_is_422(trial, session):
    number = trial.enrol()
    before = rows(session)
    response = trial.save(number, "crs_daily", crs(38.5, "N", "FLUIDS", 1, grade=2))
    errors = problem(response, 422)["errors"]
    assert [e["pointer"] for e in errors] == ["/data/NPRESS"]
    assert errors[0]["detail"].startswith("Vasopressor count with no hypotension")
    assert rows(session) == before
    # Vasopressin alone: hypotension requiring vasopressors with a count of 0 is grade 3.
    assert trial.saved(number, "crs_daily", crs(38.5, "N", "VASO", 0, grade=3))["data"]["CRSGRDRV"] == 3


def test_nasal_cannula_needs_its_flow(trial):
    number = trial.enrol()
    data = crs(39.0, device="NC", flow=2.0, grade=2)
    del data["O2FLOW"]
    assert "/data/O2FLOW" in pointers(trial.save(number, "crs_daily", data))
    assert "/data/O2FLOW" in pointers(trial.save(number, "crs_daily", crs(39.0, grade=2, O2FLOW=2.0)))  # hidden: room air


def test_fever_or_hypoxia_due_to_another_cause_is_not_crs(trial):
    number = trial.enrol()
    assert trial.saved(number, "crs_daily", crs(39.0, grade=0, FEVEROTH="Y"))["data"]["CRSGRDRV"] == 0
    other = crs(39.0, device="FACEMASK", grade=1, HYPOXOTH="Y", CRSDAT="2026-11-18")
    assert trial.saved(number, "crs_daily", other)["data"]["CRSGRDRV"] == 1


@pytest.mark.parametrize(("years", "threshold", "sbp", "low"), [
    pytest.param(4, 78, 77, "Y", id="4y-below-70+2x4"),
    pytest.param(4, 78, 78, "N", id="4y-at-threshold"),
    pytest.param(10, 90, 89, "Y", id="10y-70+2x10"),
    pytest.param(15, 90, 90, "N", id="15y-90"),
])
def test_age_specific_hypotension_flag_x11(trial, years, threshold, sbp, low):
    number = enrol_aged(trial, years)
    body = trial.saved(number, "crs_daily", crs(37.0, grade=0, SBPMIN=sbp))
    assert body["data"]["SBPTHR"] == threshold and body["data"]["SBPLOW"] == low
    assert ("SBP_LOW_NO_HYPOT" in checks_of(body)) == (low == "Y")


def test_two_crs_assessments_on_one_day_open_a_query(trial):
    number = trial.enrol()
    trial.saved(number, "crs_daily", crs(grade=1))
    second = trial.saved(number, "crs_daily", crs(grade=1))
    assert checks_of(second) == {"CRS_ONE_PER_DAY"}
    assert trial.update(second["id"], crs(grade=1, day="2026-11-18")).status_code == 200
    assert trial.open_queries(number, "CRS_ONE_PER_DAY") == []


# ================================================================ ICANS-DAILY (§3.3-§3.5, §8.2)

ICE_MAXIMA = (("ICE_ORI", 4), ("ICE_NAME", 3), ("ICE_CMD", 1), ("ICE_WRITE", 1), ("ICE_ATT", 1))
CAPD_FORWARD = ("NEVER", "RARELY", "SOMETIMES", "OFTEN", "ALWAYS")   # 0 ... 4 points on items 5-8


def ice_items(total: int) -> dict[str, int]:
    items, left = {}, total
    for item, most in ICE_MAXIMA:
        items[item] = min(most, left)
        left -= items[item]
    return items


def capd_items(total: int) -> dict[str, str]:
    """Eight answers worth `total` points: items 1-4 reverse-scored, items 5-8 forward."""
    items, left = {}, total
    for position in range(1, 9):
        points = min(4, left)
        left -= points
        items[f"CAPD{position}"] = CAPD_FORWARD[4 - points] if position <= 4 else CAPD_FORWARD[points]
    return items


def icans(tool, score, loc="ALERT", seizure="NONE", motor="N", icp="NONE", *, at=ASSESSED_AT, grade=None, **changes):
    """A complete neurological assessment with `tool` and its score ("not possible": unable to perform)."""
    data = {"NDTC": at, "DEVDELAY": "N", "LOC": loc, "SEIZ": seizure, "MOTOR": motor, "ICP": icp, "ICHEM": "N",
            "ICANSDEATH": "N"}
    if loc != "ALERT":
        data["LOCOTH"] = "N"
    if score == "not possible":
        data |= {"TOOLDONE": "N", "NOTEVAL": "UNABLE"}
    else:
        data |= {"TOOLDONE": "Y", **(ice_items(score) if tool == "ICE" else capd_items(score))}
    if grade is not None:
        data["ICANSINV"] = str(grade)
    return {**data, **changes}


# id: (age in years, tool, score, level of consciousness, seizure, motor weakness, ICP/oedema, expected)
ICANS_EXAMPLES = {
    "N1": (15, "ICE", 10, "ALERT", "NONE", "N", "NONE", 0),
    "N2": (15, "ICE", 8, "ALERT", "NONE", "N", "NONE", 1),
    "N3": (13, "ICE", 7, "SPONT", "NONE", "N", "NONE", 1),
    "N4": (16, "ICE", 6, "ALERT", "NONE", "N", "NONE", 2),
    "N5": (16, "ICE", 9, "VOICE", "NONE", "N", "NONE", 2),
    "N6": (14, "ICE", 3, "ALERT", "RESOLVED", "N", "NONE", 3),       # generalized seizure, resolved rapidly
    "N8": (17, "ICE", 0, "UNAROUSABLE", "NONE", "N", "NONE", 4),
    "N10": (20, "ICE", 10, "ALERT", "NONE", "Y", "NONE", 4),         # hemiparesis
    "N11": (18, "ICE", 5, "ALERT", "PROLONGED", "N", "NONE", 4),     # seizure > 5 min
    "P1": (6, "CAPD", 0, "ALERT", "NONE", "N", "NONE", 0),
    "P2": (6, "CAPD", 6, "SPONT", "NONE", "N", "NONE", 1),
    "P3": (4, "CAPD", 6, "VOICE", "NONE", "N", "NONE", 2),
    "P4": (9, "CAPD", 12, "ALERT", "NONE", "N", "NONE", 3),
    "P6": (2, "CAPD", "not possible", "UNAROUSABLE", "NONE", "N", "NONE", 4),
    "P7": (8, "CAPD", 3, "ALERT", "NONE", "N", "DIFFUSE", 4),        # papilloedema
}


@pytest.mark.parametrize(("age", "tool", "score", "loc", "seizure", "motor", "icp", "expected"),
                         [pytest.param(*example, id=key) for key, example in ICANS_EXAMPLES.items()])
def test_icans_worked_example_gives_the_tool_and_the_astct_grade(trial, age, tool, score, loc, seizure, motor, icp,
                                                                  expected):
    number = enrol_aged(trial, age)
    body = trial.saved(number, "icans_daily", icans(tool, score, loc, seizure, motor, icp, grade=expected))
    data = body["data"]
    assert data["TOOL"] == tool and data["ICANSDRV"] == expected
    if score != "not possible":
        assert data["ICETOT" if tool == "ICE" else "CAPDTOT"] == score
    assert checks_of(body) == set()


def test_capd_scoring_example_reverses_items_1_to_4_and_totals_14(trial):
    number = enrol_aged(trial, 6)
    answers = ["OFTEN", "SOMETIMES", "OFTEN", "RARELY", "SOMETIMES", "NEVER", "SOMETIMES", "OFTEN"]
    data = icans("CAPD", 0, grade=3) | {f"CAPD{i}": answer for i, answer in enumerate(answers, start=1)}
    body = trial.saved(number, "icans_daily", data)
    assert body["data"]["CAPDTOT"] == 14 and body["data"]["ICANSDRV"] == 3   # 1+2+1+3 + 2+0+2+3, a positive screen


def test_developmental_delay_selects_capd_at_any_age_and_must_match_demographics(trial):
    number = enrol_aged(trial, 15)
    body = trial.saved(number, "icans_daily", icans("CAPD", 0, grade=0, DEVDELAY="Y"))
    assert body["data"]["TOOL"] == "CAPD" and checks_of(body) == set()           # no DM yet: nothing to compare
    dm = trial.saved(number, "dm", {"DEVDELAY": "N"}, event="SCR", complete=False)
    [query] = trial.open_queries(number, "DEVDELAY_MATCHES_DM")
    assert query["entry_id"] == body["id"] and query["kind"] == "cross_form"
    assert trial.update(dm["id"], {"DEVDELAY": "Y"}, complete=False).status_code == 200
    assert trial.open_queries(number, "DEVDELAY_MATCHES_DM") == []


def test_ice_and_capd_items_are_shown_for_their_tool_only(trial):
    child, teenager = enrol_aged(trial, 6), enrol_aged(trial, 15)
    assert "/data/ICE_ORI" in pointers(trial.save(child, "icans_daily", icans("CAPD", 0, grade=0, ICE_ORI=4)))
    assert "/data/CAPD1" in pointers(trial.save(teenager, "icans_daily", icans("ICE", 10, grade=0, CAPD1="NEVER")))
    incomplete = icans("ICE", 10, grade=0)
    del incomplete["ICE_ATT"]
    assert "/data/ICE_ATT" in pointers(trial.save(teenager, "icans_daily", incomplete))


@pytest.mark.parametrize(("age", "tool", "changes", "pointer"), [
    pytest.param(15, "ICE", {"ICE_ORI": 5}, "/data/ICE_ORI", id="ICE-orientation-5"),
    pytest.param(15, "ICE", {"ICE_NAME": 4}, "/data/ICE_NAME", id="ICE-naming-4"),
    pytest.param(15, "ICE", {"ICE_ATT": 2}, "/data/ICE_ATT", id="ICE-attention-2"),
    pytest.param(6, "CAPD", {"CAPD3": "MOSTLY"}, "/data/CAPD3", id="CAPD-outside-the-scale"),
    pytest.param(6, "CAPD", {"CAPD8": 2}, "/data/CAPD8", id="CAPD-number-instead-of-code"),
])
def test_scores_outside_their_instrument_are_422_and_nothing_is_saved(trial, session, age, tool, changes, pointer):
    number = enrol_aged(trial, age)
    before = rows(session)
    assert pointer in pointers(trial.save(number, "icans_daily", icans(tool, 10 if tool == "ICE" else 0, grade=0,
                                                                       **changes)))
    assert rows(session) == before


def test_investigator_icans_grade_differing_from_the_derived_grade_opens_a_query(trial):
    number = enrol_aged(trial, 15)
    body = trial.saved(number, "icans_daily", icans("ICE", 8, grade=2))            # derived grade 1
    [query] = trial.open_queries(number, "ICANS_GRADE_MATCH")
    assert query["item"] == "ICANSINV" and body["data"]["ICANSDRV"] == 1
    assert trial.update(body["id"], icans("ICE", 8, grade=1)).status_code == 200
    assert trial.open_queries(number, "ICANS_GRADE_MATCH") == []


def test_sedation_leaves_the_grade_to_the_other_domains_and_haemorrhage_is_not_icans(trial):
    number = enrol_aged(trial, 15)
    sedated = icans("ICE", 10, "TACTILE", grade=0, TOOLDONE="N", NOTEVAL="SEDATION", LOCOTH="Y")
    for item, _ in ICE_MAXIMA:
        del sedated[item]
    assert trial.saved(number, "icans_daily", sedated)["data"]["ICANSDRV"] == 0
    bleed = icans("ICE", 10, icp="DIFFUSE", grade=0, ICHEM="Y", NDTC="2026-11-19T20:00:00+01:00")
    assert trial.saved(number, "icans_daily", bleed)["data"]["ICANSDRV"] == 0


def test_several_icans_assessments_a_day_are_allowed(trial):
    number = enrol_aged(trial, 15)
    for at in ("2026-11-19T08:00:00+01:00", "2026-11-19T20:00:00+01:00"):
        assert checks_of(trial.saved(number, "icans_daily", icans("ICE", 10, grade=0, at=at))) == set()


# ================================================================ AE with its SAE supplement (§4, §8.2)

CRITERIA = ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")


def ae(term="Pyrexia", category="OTHER", grade=2, start="2026-11-15", end="2026-11-17", **changes):
    """A complete, non-serious adverse event; with a seriousness criterion Y, the SAE supplement is added."""
    data = {"AECAT": category, "AETERM": term, "AESTDAT": start, "AEONGO": "N" if end else "Y",
            "AETOXGR": str(grade), "AESI": "N", **{c: "N" for c in CRITERIA}, "AEREL": "POSSIBLE",
            "AERELLD": {"missing": "NA"}, "AERELPROC": "UNRELATED", "AEACN": "NOT_APPLICABLE",
            "AEOUT": "RECOVERED" if end else "NOT_RECOVERED", "AECONTRT": "Y"}
    if end:
        data["AEENDAT"] = end
    if category != "OTHER":
        data |= {"AESI": "Y", "AESICAT": category}
    data.update(changes)
    if any(data[c] == "Y" for c in CRITERIA):
        data = {"AEAWDTC": AWARE, "SAENARR": "Fever and hypotension on day 3; admitted to intensive care.",
                "SAERPTR": "INVESTIGATOR", "SAEFUNUM": 0, **data}
    if data["AESDTH"] == "Y":
        data = {"SAEAUTOP": "N", "SAEDTHC": "Refractory cytokine release syndrome", **data}
    return data


def fatal_ae(**changes):
    return ae("Cytokine release syndrome", "CRS", 5, end="2026-11-18", AESDTH="Y", AEOUT="FATAL", **changes)


def test_complete_ae_saves_with_its_grading_scale(trial):
    number = trial.enrol()
    other = trial.saved(number, "ae", ae())
    assert other["data"]["AETOXSCL"] == "CTCAE v5.0" and other["data"]["AESER"] == "N"
    assert checks_of(other) == set()
    crs_ae = trial.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 1))
    assert crs_ae["data"]["AETOXSCL"] == "ASTCT 2019"


@pytest.mark.parametrize("criterion", CRITERIA)
def test_one_seriousness_criterion_makes_the_event_serious_and_asks_for_the_sae_supplement(trial, criterion):
    number = trial.enrol()
    changes = {criterion: "Y"}
    if criterion == "AESDTH":
        changes |= {"AETOXGR": "5", "AEOUT": "FATAL"}
    body = trial.saved(number, "ae", ae(**changes))
    assert body["data"]["AESER"] == "Y" and body["data"]["AEAWDTC"] == AWARE
    without = {k: v for k, v in ae(**changes).items() if k not in ("AEAWDTC", "SAENARR", "SAERPTR", "SAEFUNUM")}
    assert {"/data/AEAWDTC", "/data/SAENARR", "/data/SAERPTR", "/data/SAEFUNUM"} <= pointers(
        trial.save(number, "ae", without))


def test_no_criterion_is_not_serious_and_refuses_the_sae_supplement_and_a_client_seriousness(trial, session):
    number = trial.enrol()
    before = rows(session)
    assert "/data/AEAWDTC" in pointers(trial.save(number, "ae", ae(AEAWDTC=AWARE)))        # hidden when not serious
    assert "/data/SAENARR" in pointers(trial.save(number, "ae", ae(SAENARR="Narrative")))
    assert "/data/AESER" in pointers(trial.save(number, "ae", ae(AESER="Y")))              # derived, never sent
    assert rows(session) == before
    assert trial.saved(number, "ae", ae())["data"]["AESER"] == "N"


def test_seriousness_follows_the_criteria_on_update(trial):
    number = trial.enrol()
    body = trial.saved(number, "ae", ae())
    assert trial.update(body["id"], ae(AESHOSP="Y")).status_code == 200
    assert trial.entry(body["id"])["data"]["AESER"] == "Y"
    assert trial.update(body["id"], ae()).status_code == 200
    assert trial.entry(body["id"])["data"]["AESER"] == "N"


def test_ae_end_before_start_is_422_and_nothing_is_saved(trial, session):
    number = trial.enrol()
    before = rows(session)
    response = trial.save(number, "ae", ae(start="2026-11-15", end="2026-11-14"))
    assert pointers(response) == {"/data/AEENDAT"}
    assert rows(session) == before
    assert trial.saved(number, "ae", ae(start="2026-11-15", end="2026-11-15"))   # same day is fine


def test_ongoing_event_has_no_end_date_and_a_recovered_one_needs_it(trial):
    number = trial.enrol()
    assert "/data/AEENDAT" in pointers(trial.save(number, "ae", {**ae(end=None), "AEENDAT": "2026-11-17"}))
    body = trial.saved(number, "ae", ae(end=None, AEOUT="RECOVERED"))
    assert checks_of(body) == {"AE_RECOVERED_NEEDS_END"}
    assert trial.update(body["id"], ae()).status_code == 200
    assert trial.open_queries(number, "AE_RECOVERED_NEEDS_END") == []


@pytest.mark.parametrize(("changes", "expected"), [
    pytest.param({"AETOXGR": "5"}, {"AE_GRADE5_DEATH", "AE_GRADE5_NEEDS_DD"}, id="grade-5-without-death"),
    pytest.param({"AESDTH": "Y"}, {"AE_GRADE5_DEATH", "AE_DEATH_FATAL"}, id="death-grade-2-not-fatal"),
    pytest.param({"AEOUT": "FATAL"}, {"AE_DEATH_FATAL"}, id="fatal-outcome-without-death"),
])
def test_grade_5_death_and_fatal_outcome_must_agree_critical_warning(trial, changes, expected):
    number = trial.enrol()
    body = trial.saved(number, "ae", ae(**changes))
    assert checks_of(body) == expected
    assert all(q["critical"] for q in trial.open_queries(number))


def test_grade_5_ae_without_death_form_opens_a_critical_query_answered_when_dd_is_saved(trial):
    number = trial.enrol()
    body = trial.saved(number, "ae", fatal_ae())
    assert checks_of(body) == {"AE_GRADE5_NEEDS_DD"}
    [query] = trial.open_queries(number, "AE_GRADE5_NEEDS_DD")
    assert query["critical"] is True and query["kind"] == "cross_form" and query["item"] == "AETOXGR"
    death = {"DTHDAT": "2026-11-18", "DDCAUSE": "CRS", "DDAUTOP": "N", "DDREL": "RELATED"}
    dd = trial.saved(number, "dd", death, event="DTH")
    assert checks_of(dd) == set()                                    # the toxic death has its grade 5 AE
    assert trial.open_queries(number) == []
    [answered] = [q for q in trial.queries(number) if q["check"] == "AE_GRADE5_NEEDS_DD"]
    assert answered["state"] == "answered" and answered["id"] == query["id"]


def test_toxic_death_without_a_grade_5_ae_opens_a_query_answered_when_the_ae_is_recorded(trial):
    number = trial.enrol()
    dd = trial.saved(number, "dd", {"DTHDAT": "2026-11-18", "DDCAUSE": "INFECTION", "DDAUTOP": {"missing": "UNK"},
                                    "DDREL": "UNLIKELY"}, event="DTH")
    assert checks_of(dd) == {"TOXIC_DEATH_NEEDS_GRADE5_AE"}
    assert trial.open_queries(number)[0]["critical"] is True
    trial.saved(number, "ae", ae("Sepsis", grade=5, end="2026-11-18", AESDTH="Y", AEOUT="FATAL"))
    assert trial.open_queries(number) == []


def test_death_from_progression_needs_no_grade_5_ae(trial):
    number = trial.enrol()
    dd = trial.saved(number, "dd", {"DTHDAT": "2026-11-18", "DDCAUSE": "PROGRESSION", "DDAUTOP": "N",
                                    "DDREL": "UNRELATED"}, event="DTH")
    assert checks_of(dd) == set()


def test_crs_ae_grade_must_equal_the_highest_daily_grade_of_its_episode_x7(trial):
    number = trial.enrol()
    for day, temp, hypotension, grade in (("2026-11-14", 39.0, "VASO", 3),      # before the episode
                                          ("2026-11-15", 38.5, "NONE", 1),
                                          ("2026-11-16", 38.5, "FLUIDS", 2),
                                          ("2026-11-18", 38.5, "VASO", 3)):     # after the episode
        trial.saved(number, "crs_daily", crs(temp, hypotension=hypotension, pressors=1 if hypotension == "VASO" else 0,
                                             day=day, grade=grade))
    body = trial.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 3, "2026-11-15", "2026-11-17"))
    assert checks_of(body) == {"AE_CRS_MAX_GRADE"}
    assert trial.update(body["id"], ae("Cytokine release syndrome", "CRS", 2, "2026-11-15", "2026-11-17")).status_code == 200
    assert trial.open_queries(number) == []


def test_ongoing_crs_ae_is_requeried_when_a_later_daily_grade_is_higher_x7(trial):
    number = trial.enrol()
    trial.saved(number, "crs_daily", crs(38.5, hypotension="FLUIDS", day="2026-11-16", grade=2))
    body = trial.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 2, "2026-11-16", None))
    assert checks_of(body) == set()
    trial.saved(number, "crs_daily", crs(38.5, device="CPAP", day="2026-11-18", grade=4))
    [query] = trial.open_queries(number, "AE_CRS_MAX_GRADE_ONGOING")
    assert query["entry_id"] == body["id"] and query["kind"] == "cross_form"
    assert trial.update(body["id"], ae("Cytokine release syndrome", "CRS", 4, "2026-11-16", None)).status_code == 200
    assert trial.open_queries(number) == []


def test_crs_ae_without_daily_assessments_is_not_queried(trial):
    number = trial.enrol()
    assert checks_of(trial.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 3))) == set()


def test_icans_ae_grade_must_equal_the_highest_neurological_grade_of_its_episode_x7(trial):
    number = enrol_aged(trial, 15)
    trial.saved(number, "icans_daily", icans("ICE", 8, at="2026-11-16T08:00:00+01:00", grade=1))
    trial.saved(number, "icans_daily", icans("ICE", 5, at="2026-11-16T20:00:00+01:00", grade=2))
    trial.saved(number, "icans_daily", icans("ICE", 2, at="2026-11-19T08:00:00+01:00", grade=3))  # after the episode
    body = trial.saved(number, "ae", ae("ICANS", "ICANS", 1, "2026-11-16", "2026-11-17"))
    assert checks_of(body) == {"AE_ICANS_MAX_GRADE"}
    assert trial.update(body["id"], ae("ICANS", "ICANS", 2, "2026-11-16", "2026-11-17")).status_code == 200
    assert trial.open_queries(number) == []


def test_crs_and_icans_are_adverse_events_of_special_interest(trial):
    number = trial.enrol()
    body = trial.saved(number, "ae", ae("Cytokine release syndrome", "CRS", 1, AESI="N") | {"AESICAT": None})
    assert checks_of(body) == {"AESI_CRS_ICANS"}
    body = trial.saved(number, "ae", ae("ICANS", "ICANS", 1, AESICAT="CRS"))
    assert checks_of(body) == {"AESICAT_MATCHES_AECAT"}


def test_ae_before_informed_consent_opens_a_query(trial):
    number = trial.enrol()
    trial.saved(number, "ic", {"RFICDAT": "2026-11-02"}, event="SCR", complete=False)
    body = trial.saved(number, "ae", ae(start="2026-11-01"))
    assert checks_of(body) == {"AE_BEFORE_CONSENT"}
    assert checks_of(trial.saved(number, "ae", ae(start="2026-11-02"))) == set()


def test_awareness_before_the_event_started_opens_a_critical_query(trial):
    number = trial.enrol()
    body = trial.saved(number, "ae", ae(AESHOSP="Y", AEAWDTC="2026-11-13T10:00:00+01:00"))
    assert checks_of(body) == {"AE_AWARE_BEFORE_START"}
    # Awareness in the first hours of the start day, local time, is fine whatever the UTC offset.
    assert checks_of(trial.saved(number, "ae", ae(AESHOSP="Y", AEAWDTC="2026-11-15T00:30:00+02:00"))) == set()


@pytest.mark.parametrize(("item", "text", "flagged"), [
    pytest.param("AETERM", "Fever, parent phone +34 612 345 678", True, id="term-international-phone"),
    pytest.param("AETERM", "Rash reported by mother.smith@example.org", True, id="term-email"),
    pytest.param("AETERM", "Anaemia (MRN 12345678)", True, id="term-record-number"),
    pytest.param("AETERM", "Febrile neutropenia", False, id="term-clean"),
    pytest.param("SAENARR", "Call 612 345 678 for details.", True, id="narrative-phone"),
    pytest.param("SAENARR", "On 2026-11-16 ANC 0.4, CRP 120 mg/L, temperature 39.2; tocilizumab 12 mg/kg.", False,
                 id="narrative-dates-and-labs"),
    pytest.param("SAETEST", "Ferritin 15000, see lab@hospital.es", True, id="tests-email"),
    pytest.param("SAEDTHC", "Sepsis, NHC 0012345678", True, id="cause-of-death-record-number"),
])
def test_free_text_is_scanned_for_identifiers_x12(trial, item, text, flagged):
    number = trial.enrol()
    fatal = item == "SAEDTHC"
    data = (fatal_ae() if fatal else ae(AESHOSP="Y")) | {item: text}
    body = trial.saved(number, "ae", data)
    assert (f"{item}_IDENTIFIERS" in checks_of(body)) is flagged


# ================================================================ SAE review (safety role) and DD

REVIEW = {"SPAWDTC": "2026-11-19T12:00:00+01:00", "AEEXPECT": "N"}


def test_sae_review_is_entered_by_the_safety_role_only(trial):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(AESHOSP="Y"))
    review = {"AEREF": entry["id"], **REVIEW}
    problem(trial.save(number, "sae_review", review), 403)
    body = trial.saved(number, "sae_review", review | {"SUBMDTC": "2026-11-20T09:00:00+01:00",
                                                       "SUBMREF": "EU-EC-2026-000123"}, role="safety")
    assert body["data"]["AEREF"] == entry["id"]


@pytest.mark.parametrize(("changes", "pointer"), [
    pytest.param({"AEREF": "ES01-0001"}, "/data/AEREF", id="reference-is-not-an-entry-id"),
    pytest.param({"SUBMDTC": "2026-11-19T11:00:00+01:00"}, "/data/SUBMDTC", id="submitted-before-knowledge"),
    pytest.param({"AEEXPECT": None}, "/data/AEEXPECT", id="expectedness-required"),
])
def test_bad_sae_review_is_422(trial, session, changes, pointer):
    number = trial.enrol()
    entry = trial.saved(number, "ae", ae(AESHOSP="Y"))
    before = rows(session)
    review = {"AEREF": entry["id"], **REVIEW, **changes}
    assert pointer in pointers(trial.save(number, "sae_review", review, role="safety"))
    assert rows(session) == before


def test_dd_other_cause_needs_its_text(trial):
    number = trial.enrol()
    death = {"DTHDAT": "2026-11-18", "DDCAUSE": "OTHER", "DDAUTOP": "N", "DDREL": "UNRELATED"}
    assert "/data/DDCAUSOT" in pointers(trial.save(number, "dd", death, event="DTH"))
    assert trial.saved(number, "dd", death | {"DDCAUSOT": "Road traffic accident"}, event="DTH")


# ================================================================ languages and parameters

def test_ae_form_in_spanish_and_unknown_language_falls_back_to_english(trial):
    headers = trial.headers["investigator_ES01"]
    spanish = trial.client.get("/api/v1/forms/ae?lang=es", headers=headers).get_json()
    assert spanish["title"] == "Acontecimiento adverso"
    assert "pendientes de revisión clínica" in spanish["description"]  # marked as awaiting clinical review
    items = {item["id"]: item for item in spanish["items"]}
    assert items["AETERM"]["label"] == "Término notificado"
    assert items["AESER"]["code_list"][0]["label"] == "Sí"
    assert {c["code"]: c["label"] for c in items["AEOUT"]["code_list"]}["FATAL"] == "Mortal"
    assert {c["id"]: c["message"] for c in spanish["checks"]}["AE_END_BEFORE_START"] == \
        "La fecha de finalización es anterior a la de inicio."
    fallback = trial.client.get("/api/v1/forms/ae?lang=xx", headers=headers).get_json()
    assert fallback["title"] == "Adverse event"
    assert "await clinical review" in fallback["description"]
    assert {item["id"]: item["label"] for item in fallback["items"]}["AETERM"] == "Reported term"
    arabic = trial.client.get("/api/v1/forms/crs_daily?lang=ar", headers=headers).get_json()
    assert arabic["title"] == "التقييم اليومي لمتلازمة إطلاق السيتوكينات (ASTCT 2019)"


@pytest.mark.parametrize("form_id", ["crs_daily", "icans_daily", "ae"])
def test_every_text_of_the_translated_forms_is_in_spanish_italian_and_arabic(form_id):
    form = load_study(TRIAL_FORMS).form(form_id)
    texts = [("title", form.title), ("description", form.description)]
    texts += [(f"section {s.id}", s.title) for s in form.sections]
    for item in form.items.values():
        texts += [(f"{item.id} label", item.label)] + ([(f"{item.id} help", item.help)] if item.help else [])
        texts += [(f"{item.id} code {code}", labels) for code, labels in (item.code_list or {}).items()]
    texts += [(f"check {c.id}", c.message) for c in form.checks]
    missing = [where for where, labels in texts if not {"en", "es", "it", "ar"} <= set(labels or {})]
    assert missing == []
    assert "clinical review" in form.description["en"]


def test_the_capd_age_cutoff_is_one_parameter_in_months():
    parameters = load_study(TRIAL_FORMS).parameters
    assert parameters["capd_below_age_months"] == 144
    assert "capd_below_age_years" not in parameters
