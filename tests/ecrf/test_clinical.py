"""The trial's clinical derivations: exhaustive tests of the grading rules over their input domains, the
scores, age, BSA and doses, CNS status, MRD, response, B-cell aplasia, seriousness, and the registered
wrappers (None on missing inputs, never an exception), including inside a form."""

import math
from datetime import date, datetime, timezone
from itertools import product

import pytest

from edc.ecrf import ValidationContext, check_definitions, load_study, validate_entry
from edc.ecrf.clinical import (
    DomainError,
    ae_serious,
    age_months,
    age_years,
    b_cell_aplasia,
    b_cell_recovery,
    bca_loss_confirmed,
    bsa_mosteller,
    capd_item_score,
    capd_total,
    cns_status,
    crs_grade,
    cumulative_dose,
    derived_response,
    dose_per_kg,
    expected_dose,
    first_confirmed_bca_loss,
    icans_grade,
    icans_tool,
    ice_total,
    mrd_negative,
)
from edc.ecrf.derivations import get_derivation

# ================================================================ CRS: the rule as written (trial.md §3.2)


def crs_as_written(temp, fever_other, treated, hypotension, pressors, hypotension_other, device, flow, hypoxia_other,
                   death):
    """A literal transcription of trial.md §3.2, independent of the implementation."""
    if death:
        return 5
    fever_ok = (temp >= 38.0 and not fever_other) or treated
    if not fever_ok:
        return 0
    if hypotension_other or hypotension == "NONE":
        h = 0
    elif hypotension == "FLUIDS":
        h = 2
    elif pressors >= 2:
        h = 4
    else:
        h = 3                          # one non-vasopressin vasopressor (vasopressin alone: still "requiring vasopressors")
    if hypoxia_other or device == "NONE":
        x = 0
    elif device == "BLOWBY" or (device == "NC" and flow <= 6):
        x = 2
    elif device in ("NC", "HFNC", "FACEMASK", "NRB", "VENTURI"):
        x = 3
    else:
        x = 4                          # CPAP, BiPAP, intubation / mechanical ventilation
    return max(1, h, x)


# Each domain is ordered from least to most severe (attribution to another cause is the *less* severe value).
TEMPS = (34.0, 36.8, 37.5, 37.9, 37.99, 38.0, 38.01, 38.5, 40.0, 42.0)
OXYGEN = (("NONE", 0.0), ("BLOWBY", 0.0), ("NC", 0.5), ("NC", 2.0), ("NC", 6.0), ("NC", 6.01), ("NC", 15.0),
          ("HFNC", 40.0), ("FACEMASK", 8.0), ("VENTURI", 10.0), ("NRB", 15.0), ("CPAP", 0.0), ("BIPAP", 0.0),
          ("MV", 0.0))
CRS_DOMAINS = {
    "temp": TEMPS,
    "fever_other": (True, False),
    "treated": (False, True),
    "hypotension": ("NONE", "FLUIDS", "VASO"),
    "pressors": (0, 1, 2, 3),
    "hypotension_other": (True, False),
    "oxygen": OXYGEN,
    "hypoxia_other": (True, False),
    "death": (False, True),
}


def crs_of(temp, fever_other, treated, hypotension, pressors, hypotension_other, oxygen, hypoxia_other, death):
    device, flow = oxygen
    return crs_grade(temp_c=temp, fever_other_cause=fever_other, previously_treated=treated, hypotension=hypotension,
                     pressors=pressors, hypotension_other_cause=hypotension_other, o2_device=device, o2_flow_lpm=flow,
                     hypoxia_other_cause=hypoxia_other, death=death)


def grid(function, domains):
    """Evaluate `function` over the product of the domains: {combination: result}."""
    return {combination: function(*combination) for combination in product(*domains.values())}


@pytest.fixture(scope="module")
def crs_grid():
    return grid(crs_of, CRS_DOMAINS)


def neighbours(domains):
    """Yield (position, less severe value, more severe value) for each input's consecutive values."""
    for position, values in enumerate(domains.values()):
        for lower, higher in zip(values, values[1:]):
            yield position, lower, higher


def assert_monotone(results, domains):
    """Worsening any single input never lowers the grade."""
    for position, lower, higher in neighbours(domains):
        for combination, grade in results.items():
            if combination[position] == lower:
                worse = combination[:position] + (higher,) + combination[position + 1:]
                assert results[worse] >= grade, (combination, position, higher)


def test_crs_grade_matches_the_rule_as_written_over_the_whole_domain(crs_grid):
    for (temp, fever_other, treated, hypotension, pressors, hypotension_other, (device, flow), hypoxia_other,
         death), grade in crs_grid.items():
        assert grade == crs_as_written(temp, fever_other, treated, hypotension, pressors, hypotension_other, device,
                                       flow, hypoxia_other, death)


def test_crs_grade_is_an_integer_from_0_to_5_for_every_combination(crs_grid):
    assert len(crs_grid) == math.prod(len(values) for values in CRS_DOMAINS.values())
    assert {type(grade) for grade in crs_grid.values()} == {int}
    assert set(crs_grid.values()) == {0, 1, 2, 3, 4, 5}


def test_crs_grade_is_monotone_in_each_input(crs_grid):
    assert_monotone(crs_grid, CRS_DOMAINS)


def test_crs_temperature_boundary_on_a_fine_grid():
    for tenth in range(340, 431):
        temp = tenth / 10
        assert crs_grade(temp_c=temp, hypotension="NONE", pressors=0, o2_device="NONE") == (1 if temp >= 38.0 else 0)
        assert crs_grade(temp_c=temp, hypotension="NONE", pressors=0, o2_device="NONE", previously_treated=True) == 1


def test_crs_nasal_cannula_flow_boundary_on_a_fine_grid():
    for tenth in range(0, 201):
        flow = tenth / 10
        assert crs_grade(temp_c=38.5, hypotension="NONE", pressors=0, o2_device="NC", o2_flow_lpm=flow) == (
            2 if flow <= 6.0 else 3)


def test_vasopressin_does_not_count_and_vasopressin_alone_still_requires_vasopressors():
    assert crs_grade(temp_c=38.5, hypotension="VASO", pressors=0, o2_device="NONE") == 3
    assert crs_grade(temp_c=38.5, hypotension="VASO", pressors=1, o2_device="NONE") == 3
    assert crs_grade(temp_c=38.5, hypotension="VASO", pressors=2, o2_device="NONE") == 4


def test_crs_organ_toxicity_is_not_an_input():
    derive = get_derivation("astct_crs_grade")
    params = {"temp": "T", "hypotension": "H", "pressors": "N", "o2_device": "O"}
    values = {"T": 38.5, "H": "NONE", "O": "NONE"}
    assert derive(values | {"ALT_GRADE": 4, "CREAT_GRADE": 3}, {}, params) == derive(values, {}, params) == 1


UNKNOWN_STRIDE = 7     # the unknown-input checks visit every 7th (CRS) or 17th (ICANS) combination, each input of it


