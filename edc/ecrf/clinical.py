"""The trial's clinical derivations: ASTCT grading, scores, age, doses, CNS status, MRD, response, B cells, seriousness.

Each rule is a pure, typed core function with explicit arguments (easy to test over its whole input
domain), plus a thin wrapper registered for `derived` items. A wrapper reads the item ids of its inputs
from the item's `params` (like the built-in `band`), maps the answers to the core's canonical values,
and returns None, never raises, when an input it needs is missing or outside its domain.

| derivation | rule | trial.md |
|---|---|---|
| `astct_crs_grade` | ASTCT CRS grade 0-5: 5 if death due to CRS; 0 without fever (>= 38.0 °C, not other cause) | §3.1, §3.2 |
| | unless CRS was already treated; else max(1, hypotension tier, oxygen tier) | |
| `ice_total` | ICE score 0-10: orientation 0-4 + naming 0-3 + command 0-1 + writing 0-1 + attention 0-1 | §3.3 |
| `capd_total` | CAPD total 0-32: items 1-4 reverse-scored (Never 4 ... Always 0), items 5-8 forward | §3.3 |
| `icans_tool` | CAPD if age at assessment < the cut-off [P] or developmental delay, else ICE | §3.5, §8.2 TOOL |
| `astct_icans_grade` | ASTCT ICANS grade 0-5: max of the encephalopathy (ICE or CAPD), consciousness, seizure, | §3.4, §3.5 |
| | motor and ICP/oedema domains; 5 if death due to ICANS | |
| `age_at` | age in completed years or months at a date, counted from the 1st of the birth month | §8.2 DM AGE, DESIGN.md |
| `bsa_mosteller` | BSA (m²) = sqrt(height cm × weight kg / 3600) | §8.2 LD BSA |
| `ld_expected_dose` | expected lymphodepletion dose (mg) = dose per m² [P] × BSA | §2.6, §8.2 LD ECDOSE |
| `dose_per_kg` | CAR+ cells (×10⁶) / weight (kg) | §8.2 INF EXDOSKG |
| `cumulative_dose_per_kg` | sum of the fractions' doses per kg | §8.2 INF, §8.3 X4 |
| `cns_status` | CNS1 / CNS2 / CNS3, with the Steinherz-Bleyer rule after a traumatic tap | §5 CNS status, §8.2 CNSSTAT |
| `mrd_negative` | MRD negative iff below the assay's sensitivity (and the assay sensitive enough [P]) | §5 MRD, §8.2 MRDNEG |
| `derived_response` | CR / CRi / NOT_CR from marrow, blood, CNS, extramedullary disease, counts [P] | §5, §8.2 RSDRV, X10 |
| `b_cell_aplasia` | B-cell aplasia: no measure at or above its recovery threshold [P] | §5 BCA, §8.2 BCA |
| `b_cell_aplasia_loss` | confirmed loss of BCA: a sample and its repeat both at or above a threshold [P] | §5 BCA, §8.2 BCALOSS |
| `ae_serious` | serious iff at least one of the six ICH E2A criteria | §4.4, §8.2 AESER, §8.3 X8 |

Protocol parameters ([P] in trial.md: the ICANS age cut-off, lymphodepletion doses per m², B-cell
thresholds, response count thresholds, the required MRD sensitivity, the traumatic-tap RBC count) come
from `params` and have no default here. Consensus definitions live in code: the ASTCT grade tables
(fever >= 38.0 °C, low-flow oxygen <= 6 L/min, vasopressin not counted), the ICE and CAPD instruments,
the CSF WBC >= 5/µL of CNS3, the Mosteller formula and the ICH E2A criteria.

Conventions shared by the wrappers:
- every input param names an item (`temp: TMAX`); an unanswered, coded or hidden input is unknown. The
  grading cores then return the grade only if every possible value of the unknown inputs gives the
  same grade (death due to CRS is grade 5 whatever else is missing), else None;
- an optional flag param that is not configured counts as "No" (the form does not capture it); a
  configured flag that is unanswered is unknown;
- yes/no inputs may be boolean items or `Y`/`N` codes; categorical inputs use the canonical codes
  listed in each docstring; `code_map: {FORM_CODE: CANONICAL_CODE}` translates a form's own codes;
- `codes: {CANONICAL: FORM_CODE}` translates the result to the derived item's code list (for a yes/no
  result, keys `true`/`false`); it must cover every result the derivation can give;
- a computed input (the ICE total feeding the ICANS grade) should declare `min`/`max`, so that
  `forms check` samples it inside its domain.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from itertools import product
from typing import Any

from .derivations import Answers, Calculation, register_derivation, register_fhirpath
from .expressions import age_in_months

Values = Mapping[str, Any]


class DomainError(ValueError):
    """An input (or parameter) outside the domain a rule is defined on."""


# ---------------------------------------------------------------- consensus constants (not protocol parameters)

FEVER_C = 38.0                 # ASTCT: fever is >= 38.0 °C [S:G2]
LOW_FLOW_MAX_LPM = 6.0         # ASTCT: low-flow nasal cannula <= 6 L/min [S:G2]
CSF_WBC_CNS3_PER_UL = 5.0      # CNS2/CNS3 boundary: CSF WBC >= 5/µL [S:D2]
CAPD_POSITIVE = 9              # CAPD >= 9 is a positive screen [S:G9]

YES, NO = "Y", "N"
UNABLE, NOT_EVALUABLE = "UNABLE", "NE"

HYPOTENSION = ("NONE", "FLUIDS", "VASO")                       # none / not requiring vasopressors / vasopressor(s)
# Oxygen tier by device; a nasal cannula's tier depends on its flow.
O2_DEVICE_TIER: dict[str, int | None] = {
    "NONE": 0, "BLOWBY": 2, "NC": None, "HFNC": 3, "FACEMASK": 3, "NRB": 3, "VENTURI": 3, "CPAP": 4, "BIPAP": 4, "MV": 4,
}
ICANS_TOOLS = ("ICE", "CAPD")
LOC_POINTS = {"ALERT": 0, "SPONT": 1, "VOICE": 2, "TACTILE": 3, "UNAROUSABLE": 4}
SEIZURE_POINTS = {"NONE": 0, "RESOLVED": 3, "PROLONGED": 4}
ICP_POINTS = {"NONE": 0, "FOCAL": 3, "DIFFUSE": 4}
ICE_ITEM_MAX = {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1}
CAPD_FREQUENCY = {"NEVER": 0, "RARELY": 1, "SOMETIMES": 2, "OFTEN": 3, "ALWAYS": 4}
CAPD_REVERSED_ITEMS = 4        # items 1-4 are scored in reverse [S:G9]
CNS_STATUSES = ("CNS1", "CNS2", "CNS3")
RESPONSES = ("CR", "CRi", "NOT_CR")
SERIOUSNESS_CRITERIA = ("death", "life_threatening", "hospitalisation", "disability", "congenital_anomaly",
                        "medically_important")                  # ICH E2A [S:S1]
# Count units -> cells per µL (UCUM-style codes).
COUNT_UNITS = {"/uL": 1.0, "10*3/uL": 1e3, "10*9/L": 1e3, "10*6/uL": 1e6, "10*12/L": 1e6}
# MRD units -> fraction of nucleated cells.
MRD_UNITS = {"fraction": 1.0, "percent": 1e-2, "per_million": 1e-6}


# ---------------------------------------------------------------- validation of core inputs


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DomainError(f"{name} must be a boolean")
    return value


def _check_number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DomainError(f"{name} must be a finite number")
    if minimum is not None and value < minimum:
        raise DomainError(f"{name} must be at least {minimum}")
    if above is not None and value <= above:
        raise DomainError(f"{name} must be above {above}")
    return float(value)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise DomainError(f"{name} must be an integer from {low}" + (f" to {high}" if high is not None else ""))
    return value


def _check_code(name: str, value: Any, allowed: Iterable[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise DomainError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _determined(rule: Callable[..., Any], domains: Mapping[str, Sequence[Any]], **args: Any) -> Any:
    """Return `rule(**args)`; None arguments are unknown: the result if every value of them agrees, else None."""
    unknown = [name for name, value in args.items() if value is None]
    found: set[Any] = set()
    for combination in product(*(domains[name] for name in unknown)):
        found.add(rule(**(args | dict(zip(unknown, combination)))))
        if len(found) > 1:
            return None
    return found.pop()


def _all3(conditions: Iterable[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, else None if any is unknown, else True."""
    result: bool | None = True
    for condition in conditions:
        if condition is False:
            return False
        if condition is None:
            result = None
    return result


