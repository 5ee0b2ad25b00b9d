"""Every worked example of trial.md (§3.2, §3.4, §3.6) through the registered derivations and the core functions."""

from datetime import date, datetime, timedelta, timezone

import pytest

from edc.ecrf.clinical import capd_total, crs_grade, icans_grade
from edc.ecrf.derivations import get_derivation

CRS_PARAMS = {"temp": "TMAX", "hypotension": "HYPOT", "pressors": "NPRESS", "o2_device": "O2DEV", "o2_flow": "O2FLOW",
              "fever_other_cause": "FEVEROTH", "hypotension_other_cause": "HYPOTOTH",
              "hypoxia_other_cause": "HYPOXOTH", "previously_treated": ["TOCI", "STEROID"], "death": "CRSDTH"}
NO_OTHER_CAUSE = {"FEVEROTH": "N", "HYPOTOTH": "N", "HYPOXOTH": "N", "CRSDTH": "N", "STEROID": "N"}


def crs_values(temp, treated, hypotension, pressors, device, flow):
    """Form values of one daily CRS assessment; items that would be hidden or unanswered are left out."""
    values = dict(NO_OTHER_CAUSE, TOCI=treated, HYPOT=hypotension, O2DEV=device)
    if temp is not None:
        values["TMAX"] = temp
    if hypotension == "VASO":
        values["NPRESS"] = pressors
    if device == "NC":
        values["O2FLOW"] = flow
    return values


# id: (temp °C, prior toci/steroid, hypotension, non-vasopressin pressors, O2 device, flow L/min, expected)
CRS_EXAMPLES = {
    "C1": (38.5, "N", "NONE", None, "NONE", None, 1),
    "C2": (38.2, "N", "FLUIDS", None, "NONE", None, 2),
    "C3": (39.0, "N", "NONE", None, "NC", 2.0, 2),
    "C4": (38.4, "N", "NONE", None, "BLOWBY", None, 2),
    "C6": (38.6, "N", "VASO", 1, "NONE", None, 3),        # norepinephrine + vasopressin: vasopressin not counted
    "C7": (39.0, "N", "VASO", 2, "NONE", None, 4),        # norepinephrine + epinephrine
    "C9": (38.3, "N", "NONE", None, "NC", 6.0, 2),        # <= 6 L/min is low flow
    "C10": (38.0, "N", "NONE", None, "NONE", None, 1),    # >= 38.0 inclusive
    "C11": (37.9, "N", "NONE", None, "NC", 2.0, 0),       # no fever: not CRS
    "C13": (36.8, "Y", "NONE", None, "CPAP", None, 4),    # treated: fever no longer required
    "C14": (38.7, "N", "NONE", None, "FACEMASK", None, 3),
    "C15": (38.1, "N", "FLUIDS", None, "BIPAP", None, 4),
    "ASTCT-example-3.2": (38.5, "N", "VASO", 1, "NC", 2.0, 3),   # febrile, one vasopressor, low-flow cannula
}


@pytest.mark.parametrize(("temp", "treated", "hypotension", "pressors", "device", "flow", "expected"),
                         [pytest.param(*example, id=key) for key, example in CRS_EXAMPLES.items()])
def test_crs_worked_example(temp, treated, hypotension, pressors, device, flow, expected):
    derive = get_derivation("astct_crs_grade")
    assert derive(crs_values(temp, treated, hypotension, pressors, device, flow), {}, CRS_PARAMS) == expected
    assert crs_grade(temp_c=temp, previously_treated=treated == "Y", hypotension=hypotension, pressors=pressors or 0,
                     o2_device=device, o2_flow_lpm=flow or 0.0) == expected


def test_crs_worked_example_C17_death_due_to_crs_is_grade_5_whatever_else_is_missing():
    derive = get_derivation("astct_crs_grade")
    assert derive({"TOCI": "Y", "CRSDTH": "Y"}, {}, CRS_PARAMS) == 5
    assert crs_grade(temp_c=None, previously_treated=True, hypotension=None, pressors=None, o2_device=None,
                     death=True) == 5


# ---------------------------------------------------------------- ICANS

ASSESSED = datetime(2026, 3, 10, 8, 30, tzinfo=timezone(timedelta(hours=1)))
ICANS_PARAMS = {"capd_below_age_months": 144, "date": "NDTC", "developmental_delay": "DEVDELAY", "ice": "ICETOT",
                "capd": "CAPDTOT", "not_evaluable": "NOTEVAL", "loc": "LOC", "seizure": "SEIZ", "motor": "MOTOR",
                "icp": "ICP", "death": "ICANSDTH", "hemorrhage": "ICHEM"}


def subject_aged(years: int) -> dict:
    """A subject whose age at ASSESSED is `years` years and 2 months (born in January)."""
    return {"site": "ES01", "sex": "F", "birth_year": ASSESSED.year - years, "birth_month": 1}


