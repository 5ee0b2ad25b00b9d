"""Static checks that need the whole study: cross-form references and evaluation on typed sample values.

The CEL library compiles `TMAX > 'abc'` without complaint, so every expression is run on
typical, minimum and maximum values of what it reads; a missing input is never evaluated
(checks skip, show_if hides, calculations yield nothing), exactly as at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from .definitions import FormDef, GroupDef, ItemDef, Study
from .derivations import get_derivation
from .expressions import (
    AGE_MONTHS,
    ENTRIES,
    FORMS,
    KNOWN_FUNCTIONS,
    SUBJECT,
    SUBJECT_FACTS,
    Expression,
    age_months_function,
    cel_date,
    describe_error,
)
from .formfile import FormBuild, PendingExpression
from .reading import FileReader
from .values import coerce_result, natural, samples

SAMPLE_SUBJECT: dict[str, Any] = {
    "site": "ES01", "sex": "F", "birth_year": 2015, "birth_month": 4, "registration_date": date(2026, 1, 12),
    "planned_infusion": date(2026, 2, 16), "day0": date(2026, 2, 16),
    "visit_due": date(2026, 3, 16), "visit_earliest": date(2026, 3, 13), "visit_latest": date(2026, 3, 19),
}
_FACT_SAMPLES = {"text": {"typical": "ES01", "minimum": "F", "maximum": "M"},
                 "integer": {"typical": 2015, "minimum": 1, "maximum": 12}}


def resolve_form_refs(study: Study, build: FormBuild, reader: FileReader) -> None:
    """Point every forms.<form>.<item> reference at its ItemDef; report unknown forms and items."""
    for pending in build.expressions:
        for form_id, item_id in pending.program.form_refs:
            item = _referenced_item(study, form_id, item_id)
            if form_id == build.form.id:
                reader.error(pending.line, f"read this form's own item as {item_id}, not forms.{form_id}.{item_id}")
            elif form_id not in study.all_forms:
                reader.error(pending.line, f"unknown form {form_id!r} in forms.{form_id}.{item_id}")
            elif item is None:
                reader.error(pending.line, f"form {form_id!r} has no top-level item {item_id!r}")
            else:
                pending.program.form_ref_items[(form_id, item_id)] = item
        for form_id in pending.program.entry_refs:
            if form_id not in study.all_forms:
                reader.error(pending.line, f"unknown form {form_id!r} in entries.{form_id}")
            else:
                pending.program.entry_ref_forms[form_id] = study.form(form_id)


def _referenced_item(study: Study, form_id: str, item_id: str) -> ItemDef | None:
    for form in reversed(study.all_forms.get(form_id, {}).values()):
        item = form.items.get(item_id)
        if item is not None and item.group is None:
            return item
    return None


def evaluate_samples(build: FormBuild, reader: FileReader) -> None:
    """Run every expression and derivation of a form on typed sample values; report what fails."""
    form = build.form
    for pending in build.expressions:
        if _evaluable(pending, build):
            _evaluate_expression(form, pending, reader)
    for item in form.items.values():
        if item.type == "derived" and item.id not in build.broken and not set(item.inputs) & build.broken:
            _evaluate_derivation(form, item, reader)


def _evaluable(pending: PendingExpression, build: FormBuild) -> bool:
    program = pending.program
    owner_id = getattr(pending.owner, "id", None)
    if owner_id in build.broken or set(program.names) & build.broken:
        return False
    known = set(build.form.items) | set(build.form.groups)
    return (all(name in known for name in program.names)
            and all(function in KNOWN_FUNCTIONS for function in program.functions)
            and all(ref in program.form_ref_items for ref in program.form_refs)
            and all(ref in program.entry_ref_forms for ref in program.entry_refs)
            and all(fact in SUBJECT_FACTS for fact in program.subject_facts)
            and all(name in program.constants.get("params", {}) for name in program.params))


def _evaluate_expression(form: FormDef, pending: PendingExpression, reader: FileReader) -> None:
    program = pending.program
    for description, variables in _scenarios(form, program):
        try:
            result = program.program.execute(variables)
        except Exception as exc:  # any CEL failure here is a definition error...
            if any(not entries for entries in variables.get(ENTRIES, {}).values()):
                continue  # ...but max_of() of no other entries skips the rule at run time too
            reader.error(pending.line, f"{pending.role} expression fails on sample values ({description}): {describe_error(exc)}")
            return
        problem = _result_problem(pending, result)
        if problem:
            reader.error(pending.line, f"{pending.role} expression {problem} on sample values ({description})")
            return


def _result_problem(pending: PendingExpression, result: Any) -> str | None:
    if pending.role in ("show_if", "check"):
        return None if isinstance(result, bool) else f"returns {type(result).__name__}, not a boolean,"
    try:
        coerce_result(pending.owner, result)
    except TypeError:
        return f"returns {result!r}, not a {pending.owner.value_type} value,"
    return None


def _scenarios(form: FormDef, program: Expression) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (description, variables): all typical, all minimum, all maximum, then each input at its bounds."""
    inputs = _input_samples(form, program)
    pick = {name: values["typical"] for name, values in inputs.items()}
    yield "typical values", _variables(program, pick)
    for bound in ("minimum", "maximum"):
        yield f"all {bound}", _variables(program, {name: values[bound] for name, values in inputs.items()})
        for name, values in inputs.items():
            yield f"{name}={values[bound]!r}", _variables(program, {**pick, name: values[bound]})