def test_an_unknown_crs_input_gives_the_grade_only_when_every_value_of_it_agrees(crs_grid):
    names = list(CRS_DOMAINS)
    for combination in list(crs_grid)[::UNKNOWN_STRIDE]:
        for position, name in enumerate(names):
            completions = {crs_grid[combination[:position] + (value,) + combination[position + 1:]]
                           for value in CRS_DOMAINS[name]}
            arguments = dict(zip(names, combination))
            device, flow = arguments.pop("oxygen")
            if name == "oxygen":
                device = flow = None
            else:
                arguments[name] = None
            kwargs = {"temp_c": arguments["temp"], "fever_other_cause": arguments["fever_other"],
                      "previously_treated": arguments["treated"], "hypotension": arguments["hypotension"],
                      "pressors": arguments["pressors"], "hypotension_other_cause": arguments["hypotension_other"],
                      "o2_device": device, "o2_flow_lpm": flow, "hypoxia_other_cause": arguments["hypoxia_other"],
                      "death": arguments["death"]}
            expected = completions.pop() if len(completions) == 1 else None
            assert crs_grade(**kwargs) == expected, (combination, name)


@pytest.mark.parametrize("bad", [
    {"temp_c": float("nan")}, {"temp_c": "38"}, {"temp_c": True}, {"hypotension": "SOME"}, {"pressors": -1},
    {"pressors": 1.5}, {"o2_device": "MASK"}, {"o2_flow_lpm": -2.0}, {"death": "Y"},
])
def test_crs_core_refuses_values_outside_the_domain(bad):
    with pytest.raises(DomainError):
        crs_grade(**({"temp_c": 38.5, "hypotension": "NONE", "pressors": 0, "o2_device": "NC", "o2_flow_lpm": 2.0}
                     | bad))


# ================================================================ ICANS: the rule as written (trial.md §3.5)


def icans_as_written(tool, score, loc, seizure, motor, icp, death, loc_other=False, seizure_other=False,
                     motor_other=False, edema_other=False):
    """A literal transcription of trial.md §3.5 (with §3.4's attribution and "unable to perform")."""
    if death:
        return 5
    if score == "UNABLE":
        e = 4
    elif score == "NE":
        e = 0
    elif tool == "ICE":
        e = 0 if score == 10 else 1 if 7 <= score <= 9 else 2 if 3 <= score <= 6 else 3
    else:
        e = 3 if score >= 9 else 1 if score >= 1 else 0
    levels = {"ALERT": 0, "SPONT": 1, "VOICE": 2, "TACTILE": 3, "UNAROUSABLE": 4}
    lc = 0 if loc_other else levels[loc]
    s = 0 if seizure_other else {"NONE": 0, "RESOLVED": 3, "PROLONGED": 4}[seizure]
    m = 4 if motor and not motor_other else 0
    i = 0 if edema_other else {"NONE": 0, "FOCAL": 3, "DIFFUSE": 4}[icp]
    return max(e, lc, s, m, i)


ICE_SCORES = (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, "UNABLE")          # least to most severe
CAPD_SCORES = tuple(range(33)) + ("UNABLE",)
ICANS_COMMON = {
    "loc": ("ALERT", "SPONT", "VOICE", "TACTILE", "UNAROUSABLE"),
    "seizure": ("NONE", "RESOLVED", "PROLONGED"),
    "motor": (False, True),
    "icp": ("NONE", "FOCAL", "DIFFUSE"),
    "death": (False, True),
    "loc_other": (True, False),
    "seizure_other": (True, False),
    "motor_other": (True, False),
    "edema_other": (True, False),
}


def icans_of(tool):
    def grade(score, loc, seizure, motor, icp, death, loc_other, seizure_other, motor_other, edema_other):
        return icans_grade(tool=tool, ice=score if tool == "ICE" else None, capd=score if tool == "CAPD" else None,
                           loc=loc, seizure=seizure, motor=motor, icp=icp, death=death, loc_other_cause=loc_other,
                           seizure_other_cause=seizure_other, motor_other_cause=motor_other,
                           edema_other_cause=edema_other)
    return grade


@pytest.fixture(scope="module", params=[("ICE", ICE_SCORES), ("CAPD", CAPD_SCORES)], ids=["ICE", "CAPD"])
def icans_grid(request):
    tool, scores = request.param
    domains = {"score": scores} | ICANS_COMMON
    return tool, domains, grid(icans_of(tool), domains)


def test_icans_grade_matches_the_rule_as_written_over_the_whole_domain(icans_grid):
    tool, _, results = icans_grid
    for combination, grade in results.items():
        assert grade == icans_as_written(tool, *combination), combination


def test_icans_grade_is_an_integer_from_0_to_5_for_every_combination(icans_grid):
    _, domains, results = icans_grid
    assert len(results) == math.prod(len(values) for values in domains.values())
    assert {type(grade) for grade in results.values()} == {int}
    assert set(results.values()) == {0, 1, 2, 3, 4, 5}


def test_icans_grade_is_monotone_in_each_input(icans_grid):
    _, domains, results = icans_grid
    assert_monotone(results, domains)


def test_an_unknown_icans_input_gives_the_grade_only_when_every_value_of_it_agrees(icans_grid):
    tool, domains, results = icans_grid
    names = list(domains)
    for combination in list(results)[::17]:
        for position, name in enumerate(names):
            completions = {results[combination[:position] + (value,) + combination[position + 1:]]
                           for value in domains[name]}
            expected = completions.pop() if len(completions) == 1 else None
            unknown = combination[:position] + (None,) + combination[position + 1:]
            assert icans_of(tool)(*unknown) == expected, (combination, name)


def test_ice_and_capd_not_evaluable_leave_the_grade_to_the_other_domains():
    for tool, score in (("ICE", 10), ("CAPD", 0)):
        for loc, seizure, icp in product(ICANS_COMMON["loc"], ICANS_COMMON["seizure"], ICANS_COMMON["icp"]):
            scored = icans_grade(tool=tool, ice=score, capd=score, loc=loc, seizure=seizure, motor=False, icp=icp)
            not_evaluable = icans_grade(tool=tool, ice="NE", capd="NE", loc=loc, seizure=seizure, motor=False, icp=icp)
            assert not_evaluable == scored


def test_icans_grade_reads_only_the_chosen_tool():
    kwargs = {"loc": "ALERT", "seizure": "NONE", "motor": False, "icp": "NONE"}
    assert icans_grade(tool="ICE", ice=10, capd=30, **kwargs) == 0
    assert icans_grade(tool="CAPD", ice=0, capd=0, **kwargs) == 0
    assert icans_grade(tool=None, ice=8, capd=5, **kwargs) == 1           # both tools agree: grade 1
    assert icans_grade(tool=None, ice=10, capd=12, **kwargs) is None


@pytest.mark.parametrize("bad", [{"ice": 11}, {"ice": -1}, {"capd": 33}, {"loc": "DROWSY"}, {"seizure": "YES"},
                                 {"icp": "EDEMA"}, {"motor": "Y"}, {"tool": "GCS"}])
def test_icans_core_refuses_values_outside_the_domain(bad):
    with pytest.raises(DomainError):
        icans_grade(**({"tool": "ICE", "ice": 10, "capd": 0, "loc": "ALERT", "seizure": "NONE", "motor": False,
                        "icp": "NONE"} | bad))


# ---------------------------------------------------------------- ICE or CAPD: age cut-off (a parameter) and delay

AGES = (0, 11, 12, 120, 142, 143, 144, 145, 155, 156, 157, 200, 216, 300)