def icans_values(tool, score, loc, seizure="NONE", motor="N", icp="NONE", **extra):
    values = {"NDTC": ASSESSED, "LOC": loc, "SEIZ": seizure, "MOTOR": motor, "ICP": icp, "ICANSDTH": "N", "ICHEM": "N"}
    if tool == "ICE":
        values["DEVDELAY"] = "N"              # children: left unanswered, age alone chooses CAPD
    if score == "not possible":
        values["NOTEVAL"] = "UNABLE"
    else:
        values["ICETOT" if tool == "ICE" else "CAPDTOT"] = score
    return values | extra


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
    "S3.4-ICE3-generalized-seizure": (15, "ICE", 3, "ALERT", "RESOLVED", "N", "NONE", 3),
    "S3.4-ICE0-awake-global-aphasia": (15, "ICE", 0, "ALERT", "NONE", "N", "NONE", 3),
    "S3.4-ICE0-unarousable": (15, "ICE", 0, "UNAROUSABLE", "NONE", "N", "NONE", 4),
}


@pytest.mark.parametrize(("age", "tool", "score", "loc", "seizure", "motor", "icp", "expected"),
                         [pytest.param(*example, id=key) for key, example in ICANS_EXAMPLES.items()])
def test_icans_worked_example(age, tool, score, loc, seizure, motor, icp, expected):
    values = icans_values(tool, score, loc, seizure, motor, icp)
    assert get_derivation("icans_tool")(values, subject_aged(age), ICANS_PARAMS) == tool
    assert get_derivation("astct_icans_grade")(values, subject_aged(age), ICANS_PARAMS) == expected
    marker = "UNABLE" if score == "not possible" else score
    assert icans_grade(tool=tool, ice=marker if tool == "ICE" else None, capd=marker if tool == "CAPD" else None,
                       loc=loc, seizure=seizure, motor=motor == "Y", icp=icp) == expected


@pytest.mark.parametrize(("age", "extra"), [
    pytest.param(15, {"TREMOR": 2}, id="counter-example-tremor-only-ICE10"),
    pytest.param(15, {"MYOCLONUS": "Y"}, id="counter-example-myoclonus-ICE10"),
    pytest.param(15, {"ICHEM": "Y"}, id="counter-example-intracranial-hemorrhage-ICE10"),
    pytest.param(15, {"ICHEM": "Y", "ICP": "FOCAL"}, id="counter-example-intracranial-hemorrhage-with-edema"),
    pytest.param(6, {"ICHEM": "Y", "ICP": "DIFFUSE"}, id="counter-example-intracranial-hemorrhage-with-edema-child"),
])
def test_icans_counter_examples_are_not_icans(age, extra):
    tool = "ICE" if age >= 12 else "CAPD"
    values = icans_values(tool, 10 if tool == "ICE" else 0, "ALERT", **extra)
    assert get_derivation("astct_icans_grade")(values, subject_aged(age), ICANS_PARAMS) == 0


def test_the_same_edema_without_hemorrhage_is_icans():
    values = icans_values("ICE", 10, "ALERT", ICP="FOCAL")
    assert get_derivation("astct_icans_grade")(values, subject_aged(15), ICANS_PARAMS) == 3


# ---------------------------------------------------------------- CAPD scoring and lymphodepletion


def test_capd_scoring_example_of_section_3_6_is_14_a_positive_screen():
    answers = ["OFTEN", "SOMETIMES", "OFTEN", "RARELY", "SOMETIMES", "NEVER", "SOMETIMES", "OFTEN"]
    assert capd_total(answers) == 1 + 2 + 1 + 3 + 2 + 0 + 2 + 3 == 14
    items = [f"CAPD{n}" for n in range(1, 9)]
    assert get_derivation("capd_total")(dict(zip(items, answers)), {}, {"items": items}) == 14


@pytest.mark.parametrize(("drug", "expected_mg"), [
    pytest.param("FLUDARABINE", 30 * 0.9128709291752769, id="S2.6-flu-30mg-m2"),
    pytest.param("CYCLOPHOSPHAMIDE", 300 * 0.9128709291752769, id="S2.6-cy-300mg-m2"),
])
def test_lymphodepletion_default_regimen_of_section_2_6(drug, expected_mg):
    params = {"drug": "ECTRT", "height": "HEIGHT", "weight": "WEIGHT",
              "dose_per_m2": {"FLUDARABINE": 30, "CYCLOPHOSPHAMIDE": 300}}
    values = {"ECTRT": drug, "HEIGHT": 120.0, "WEIGHT": 25.0}        # BSA = sqrt(3000 / 3600) = 0.91287 m²
    assert get_derivation("ld_expected_dose")(values, {}, params) == pytest.approx(expected_mg)


def test_age_worked_example_of_design_counts_from_the_first_of_the_birth_month():
    params = {"date": "CONSDAT", "unit": "years"}
    subject = {"birth_year": 2014, "birth_month": 3}
    assert get_derivation("age_at")({"CONSDAT": date(2026, 2, 28)}, subject, params) == 11
    assert get_derivation("age_at")({"CONSDAT": date(2026, 3, 1)}, subject, params) == 12
