"""Engine features the trial needs: entries.<form> lists, sum_of / max_of / hours_between, {param: name} in
derivation params, optional events, anchors set at one event, forms only some roles enter."""

from datetime import date
from pathlib import Path

import pytest

from edc.ecrf import DefinitionError, ValidationContext, check_definitions, evaluate_warnings, load_study, validate_entry

SUBJECT = {"site": "ES01", "sex": "F", "birth_year": 2015, "birth_month": 4, "registration_date": date(2026, 1, 10),
           "planned_infusion": date(2026, 2, 10), "day0": date(2026, 2, 16)}

STUDY = """\
id: T
title: T
parameters: {min_gap_hours: 24, max_total: 1.1, factor: 3}
missing_codes: {ND: Not done}
events:
  - {id: F1, label: F1, anchor: planned_infusion, day: 0, forms: [dose]}
  - {id: F2, label: F2, anchor: day0, day: 1, forms: [dose]}
  - {id: DTH, label: Death, optional: true, forms: [death]}
subject_logs: [ae]
anchors:
  day0: {form: dose, item: GIVEN, event: F1}
form_roles:
  death: {roles: [safety], only: true}
"""

DOSE = """\
id: dose
version: 1
title: Dose
sections:
  - id: S
    items:
      - {id: GIVEN, type: datetime, label: Given, required: true}
      - {id: AMOUNT, type: decimal, label: Amount, min: 0, max: 10, precision: 2}
      - {id: TRIPLE, type: derived, label: Triple, derivation: band, inputs: [AMOUNT], value_type: integer,
         params: {value: AMOUNT, cutoffs: [{param: factor}, 5.0]}}
checks:
  - id: GAP
    scope: subject
    assert: "entries.dose.all(e, !has(e.GIVEN) || e.GIVEN == GIVEN || hours_between(e.GIVEN, GIVEN) >= double(params.min_gap_hours) || hours_between(GIVEN, e.GIVEN) >= double(params.min_gap_hours))"
    message: Doses must be at least 24 hours apart.
    severity: warning
    critical: true
    items: [GIVEN]
  - id: TOTAL
    scope: subject
    assert: "sum_of(entries.dose.filter(e, has(e.AMOUNT)).map(e, e.AMOUNT)) + AMOUNT <= params.max_total"
    message: The total amount is above the maximum.
    severity: warning
    items: [AMOUNT]
"""

AE = """\
id: ae
version: 1
title: AE
repeating: true
sections:
  - id: S
    items:
      - {id: GRADE, type: integer, label: Grade, min: 1, max: 5, required: true}
checks:
  - id: DEATH_FORM
    scope: subject
    assert: "GRADE < 5 || size(entries.death) > 0"
    message: A grade 5 event needs the death form.
    severity: warning
    critical: true
  - id: WORST
    scope: subject
    assert: "double(GRADE) >= max_of(entries.ae.map(e, double(e.GRADE))) || GRADE >= 3"
    message: Lower than an earlier event.
    severity: warning
"""

DEATH = """\
id: death
version: 1
title: Death
sections:
  - id: S
    items:
      - {id: DTHDAT, type: date, label: Date of death, required: true}
"""


def write(root: Path, study: str = STUDY, dose: str = DOSE, ae: str = AE) -> Path:
    for name, text in (("dose", dose), ("ae", ae), ("death", DEATH)):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "1.yaml").write_text(text)
    (root / "study.yaml").write_text(study)
    return root


@pytest.fixture
def study(tmp_path):
    return load_study(write(tmp_path / "forms"))


def ctx(**other_entries) -> ValidationContext:
    return ValidationContext(subject=SUBJECT, other_entries=other_entries, today=date(2026, 11, 25))


def checks(warnings) -> list[str]:
    return [w["check"] for w in warnings]


def test_the_study_loads_and_records_what_reads_what(study):
    assert study.cross_form_dependencies == {"dose": {"dose"}, "death": {"ae"}, "ae": {"ae"}}
    assert study.event("DTH").optional and not study.event("F1").optional
    assert study.anchors["day0"] == {"form": "dose", "item": "GIVEN", "event": "F1"}
    assert study.exclusive_forms == {"death"} and study.form_roles == {"death": {"safety"}}


def test_param_references_in_derivation_params_take_the_study_value(study):
    assert study.form("dose").items["TRIPLE"].params["cutoffs"] == [3, 5.0]
    result = validate_entry(study.form("dose"), {"GIVEN": "2026-02-16T10:00:00+01:00", "AMOUNT": 4.0}, complete=True, context=ctx())
    assert result.values["TRIPLE"] == 1