@pytest.mark.parametrize("cutoff", [144, 156, 150.5])
def test_tool_is_capd_below_the_age_cutoff_or_with_developmental_delay(cutoff):
    for age, delay in product(AGES + (None,), (False, True, None)):
        tool = icans_tool(age_months=age, developmental_delay=delay, capd_below_age_months=cutoff)
        if delay or (age is not None and age < cutoff):
            assert tool == "CAPD", (age, delay)
        elif delay is False and age is not None:
            assert tool == "ICE", (age, delay)
        else:
            assert tool is None, (age, delay)


@pytest.mark.parametrize(("birth", "expected"), [
    ((2014, 3), "ICE"),      # 12 years 0 months on 1 March 2026
    ((2014, 4), "CAPD"),     # 11 years 11 months
    ((2014, 2), "ICE"),
])
def test_tool_by_age_at_the_assessment_date_from_birth_year_and_month(birth, expected):
    params = {"capd_below_age_months": 144, "date": "NDTC", "developmental_delay": "DEVDELAY"}
    subject = {"birth_year": birth[0], "birth_month": birth[1]}
    values = {"NDTC": datetime(2026, 3, 1, 0, 5, tzinfo=timezone.utc), "DEVDELAY": "N"}
    derive = get_derivation("icans_tool")
    assert derive(values, subject, params) == expected
    assert derive(values | {"DEVDELAY": "Y"}, subject, params) == "CAPD"
    assert derive(values, subject, params | {"capd_below_age_months": 156}) == "CAPD"     # "12 and under"


def test_the_icans_grade_follows_the_tool_chosen_by_age_and_delay():
    derive = get_derivation("astct_icans_grade")
    params = {"capd_below_age_months": 144, "age_months": "AGEM", "developmental_delay": "DD", "ice": "ICE",
              "capd": "CAPD", "loc": "LOC", "seizure": "SEIZ", "motor": "MOTOR", "icp": "ICP"}
    base = {"ICE": 10, "CAPD": 12, "LOC": "ALERT", "SEIZ": "NONE", "MOTOR": "N", "ICP": "NONE"}
    assert derive(base | {"AGEM": 150, "DD": "N"}, {}, params) == 0         # ICE 10
    assert derive(base | {"AGEM": 150, "DD": "Y"}, {}, params) == 3         # CAPD 12
    assert derive(base | {"AGEM": 143, "DD": "N"}, {}, params) == 3
    assert derive(base | {"AGEM": 150}, {}, params) is None                 # delay unknown: tool undecided
    assert derive(base | {"AGEM": 150, "DD": "N"}, {}, params | {"capd_below_age_months": 156}) == 3
    assert derive(base | {"AGEM": 150, "DD": "N"}, {}, {k: v for k, v in params.items()
                                                          if k != "capd_below_age_months"}) is None


def test_not_evaluable_codes_unable_to_perform_versus_sedation():
    derive = get_derivation("astct_icans_grade")
    params = {"capd_below_age_months": 144, "age_months": "AGEM", "ice": "ICE", "not_evaluable": "NOTEVAL",
              "loc": "LOC", "seizure": "SEIZ", "motor": "MOTOR", "icp": "ICP", "unable_codes": ["UNABLE", "ENCEPH"]}
    base = {"AGEM": 200, "LOC": "ALERT", "SEIZ": "NONE", "MOTOR": "N", "ICP": "NONE"}
    assert derive(base | {"NOTEVAL": "ENCEPH"}, {}, params) == 4
    assert derive(base | {"NOTEVAL": "SEDATION"}, {}, params) == 0
    assert derive(base | {"NOTEVAL": "SEDATION", "SEIZ": "RESOLVED"}, {}, params) == 3
    assert derive(base, {}, params) is None


# ================================================================ ICE and CAPD totals (§3.3)

ICE_ITEMS = {"orientation": range(5), "naming": range(4), "commands": range(2), "writing": range(2),
             "attention": range(2)}


def test_ice_total_is_the_sum_from_0_to_10_over_all_item_scores():
    totals = set()
    for scores in product(*ICE_ITEMS.values()):
        total = ice_total(**dict(zip(ICE_ITEMS, scores)))
        assert total == sum(scores)
        totals.add(total)
    assert totals == set(range(11))


@pytest.mark.parametrize(("item", "score"), [("orientation", 5), ("naming", 4), ("commands", 2), ("writing", -1),
                                             ("attention", 1.5), ("attention", "1")])
def test_ice_item_out_of_range(item, score):
    scores = dict.fromkeys(ICE_ITEMS, 0) | {item: score}
    with pytest.raises(DomainError):
        ice_total(**scores)
    params = {name: name.upper() for name in ICE_ITEMS}
    assert get_derivation("ice_total")({name.upper(): value for name, value in scores.items()}, {}, params) is None


FREQUENCIES = ("NEVER", "RARELY", "SOMETIMES", "OFTEN", "ALWAYS")


def test_capd_items_1_to_4_are_reverse_scored_and_5_to_8_forward():
    for position in range(1, 9):
        for forward, answer in enumerate(FREQUENCIES):
            expected = 4 - forward if position <= 4 else forward
            assert capd_item_score(position, answer) == expected
            assert capd_item_score(position, answer.lower()) == expected
            assert capd_item_score(position, forward) == expected


def test_capd_total_over_all_answers_of_each_half():
    for half in product(FREQUENCIES, repeat=4):
        reversed_part = sum(4 - FREQUENCIES.index(answer) for answer in half)
        forward_part = sum(FREQUENCIES.index(answer) for answer in half)
        assert capd_total(list(half) + ["NEVER"] * 4) == reversed_part
        assert capd_total(["ALWAYS"] * 4 + list(half)) == forward_part
    assert capd_total(["ALWAYS"] * 4 + ["NEVER"] * 4) == 0
    assert capd_total(["NEVER"] * 4 + ["ALWAYS"] * 4) == 32
    assert capd_total(["NEVER"] * 8) == capd_total(["ALWAYS"] * 8) == 16


@pytest.mark.parametrize("answers", [["NEVER"] * 7, ["NEVER"] * 9, ["NEVER"] * 7 + ["MOSTLY"], ["NEVER"] * 7 + [5],
                                     "NEVER" * 8])
def test_capd_total_refuses_malformed_answers(answers):
    with pytest.raises(DomainError):
        capd_total(answers)


def test_capd_wrapper_maps_form_codes_and_needs_all_eight():
    items = [f"C{n}" for n in range(1, 9)]
    derive = get_derivation("capd_total")
    codes = {"0": "NEVER", "1": "RARELY", "2": "SOMETIMES", "3": "OFTEN", "4": "ALWAYS"}
    values = dict(zip(items, ["3", "2", "3", "1", "2", "0", "2", "3"]))
    assert derive(values, {}, {"items": items, "code_map": codes}) == 14
    assert derive({k: v for k, v in values.items() if k != "C5"}, {}, {"items": items, "code_map": codes}) is None
    assert derive(values, {}, {"items": items[:7], "code_map": codes}) is None


# ================================================================ age, BSA, doses


