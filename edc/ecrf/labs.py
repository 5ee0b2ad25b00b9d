"""Laboratory derivations that read the reference data in forms/reference/ (trial.md §4.1-4.2, §8.2 LB).

| derivation | result | reference data |
|---|---|---|
| `lab_range_flag` | LOW / NORMAL / HIGH (CDISC LBNRIND) against the range in force | lab_ranges |
| `ctcae_lab_grade` | CTCAE v5.0 grade 0-4 from the laboratory criteria of the given terms (LBTOXGR) | lab_ranges, ctcae_v5 |
| `lab_range_reference` | which range applied: "<laboratory> <effective_from> <age band>" (traceability) | lab_ranges |

The range in force for a sample is that of the subject's site laboratory, from the range set with the
latest `effective_from` on or before the sample date, in the age band holding the subject's age in
completed months at the sample date (counted from the 1st of the birth month, like every age here).
A range applies from its lower limit to its upper limit inclusive: a value equal to a limit is NORMAL.

A CTCAE laboratory grade is the highest grade whose threshold the value crosses (strictly below for a
"decreased" term, strictly above for an "increased" one: CTCAE writes "<LLN", ">3.0 x ULN"), 0 when none;
the thresholds (LLN, ULN, multiples of them, absolute values) are in forms/reference/ctcae_v5.yaml, not here.
Only the laboratory criteria are derived: the clinical and baseline-relative alternatives of a grade
("symptomatic", "transfusion indicated", "> 3 x baseline") are for the investigator's AE grade. Several
terms (hypo- and hyperkalaemia) give the highest of their grades.

Params: `value` and `date` name the form's result and sample-date items; `analyte` (flag) names a
lab_ranges analyte; `terms` (grade) lists CTCAE term names with laboratory criteria. Subject facts:
site, birth_year, birth_month. Each derivation returns None, never raises, when a fact or input is
missing or no range is in force (no site laboratory, sample before its first range set, age outside
its bands).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from .clinical import DomainError, age_months
from .derivations import register_derivation
from .reference import Ctcae, LabRanges, RangeInForce, range_flag, register_item_check

LAB_RANGES, CTCAE = "lab_ranges", "ctcae_v5"
Values = Mapping[str, Any]

__all__ = ["CTCAE", "LAB_RANGES", "ctcae_lab_grade", "lab_range_flag", "lab_range_reference", "range_in_force"]


def _reference(params: Values, name: str, kind: type) -> Any:
    data = (params.get("reference") or {}).get(name)
    return data if isinstance(data, kind) else None


def _sample_date(values: Values, params: Values) -> date | None:
    value = values.get(params.get("date", ""))
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None     # a partial date (str) gives no day


def _number(values: Values, params: Values) -> float | None:
    value = values.get(params.get("value", ""))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _age_months(subject: Values, day: date) -> int | None:
    try:
        return age_months(subject.get("birth_year"), subject.get("birth_month"), day)
    except DomainError:                                  # no birth year/month, or a sample before birth
        return None


def range_in_force(ranges: LabRanges, subject: Values, day: date, analyte: str) -> RangeInForce | None:
    """The range of `analyte` for this subject's site and age on `day`, or None."""
    site, age = subject.get("site"), _age_months(subject, day)
    if not isinstance(site, str) or age is None:
        return None
    return ranges.lookup(site, age, day, analyte)


@register_derivation("lab_range_flag", reference=LAB_RANGES)
def lab_range_flag(values: Values, subject: Values, params: Values) -> str | None:
    """LOW / NORMAL / HIGH of the `value` item against the range of `analyte` in force on the `date` item."""
    ranges = _reference(params, LAB_RANGES, LabRanges)
    value, day, analyte = _number(values, params), _sample_date(values, params), params.get("analyte")
    if ranges is None or value is None or day is None or analyte not in ranges.analytes:
        return None
    found = range_in_force(ranges, subject, day, analyte)
    return None if found is None else range_flag(value, found.low, found.high)