# ---------------------------------------------------------------- CRS (§3.1, §3.2)


def _crs_rule(*, temp_c: float, fever_other_cause: bool, previously_treated: bool, hypotension: str, pressors: int,
              hypotension_other_cause: bool, o2_device: str, o2_flow_lpm: float, hypoxia_other_cause: bool,
              death: bool) -> int:
    temp_c = _check_number("temp_c", temp_c)
    for name, flag in (("fever_other_cause", fever_other_cause), ("previously_treated", previously_treated),
                       ("hypotension_other_cause", hypotension_other_cause),
                       ("hypoxia_other_cause", hypoxia_other_cause), ("death", death)):
        _check_bool(name, flag)
    _check_code("hypotension", hypotension, HYPOTENSION)
    pressors = _check_int("pressors", pressors, 0)
    _check_code("o2_device", o2_device, O2_DEVICE_TIER)
    o2_flow_lpm = _check_number("o2_flow_lpm", o2_flow_lpm, minimum=0)
    if death:
        return 5
    fever_ok = (temp_c >= FEVER_C and not fever_other_cause) or previously_treated
    if not fever_ok:
        return 0                                   # not CRS per ASTCT
    if hypotension_other_cause or hypotension == "NONE":
        h = 0
    elif hypotension == "FLUIDS":
        h = 2
    else:
        h = 4 if pressors >= 2 else 3              # vasopressin is not counted in `pressors`
    tier = O2_DEVICE_TIER[o2_device]
    if tier is None:
        tier = 2 if o2_flow_lpm <= LOW_FLOW_MAX_LPM else 3
    x = 0 if hypoxia_other_cause else tier
    return max(1, h, x)


_CRS_DOMAINS: dict[str, Sequence[Any]] = {
    "temp_c": (FEVER_C - 1.0, FEVER_C), "fever_other_cause": (False, True), "previously_treated": (False, True),
    "hypotension": HYPOTENSION, "pressors": (0, 1, 2), "hypotension_other_cause": (False, True),
    "o2_device": tuple(O2_DEVICE_TIER), "o2_flow_lpm": (LOW_FLOW_MAX_LPM, LOW_FLOW_MAX_LPM + 1.0),
    "hypoxia_other_cause": (False, True), "death": (False, True),
}


def crs_grade(*, temp_c: float | None, hypotension: str | None, pressors: int | None, o2_device: str | None,
              o2_flow_lpm: float | None = None, fever_other_cause: bool | None = False,
              previously_treated: bool | None = False, hypotension_other_cause: bool | None = False,
              hypoxia_other_cause: bool | None = False, death: bool | None = False) -> int | None:
    """Return the ASTCT 2019 CRS grade (0-5) by the decision rule of trial.md §3.2.

    temp_c: maximum temperature (°C) in the window; hypotension: NONE / FLUIDS (not requiring
    vasopressors) / VASO (requiring vasopressor(s)); pressors: number of non-vasopressin vasopressors;
    o2_device: NONE (room air) / NC / BLOWBY / HFNC / FACEMASK / NRB / VENTURI / CPAP / BIPAP / MV
    (intubation, mechanical ventilation); o2_flow_lpm: flow, read for NC only (<= 6 L/min low flow);
    the flags: fever / hypotension / hypoxia due to another cause, CRS already treated (fever no longer
    required), death due to CRS. None means unknown: the grade is returned only if it does not depend
    on the unknown inputs, else None. Raises DomainError for a value outside these domains.
    """
    return _determined(_crs_rule, _CRS_DOMAINS, temp_c=temp_c, fever_other_cause=fever_other_cause,
                       previously_treated=previously_treated, hypotension=hypotension, pressors=pressors,
                       hypotension_other_cause=hypotension_other_cause, o2_device=o2_device, o2_flow_lpm=o2_flow_lpm,
                       hypoxia_other_cause=hypoxia_other_cause, death=death)


# ---------------------------------------------------------------- ICE and CAPD (§3.3)


def ice_total(*, orientation: int, naming: int, commands: int, writing: int, attention: int) -> int:
    """Return the ICE score (0-10; 10 = no impairment) from its five item scores."""
    scores = {"orientation": orientation, "naming": naming, "commands": commands, "writing": writing,
              "attention": attention}
    return sum(_check_int(name, scores[name], 0, high) for name, high in ICE_ITEM_MAX.items())


def capd_item_score(position: int, answer: str | int) -> int:
    """Return the points of CAPD item `position` (1-8): items 1-4 reverse-scored, 5-8 forward.

    `answer` is a frequency code (NEVER, RARELY, SOMETIMES, OFTEN, ALWAYS) or its forward value 0-4.
    """
    position = _check_int("position", position, 1, 8)
    if isinstance(answer, str):
        frequency = CAPD_FREQUENCY.get(answer.upper())
        if frequency is None:
            raise DomainError(f"CAPD answer must be one of {', '.join(CAPD_FREQUENCY)}")
    else:
        frequency = _check_int("CAPD answer", answer, 0, 4)
    return 4 - frequency if position <= CAPD_REVERSED_ITEMS else frequency


def capd_total(answers: Sequence[str | int]) -> int:
    """Return the CAPD total (0-32) of the eight answers in item order; >= 9 is a positive screen."""
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence) or len(answers) != 8:
        raise DomainError("CAPD needs exactly eight answers")
    return sum(capd_item_score(position, answer) for position, answer in enumerate(answers, start=1))


# ---------------------------------------------------------------- ICANS (§3.4, §3.5)