@pytest.mark.parametrize(("birth", "at", "months"), [
    ((2014, 3), date(2014, 3, 1), 0), ((2014, 3), date(2014, 3, 31), 0), ((2014, 3), date(2014, 4, 1), 1),
    ((2014, 3), date(2026, 2, 28), 143), ((2014, 3), date(2026, 3, 1), 144), ((2014, 12), date(2015, 1, 1), 1),
    ((2008, 2), date(2026, 1, 31), 215), ((2008, 2), date(2026, 2, 1), 216),
])
def test_age_in_completed_months_and_years_from_the_first_of_the_birth_month(birth, at, months):
    assert age_months(*birth, at) == months
    assert age_years(*birth, at) == months // 12
    derive = get_derivation("age_at")
    subject = {"birth_year": birth[0], "birth_month": birth[1]}
    assert derive({"D": at}, subject, {"date": "D", "unit": "months"}) == months
    assert derive({"D": at}, subject, {"date": "D", "unit": "years"}) == months // 12
    assert derive({"D": at.isoformat()[:7]}, subject, {"date": "D", "unit": "months"}) == months   # YYYY-MM is enough
    items = {"BY": birth[0], "BM": birth[1], "D": at}
    assert derive(items, {}, {"date": "D", "unit": "years", "birth_year": "BY", "birth_month": "BM"}) == months // 12


def test_age_wrapper_none_cases():
    derive = get_derivation("age_at")
    subject = {"birth_year": 2014, "birth_month": 3}
    assert derive({"D": "2026"}, subject, {"date": "D", "unit": "years"}) is None          # year alone
    assert derive({"D": date(2013, 1, 1)}, subject, {"date": "D", "unit": "years"}) is None  # before birth
    assert derive({"D": date(2026, 1, 1)}, {}, {"date": "D", "unit": "years"}) is None
    assert derive({"D": date(2026, 1, 1)}, subject, {"date": "D"}) is None                  # no unit
    assert derive({"D": date(2026, 1, 1)}, {"birth_year": 2014, "birth_month": 13}, {"date": "D", "unit": "months"}) is None


@pytest.mark.parametrize(("height", "weight", "bsa"), [
    (180.0, 80.0, 2.0),                         # sqrt(14400 / 3600) = sqrt(4)
    (90.0, 10.0, 0.5),                          # sqrt(900 / 3600) = sqrt(0.25)
    (150.0, 36.0, 1.224744871391589),           # sqrt(1.5)
    (120.0, 25.0, 0.9128709291752769),          # sqrt(0.8333...)
    (60.0, 6.0, 0.31622776601683794),           # sqrt(0.1)
    (100.0, 16.0, 0.6666666666666666),          # sqrt(0.4444...)
])
def test_bsa_mosteller_against_hand_computed_values(height, weight, bsa):
    assert bsa_mosteller(height, weight) == pytest.approx(bsa, rel=1e-12)
    assert get_derivation("bsa_mosteller")({"HT": height, "WT": weight}, {}, {"height": "HT", "weight": "WT"}) == (
        pytest.approx(bsa, rel=1e-12))


@pytest.mark.parametrize(("height", "weight"), [(0.0, 20.0), (120.0, 0.0), (-1.0, 20.0), (float("inf"), 20.0)])
def test_bsa_refuses_impossible_measures(height, weight):
    with pytest.raises(DomainError):
        bsa_mosteller(height, weight)
    assert get_derivation("bsa_mosteller")({"HT": height, "WT": weight}, {}, {"height": "HT", "weight": "WT"}) is None


def test_expected_lymphodepletion_dose_from_a_bsa_item_or_a_dose_per_m2_mapping():
    derive = get_derivation("ld_expected_dose")
    assert expected_dose(30, 0.5) == 15.0
    assert derive({"BSA": 0.5}, {}, {"bsa": "BSA", "dose_per_m2": 30}) == 15.0
    assert derive({"BSA": 1.2, "DRUG": "CY"}, {}, {"bsa": "BSA", "drug": "DRUG", "dose_per_m2": {"FLU": 30, "CY": 300}}) == (
        pytest.approx(360.0))
    assert derive({"BSA": 1.2, "DRUG": "OTHER"}, {}, {"bsa": "BSA", "drug": "DRUG", "dose_per_m2": {"FLU": 30}}) is None
    assert derive({"BSA": 1.2}, {}, {"bsa": "BSA"}) is None                                 # no protocol dose: no default
    assert derive({"HT": 180.0, "WT": 80.0}, {}, {"height": "HT", "weight": "WT", "dose_per_m2": 25}) == 50.0


def test_dose_per_kg_and_cumulative_dose():
    assert dose_per_kg(3.0, 30.0) == pytest.approx(0.1)
    assert cumulative_dose([0.1, 0.3, 0.6]) == pytest.approx(1.0)
    assert cumulative_dose([]) == 0.0
    derive = get_derivation("dose_per_kg")
    assert derive({"CELLS": 18.0, "WT": 30.0}, {}, {"cells": "CELLS", "weight": "WT"}) == pytest.approx(0.6)
    assert derive({"CELLS": 18.0}, {}, {"cells": "CELLS", "weight": "WT"}) is None
    assert derive({"CELLS": 18.0, "WT": 0.0}, {}, {"cells": "CELLS", "weight": "WT"}) is None
    cumulative = get_derivation("cumulative_dose_per_kg")
    params = {"doses": ["F1", "F2", "F3"]}
    assert cumulative({"F1": 0.1, "F2": 0.3, "F3": 0.6}, {}, params) == pytest.approx(1.0)
    assert cumulative({"F1": 0.1, "F2": 0.3}, {}, params) == pytest.approx(0.4)      # third fraction not given
    assert cumulative({}, {}, params) is None
    assert cumulative({"F1": -0.1}, {}, params) is None
    with pytest.raises(DomainError):
        dose_per_kg(1.0, 0.0)


# ================================================================ CNS status (§5), with the traumatic-tap rule

BLOOD = {"blood_wbc": 10_000.0, "blood_rbc": 4_000_000.0}          # blood WBC/RBC = 0.0025