def test_entries_of_the_same_form_compare_other_entries(study):
    form = study.form("dose")
    first = {"GIVEN": "2026-02-16T10:00:00+01:00", "AMOUNT": 0.5}
    close = {"GIVEN": "2026-02-17T09:00:00+01:00", "AMOUNT": 0.5}
    later = {"GIVEN": "2026-02-17T10:00:00+01:00", "AMOUNT": 0.5}
    assert checks(validate_entry(form, first, complete=True, context=ctx(dose=[])).warnings) == []
    warned = validate_entry(form, close, complete=True, context=ctx(dose=[first])).warnings
    assert checks(warned) == ["GAP"] and warned[0]["critical"] and warned[0]["kind"] == "cross_form"
    assert checks(validate_entry(form, later, complete=True, context=ctx(dose=[first])).warnings) == []


def test_sum_of_over_other_entries(study):
    form = study.form("dose")
    other = {"GIVEN": "2026-02-14T10:00:00+01:00", "AMOUNT": 0.8}
    coded = {"GIVEN": "2026-02-13T10:00:00+01:00", "AMOUNT": {"missing": "ND"}}
    entry = {"GIVEN": "2026-02-16T10:00:00+01:00", "AMOUNT": 0.5}
    assert checks(evaluate_warnings(form, entry, ctx(dose=[other, coded]))) == ["TOTAL"]
    assert checks(evaluate_warnings(form, {**entry, "AMOUNT": 0.3}, ctx(dose=[other, coded]))) == []


def test_an_empty_list_means_no_such_entry(study):
    ae = study.form("ae")
    assert checks(evaluate_warnings(ae, {"GRADE": 5}, ctx(death=[], ae=[]))) == ["DEATH_FORM"]
    assert checks(evaluate_warnings(ae, {"GRADE": 5}, ctx(death=[{"DTHDAT": "2026-03-01"}], ae=[]))) == []


def test_max_of_skips_the_rule_for_an_empty_list(study):
    ae = study.form("ae")
    assert checks(evaluate_warnings(ae, {"GRADE": 1}, ctx(death=[], ae=[]))) == []
    assert checks(evaluate_warnings(ae, {"GRADE": 1}, ctx(death=[], ae=[{"GRADE": 2}]))) == ["WORST"]


@pytest.mark.parametrize("change, message", [
    (("entries.dose.all(", "entries.nope.all("), "unknown form 'nope' in entries.nope"),
    (("entries.dose.all(", "entries.all("), "unknown form 'all' in entries.all"),
    (("    scope: subject\n    assert: \"entries.dose", "    assert: \"entries.dose"), "scope: subject"),
])
def test_bad_entries_references_are_definition_errors(tmp_path, change, message):
    root = write(tmp_path / "forms", dose=DOSE.replace(*change, 1))
    problems = check_definitions(root)
    assert any(message in p for p in problems), problems


def test_a_calculation_may_not_read_other_entries(tmp_path):
    dose = DOSE.replace("      - {id: AMOUNT,", "      - {id: N, type: calculated, label: N, expression: 'size(entries.dose)', "
                                             "value_type: integer}\n      - {id: AMOUNT,")
    problems = check_definitions(write(tmp_path / "forms", dose=dose))
    assert any("may not read other forms" in p for p in problems), problems


def test_unknown_study_parameter_in_params(tmp_path):
    problems = check_definitions(write(tmp_path / "forms", dose=DOSE.replace("{param: factor}", "{param: nope}")))
    assert any("unknown study parameter 'nope' in params" in p for p in problems), problems


@pytest.mark.parametrize("change, message", [
    (("  day0: {form: dose, item: GIVEN, event: F1}", "  day0: {form: dose, item: GIVEN, event: DTH}"), "is not at event 'DTH'"),
    (("  death: {roles: [safety], only: true}", "  death: {roles: [safety], only: maybe}"), "form_roles"),
    (("  death: {roles: [safety], only: true}", "  death: {role: [safety]}"), "form_roles"),
    (("  - {id: DTH, label: Death, optional: true, forms: [death]}", "  - {id: DTH, label: Death, forms: [death]}"),
     "needs 'anchor'"),
    (("  - {id: DTH, label: Death, optional: true, forms: [death]}",
      "  - {id: DTH, label: Death, optional: true, anchor: day0, forms: [death]}"), "give both anchor and day"),
])
def test_study_file_errors(tmp_path, change, message):
    root = write(tmp_path / "forms", study=STUDY.replace(*change))
    with pytest.raises(DefinitionError) as caught:
        load_study(root)
    assert any(message in p for p in caught.value.messages), caught.value.messages