def icans_tool(*, age_months: int | None, developmental_delay: bool | None, capd_below_age_months: float) -> str | None:
    """Return "CAPD" if age at assessment < `capd_below_age_months` [P] or developmental delay, "ICE" otherwise.

    None when the unknown inputs leave the choice open (e.g. age above the cut-off, delay unknown).
    """
    cutoff = _check_number("capd_below_age_months", capd_below_age_months, minimum=0)
    young = None if age_months is None else _check_int("age_months", age_months, 0) < cutoff
    delay = None if developmental_delay is None else _check_bool("developmental_delay", developmental_delay)
    if young or delay:
        return "CAPD"
    if young is False and delay is False:
        return "ICE"
    return None


def _ice_points(score: int | str) -> int:
    if score == UNABLE:
        return 4                                    # unable to perform ICE
    if score == NOT_EVALUABLE:
        return 0                                    # not evaluable (sedation...): grade from the other domains
    score = _check_int("ice", score, 0, 10)
    return 0 if score == 10 else 1 if score >= 7 else 2 if score >= 3 else 3


def _capd_points(score: int | str) -> int:
    if score == UNABLE:
        return 4
    if score == NOT_EVALUABLE:
        return 0
    score = _check_int("capd", score, 0, 32)
    return 3 if score >= CAPD_POSITIVE else 1 if score >= 1 else 0


def _icans_rule(*, tool: str, ice: int | str, capd: int | str, loc: str, seizure: str, motor: bool, icp: str,
                death: bool, loc_other_cause: bool, seizure_other_cause: bool, motor_other_cause: bool,
                edema_other_cause: bool) -> int:
    _check_code("tool", tool, ICANS_TOOLS)
    e_ice, e_capd = _ice_points(ice), _capd_points(capd)
    _check_code("loc", loc, LOC_POINTS)
    _check_code("seizure", seizure, SEIZURE_POINTS)
    _check_code("icp", icp, ICP_POINTS)
    for name, flag in (("motor", motor), ("death", death), ("loc_other_cause", loc_other_cause),
                       ("seizure_other_cause", seizure_other_cause), ("motor_other_cause", motor_other_cause),
                       ("edema_other_cause", edema_other_cause)):
        _check_bool(name, flag)
    if death:
        return 5
    e = e_ice if tool == "ICE" else e_capd
    lc = 0 if loc_other_cause else LOC_POINTS[loc]
    s = 0 if seizure_other_cause else SEIZURE_POINTS[seizure]
    m = 4 if motor and not motor_other_cause else 0
    i = 0 if edema_other_cause else ICP_POINTS[icp]
    return max(e, lc, s, m, i)


_ICANS_DOMAINS: dict[str, Sequence[Any]] = {
    "tool": ICANS_TOOLS, "ice": (10, 9, 6, 2, UNABLE), "capd": (0, 1, CAPD_POSITIVE, UNABLE), "loc": tuple(LOC_POINTS),
    "seizure": tuple(SEIZURE_POINTS), "motor": (False, True), "icp": tuple(ICP_POINTS), "death": (False, True),
    "loc_other_cause": (False, True), "seizure_other_cause": (False, True), "motor_other_cause": (False, True),
    "edema_other_cause": (False, True),
}


def icans_grade(*, tool: str | None, ice: int | str | None, capd: int | str | None, loc: str | None,
                seizure: str | None, motor: bool | None, icp: str | None, death: bool | None = False,
                loc_other_cause: bool | None = False, seizure_other_cause: bool | None = False,
                motor_other_cause: bool | None = False, edema_other_cause: bool | None = False) -> int | None:
    """Return the ASTCT 2019 ICANS grade (0-5) by the decision rule of trial.md §3.5.

    tool: ICE or CAPD (see `icans_tool`); ice: 0-10, capd: 0-32, either also UNABLE (unable to perform:
    4) or NE (not evaluable for an outside reason such as sedation: the grade comes from the other
    domains); only the chosen tool's score is read. loc: ALERT / SPONT (drowsy, awakens spontaneously) /
    VOICE / TACTILE / UNAROUSABLE (or needs vigorous stimuli); seizure: NONE / RESOLVED (clinical
    seizure resolving rapidly, or non-convulsive seizure resolving with intervention) / PROLONGED (> 5
    min, or repetitive without return to baseline); motor: deep focal motor weakness; icp: NONE /
    FOCAL (focal oedema) / DIFFUSE (diffuse oedema, posturing, CN VI palsy, papilloedema, Cushing's
    triad); death due to ICANS; and a flag per domain for findings due to another cause. None means
    unknown: the grade is returned only if it does not depend on the unknown inputs, else None.
    """
    return _determined(_icans_rule, _ICANS_DOMAINS, tool=tool, ice=ice, capd=capd, loc=loc, seizure=seizure,
                       motor=motor, icp=icp, death=death, loc_other_cause=loc_other_cause,
                       seizure_other_cause=seizure_other_cause, motor_other_cause=motor_other_cause,
                       edema_other_cause=edema_other_cause)


# ---------------------------------------------------------------- age, BSA, doses (§8.2 DM, LD, INF)


def age_years(birth_year: int, birth_month: int, at: date) -> int:
    """Return age in completed years at `at`, counted from the 1st of the birth month."""
    return age_months(birth_year, birth_month, at) // 12