@pytest.mark.parametrize(("kwargs", "status"), [
    pytest.param({"csf_blasts": False, "csf_wbc": 0.0}, "CNS1", id="no-blasts"),
    pytest.param({"csf_blasts": False, "csf_wbc": 50.0, "csf_rbc": 0.0}, "CNS1", id="no-blasts-regardless-of-wbc"),
    pytest.param({"csf_blasts": True, "csf_wbc": 4.9}, "CNS2", id="blasts-wbc-below-5"),
    pytest.param({"csf_blasts": True, "csf_wbc": 5.0, "csf_rbc": 0.0}, "CNS3", id="blasts-wbc-5-atraumatic"),
    pytest.param({"csf_blasts": True, "csf_wbc": 40.0, "csf_rbc": 0.0}, "CNS3", id="blasts-wbc-40-atraumatic"),
    pytest.param({"csf_blasts": False, "csf_wbc": 0.0, "clinical_signs": True}, "CNS3", id="clinical-signs"),
    # traumatic tap: CSF WBC/RBC vs 2 x blood WBC/RBC = 0.005
    pytest.param({"csf_blasts": True, "csf_wbc": 10.0, "csf_rbc": 5000.0} | BLOOD, "CNS2", id="traumatic-0.002-CNS2"),
    pytest.param({"csf_blasts": True, "csf_wbc": 25.0, "csf_rbc": 5000.0} | BLOOD, "CNS2", id="traumatic-equal-CNS2"),
    pytest.param({"csf_blasts": True, "csf_wbc": 26.0, "csf_rbc": 5000.0} | BLOOD, "CNS3", id="traumatic-above-CNS3"),
    pytest.param({"csf_blasts": True, "csf_wbc": 10.0, "csf_rbc": 5000.0}, None, id="traumatic-without-blood-counts"),
    pytest.param({"csf_blasts": True, "csf_wbc": 10.0}, None, id="no-csf-rbc"),
    pytest.param({"csf_blasts": True, "csf_wbc": None}, None, id="no-wbc"),
    pytest.param({"csf_blasts": None, "csf_wbc": 0.0}, None, id="blasts-unknown"),
    pytest.param({"csf_blasts": False, "csf_wbc": 0.0, "clinical_signs": None}, None, id="signs-unknown-CNS1"),
    pytest.param({"csf_blasts": True, "csf_wbc": 9.0, "csf_rbc": 0.0, "clinical_signs": None}, "CNS3",
                 id="signs-unknown-but-CNS3"),
    pytest.param({"csf_blasts": True, "csf_wbc": 10.0, "csf_rbc": 5.0, "traumatic_rbc_min": 10.0}, "CNS3",
                 id="rbc-below-traumatic-minimum"),
    pytest.param({"csf_blasts": True, "csf_wbc": 10.0, "csf_rbc": 10.0, "traumatic_rbc_min": 10.0}, None,
                 id="rbc-at-traumatic-minimum-needs-blood"),
])
def test_cns_status(kwargs, status):
    assert cns_status(**kwargs) == status


def test_cns_status_wrapper_converts_blood_units_and_maps_codes():
    derive = get_derivation("cns_status")
    params = {"csf_wbc": "CSFWBC", "csf_rbc": "CSFRBC", "csf_blasts": "CSFBLAST", "blood_wbc": "WBC",
              "blood_rbc": "RBC", "blood_wbc_unit": "10*9/L", "blood_rbc_unit": "10*12/L",
              "codes": {"CNS1": "1", "CNS2": "2", "CNS3": "3"}}
    tap = {"CSFWBC": 10.0, "CSFRBC": 5000.0, "CSFBLAST": "Y", "WBC": 10.0, "RBC": 4.0}
    assert derive(tap, {}, params) == "2"
    assert derive(tap | {"CSFWBC": 26.0}, {}, params) == "3"
    assert derive(tap | {"CSFBLAST": "N"}, {}, params) == "1"
    assert derive(tap | {"CSFBLAST": "N"}, {}, params | {"clinical_signs": "SIGNS"}) is None
    assert derive(tap, {}, {k: v for k, v in params.items() if k != "blood_rbc_unit"}) is None
    assert derive(tap, {}, params | {"codes": {"CNS1": "1"}}) is None           # codes must cover every result


# ================================================================ MRD (§5)


@pytest.mark.parametrize(("kwargs", "negative"), [
    pytest.param({"value": 0.0, "sensitivity": 1e-4}, True, id="zero-below-flow-sensitivity"),
    pytest.param({"value": 0.99e-4, "sensitivity": 1e-4}, True, id="just-below"),
    pytest.param({"value": 1e-4, "sensitivity": 1e-4}, False, id="at-sensitivity-is-detected"),
    pytest.param({"value": 1e-5, "sensitivity": 1e-6}, False, id="ngs-detects-below-flow-cutoff"),
    pytest.param({"value": 5e-7, "sensitivity": 1e-6}, True, id="ngs-below"),
    pytest.param({"value": None, "sensitivity": 1e-4, "undetectable": True}, True, id="reported-undetectable"),
    pytest.param({"value": None, "sensitivity": 1e-4, "undetectable": False}, False, id="reported-detected"),
    pytest.param({"value": 0.0, "sensitivity": None}, None, id="no-sensitivity"),
    pytest.param({"value": None, "sensitivity": None, "undetectable": True}, None, id="undetectable-without-sensitivity"),
    pytest.param({"value": None, "sensitivity": 1e-4}, None, id="no-value"),
    pytest.param({"value": 0.0, "sensitivity": 1e-3, "required_sensitivity": 1e-4}, None, id="assay-not-sensitive-enough"),
    pytest.param({"value": 2e-3, "sensitivity": 1e-3, "required_sensitivity": 1e-4}, False, id="insensitive-but-detected"),
    pytest.param({"value": 0.0, "sensitivity": 1e-6, "required_sensitivity": 1e-4}, True, id="more-sensitive-than-needed"),
])
def test_mrd_negative_only_below_the_assay_sensitivity(kwargs, negative):
    assert mrd_negative(**kwargs) is negative


def test_mrd_negative_over_a_grid_of_values_and_sensitivities():
    sensitivities = (1e-6, 1e-5, 1e-4, 1e-3)
    for exponent in range(-80, 1):
        value = 10 ** (exponent / 10)
        for sensitivity in sensitivities:
            assert mrd_negative(value=value, sensitivity=sensitivity) is (value < sensitivity)


def test_mrd_wrapper_converts_units():
    derive = get_derivation("mrd_negative")
    params = {"value": "MRD", "value_unit": "percent", "sensitivity": "LOD", "sensitivity_unit": "fraction",
              "required_sensitivity": 1e-4, "codes": {"true": "Y", "false": "N"}}
    assert derive({"MRD": 0.009, "LOD": 1e-4}, {}, params) == "Y"          # 0.009% = 9e-5 < 1e-4
    assert derive({"MRD": 0.01, "LOD": 1e-4}, {}, params) == "N"           # 0.01% = 1e-4: detected
    assert derive({"MRD": 0.0, "LOD": 1e-3}, {}, params) is None           # assay not sensitive enough
    assert derive({"MRD": 0.0}, {}, params) is None
    assert derive({"MRD": 0.0, "LOD": 1e-4}, {}, {k: v for k, v in params.items() if k != "value_unit"}) is None
    per_million = params | {"value_unit": "per_million", "codes": None}
    assert derive({"MRD": 50.0, "LOD": 1e-4}, {}, per_million) is True     # 50 per 10⁶ = 5e-5


# ================================================================ response (§5, §8.2 RSDRV)

THRESHOLDS = {"blasts_below_pct": 5.0, "anc_min": 1000.0, "platelets_min": 100_000.0}
REMISSION = {"bm_blasts_pct": 1.0, "pb_blasts": False, "emd": False, "cns": "CNS1", "anc": 1500.0,
             "platelets": 150_000.0, "transfused": False}


