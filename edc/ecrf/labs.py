"""Laboratory derivations that read the reference data in forms/reference/ (trial.md §4.1-4.2, §8.2 LB).

| derivation | result | reference data |
|---|---|---|
| `lab_range_flag` | LOW / NORMAL / HIGH (CDISC LBNRIND) against the range in force | lab_ranges |
| `ctcae_lab_grade` | CTCAE v5.0 grade 0-4 from the laboratory criteria of the given terms (LBTOXGR) | lab_ranges, ctcae_v5 |
| `ctcae_lab_basis` | what decided that grade: ULN, LLN, BASELINE, ABSOLUTE or NONE (grade 0) | lab_ranges, ctcae_v5 |
| `albumin_corrected_calcium` | calcium + factor x (normal albumin - albumin), in decimals | |
| `lab_range_reference` | which range applied: "<laboratory> <effective_from> <age band>" (traceability) | lab_ranges |

The range in force for a sample is that of the subject's site laboratory, from the range set with the
latest `effective_from` on or before the sample date, in the age band holding the subject's age in
completed months at the sample date (counted from the 1st of the birth month, like every age here).
A range applies from its lower limit to its upper limit inclusive: a value equal to a limit is NORMAL.

A CTCAE laboratory grade is the highest grade whose threshold the value crosses (strictly below for a
"decreased" term, strictly above for an "increased" one: CTCAE writes "<LLN", ">3.0 x ULN"; inclusive where
the data say so), 0 when none; the thresholds (LLN, ULN, the baseline, multiples of them or amounts added,
absolute values) are in forms/reference/ctcae_v5.yaml, not here. Values and limits are compared as decimals.
The baseline-relative criteria use the subject fact `lab_baselines` (result item -> (value, sample date)),
which the service computes by the study's lab_baseline rule; a baseline dated on or after the sample is not
used, and a term's abnormal-baseline criteria apply when the baseline was beyond its limit of normal in the
range in force on the baseline's date. Without a range in force the absolute criteria still grade; when a
criterion on the missing range could change the grade, the grade is None and the derivation's note
(an automatic query) names the missing range. Clinical alternatives ("symptomatic", "transfusion
indicated", "on anticoagulation") are for the investigator's AE grade. Several terms (hypo- and
hyperkalaemia) give the highest of their grades.

Params: `value` and `date` name the form's result and sample-date items; `analyte` (flag) names a
lab_ranges analyte, (grade) which of a term's criteria apply; `terms` (grade) lists CTCAE term names with
laboratory criteria. Subject facts: site, birth_year, birth_month, lab_baselines. Each derivation returns
None, never raises, when a fact or input is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from .clinical import DomainError, age_months
from .derivations import register_derivation, register_derivation_note
from .reference import (
    NO_CRITERION,
    Assessment,
    Ctcae,
    LabCriteria,
    LabRanges,
    Limits,
    RangeInForce,
    decimal_of,
    range_flag,
    register_item_check,
)

LAB_RANGES, CTCAE = "lab_ranges", "ctcae_v5"
LAB_BASELINES = "lab_baselines"      # subject fact: result item id -> (baseline value, its sample date)
Values = Mapping[str, Any]

__all__ = ["CTCAE", "LAB_BASELINES", "LAB_RANGES", "albumin_corrected_calcium", "ctcae_lab_basis", "ctcae_lab_grade",
           "lab_range_flag", "lab_range_reference", "range_in_force"]


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


class _Graded(NamedTuple):
    """A derived grade and what decided it, or (None, None) with the reason no grade could be derived."""

    grade: int | None
    basis: str | None
    missing_range: str | None = None      # "no reference range for <lab> at <site> on <date>"


_NOTHING = _Graded(None, None)


def _no_range(ranges: LabRanges, subject: Values, analyte: str, day: date) -> _Graded:
    label = ranges.analytes[analyte].label if analyte in ranges.analytes else analyte
    return _Graded(None, None, f"no reference range for {label} at {subject.get('site') or 'the site'} on {day.isoformat()}")


def _limits(found: RangeInForce | None) -> tuple[Decimal | None, Decimal | None]:
    if found is None:
        return None, None
    return tuple(None if limit is None else decimal_of(limit) for limit in (found.low, found.high))


def _baseline(subject: Values, params: Values, day: date) -> tuple[Decimal, date] | None:
    """The subject's baseline of the graded item (service fact `lab_baselines`: item -> (value, date)), if it was
    sampled before `day`: a baseline sample itself, and anything before it, is graded against the range alone."""
    found = (subject.get(LAB_BASELINES) or {}).get(params.get("value"))
    if not found or found[1] >= day:
        return None
    return decimal_of(found[0]), found[1]


def _grade_term(criteria: LabCriteria, value: Decimal, day: date, ranges: LabRanges, subject: Values,
                baseline: tuple[Decimal, date] | None) -> tuple[Assessment | None, _Graded | None]:
    """One term's assessment, or the reason it cannot be made (a baseline whose normality is unknown)."""
    low, high = _limits(range_in_force(ranges, subject, day, criteria.analyte))
    abnormal = False
    if baseline is not None and criteria.abnormal_baseline:
        at_baseline = range_in_force(ranges, subject, baseline[1], criteria.analyte)
        abnormal = criteria.abnormal(baseline[0], *_limits(at_baseline))
        if abnormal is None:
            return None, _no_range(ranges, subject, criteria.analyte, baseline[1])
    limits = Limits(low, high, None if baseline is None else baseline[0])
    return criteria.assess(value, limits, baseline_abnormal=abnormal), None