def age_months(birth_year: int, birth_month: int, at: date) -> int:
    """Return age in completed months at `at`, counted from the 1st of the birth month (never negative)."""
    birth_year = _check_int("birth_year", birth_year, 1)
    birth_month = _check_int("birth_month", birth_month, 1, 12)
    if not isinstance(at, date):
        raise DomainError("at must be a date")
    months = age_in_months(birth_year, birth_month, at)
    if months < 0:
        raise DomainError("the date is before the birth month")
    return months


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Return body surface area (m²) by Mosteller: sqrt(height cm × weight kg / 3600)."""
    height_cm = _check_number("height_cm", height_cm, above=0)
    weight_kg = _check_number("weight_kg", weight_kg, above=0)
    return math.sqrt(height_cm * weight_kg / 3600.0)


def expected_dose(dose_per_m2: float, bsa_m2: float) -> float:
    """Return the expected dose of a BSA-dosed drug: dose per m² × BSA."""
    return _check_number("dose_per_m2", dose_per_m2, minimum=0) * _check_number("bsa_m2", bsa_m2, above=0)


def dose_per_kg(cells: float, weight_kg: float) -> float:
    """Return the dose per kg: cells infused (×10⁶) / weight (kg), in ×10⁶ cells/kg."""
    return _check_number("cells", cells, minimum=0) / _check_number("weight_kg", weight_kg, above=0)


def cumulative_dose(doses_per_kg: Iterable[float]) -> float:
    """Return the cumulative dose per kg of the fractions given."""
    return sum((_check_number("dose_per_kg", dose, minimum=0) for dose in doses_per_kg), 0.0)


# ---------------------------------------------------------------- CNS status (§5)


def cns_status(*, csf_blasts: bool | None, csf_wbc: float | None, csf_rbc: float | None = None,
               blood_wbc: float | None = None, blood_rbc: float | None = None, clinical_signs: bool | None = False,
               traumatic_rbc_min: float | None = None) -> str | None:
    """Return CNS1 / CNS2 / CNS3 (counts per µL; None when the known inputs do not decide).

    CNS3: clinical signs of CNS leukaemia, or CSF WBC >= 5/µL with blasts; CNS1: no blasts on cytospin
    (whatever the WBC); CNS2: blasts with WBC < 5/µL. After a traumatic tap (CSF RBC >= `traumatic_rbc_min`
    [P], or any CSF RBC when no minimum is given) with WBC >= 5/µL and blasts, the Steinherz-Bleyer rule
    decides: CNS3 if CSF WBC/RBC > 2 × blood WBC/RBC, else CNS2.
    """
    signs = None if clinical_signs is None else _check_bool("clinical_signs", clinical_signs)
    blasts = None if csf_blasts is None else _check_bool("csf_blasts", csf_blasts)
    wbc = None if csf_wbc is None else _check_number("csf_wbc", csf_wbc, minimum=0)
    rbc = None if csf_rbc is None else _check_number("csf_rbc", csf_rbc, minimum=0)
    pb_wbc = None if blood_wbc is None else _check_number("blood_wbc", blood_wbc, minimum=0)
    pb_rbc = None if blood_rbc is None else _check_number("blood_rbc", blood_rbc, above=0)
    rbc_min = None if traumatic_rbc_min is None else _check_number("traumatic_rbc_min", traumatic_rbc_min, above=0)
    if signs:
        return "CNS3"
    status = _cns_from_csf(blasts, wbc, rbc, pb_wbc, pb_rbc, rbc_min)
    if signs is None and status != "CNS3":
        return None
    return status


def _cns_from_csf(blasts: bool | None, wbc: float | None, rbc: float | None, pb_wbc: float | None,
                  pb_rbc: float | None, rbc_min: float | None) -> str | None:
    if blasts is None:
        return None
    if not blasts:
        return "CNS1"
    if wbc is None:
        return None
    if wbc < CSF_WBC_CNS3_PER_UL:
        return "CNS2"
    if rbc is None:
        return None
    traumatic = rbc >= rbc_min if rbc_min is not None else rbc > 0
    if not traumatic:
        return "CNS3"
    if pb_wbc is None or pb_rbc is None:
        return None
    return "CNS3" if wbc / rbc > 2 * (pb_wbc / pb_rbc) else "CNS2"


# ---------------------------------------------------------------- MRD (§5)


def mrd_negative(*, value: float | None, sensitivity: float | None, undetectable: bool | None = None,
                 required_sensitivity: float | None = None) -> bool | None:
    """Return True if MRD is negative at the assay's sensitivity, False if positive, None if undecided.

    All in the same unit (fractions of nucleated cells, 1e-4 = 0.01%). Negative only when the value is
    below the assay's sensitivity (or reported undetectable) and, when `required_sensitivity` [P] is
    given, the assay reaches it (sensitivity <= required); positive when detected (value >= sensitivity).
    """
    lod = None if sensitivity is None else _check_number("sensitivity", sensitivity, above=0)
    measured = None if value is None else _check_number("value", value, minimum=0)
    flag = None if undetectable is None else _check_bool("undetectable", undetectable)
    required = None if required_sensitivity is None else _check_number("required_sensitivity", required_sensitivity, above=0)
    if flag is False:
        return False                                   # detected
    if measured is not None and lod is not None and measured >= lod:
        return False
    below = flag is True or (measured is not None and lod is not None)
    if not below or lod is None:
        return None
    if required is not None and lod > required:
        return None                                    # undetectable, but the assay is not sensitive enough
    return True


# ---------------------------------------------------------------- response (§5, §8.2 RSDRV)


def derived_response(*, bm_blasts_pct: float | None, pb_blasts: bool | None, emd: bool | None, cns: str | None,
                     anc: float | None, platelets: float | None, transfused: bool | None,
                     blasts_below_pct: float, anc_min: float, platelets_min: float) -> str | None:
    """Return CR, CRi or NOT_CR (None when the known inputs do not decide).

    CR: BM blasts < `blasts_below_pct`, no circulating blasts, no extramedullary disease, CNS1, ANC >=
    `anc_min`, platelets >= `platelets_min` and no recent transfusion; CRi: the same except the counts
    (or transfusion); NOT_CR otherwise. Thresholds [P] are in the units of the inputs.
    """
    blast_limit = _check_number("blasts_below_pct", blasts_below_pct, above=0)
    anc_limit = _check_number("anc_min", anc_min, minimum=0)
    platelet_limit = _check_number("platelets_min", platelets_min, minimum=0)
    blasts = None if bm_blasts_pct is None else _check_number("bm_blasts_pct", bm_blasts_pct, minimum=0)
    if blasts is not None and blasts > 100:
        raise DomainError("bm_blasts_pct must be at most 100")
    status = None if cns is None else _check_code("cns", cns, CNS_STATUSES)
    flags = {name: None if flag is None else not _check_bool(name, flag)
             for name, flag in (("pb_blasts", pb_blasts), ("emd", emd), ("transfused", transfused))}
    counts = [None if anc is None else _check_number("anc", anc, minimum=0) >= anc_limit,
              None if platelets is None else _check_number("platelets", platelets, minimum=0) >= platelet_limit,
              flags["transfused"]]
    disease_free = _all3([None if blasts is None else blasts < blast_limit, flags["pb_blasts"], flags["emd"],
                          None if status is None else status == "CNS1"])
    recovered = _all3(counts)
    if disease_free is False:
        return "NOT_CR"
    if disease_free is None or recovered is None:
        return None
    return "CR" if recovered else "CRi"


# ---------------------------------------------------------------- B-cell aplasia (§5)


def b_cell_recovery(*, abs_count: float | None, pct: float | None, abs_threshold: float | None,
                    pct_threshold: float | None = None, strict: bool = False) -> bool | None:
    """Return True if a B-cell measure reaches its threshold [P], False if every configured one is below.

    abs_count: CD19+ (or CD20+) B cells per µL; pct: % of lymphocytes. `strict` compares with > instead
    of >= (the "> 1% or > 100/µL" definition). A measure without a threshold is not read.
    """
    if abs_threshold is None and pct_threshold is None:
        raise DomainError("b-cell recovery needs a threshold")
    strict = _check_bool("strict", strict)
    reached: list[bool | None] = []
    for name, value, threshold in (("abs_count", abs_count, abs_threshold), ("pct", pct, pct_threshold)):
        if threshold is None:
            continue
        limit = _check_number(f"{name} threshold", threshold, minimum=0)
        if value is None:
            reached.append(None)
            continue
        measured = _check_number(name, value, minimum=0)
        reached.append(measured > limit if strict else measured >= limit)
    if True in reached:
        return True
    return None if None in reached else False


def b_cell_aplasia(*, abs_count: float | None, pct: float | None, abs_threshold: float | None,
                   pct_threshold: float | None = None, strict: bool = False) -> bool | None:
    """Return True if B-cell aplasia is present (no measure at its recovery threshold); see `b_cell_recovery`."""
    recovered = b_cell_recovery(abs_count=abs_count, pct=pct, abs_threshold=abs_threshold, pct_threshold=pct_threshold,
                                strict=strict)
    return None if recovered is None else not recovered


def bca_loss_confirmed(first: bool | None, repeat: bool | None) -> bool | None:
    """Return True if B-cell recovery on a sample is confirmed on its repeat, False if either shows aplasia.

    `first` and `repeat` are `b_cell_recovery` results (None = unknown).
    """
    return _all3([None if first is None else _check_bool("first", first),
                  None if repeat is None else _check_bool("repeat", repeat)])


def first_confirmed_bca_loss(recoveries: Sequence[bool | None]) -> int | None:
    """Return the index of the first sample of a confirmed loss of BCA in a time-ordered series, or None.

    `recoveries` are `b_cell_recovery` results per sample; undetermined samples (None) are skipped. A
    loss needs aplasia on an earlier sample, then recovery on a sample and on the next evaluable one.
    """
    evaluable = [(index, _check_bool("recovery", value)) for index, value in enumerate(recoveries) if value is not None]
    seen_aplasia = False
    for position, (index, recovered) in enumerate(evaluable):
        if not recovered:
            seen_aplasia = True
        elif seen_aplasia and position + 1 < len(evaluable) and evaluable[position + 1][1]:
            return index
    return None


# ---------------------------------------------------------------- seriousness (§4.4)


def ae_serious(*, death: bool | None, life_threatening: bool | None, hospitalisation: bool | None,
               disability: bool | None, congenital_anomaly: bool | None, medically_important: bool | None) -> bool | None:
    """Return True if at least one ICH E2A criterion is met, False if all six are known and none is, else None.

    death: results in death; life_threatening; hospitalisation: requires inpatient hospitalisation or
    prolongs it; disability: persistent or significant disability/incapacity; congenital_anomaly;
    medically_important: other medically important event. None is unknown.
    """
    answers = (death, life_threatening, hospitalisation, disability, congenital_anomaly, medically_important)
    met = [None if answer is None else _check_bool(name, answer) for name, answer in zip(SERIOUSNESS_CRITERIA, answers)]
    if True in met:
        return True
    return None if None in met else False


# ================================================================ registered wrappers


def _never_raises(fn: Callable[[Values, Values, Values], Any]) -> Callable[[Values, Values, Values], Any]:
    """Turn a DomainError (missing or out-of-domain input or parameter) into None."""
    @functools.wraps(fn)
    def derivation(values: Values, subject: Values, params: Values) -> Any:
        try:
            return fn(values, subject, params)
        except DomainError:
            return None
    return derivation


def _input(values: Values, params: Values, key: str, default: Any = None) -> Any:
    """Return the value of the item named by `params[key]` (None if unanswered); `default` if not configured."""
    name = params.get(key)
    if name is None:
        return default
    if not isinstance(name, str):
        raise DomainError(f"params.{key} must be an item id")
    return values.get(name)


def _code_map(params: Values) -> Mapping[str, Any]:
    mapping = params.get("code_map", {})
    if not isinstance(mapping, Mapping):
        raise DomainError("params.code_map must be a mapping")
    return mapping


def _canonical(value: Any, params: Values) -> Any:
    return _code_map(params).get(value, value) if isinstance(value, str) else value


def _flag(value: Any, params: Values) -> bool | None:
    """Return a yes/no input as a boolean (boolean item or Y/N code), None if unknown."""
    value = _canonical(value, params)
    if value is None or isinstance(value, bool):
        return value
    if value == YES:
        return True
    if value == NO:
        return False
    raise DomainError("a yes/no input must be a boolean or Y/N")


def _flag_input(values: Values, params: Values, key: str) -> bool | None:
    """An optional flag: False when its param is not configured, else its answer (None if unanswered)."""
    return _flag(_input(values, params, key, False), params)


def _any_flag(values: Values, params: Values, keys: Iterable[str]) -> bool | None:
    """Three-valued OR of optional flags (a param may also list several items)."""
    found: list[bool | None] = []
    for key in keys:
        names = params.get(key)
        for name in names if isinstance(names, list) else [names]:
            found.append(_flag(_input(values, {key: name}, key, False), params))
    if True in found:
        return True
    return None if None in found else False


def _code_input(values: Values, params: Values, key: str) -> str | None:
    value = _canonical(_input(values, params, key), params)
    if value is not None and not isinstance(value, str):
        raise DomainError(f"{key} must be a code")
    return value


def _number_input(values: Values, params: Values, key: str) -> float | None:
    value = _input(values, params, key)
    return None if value is None else _check_number(key, value)


def _param_number(params: Values, key: str) -> float:
    """A required numeric protocol parameter (no default in code)."""
    if key not in params:
        raise DomainError(f"params.{key} is required")
    return _check_number(f"params.{key}", params[key])


def _optional_param_number(params: Values, key: str) -> float | None:
    return None if params.get(key) is None else _check_number(f"params.{key}", params[key])


def _unit(params: Values, key: str, units: Mapping[str, float]) -> float:
    unit = params.get(key)
    if not isinstance(unit, str) or unit not in units:
        raise DomainError(f"params.{key} must be one of {', '.join(units)}")
    return units[unit]


def _output(result: Any, params: Values, outputs: Sequence[Any]) -> Any:
    """Translate a result through `params.codes` (which must cover every possible result)."""
    codes = params.get("codes")
    if result is None or codes is None:
        return result
    if not isinstance(codes, Mapping):
        raise DomainError("params.codes must be a mapping")
    by_key = {str(key).lower(): code for key, code in codes.items()}
    synonyms = {True: ("true", "yes"), False: ("false", "no")}

    def lookup(output: Any) -> Any:
        for key in synonyms.get(output, (str(output).lower(),)) if isinstance(output, bool) else (str(output).lower(),):
            if key in by_key:
                return by_key[key]
        raise DomainError(f"params.codes has no code for {output!r}")

    for output in outputs:
        lookup(output)
    return lookup(result)


def _at_date(value: Any) -> date | None:
    """A full date or date-time, or a partial date with its month (age counts from the 1st of a month)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        pieces = value.split("-")
        if len(pieces) >= 2:
            try:
                return date(int(pieces[0]), int(pieces[1]), 1)
            except ValueError:
                pass
        return None                                    # a year alone does not give the age in months
    raise DomainError("a date input must be a date")