@pytest.mark.parametrize(("change", "response"), [
    pytest.param({}, "CR", id="CR"),
    pytest.param({"bm_blasts_pct": 4.99}, "CR", id="blasts-4.99"),
    pytest.param({"bm_blasts_pct": 5.0}, "NOT_CR", id="blasts-5"),
    pytest.param({"anc": 999.0}, "CRi", id="anc-below"),
    pytest.param({"anc": 1000.0}, "CR", id="anc-at-threshold"),
    pytest.param({"platelets": 99_999.0}, "CRi", id="platelets-below"),
    pytest.param({"anc": 200.0, "platelets": 20_000.0}, "CRi", id="both-counts-below"),
    pytest.param({"transfused": True}, "CRi", id="transfused"),
    pytest.param({"pb_blasts": True}, "NOT_CR", id="circulating-blasts"),
    pytest.param({"emd": True}, "NOT_CR", id="extramedullary"),
    pytest.param({"cns": "CNS2"}, "NOT_CR", id="CNS2"),
    pytest.param({"cns": "CNS3", "anc": 100.0}, "NOT_CR", id="CNS3"),
    pytest.param({"cns": None}, None, id="csf-not-done"),
    pytest.param({"anc": None}, None, id="anc-missing"),
    pytest.param({"anc": None, "bm_blasts_pct": 30.0}, "NOT_CR", id="anc-missing-but-blasts"),
])
def test_derived_response(change, response):
    assert derived_response(**(REMISSION | change | THRESHOLDS)) == response


def test_derived_response_over_all_criteria_combinations():
    for blasts, pb, emd, cns, anc_ok, plt_ok, transfused in product((1.0, 10.0), (False, True), (False, True),
                                                                    ("CNS1", "CNS2", "CNS3"), (False, True),
                                                                    (False, True), (False, True)):
        result = derived_response(bm_blasts_pct=blasts, pb_blasts=pb, emd=emd, cns=cns,
                                  anc=1500.0 if anc_ok else 500.0, platelets=150_000.0 if plt_ok else 50_000.0,
                                  transfused=transfused, **THRESHOLDS)
        disease_free = blasts < 5 and not pb and not emd and cns == "CNS1"
        counts = anc_ok and plt_ok and not transfused
        assert result == ("NOT_CR" if not disease_free else "CR" if counts else "CRi")


def test_derived_response_wrapper_needs_its_thresholds_from_params():
    derive = get_derivation("derived_response")
    params = {"bm_blasts": "BMBLAST", "pb_blasts": "PBBLAST", "emd": "EMD", "cns": "CNSSTAT", "anc": "ANC",
              "platelets": "PLT", "transfused": "TRANSF", "code_map": {"1": "CNS1", "2": "CNS2", "3": "CNS3"}} | {
        "blasts_below_pct": 5, "anc_min": 1.0, "platelets_min": 100}                    # counts in 10⁹/L here
    values = {"BMBLAST": 2.0, "PBBLAST": "N", "EMD": "N", "CNSSTAT": "1", "ANC": 0.8, "PLT": 120.0, "TRANSF": "N"}
    assert derive(values, {}, params) == "CRi"
    assert derive(values | {"ANC": 1.2}, {}, params) == "CR"
    assert derive(values, {}, {k: v for k, v in params.items() if k != "anc_min"}) is None


# ================================================================ B-cell aplasia and its confirmed loss (§5)

E7 = {"abs_threshold": 50.0, "pct_threshold": 10.0}                # >= 50/µL or >= 10% = recovery [S:E7]
D6 = {"abs_threshold": 100.0, "pct_threshold": 1.0, "strict": True}  # > 100/µL or > 1%, confirmed [S:D6]


@pytest.mark.parametrize(("thresholds", "abs_count", "pct", "aplasia"), [
    (E7, 0.0, 0.0, True), (E7, 49.9, 9.9, True), (E7, 50.0, 0.0, False), (E7, 10.0, 10.0, False),
    (E7, 10.0, None, None), (E7, 60.0, None, False), (E7, None, None, None),
    (D6, 100.0, 1.0, True), (D6, 100.1, 0.0, False), (D6, 0.0, 1.01, False),
    ({"abs_threshold": 50.0}, 49.0, 90.0, True), ({"abs_threshold": 50.0}, 50.0, None, False),
])
def test_b_cell_aplasia(thresholds, abs_count, pct, aplasia):
    assert b_cell_aplasia(abs_count=abs_count, pct=pct, **thresholds) is aplasia
    derive = get_derivation("b_cell_aplasia")
    values = {key: value for key, value in (("CD19ABS", abs_count), ("CD19PCT", pct)) if value is not None}
    assert derive(values, {}, {"abs": "CD19ABS", "pct": "CD19PCT"} | thresholds) is aplasia


def test_b_cell_thresholds_have_no_default():
    with pytest.raises(DomainError):
        b_cell_recovery(abs_count=10.0, pct=1.0, abs_threshold=None)
    assert get_derivation("b_cell_aplasia")({"A": 10.0}, {}, {"abs": "A"}) is None


def test_b_cell_aplasia_over_a_grid_is_the_negation_of_recovery_at_either_threshold():
    for abs_count, pct in product((0.0, 10.0, 49.0, 50.0, 51.0, 500.0), (0.0, 1.0, 9.99, 10.0, 50.0)):
        assert b_cell_aplasia(abs_count=abs_count, pct=pct, **E7) is not (abs_count >= 50 or pct >= 10)


@pytest.mark.parametrize(("first", "repeat", "loss"), [
    (True, True, True), (True, False, False), (False, True, False), (False, False, False),
    (True, None, None), (None, True, None), (None, False, False), (False, None, False), (None, None, None),
])
def test_loss_of_bca_needs_a_confirming_repeat(first, repeat, loss):
    assert bca_loss_confirmed(first, repeat) is loss


def test_loss_of_bca_wrapper():
    derive = get_derivation("b_cell_aplasia_loss")
    params = {"abs": "A", "pct": "P", "repeat_abs": "RA", "repeat_pct": "RP", "codes": {"true": "Y", "false": "N"}} | E7
    assert derive({"A": 80.0, "P": 2.0, "RA": 120.0, "RP": 3.0}, {}, params) == "Y"
    assert derive({"A": 80.0, "P": 2.0, "RA": 20.0, "RP": 3.0}, {}, params) == "N"       # not confirmed
    assert derive({"A": 20.0, "P": 2.0}, {}, params) == "N"                              # still aplastic
    assert derive({"A": 80.0, "P": 2.0}, {}, params) is None                             # repeat awaited
    assert derive({"A": 80.0, "P": 0.5, "RA": 120.0, "RP": 3.0}, {}, params | D6) == "N"  # 80/µL and 0.5%: aplastic
    assert derive({"A": 150.0, "P": 2.0, "RA": 120.0, "RP": 3.0}, {}, params | D6) == "Y"


@pytest.mark.parametrize(("series", "index"), [
    ([False, False, True, True], 2),
    ([False, True, False, True, True], 3),          # a single recovered sample is not a confirmed loss
    ([True, True, False], None),                    # no aplasia first: never lost
    ([False, True, None, True], 1),                 # undetermined samples are skipped
    ([False, True], None),                          # confirmation awaited
    ([], None),
])
def test_first_confirmed_loss_in_a_series(series, index):
    assert first_confirmed_bca_loss(series) == index


# ================================================================ seriousness (ICH E2A, §4.4)

CRITERIA = ("death", "life_threatening", "hospitalisation", "disability", "congenital_anomaly", "medically_important")


def test_serious_if_and_only_if_at_least_one_criterion_over_all_answers():
    derive = get_derivation("ae_serious")
    params = {name: name.upper() for name in CRITERIA} | {"codes": {"true": "Y", "false": "N"}}
    for answers in product((True, False, None), repeat=6):
        criteria = dict(zip(CRITERIA, answers))
        expected = True if True in answers else None if None in answers else False
        assert ae_serious(**criteria) is expected
        values = {name.upper(): ("Y" if answer else "N") for name, answer in criteria.items() if answer is not None}
        assert derive(values, {}, params) == {True: "Y", False: "N", None: None}[expected]
        booleans = {name.upper(): answer for name, answer in criteria.items() if answer is not None}
        assert derive(booleans, {}, {name: name.upper() for name in CRITERIA}) is expected