@register_derivation("ctcae_lab_grade", reference=(LAB_RANGES, CTCAE))
def ctcae_lab_grade(values: Values, subject: Values, params: Values) -> int | None:
    """CTCAE grade 0-4 of the `value` item by the laboratory criteria of `terms`, with the range in force."""
    ranges, ctcae = _reference(params, LAB_RANGES, LabRanges), _reference(params, CTCAE, Ctcae)
    value, day, names = _number(values, params), _sample_date(values, params), params.get("terms")
    if ranges is None or ctcae is None or value is None or day is None or not isinstance(names, list) or not names:
        return None
    grades = []
    for name in names:
        term = ctcae.terms.get(name) if isinstance(name, str) else None
        if term is None or term.lab is None:
            return None
        found = range_in_force(ranges, subject, day, term.lab.analyte)
        if found is None:
            return None
        grade = term.lab.grade(value, found.low, found.high)
        if grade is None:
            return None
        grades.append(grade)
    return max(grades)


@register_derivation("lab_range_reference", reference=LAB_RANGES)
def lab_range_reference(values: Values, subject: Values, params: Values) -> str | None:
    """Which reference range set applies to the sample on the `date` item: "<laboratory> <effective_from> <band>"."""
    ranges, day = _reference(params, LAB_RANGES, LabRanges), _sample_date(values, params)
    if ranges is None or day is None:
        return None
    site, age = subject.get("site"), _age_months(subject, day)
    if not isinstance(site, str) or age is None:
        return None
    found = ranges.range_set(site, age, day)
    if found is None:
        return None
    laboratory, range_set, band = found
    return f"{laboratory.id} {range_set.effective_from.isoformat()} {band.label}"


# ---------------------------------------------------------------- load-time checks of the items' params


def _input_item(params: Values, key: str, items: Values) -> Any:
    name = params.get(key)
    return items.get(name) if isinstance(name, str) else None


def _unit_problem(params: Values, items: Values, unit: str, what: str) -> list[str]:
    item = _input_item(params, "value", items)
    if item is None:
        return ["params.value must name the result item (one of its inputs)"]
    if getattr(item, "unit", None) != unit:
        return [f"params.value: item {item.id} is in {getattr(item, 'unit', None) or 'no unit'}, "
                f"but {what} is in {unit}: give the item unit {unit}"]
    return []


def _date_problem(params: Values, items: Values) -> list[str]:
    item = _input_item(params, "date", items)
    if item is None or item.value_kind not in ("date", "datetime") or item.partial:
        return ["params.date must name the full sample date item (one of its inputs)"]
    return []


@register_item_check("lab_range_flag")
def _check_flag(params: Values, items: Values, references: Values) -> list[str]:
    ranges = references.get(LAB_RANGES)
    analyte = params.get("analyte")
    if not isinstance(ranges, LabRanges):
        return []
    if analyte not in ranges.analytes:
        return [f"params.analyte: unknown analyte {analyte!r} (lab_ranges analytes: {', '.join(ranges.analytes)})"]
    return _date_problem(params, items) + _unit_problem(params, items, ranges.analytes[analyte].unit,
                                                        f"analyte {analyte}")


@register_item_check("ctcae_lab_grade")
def _check_grade(params: Values, items: Values, references: Values) -> list[str]:
    ctcae = references.get(CTCAE)
    names = params.get("terms")
    if not isinstance(ctcae, Ctcae):
        return []
    if not isinstance(names, list) or not names:
        return ["params.terms must list CTCAE term names"]
    problems = _date_problem(params, items)
    analytes = set()
    for name in names:
        term = ctcae.terms.get(name) if isinstance(name, str) else None
        if term is None or term.lab is None:
            graded = ", ".join(sorted(ctcae.lab_terms()))
            problems.append(f"params.terms: {name!r} is not a CTCAE term with laboratory criteria ({graded})")
            continue
        analytes.add(term.lab.analyte)
        problems += _unit_problem(params, items, term.lab.unit, f"the criteria of {name!r}")
    if len(analytes) > 1:
        problems.append(f"params.terms grade different analytes ({', '.join(sorted(analytes))}): one result, one analyte")
    return list(dict.fromkeys(problems))


@register_item_check("lab_range_reference")
def _check_reference(params: Values, items: Values, references: Values) -> list[str]:
    return _date_problem(params, items)