def _birth(values: Values, subject: Values, params: Values) -> tuple[Any, Any]:
    """Birth year and month from the items named by params (birth_year, birth_month), else the subject facts."""
    if params.get("birth_year") is not None or params.get("birth_month") is not None:
        return _input(values, params, "birth_year"), _input(values, params, "birth_month")
    return subject.get("birth_year"), subject.get("birth_month")


def _age_months_at(values: Values, subject: Values, params: Values) -> int | None:
    if params.get("age_months") is not None:
        age = _input(values, params, "age_months")
        return None if age is None else _check_int("age_months", age, 0)
    at = _at_date(_input(values, params, "date"))
    birth_year, birth_month = _birth(values, subject, params)
    if at is None or birth_year is None or birth_month is None:
        return None
    return age_months(birth_year, birth_month, at)


@register_derivation("astct_crs_grade")
@_never_raises
def astct_crs_grade(values: Values, subject: Values, params: Values) -> int | None:
    """ASTCT CRS grade 0-5 (trial.md §3.2); integer result.

    params (item ids): temp (max temperature, °C), hypotension (NONE / FLUIDS / VASO), pressors (number
    of non-vasopressin vasopressors; read when VASO), o2_device (NONE / NC / BLOWBY / HFNC / FACEMASK /
    NRB / VENTURI / CPAP / BIPAP / MV), o2_flow (L/min; read for NC); optional yes/no flags:
    fever_other_cause, hypotension_other_cause, hypoxia_other_cause, death (death due to CRS), and
    previously_treated (one item id or a list: CRS already treated with antipyretic/anticytokine
    therapy when any is Y); code_map. Example:
    `{temp: TMAX, hypotension: HYPOT, pressors: NPRESS, o2_device: O2DEV, o2_flow: O2FLOW,
    fever_other_cause: FEVEROTH, hypotension_other_cause: HYPOTOTH, hypoxia_other_cause: HYPOXOTH,
    previously_treated: [TOCI, STEROID], death: CRSDTH}`.
    """
    return crs_grade(
        temp_c=_number_input(values, params, "temp"),
        hypotension=_code_input(values, params, "hypotension"),
        pressors=_input(values, params, "pressors"),
        o2_device=_code_input(values, params, "o2_device"),
        o2_flow_lpm=_number_input(values, params, "o2_flow"),
        fever_other_cause=_flag_input(values, params, "fever_other_cause"),
        previously_treated=_any_flag(values, params, ["previously_treated"]),
        hypotension_other_cause=_flag_input(values, params, "hypotension_other_cause"),
        hypoxia_other_cause=_flag_input(values, params, "hypoxia_other_cause"),
        death=_flag_input(values, params, "death"),
    )