def _input_samples(form: FormDef, program: Expression) -> dict[str, dict[str, Any]]:
    inputs = {name: _name_samples(form, name) for name in program.names}
    for (form_id, item_id), item in program.form_ref_items.items():
        inputs[f"{FORMS}.{form_id}.{item_id}"] = samples(item)
    for form_id, other in program.entry_ref_forms.items():
        typical = _entry_map(other, "typical")
        inputs[f"{ENTRIES}.{form_id}"] = {"typical": [typical], "minimum": [], "maximum": [typical, _entry_map(other, "maximum")]}
    for fact in program.subject_facts:
        kind = SUBJECT_FACTS[fact]
        typical = SAMPLE_SUBJECT[fact]
        inputs[f"{SUBJECT}.{fact}"] = (_FACT_SAMPLES[kind] | {"typical": typical} if kind != "date"
                                       else dict.fromkeys(("typical", "minimum", "maximum"), cel_date(typical)))
    return inputs


def _name_samples(form: FormDef, name: str) -> dict[str, Any]:
    if name in form.groups:
        group = form.groups[name]
        typical_row = _row(form, group, "typical")
        return {"typical": [typical_row], "minimum": [], "maximum": [typical_row, _row(form, group, "maximum")]}
    return samples(form.items[name])


def _entry_map(form: FormDef, bound: str) -> dict[str, Any]:
    """Sample values of another entry's top-level items, as `entries.<form>` binds them."""
    return {item.id: samples(item)[bound] for item in form.items.values() if item.group is None}


def _row(form: FormDef, group: GroupDef, bound: str) -> dict[str, Any]:
    return {member: samples(form.items[member])[bound] for member in group.items if member in form.items}


def _variables(program: Expression, chosen: dict[str, Any]) -> dict[str, Any]:
    variables = dict(program.constants)
    forms: dict[str, dict[str, Any]] = {}
    entries: dict[str, list[dict[str, Any]]] = {}
    subject: dict[str, Any] = {}
    for name, value in chosen.items():
        if name.startswith(ENTRIES + "."):
            entries[name.split(".", 1)[1]] = value
        elif name.startswith(FORMS + "."):
            _, form_id, item_id = name.split(".")
            forms.setdefault(form_id, {})[item_id] = value
        elif name.startswith(SUBJECT + "."):
            subject[name.split(".", 1)[1]] = value
        else:
            variables[name] = value
    if program.form_refs:
        variables[FORMS] = forms
    if program.entry_refs:
        variables[ENTRIES] = entries
    if subject:
        variables[SUBJECT] = subject
    if AGE_MONTHS in program.functions:
        variables[AGE_MONTHS] = age_months_function(SAMPLE_SUBJECT)
    return variables


def _evaluate_derivation(form: FormDef, item: ItemDef, reader: FileReader) -> None:
    derivation = get_derivation(item.derivation)
    typical = {name: natural(form.items[name], samples(form.items[name])["typical"])
               for name in item.inputs if name in form.items}
    for description, values in (("typical inputs", typical), ("no inputs", {})):
        try:
            result = derivation(values, SAMPLE_SUBJECT, item.params)
            if result is not None:
                coerce_result(item, result)
        except TypeError as exc:
            reader.error(item.line, f"derivation {item.derivation!r} of {item.id}: {exc} ({description})")
            return
        except Exception as exc:  # report any failure of the registered function
            reader.error(item.line, f"derivation {item.derivation!r} of {item.id} fails on sample values ({description}): "
                                    f"{type(exc).__name__}: {exc}")
            return
        if result is None and values:
            reader.error(item.line, f"derivation {item.derivation!r} of {item.id} returns no value for typical inputs "
                                    "(check its params and inputs)")
            return
