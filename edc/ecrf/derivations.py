"""Named Python derivations that `derived` items call, and the generic ones the engine ships.

A derivation is `fn(values, subject, params) -> value | None`:
- `values`: the item's declared `inputs` that are answered and visible, as Python values
  (int, float, str, bool, list of codes, `date` for full dates, ISO string for partial dates,
  aware `datetime` for date-times); unanswered, coded or hidden inputs are absent;
- `subject`: the subject facts of the ValidationContext (site, sex, birth_year, birth_month,
  registration_date, planned_infusion, day0; dates as `date`, any may be None);
- `params`: the item's `params` mapping from the form file (thresholds live there, not in Python).
It returns a value of the item's `value_type`, or None when it cannot derive one. It must not
raise for missing inputs, and reads nothing but its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .expressions import age_in_months

Derivation = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Any]
_REGISTRY: dict[str, Derivation] = {}
_REFERENCES: dict[str, tuple[str, ...]] = {}   # derivation -> the reference data (forms/reference/<name>.yaml) it reads


def register_derivation(name: str, reference: str | tuple[str, ...] | None = None) -> Callable[[Derivation], Derivation]:
    """Register `fn(values, subject, params)` under `name` for derived items (decorator).

    `reference`: the name(s) of the reference data the derivation reads (forms/reference/<name>.yaml). The loader
    then passes them in `params["reference"]` as {name: data}; the item's own params (what its form's content
    hash covers) stay as written.
    """
    references = (reference,) if isinstance(reference, str) else tuple(reference or ())

    def register(fn: Derivation) -> Derivation:
        known = _REGISTRY.get(name)
        if known is not None and known is not fn:
            raise ValueError(f"derivation {name!r} is already registered")
        _REGISTRY[name] = fn
        _REFERENCES[name] = references
        return fn
    return register


def get_derivation(name: str) -> Derivation | None:
    """Return the derivation registered under `name`, or None."""
    return _REGISTRY.get(name)


def derivation_references(name: str) -> tuple[str, ...]:
    """Return the names of the reference data the derivation `name` reads (empty for most)."""
    return _REFERENCES.get(name, ())


def registered_derivations() -> list[str]:
    """Return the registered derivation names."""
    return sorted(_REGISTRY)


# --- the same rules in FHIRPath, for SDC renderers of the FHIR Questionnaire (edc.ecrf.questionnaire) -----------

Answers = Callable[[Sequence[str]], str]   # item ids -> the FHIRPath of their answers' values in the response


@dataclass(frozen=True, slots=True)
class Calculation:
    """A derivation as an SDC calculatedExpression: `expression` (FHIRPath) gives the item's value (the code, for
    a choice item). `partial`: it may stay empty where the server would derive a value, because it reads what a
    renderer may not have (`launch_context`, e.g. the SDC `patient`), so items shown by its value stay reachable
    while it is empty."""

    expression: str
    partial: bool = False
    launch_context: tuple[str, ...] = ()


FhirPathRule = Callable[[Mapping[str, Any], Answers], Calculation | None]
_FHIRPATH: dict[str, FhirPathRule] = {}


def register_fhirpath(name: str) -> Callable[[FhirPathRule], FhirPathRule]:
    """Register `fn(params, answers) -> Calculation | None`: the derivation `name` in FHIRPath (decorator).
    It returns None for params it cannot express (the item is then computed by the server only)."""

    def register(fn: FhirPathRule) -> FhirPathRule:
        _FHIRPATH[name] = fn
        return fn
    return register


def fhirpath_calculation(name: str, params: Mapping[str, Any], answers: Answers) -> Calculation | None:
    """The derivation `name` with these params as FHIRPath, or None when it has no FHIRPath form."""
    rule = _FHIRPATH.get(name)
    if rule is None:
        return None
    try:
        return rule(params, answers)
    except (KeyError, TypeError, ValueError):
        return None


@register_derivation("age_months_at")
def age_months_at(values: Mapping[str, Any], subject: Mapping[str, Any], params: Mapping[str, Any]) -> int | None:
    """Age in completed months (from the 1st of the birth month) at the `date` input (params: date = item id)."""
    at = values.get(params.get("date", ""))
    birth_year, birth_month = subject.get("birth_year"), subject.get("birth_month")
    if at is None or birth_year is None or birth_month is None or isinstance(at, str):
        return None
    return age_in_months(birth_year, birth_month, at)


@register_derivation("band")
def band(values: Mapping[str, Any], subject: Mapping[str, Any], params: Mapping[str, Any]) -> int | None:
    """Count the ascending `cutoffs` the `value` input reaches (params: value = item id, cutoffs = list)."""
    value = values.get(params.get("value", ""))
    if value is None or isinstance(value, bool):
        return None
    return sum(1 for cutoff in params["cutoffs"] if value >= cutoff)