@register_derivation("ice_total")
@_never_raises
def ice_total_derivation(values: Values, subject: Values, params: Values) -> int | None:
    """ICE score 0-10 (trial.md §3.3); integer result, None unless all five items are answered and in range.

    params (item ids): orientation (0-4), naming (0-3), commands (0-1), writing (0-1), attention (0-1).
    """
    scores = {name: _input(values, params, name) for name in ICE_ITEM_MAX}
    if any(score is None for score in scores.values()):
        return None
    return ice_total(**scores)


@register_derivation("capd_total")
@_never_raises
def capd_total_derivation(values: Values, subject: Values, params: Values) -> int | None:
    """CAPD total 0-32 with items 1-4 reverse-scored (trial.md §3.3); integer result, None unless all 8 answered.

    params: items (the eight item ids in CAPD order); code_map. Answers are NEVER / RARELY / SOMETIMES /
    OFTEN / ALWAYS codes, or integers 0-4 on the forward (Never 0 ... Always 4) scale.
    """
    items = params.get("items")
    if not isinstance(items, list) or len(items) != 8:
        return None
    answers = [_canonical(_input(values, {"item": item}, "item"), params) for item in items]
    if any(answer is None for answer in answers):
        return None
    return capd_total(answers)


@register_derivation("icans_tool")
@_never_raises
def icans_tool_derivation(values: Values, subject: Values, params: Values) -> str | None:
    """ICE or CAPD by age at assessment and developmental delay (trial.md §3.5); choice result.

    params: capd_below_age_months [P] (number: CAPD when the age in completed months is below it; 144 =
    "< 12 years"); age from date (assessment date or date-time item, with the subject's birth year and
    month, or the items named by birth_year / birth_month) or age_months (an item in months);
    developmental_delay (optional yes/no item; a derivation reads only its own entry, so the form needs
    its own copy of DM.DEVDELAY); codes (ICE, CAPD -> form codes).
    """
    tool = icans_tool(age_months=_age_months_at(values, subject, params),
                      developmental_delay=_flag_input(values, params, "developmental_delay"),
                      capd_below_age_months=_param_number(params, "capd_below_age_months"))
    return _output(tool, params, ICANS_TOOLS)


def _score_input(values: Values, params: Values, key: str, not_evaluable: str | None) -> int | str | None:
    score = _input(values, params, key)
    return not_evaluable if score is None else score


@register_derivation("astct_icans_grade")
@_never_raises
def astct_icans_grade(values: Values, subject: Values, params: Values) -> int | None:
    """ASTCT ICANS grade 0-5, ICE or CAPD by age and developmental delay (trial.md §3.4, §3.5); integer result.

    params: capd_below_age_months [P], the age (date or age_months; birth_year / birth_month optional)
    and developmental_delay as for `icans_tool`; item ids: ice (ICE total), capd (CAPD total), loc
    (ALERT / SPONT / VOICE / TACTILE / UNAROUSABLE), seizure (NONE / RESOLVED / PROLONGED), motor (yes/no:
    deep focal motor weakness), icp (NONE / FOCAL / DIFFUSE); optional: not_evaluable (the tool was not
    done: a code in unable_codes, default [UNABLE], means unable to perform because of the patient's
    state, grade 4; any other code, e.g. sedation, leaves the grade to the other domains), death (death
    due to ICANS), loc_other_cause, seizure_other_cause, motor_other_cause, edema_other_cause and
    hemorrhage (intracranial haemorrhage: its oedema is not ICANS); code_map. Tremor and myoclonus are
    not inputs: they never change the grade.
    """
    tool = icans_tool(age_months=_age_months_at(values, subject, params),
                      developmental_delay=_flag_input(values, params, "developmental_delay"),
                      capd_below_age_months=_param_number(params, "capd_below_age_months"))
    not_done = _code_input(values, params, "not_evaluable")
    unable_codes = params.get("unable_codes", [UNABLE])
    if not isinstance(unable_codes, list):
        raise DomainError("params.unable_codes must be a list")
    marker = None if not_done is None else UNABLE if not_done in unable_codes else NOT_EVALUABLE
    return icans_grade(
        tool=tool,
        ice=_score_input(values, params, "ice", marker),
        capd=_score_input(values, params, "capd", marker),
        loc=_code_input(values, params, "loc"),
        seizure=_code_input(values, params, "seizure"),
        motor=_flag(_input(values, params, "motor"), params),
        icp=_code_input(values, params, "icp"),
        death=_flag_input(values, params, "death"),
        loc_other_cause=_flag_input(values, params, "loc_other_cause"),
        seizure_other_cause=_flag_input(values, params, "seizure_other_cause"),
        motor_other_cause=_flag_input(values, params, "motor_other_cause"),
        edema_other_cause=_any_flag(values, params, ["edema_other_cause", "hemorrhage"]),
    )


@register_derivation("age_at")
@_never_raises
def age_at(values: Values, subject: Values, params: Values) -> int | None:
    """Age in completed years or months at a date, from birth year and month (DESIGN.md; §8.2 DM); integer.

    params: date (item id: a date, date-time, or partial date with its month), unit (years | months);
    birth_year and birth_month (item ids; default: the subject's birth year and month).
    """
    unit = params.get("unit")
    if unit not in ("years", "months"):
        return None
    months = _age_months_at(values, subject, {key: params[key] for key in ("date", "birth_year", "birth_month")
                                               if key in params})
    if months is None:
        return None
    return months // 12 if unit == "years" else months