def test_seriousness_needs_all_six_criteria_configured():
    params = {name: name.upper() for name in CRITERIA[:5]}
    assert get_derivation("ae_serious")({"DEATH": "Y"}, {}, params) is None
    with pytest.raises(DomainError):
        ae_serious(death="Y", life_threatening=False, hospitalisation=False, disability=False, congenital_anomaly=False,
                   medically_important=False)


# ================================================================ the registered wrappers

CRS_PARAMS = {"temp": "TMAX", "hypotension": "HYPOT", "pressors": "NPRESS", "o2_device": "O2DEV", "o2_flow": "O2FLOW",
              "fever_other_cause": "FEVEROTH", "previously_treated": ["TOCI", "STEROID"], "death": "CRSDTH"}
ICANS_PARAMS = {"capd_below_age_months": 144, "date": "NDTC", "developmental_delay": "DD", "ice": "ICETOT",
                "capd": "CAPDTOT", "loc": "LOC", "seizure": "SEIZ", "motor": "MOTOR", "icp": "ICP"}
SUBJECT = {"site": "ES01", "sex": "F", "birth_year": 2012, "birth_month": 5}

# name: (params, complete values, expected result, inputs each of which is needed for this result)
WRAPPERS = {
    "astct_crs_grade": (CRS_PARAMS, {"TMAX": 38.5, "HYPOT": "FLUIDS", "O2DEV": "NC", "O2FLOW": 2.0, "FEVEROTH": "N",
                                     "TOCI": "N", "STEROID": "N", "CRSDTH": "N"}, 2,
                        ["TMAX", "HYPOT", "O2DEV", "O2FLOW", "FEVEROTH", "CRSDTH"]),
    "ice_total": ({name: name.upper() for name in ICE_ITEMS}, {"ORIENTATION": 3, "NAMING": 3, "COMMANDS": 1,
                                                               "WRITING": 0, "ATTENTION": 1}, 8,
                  ["ORIENTATION", "NAMING", "COMMANDS", "WRITING", "ATTENTION"]),
    "capd_total": ({"items": [f"C{n}" for n in range(1, 9)]},
                   {f"C{n}": "SOMETIMES" for n in range(1, 9)}, 16, [f"C{n}" for n in range(1, 9)]),
    "icans_tool": (ICANS_PARAMS, {"NDTC": date(2026, 6, 1), "DD": "N"}, "ICE", ["NDTC", "DD"]),
    "astct_icans_grade": (ICANS_PARAMS, {"NDTC": date(2026, 6, 1), "DD": "N", "ICETOT": 8, "LOC": "ALERT",
                                         "SEIZ": "NONE", "MOTOR": "N", "ICP": "NONE"}, 1,
                          ["NDTC", "DD", "ICETOT", "LOC", "SEIZ", "MOTOR", "ICP"]),
    "age_at": ({"date": "D", "unit": "years"}, {"D": date(2026, 6, 1)}, 14, ["D"]),
    "bsa_mosteller": ({"height": "HT", "weight": "WT"}, {"HT": 180.0, "WT": 80.0}, 2.0, ["HT", "WT"]),
    "ld_expected_dose": ({"height": "HT", "weight": "WT", "drug": "DRUG", "dose_per_m2": {"FLU": 30, "CY": 300}},
                         {"HT": 180.0, "WT": 80.0, "DRUG": "FLU"}, 60.0, ["HT", "WT", "DRUG"]),
    "dose_per_kg": ({"cells": "CELLS", "weight": "WT"}, {"CELLS": 6.0, "WT": 60.0}, 0.1, ["CELLS", "WT"]),
    "cumulative_dose_per_kg": ({"doses": ["F1", "F2"]}, {"F1": 0.1, "F2": 0.3}, 0.4, []),
    "cns_status": ({"csf_wbc": "W", "csf_rbc": "R", "csf_blasts": "B"}, {"W": 2.0, "R": 0.0, "B": "Y"}, "CNS2",
                   ["W", "B"]),
    "mrd_negative": ({"value": "V", "value_unit": "fraction", "sensitivity": "S", "sensitivity_unit": "fraction"},
                     {"V": 0.0, "S": 1e-4}, True, ["V", "S"]),
    "derived_response": ({"bm_blasts": "BM", "pb_blasts": "PB", "emd": "EMD", "cns": "CNS", "anc": "ANC",
                          "platelets": "PLT", "transfused": "TR"} | {"blasts_below_pct": 5, "anc_min": 1000,
                                                                     "platelets_min": 100_000},
                         {"BM": 1.0, "PB": "N", "EMD": "N", "CNS": "CNS1", "ANC": 2000.0, "PLT": 200_000.0, "TR": "N"},
                         "CR", ["BM", "PB", "EMD", "CNS", "ANC", "PLT", "TR"]),
    "b_cell_aplasia": ({"abs": "A", "pct": "P"} | E7, {"A": 5.0, "P": 1.0}, True, ["A", "P"]),
    "b_cell_aplasia_loss": ({"abs": "A", "pct": "P", "repeat_abs": "RA", "repeat_pct": "RP"} | E7,
                            {"A": 80.0, "P": 5.0, "RA": 90.0, "RP": 5.0}, True, ["A", "RA"]),
    "ae_serious": ({name: name.upper() for name in CRITERIA}, {name.upper(): "N" for name in CRITERIA}, False,
                   [name.upper() for name in CRITERIA]),
}


@pytest.mark.parametrize("name", WRAPPERS)
def test_registered_wrapper_derives_from_complete_inputs(name):
    params, values, expected, _ = WRAPPERS[name]
    result = get_derivation(name)(values, SUBJECT, params)
    assert result == pytest.approx(expected) if isinstance(expected, float) else result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("name", WRAPPERS)
def test_registered_wrapper_returns_none_on_missing_inputs(name):
    params, values, _, needed = WRAPPERS[name]
    derive = get_derivation(name)
    for item in needed:
        assert derive({k: v for k, v in values.items() if k != item}, SUBJECT, params) is None, item
    assert derive({}, SUBJECT, params) is None
    assert derive(values, {}, {}) is None


WEIRD = ["", "x", "Y", -1, -1.5, 0, 10**9, float("nan"), float("inf"), True, False, [], ["Y"], {}, {"a": 1},
         date(1900, 1, 1), datetime(2026, 1, 1, tzinfo=timezone.utc), "2026", "2026-13", None]


@pytest.mark.parametrize("name", WRAPPERS)
def test_registered_wrapper_never_raises_on_out_of_domain_inputs_or_params(name):
    params, values, _, _ = WRAPPERS[name]
    derive = get_derivation(name)
    for key, weird in product(list(values), WEIRD):
        derive(values | {key: weird}, SUBJECT, params)
        derive(values | {key: weird}, {"birth_year": weird, "birth_month": weird}, params)
    for key, weird in product(list(params) + ["code_map", "codes", "unable_codes"], WEIRD):
        derive(values, SUBJECT, params | {key: weird})