def _graded(values: Values, subject: Values, params: Values) -> _Graded:
    """The CTCAE grade of the `value` item by the criteria of `terms` (the highest of the terms' grades)."""
    ranges, ctcae = _reference(params, LAB_RANGES, LabRanges), _reference(params, CTCAE, Ctcae)
    value, day, names = _number(values, params), _sample_date(values, params), params.get("terms")
    if ranges is None or ctcae is None or value is None or day is None or not isinstance(names, list) or not names:
        return _NOTHING
    baseline = _baseline(subject, params, day)
    assessed: list[tuple[LabCriteria, Assessment]] = []
    for name in names:
        term = ctcae.terms.get(name) if isinstance(name, str) else None
        criteria = term.criteria(params.get("analyte")) if term is not None else None
        if criteria is None:
            return _NOTHING
        assessment, failed = _grade_term(criteria, decimal_of(value), day, ranges, subject, baseline)
        if failed is not None:
            return failed
        assessed.append((criteria, assessment))
    best_criteria, best = max(assessed, key=lambda pair: pair[1].grade)
    for criteria, assessment in assessed:
        # A value graded on one side (hyponatraemia) cannot be beyond the other limit (hypernatraemia's ULN).
        other_side = best.grade > 0 and criteria.direction != best_criteria.direction
        if assessment.undecided > best.grade and not other_side:   # a missing range could still raise the grade
            return _no_range(ranges, subject, criteria.analyte, day)
    return _Graded(best.grade, best.basis or NO_CRITERION)


@register_derivation("ctcae_lab_grade", reference=(LAB_RANGES, CTCAE), recheck=True)
def ctcae_lab_grade(values: Values, subject: Values, params: Values) -> int | None:
    """CTCAE grade 0-4 of the `value` item by the laboratory criteria of `terms`, with the range in force."""
    return _graded(values, subject, params).grade


@register_derivation_note("ctcae_lab_grade")
def ctcae_lab_grade_note(values: Values, subject: Values, params: Values) -> str | None:
    """Why no grade: the reference range its criteria need is missing (an automatic query)."""
    return _graded(values, subject, params).missing_range


@register_derivation("ctcae_lab_basis", reference=(LAB_RANGES, CTCAE), recheck=True)
def ctcae_lab_basis(values: Values, subject: Values, params: Values) -> str | None:
    """What decided the grade of ctcae_lab_grade with the same params: ULN, LLN, BASELINE, ABSOLUTE or NONE."""
    return _graded(values, subject, params).basis


@register_derivation("albumin_corrected_calcium")
def albumin_corrected_calcium(values: Values, subject: Values, params: Values) -> float | None:
    """Calcium corrected for albumin: calcium + `factor` x (`normal_albumin` - albumin), as decimals
    (params: calcium, albumin = item ids; factor, normal_albumin = numbers in the items' units)."""
    calcium, albumin = values.get(params.get("calcium", "")), values.get(params.get("albumin", ""))
    factor, normal = params.get("factor"), params.get("normal_albumin")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in (calcium, albumin, factor, normal)):
        return None
    corrected = decimal_of(calcium) + decimal_of(factor) * (decimal_of(normal) - decimal_of(albumin))
    return float(corrected)


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
@register_item_check("ctcae_lab_basis")
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
        criteria = term.criteria(params.get("analyte"))
        if criteria is None:
            problems.append(f"params.analyte: {name!r} has no criteria on {params.get('analyte')!r} "
                            f"({', '.join(c.analyte for c in term.labs)})")
            continue
        analytes.add(criteria.analyte)
        problems += _unit_problem(params, items, criteria.unit, f"the criteria of {name!r}")
    if len(analytes) > 1:
        problems.append(f"params.terms grade different analytes ({', '.join(sorted(analytes))}): one result, one analyte")
    return list(dict.fromkeys(problems))


@register_item_check("lab_range_reference")
def _check_reference(params: Values, items: Values, references: Values) -> list[str]:
    return _date_problem(params, items)