@register_derivation("bsa_mosteller")
@_never_raises
def bsa_mosteller_derivation(values: Values, subject: Values, params: Values) -> float | None:
    """Body surface area, m², Mosteller (§8.2 LD BSA); decimal result.

    params (item ids): height (cm), weight (kg).
    """
    height, weight = _number_input(values, params, "height"), _number_input(values, params, "weight")
    if height is None or weight is None:
        return None
    return bsa_mosteller(height, weight)


@register_derivation("ld_expected_dose")
@_never_raises
def ld_expected_dose(values: Values, subject: Values, params: Values) -> float | None:
    """Expected lymphodepletion dose (mg) = dose per m² × BSA (§2.6, §8.2 LD); decimal result.

    params: dose_per_m2 [P] (mg/m²: a number, or a mapping drug code -> mg/m² with drug = the item id of
    the drug, e.g. `{FLUDARABINE: 30, CYCLOPHOSPHAMIDE: 300}`); bsa (item id, m²) or height (cm) and
    weight (kg) item ids for the Mosteller BSA; code_map.
    """
    per_m2 = params.get("dose_per_m2")
    if isinstance(per_m2, Mapping):
        drug = _code_input(values, params, "drug")
        if drug is None:
            return None
        if drug not in per_m2:
            raise DomainError(f"no dose per m² for {drug!r}")
        per_m2 = per_m2[drug]
    if per_m2 is None:
        return None
    if params.get("bsa") is not None:
        bsa = _number_input(values, params, "bsa")
    else:
        bsa = bsa_mosteller_derivation(values, subject, params)
    return None if bsa is None else expected_dose(_check_number("params.dose_per_m2", per_m2), bsa)


@register_derivation("dose_per_kg")
@_never_raises
def dose_per_kg_derivation(values: Values, subject: Values, params: Values) -> float | None:
    """Dose per kg (×10⁶ CAR+ cells/kg) = cells (×10⁶) / weight (kg) (§8.2 INF EXDOSKG); decimal result.

    params (item ids): cells, weight.
    """
    cells, weight = _number_input(values, params, "cells"), _number_input(values, params, "weight")
    if cells is None or weight is None:
        return None
    return dose_per_kg(cells, weight)


@register_derivation("cumulative_dose_per_kg")
@_never_raises
def cumulative_dose_per_kg(values: Values, subject: Values, params: Values) -> float | None:
    """Cumulative dose per kg over the fractions (§8.2 INF, §8.3 X4); decimal result.

    params: doses (list of item ids, one dose per kg per fraction, e.g. the earlier fractions' dose and
    this one's). An absent item (unanswered, coded or hidden: the fraction was not given) adds nothing;
    None when none is answered.
    """
    names = params.get("doses")
    if not isinstance(names, list) or not names:
        return None
    doses = [_input(values, {"dose": name}, "dose") for name in names]
    given = [dose for dose in doses if dose is not None]
    return cumulative_dose(given) if given else None


@register_derivation("cns_status")
@_never_raises
def cns_status_derivation(values: Values, subject: Values, params: Values) -> str | None:
    """CNS1 / CNS2 / CNS3 with the traumatic-tap rule (trial.md §5); choice result.

    params (item ids): csf_wbc (/µL), csf_rbc (/µL), csf_blasts (yes/no: blasts on cytospin); optional:
    clinical_signs (yes/no: clinical signs of CNS leukaemia), blood_wbc and blood_rbc with their units
    blood_wbc_unit / blood_rbc_unit (one of /uL, 10*3/uL, 10*9/L, 10*6/uL, 10*12/L) for the
    Steinherz-Bleyer rule; traumatic_rbc_min [P] (number: CSF RBC/µL from which a tap is traumatic;
    without it any CSF RBC counts); code_map; codes (CNS1, CNS2, CNS3 -> form codes).
    """
    blood_wbc, blood_rbc = _number_input(values, params, "blood_wbc"), _number_input(values, params, "blood_rbc")
    if blood_wbc is not None:
        blood_wbc *= _unit(params, "blood_wbc_unit", COUNT_UNITS)
    if blood_rbc is not None:
        blood_rbc *= _unit(params, "blood_rbc_unit", COUNT_UNITS)
    status = cns_status(csf_blasts=_flag(_input(values, params, "csf_blasts"), params),
                        csf_wbc=_number_input(values, params, "csf_wbc"),
                        csf_rbc=_number_input(values, params, "csf_rbc"),
                        blood_wbc=blood_wbc, blood_rbc=blood_rbc,
                        clinical_signs=_flag_input(values, params, "clinical_signs"),
                        traumatic_rbc_min=_optional_param_number(params, "traumatic_rbc_min"))
    return _output(status, params, CNS_STATUSES)


@register_derivation("mrd_negative")
@_never_raises
def mrd_negative_derivation(values: Values, subject: Values, params: Values) -> bool | None:
    """MRD negative at the assay's sensitivity (trial.md §5, §8.2 MRDNEG); boolean result (or codes).

    params: value (item id: MRD level) with value_unit, sensitivity (item id: the assay's sensitivity /
    LoD) with sensitivity_unit (units: fraction | percent | per_million); optional: undetectable (yes/no
    item: reported undetectable), required_sensitivity [P] (number in sensitivity_unit: an undetectable
    result counts as negative only if the assay is at least this sensitive, e.g. 1.0e-4); codes
    (true/false -> form codes).
    """
    value = _number_input(values, params, "value")
    sensitivity = _number_input(values, params, "sensitivity")
    lod_scale = _unit(params, "sensitivity_unit", MRD_UNITS)
    if value is not None:
        value *= _unit(params, "value_unit", MRD_UNITS)
    required = _optional_param_number(params, "required_sensitivity")
    result = mrd_negative(value=value, sensitivity=None if sensitivity is None else sensitivity * lod_scale,
                          undetectable=_flag(_input(values, params, "undetectable"), params),
                          required_sensitivity=None if required is None else required * lod_scale)
    return _output(result, params, (True, False))


@register_derivation("derived_response")
@_never_raises
def derived_response_derivation(values: Values, subject: Values, params: Values) -> str | None:
    """CR / CRi / NOT_CR (trial.md §5, §8.2 RSDRV); choice result.

    params (item ids): bm_blasts (BM blasts %), pb_blasts (yes/no), emd (yes/no), cns (CNS status: CNS1 /
    CNS2 / CNS3, via code_map if coded otherwise), anc, platelets, transfused (yes/no: transfusion in
    the window); thresholds [P] in the items' units: blasts_below_pct (e.g. 5), anc_min (e.g. 1000),
    platelets_min (e.g. 100000); code_map; codes (CR, CRi, NOT_CR -> form codes). The ≥ 4-week
    duration is not part of this one-assessment derivation.
    """
    response = derived_response(
        bm_blasts_pct=_number_input(values, params, "bm_blasts"),
        pb_blasts=_flag(_input(values, params, "pb_blasts"), params),
        emd=_flag(_input(values, params, "emd"), params),
        cns=_code_input(values, params, "cns"),
        anc=_number_input(values, params, "anc"),
        platelets=_number_input(values, params, "platelets"),
        transfused=_flag(_input(values, params, "transfused"), params),
        blasts_below_pct=_param_number(params, "blasts_below_pct"),
        anc_min=_param_number(params, "anc_min"),
        platelets_min=_param_number(params, "platelets_min"),
    )
    return _output(response, params, RESPONSES)