# ---------------------------------------------------------------- inside a form: forms check and a save

STUDY_YAML = ("id: T\ntitle: T\nmissing_codes: {ND: Not done}\n"
              "events:\n  - {id: V, label: V, anchor: day0, day: 0, forms: [crs, icans]}\n")
CRS_FORM = """\
id: crs
version: 1
title: CRS
codelists:
  HYP: [{code: NONE, label: None}, {code: FLUIDS, label: Fluids}, {code: VASO, label: Vasopressors}]
  O2: [{code: NONE, label: Room air}, {code: NC, label: Nasal cannula}, {code: BLOWBY, label: Blow-by},
       {code: FACEMASK, label: Facemask}, {code: CPAP, label: CPAP}, {code: MV, label: Ventilation}]
sections:
  - id: S
    items:
      - {id: TMAX, type: decimal, label: Tmax, min: 30, max: 45, precision: 1}
      - {id: FEVEROTH, type: boolean, label: Fever due to another cause}
      - {id: TOCI, type: boolean, label: Tocilizumab}
      - {id: HYPOT, type: choice, code_list: HYP, label: Hypotension}
      - {id: NPRESS, type: integer, min: 0, max: 5, label: Vasopressors, show_if: "HYPOT == 'VASO'"}
      - {id: O2DEV, type: choice, code_list: O2, label: Oxygen}
      - {id: O2FLOW, type: decimal, min: 0, max: 15, label: Flow, show_if: "O2DEV == 'NC'"}
      - id: CRSGR
        type: derived
        label: ASTCT CRS grade
        derivation: astct_crs_grade
        inputs: [TMAX, FEVEROTH, TOCI, HYPOT, NPRESS, O2DEV, O2FLOW]
        params: {temp: TMAX, fever_other_cause: FEVEROTH, previously_treated: TOCI, hypotension: HYPOT,
                 pressors: NPRESS, o2_device: O2DEV, o2_flow: O2FLOW}
        value_type: integer
        min: 0
        max: 5
"""
ICANS_FORM = """\
id: icans
version: 1
title: ICANS
codelists:
  LOC: [{code: ALERT, label: Alert}, {code: SPONT, label: Spontaneous}, {code: VOICE, label: Voice},
        {code: TACTILE, label: Tactile}, {code: UNAROUSABLE, label: Unarousable}]
  SEIZ: [{code: NONE, label: None}, {code: RESOLVED, label: Resolved}, {code: PROLONGED, label: Prolonged}]
  ICP: [{code: NONE, label: None}, {code: FOCAL, label: Focal}, {code: DIFFUSE, label: Diffuse}]
  TOOL: [{code: ICE, label: ICE}, {code: CAPD, label: CAPD}]
sections:
  - id: S
    items:
      - {id: NDAT, type: date, label: Date}
      - {id: DEVDELAY, type: boolean, label: Developmental delay}
      - id: TOOL
        type: derived
        label: Tool
        derivation: icans_tool
        inputs: [NDAT, DEVDELAY]
        params: {capd_below_age_months: 144, date: NDAT, developmental_delay: DEVDELAY}
        value_type: choice
        code_list: TOOL
      - {id: ORI, type: integer, min: 0, max: 4, label: Orientation, show_if: "TOOL == 'ICE'"}
      - {id: NAM, type: integer, min: 0, max: 3, label: Naming, show_if: "TOOL == 'ICE'"}
      - {id: CMD, type: integer, min: 0, max: 1, label: Commands, show_if: "TOOL == 'ICE'"}
      - {id: WRI, type: integer, min: 0, max: 1, label: Writing, show_if: "TOOL == 'ICE'"}
      - {id: ATT, type: integer, min: 0, max: 1, label: Attention, show_if: "TOOL == 'ICE'"}
      - id: ICETOT
        type: derived
        label: ICE
        derivation: ice_total
        inputs: [ORI, NAM, CMD, WRI, ATT]
        params: {orientation: ORI, naming: NAM, commands: CMD, writing: WRI, attention: ATT}
        value_type: integer
        min: 0
        max: 10
      - {id: CAPDTOT, type: integer, min: 0, max: 32, label: CAPD total, show_if: "TOOL == 'CAPD'"}
      - {id: LOC, type: choice, code_list: LOC, label: Consciousness}
      - {id: SEIZ, type: choice, code_list: SEIZ, label: Seizure}
      - {id: MOTOR, type: boolean, label: Motor weakness}
      - {id: ICP, type: choice, code_list: ICP, label: Oedema}
      - id: ICANSGR
        type: derived
        label: ASTCT ICANS grade
        derivation: astct_icans_grade
        inputs: [NDAT, DEVDELAY, ICETOT, CAPDTOT, LOC, SEIZ, MOTOR, ICP]
        params: {capd_below_age_months: 144, date: NDAT, developmental_delay: DEVDELAY, ice: ICETOT, capd: CAPDTOT, loc: LOC,
                 seizure: SEIZ, motor: MOTOR, icp: ICP}
        value_type: integer
"""


@pytest.fixture()
def clinical_forms(tmp_path):
    root = tmp_path / "forms"
    for form_id, text in (("crs", CRS_FORM), ("icans", ICANS_FORM)):
        (root / form_id).mkdir(parents=True)
        (root / form_id / "1.yaml").write_text(text, encoding="utf-8")
    (root / "study.yaml").write_text(STUDY_YAML, encoding="utf-8")
    return root


def test_the_derivations_pass_forms_check_and_derive_on_save(clinical_forms):
    assert check_definitions(clinical_forms) == []
    study = load_study(clinical_forms)
    context = ValidationContext(subject=SUBJECT, other_forms={}, today=date(2026, 11, 25))
    crs = validate_entry(study.form("crs"), {"TMAX": 38.6, "FEVEROTH": False, "TOCI": False, "HYPOT": "VASO",
                                             "NPRESS": 1, "O2DEV": "NC", "O2FLOW": 2.0}, complete=False, context=context)
    assert crs.ok and crs.values["CRSGR"] == 3
    icans = validate_entry(study.form("icans"), {"NDAT": "2026-06-01", "DEVDELAY": False, "ORI": 3, "NAM": 3, "CMD": 1,
                                                 "WRI": 1, "ATT": 1, "LOC": "ALERT", "SEIZ": "NONE", "MOTOR": False,
                                                 "ICP": "NONE"}, complete=False, context=context)
    assert icans.ok and (icans.values["TOOL"], icans.values["ICETOT"], icans.values["ICANSGR"]) == ("ICE", 9, 1)
    child = validate_entry(study.form("icans"), {"NDAT": "2026-06-01", "CAPDTOT": 6, "LOC": "VOICE", "SEIZ": "NONE",
                                                 "MOTOR": False, "ICP": "NONE"},
                           complete=False, context=ValidationContext(subject=SUBJECT | {"birth_year": 2020},
                                                                     other_forms={}, today=date(2026, 11, 25)))
    assert child.ok and (child.values["TOOL"], child.values["ICANSGR"]) == ("CAPD", 2)
    partial = validate_entry(study.form("crs"), {"TMAX": 38.6, "HYPOT": "FLUIDS"}, complete=False, context=context)
    assert partial.ok and "CRSGR" not in partial.values