def _recovery(values: Values, params: Values, abs_key: str, pct_key: str) -> bool | None:
    strict = params.get("strict", False)
    return b_cell_recovery(abs_count=_number_input(values, params, abs_key),
                           pct=_number_input(values, params, pct_key),
                           abs_threshold=_optional_param_number(params, "abs_threshold"),
                           pct_threshold=_optional_param_number(params, "pct_threshold"),
                           strict=strict)


@register_derivation("b_cell_aplasia")
@_never_raises
def b_cell_aplasia_derivation(values: Values, subject: Values, params: Values) -> bool | None:
    """B-cell aplasia on one sample (trial.md §5, §8.2 BCA); boolean result (or codes).

    params: abs (item id: CD19+ B cells/µL), pct (item id: % of lymphocytes, optional); thresholds [P]:
    abs_threshold (e.g. 50) and/or pct_threshold (e.g. 10): aplasia when every configured measure is
    below its threshold; strict (optional, default false: recovery at >= threshold; true: > threshold);
    codes (true/false -> form codes).
    """
    recovered = _recovery(values, params, "abs", "pct")
    return _output(None if recovered is None else not recovered, params, (True, False))


@register_derivation("b_cell_aplasia_loss")
@_never_raises
def b_cell_aplasia_loss(values: Values, subject: Values, params: Values) -> bool | None:
    """Confirmed loss of BCA: this sample and its repeat both at or above a threshold (§5, §8.2 BCALOSS).

    Boolean result (or codes). params: abs, pct (this sample), repeat_abs, repeat_pct (the confirming
    repeat sample) item ids, and the thresholds of `b_cell_aplasia` [P]. False when either sample shows
    aplasia; None while the repeat is awaited. The subject is assumed to have been in aplasia before.
    """
    result = bca_loss_confirmed(_recovery(values, params, "abs", "pct"),
                                _recovery(values, params, "repeat_abs", "repeat_pct"))
    return _output(result, params, (True, False))


@register_derivation("ae_serious")
@_never_raises
def ae_serious_derivation(values: Values, subject: Values, params: Values) -> bool | None:
    """Serious iff at least one ICH E2A criterion is Y (trial.md §4.4, §8.2 AESER); boolean result (or codes).

    params (item ids of yes/no items, all six required): death, life_threatening, hospitalisation,
    disability, congenital_anomaly, medically_important; code_map; codes (true/false -> form codes, e.g.
    `{true: 'Y', false: 'N'}`). True as soon as one criterion is Y; False only when all six are N.
    """
    if any(params.get(name) is None for name in SERIOUSNESS_CRITERIA):
        return None
    criteria = {name: _flag(_input(values, params, name), params) for name in SERIOUSNESS_CRITERIA}
    return _output(ae_serious(**criteria), params, (True, False))


# ================================================================ the same rules in FHIRPath (SDC calculatedExpression)
# For renderers of the FHIR Questionnaire: each gives the derivation's value from the response's answers, and
# nothing where the derivation gives None. Params they cannot express (a code_map) leave the item to the server.


def _item_ids(params: Values, keys: Iterable[str]) -> list[str]:
    ids = [params.get(key) for key in keys]
    if params.get("code_map") or not all(isinstance(item, str) for item in ids):
        raise DomainError("not expressible in FHIRPath")
    return ids


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@register_fhirpath("ae_serious")
def ae_serious_fhirpath(params: Values, answers: Answers) -> Calculation:
    """Y as soon as one criterion is Y; N once all six are N; nothing otherwise."""
    criteria = answers(_item_ids(params, SERIOUSNESS_CRITERIA))
    yes, no = ((_quoted(str(_output(flag, params, (True, False)))) if params.get("codes") else str(flag).lower())
               for flag in (True, False))
    return Calculation(f"iif({criteria}.where(code = {_quoted(YES)}).exists(), {yes}, "
                       f"iif({criteria}.where(code = {_quoted(NO)}).count() = {len(SERIOUSNESS_CRITERIA)}, {no}, {{}}))")


@register_fhirpath("ice_total")
def ice_total_fhirpath(params: Values, answers: Answers) -> Calculation:
    """The sum of the five ICE items once all are answered."""
    scores = answers(_item_ids(params, ICE_ITEM_MAX))
    return Calculation(f"iif({scores}.count() = {len(ICE_ITEM_MAX)}, {scores}.aggregate($total + $this, 0), {{}})")


@register_fhirpath("capd_total")
def capd_total_fhirpath(params: Values, answers: Answers) -> Calculation:
    """The CAPD total once all eight items are answered: items 1-4 reverse-scored, 5-8 forward."""
    items = params.get("items")
    if not isinstance(items, list) or len(items) != 8:
        raise DomainError("params.items must list the eight CAPD items")
    items = _item_ids({str(n): item for n, item in enumerate(items)} | {"code_map": params.get("code_map")},
                      map(str, range(8)))
    scores = []
    for position, item in enumerate(items):
        answer = answers([item]) + ".code"
        score = "{}"
        for code, points in reversed(CAPD_FREQUENCY.items()):
            points = max(CAPD_FREQUENCY.values()) - points if position < CAPD_REVERSED_ITEMS else points
            score = f"iif({answer} = {_quoted(code)}, {points}, {score})"
        scores.append(score)
    return Calculation(f"iif({answers(items)}.count() = 8, {' + '.join(scores)}, {{}})")


def _month_number(moment: str) -> str:
    """Months since year 0 of a FHIR date or dateTime (its local date): year * 12 + month."""
    return f"({moment}.toString().substring(0, 4).toInteger() * 12 + {moment}.toString().substring(5, 2).toInteger())"


@register_fhirpath("icans_tool")
def icans_tool_fhirpath(params: Values, answers: Answers) -> Calculation:
    """CAPD with developmental delay or below the age cut-off, ICE otherwise. The age needs the birth year-month,
    which only the SDC launch context `patient` gives (Patient.birthDate, year-month in this export): without
    it the tool is known only for a delayed child, and partial=True keeps both tools' items reachable."""
    if params.get("age_months") is not None or params.get("birth_year") is not None:
        raise DomainError("not expressible in FHIRPath")
    [at] = _item_ids(params, ["date"])
    cutoff = _param_number(params, "capd_below_age_months")
    capd, ice = (str(_output(tool, params, ICANS_TOOLS)) for tool in ("CAPD", "ICE"))
    age = f"({_month_number(answers([at]))} - {_month_number('%patient.birthDate')})"
    young = f"({age} < {cutoff})"
    delay = "false"
    if params.get("developmental_delay") is not None:
        [delayed] = _item_ids(params, ["developmental_delay"])
        delay = f"({answers([delayed])}.code = {_quoted(YES)})"
    return Calculation(f"iif({young} or {delay}, {_quoted(capd)}, "
                       f"iif({young} = false and {delay} = false, {_quoted(ice)}, {{}}))",
                       partial=True, launch_context=("patient",))
