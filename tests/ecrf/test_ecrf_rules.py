"""Soft ranges, form checks (error vs warning), row checks, cross-form and subject checks, evaluate_warnings."""

import copy
from datetime import date
from pathlib import Path

import pytest

from edc.ecrf import ValidationContext, evaluate_warnings, load_study, register_derivation, validate_entry

FORMS = Path(__file__).resolve().parents[2] / "tests" / "demo_forms"
TODAY = date(2026, 11, 25)
SUBJECT = {"site": "ES01", "sex": "F", "birth_year": 2015, "birth_month": 4, "registration_date": date(2026, 1, 10),
           "planned_infusion": date(2026, 2, 10), "day0": date(2026, 2, 16)}
VITALS = {"VSDAT": "2026-11-20", "TEMP": 37.2, "HR": 90, "SBP": 110, "DBP": 70}
INFUSION = {"INFDAT": "2026-02-16", "PRODUCT_ID": "ARI-000123", "WEIGHT": 30, "DOSE": 1.5}
AE = {"AETERM": "Fever", "AESTDAT": "2026-02", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "RELATED"}
APHERESIS = {"APHDAT": "2026-01-20", "PRODUCT_ID": "ARI-000123"}


@pytest.fixture(scope="module")
def study():
    return load_study(FORMS)


def context(subject=None, other_forms=None, **extra) -> ValidationContext:
    return ValidationContext(subject=SUBJECT if subject is None else subject, other_forms=other_forms or {}, today=TODAY, **extra)


def checks_of(warnings) -> list[str]:
    return [warning["check"] for warning in warnings]


# ---------------------------------------------------------------- soft and hard ranges


def test_value_outside_the_soft_range_is_saved_with_a_warning(study):
    result = validate_entry(study.form("vitals"), {**VITALS, "TEMP": 40.5}, complete=True, context=context())
    assert result.ok and result.values["TEMP"] == 40.5
    assert result.warnings == [{
        "check": "soft_range", "key": "soft_range:/data/TEMP", "kind": "soft_range", "items": ["TEMP"],
        "pointers": ["/data/TEMP"], "critical": False,
        "message": "Temperature: 40.5 °C is above the expected maximum 40 °C; please confirm"}]


def test_value_at_the_soft_bound_has_no_warning(study):
    assert validate_entry(study.form("vitals"), {**VITALS, "TEMP": 40.0}, complete=True, context=context()).warnings == []


def test_value_below_the_soft_minimum(study):
    result = validate_entry(study.form("vitals"), {**VITALS, "TEMP": 34.0}, complete=False, context=context())
    assert result.ok and "below the expected minimum 35" in result.warnings[0]["message"]


def test_value_outside_the_hard_range_is_rejected_without_a_soft_warning(study):
    result = validate_entry(study.form("vitals"), {**VITALS, "TEMP": 46.0}, complete=False, context=context())
    assert not result.ok and result.warnings == []


def test_soft_range_in_a_group_row(study):
    data = {**INFUSION, "PREMED": [{"PMTRT": "PARACET", "PMDOSE": 500}, {"PMTRT": "PARACET", "PMDOSE": 1500}]}
    result = validate_entry(study.form("infusion"), data, complete=False, context=context())
    assert result.ok
    assert [(w["key"], w["items"], w["pointers"]) for w in result.warnings] == [
        ("soft_range:/data/PREMED/1/PMDOSE", ["PREMED/1/PMDOSE"], ["/data/PREMED/1/PMDOSE"])]


# ---------------------------------------------------------------- form checks


def test_error_check_rejects_the_save_with_a_pointer_per_item(study):
    result = validate_entry(study.form("vitals"), {**VITALS, "SBP": 70, "DBP": 90}, complete=False, context=context())
    message = "Systolic pressure must be higher than diastolic pressure."
    assert not result.ok
    assert result.errors == [{"pointer": "/data/SBP", "detail": message}, {"pointer": "/data/DBP", "detail": message}]


def test_check_with_a_missing_input_is_skipped(study):
    result = validate_entry(study.form("vitals"), {**VITALS, "SBP": 70, "DBP": None}, complete=False, context=context())
    assert result.ok


def test_error_check_on_partial_dates(study):
    data = {**AE, "AEONGO": False, "AEENDAT": "2026-01"}
    result = validate_entry(study.form("ae"), data, complete=False, context=context())
    assert result.errors == [{"pointer": "/data/AEENDAT", "detail": "The end date is before the start date."}]


def test_partial_dates_that_may_overlap_pass(study):
    data = {**AE, "AESTDAT": "2026-02-20", "AEONGO": False, "AEENDAT": "2026-02"}
    assert validate_entry(study.form("ae"), data, complete=False, context=context()).ok


def test_warning_check_saves_and_reports_the_query(study):
    result = validate_entry(study.form("ae"), {**AE, "AETOXGR": "5"}, complete=True, context=context())
    assert result.ok
    assert result.warnings == [{"check": "FATAL_IS_SERIOUS", "key": "FATAL_IS_SERIOUS", "kind": "check",
                                "message": "A grade 5 event must be serious.", "items": ["AESER"],
                                "pointers": ["/data/AESER"], "critical": False}]


def test_messages_in_the_context_language_with_english_fallback(study):
    spanish = context(lang="es")
    result = validate_entry(study.form("ae"), {**AE, "AETOXGR": "5"}, complete=False, context=spanish)
    assert result.warnings[0]["message"] == "Un acontecimiento de grado 5 debe ser grave."
    result = validate_entry(study.form("ae"), {**AE, "AESTDAT": "2025-12"}, complete=False, context=spanish)
    assert result.warnings[0]["message"] == "The event starts before the subject's registration."


def test_row_check_runs_once_per_row_with_a_row_pointer(study):
    data = {**AE, "AETRT": [{"CMTRT": "Paracetamol", "CMSTDAT": "2026-02-03"}, {"CMTRT": "Ibuprofen", "CMSTDAT": "2026-01-30"}]}
    result = validate_entry(study.form("ae"), data, complete=False, context=context())
    assert result.ok
    assert [(w["key"], w["items"], w["pointers"]) for w in result.warnings] == [
        ("TREATMENT_AFTER_START:AETRT/1", ["AETRT/1/CMSTDAT"], ["/data/AETRT/1/CMSTDAT"])]


def test_check_with_a_study_parameter(study):
    too_young = {**SUBJECT, "birth_year": 2025, "birth_month": 6}
    result = validate_entry(study.form("screening"), {"CONSDAT": "2026-01-05"}, complete=False, context=context(subject=too_young))
    assert "AGE_ELIGIBLE" in checks_of(result.warnings)
    result = validate_entry(study.form("screening"), {"CONSDAT": "2026-01-05"}, complete=False, context=context())
    assert "AGE_ELIGIBLE" not in checks_of(result.warnings)


# ---------------------------------------------------------------- cross-form and subject checks


def test_cross_form_mismatch_is_a_critical_warning(study):
    other = {"apheresis": {**APHERESIS, "PRODUCT_ID": "ARI-000999"}}
    result = validate_entry(study.form("infusion"), INFUSION, complete=True, context=context(other_forms=other))
    assert result.ok
    assert result.warnings == [{
        "check": "PRODUCT_MATCH", "key": "PRODUCT_MATCH", "kind": "cross_form", "items": ["PRODUCT_ID"],
        "pointers": ["/data/PRODUCT_ID"], "critical": True,
        "message": "The infused product ID does not match the apheresis product ID."}]


def test_cross_form_check_passes_when_the_values_match(study):
    result = validate_entry(study.form("infusion"), INFUSION, complete=True, context=context(other_forms={"apheresis": APHERESIS}))
    assert result.warnings == []


def test_cross_form_check_is_skipped_when_the_other_form_is_missing(study):
    assert validate_entry(study.form("infusion"), INFUSION, complete=True, context=context()).warnings == []


def test_cross_form_check_is_skipped_when_the_other_value_is_coded(study):
    other = {"apheresis": {**APHERESIS, "PRODUCT_ID": {"missing": "UNK"}}}
    assert validate_entry(study.form("infusion"), INFUSION, complete=True, context=context(other_forms=other)).warnings == []


def test_subject_check_on_a_fact_and_a_parameter(study):
    late = {**INFUSION, "INFDAT": "2026-02-25"}         # 15 days after the planned 2026-02-10, the limit is 14
    result = validate_entry(study.form("infusion"), late, complete=False, context=context(other_forms={"apheresis": APHERESIS}))
    assert checks_of(result.warnings) == ["INFUSION_DELAY"] and result.warnings[0]["kind"] == "cross_form"


def test_subject_check_is_skipped_without_the_fact(study):
    late = {**INFUSION, "INFDAT": "2026-02-25"}
    subject = {**SUBJECT, "planned_infusion": None}
    assert validate_entry(study.form("infusion"), late, complete=False, context=context(subject=subject)).warnings == []


def test_daily_assessment_outside_its_period(study):
    result = validate_entry(study.form("daily"), {"DADAT": "2026-03-05"}, complete=False, context=context())
    assert checks_of(result.warnings) == ["IN_DAILY_PERIOD"]
    assert validate_entry(study.form("daily"), {"DADAT": "2026-02-20"}, complete=False, context=context()).warnings == []


# ---------------------------------------------------------------- evaluate_warnings on stored values


def stored_infusion(study) -> dict:
    result = validate_entry(study.form("infusion"), INFUSION, complete=True, context=context(other_forms={"apheresis": APHERESIS}))
    assert result.ok and result.warnings == []
    return result.values


def test_warning_opens_when_the_other_form_changes(study):
    values = stored_infusion(study)
    before = copy.deepcopy(values)
    changed_apheresis = {"apheresis": {**APHERESIS, "PRODUCT_ID": "ARI-000999"}}
    warnings = evaluate_warnings(study.form("infusion"), values, context(other_forms=changed_apheresis))
    assert checks_of(warnings) == ["PRODUCT_MATCH"] and warnings[0]["critical"]
    assert values == before                                   # the other entry's data never changes


def test_warning_resolves_when_the_other_form_is_corrected(study):
    values = stored_infusion(study)
    assert evaluate_warnings(study.form("infusion"), values, context(other_forms={"apheresis": APHERESIS})) == []


def test_evaluate_warnings_covers_soft_ranges_and_row_checks_but_not_errors(study):
    data = {**AE, "AETOXGR": "5", "TMAX": 42.0, "AETRT": [{"CMTRT": "Paracetamol", "CMSTDAT": "2026-01-30"}]}
    result = validate_entry(study.form("ae"), data, complete=False, context=context())
    assert result.ok
    again = evaluate_warnings(study.form("ae"), result.values, context())
    assert again == result.warnings
    assert sorted(checks_of(again)) == ["FATAL_IS_SERIOUS", "TREATMENT_AFTER_START", "soft_range"]


def test_evaluate_warnings_on_stored_values_of_every_type(study):
    data = {"CONSDAT": "2026-01-05", "DIAGDAT": "2025-06", "CD19": "POS", "PRIORTX": ["HSCT"], "HSCTDAT": "2025", "LANSKY": 40}
    result = validate_entry(study.form("screening"), data, complete=True, context=context())
    assert result.ok
    assert evaluate_warnings(study.form("screening"), result.values, context()) == result.warnings


def test_subject_check_reevaluated_when_a_fact_changes(study):
    values = validate_entry(study.form("screening"), {"CONSDAT": "2026-01-05"}, complete=False, context=context()).values
    later_registration = {**SUBJECT, "registration_date": date(2026, 1, 2)}
    warnings = evaluate_warnings(study.form("screening"), values, context(subject=later_registration))
    assert "CONSENT_BEFORE_REGISTRATION" in checks_of(warnings)
    assert "screening" in study.subject_fact_dependencies["registration_date"]


# ---------------------------------------------------------------- derivations registered by the service


def test_registering_a_derivation_twice_under_one_name_is_refused():
    @register_derivation("test_double")
    def first(values, subject, params):
        return None

    assert register_derivation("test_double")(first) is first
    with pytest.raises(ValueError):
        register_derivation("test_double")(lambda values, subject, params: None)


def test_a_registered_derivation_is_usable_in_a_form(tmp_path):
    @register_derivation("test_double_it")
    def double_it(values, subject, params):
        return values["A"] * params["factor"] if "A" in values else None

    root = tmp_path / "forms"
    (root / "f").mkdir(parents=True)
    (root / "study.yaml").write_text("id: T\ntitle: T\nmissing_codes: {ND: Not done}\n"
                                     "events:\n  - {id: V, label: V, anchor: day0, day: 0, forms: [f]}\n")
    (root / "f" / "1.yaml").write_text(
        "id: f\nversion: 1\ntitle: F\nsections:\n  - id: S\n    items:\n"
        "      - {id: A, type: integer, label: A}\n"
        "      - {id: D, type: derived, label: D, derivation: test_double_it, inputs: [A], params: {factor: 2}, value_type: integer}\n")
    form = load_study(root).form("f")
    assert validate_entry(form, {"A": 21}, complete=False, context=context()).values == {"A": 21, "D": 42}


# ---------------------------------------------------------------- groups as a whole


GROUP_FORM = """\
id: f
version: 1
title: F
sections:
  - id: S
    items:
      - {id: ANY, type: boolean, label: Any medication}
      - id: MEDS
        type: group
        label: Medications
        required: true
        show_if: ANY == true
        items:
          - {id: NAME, type: text, label: Name, required: true, encrypt: true}
          - {id: DOSE, type: decimal, label: Dose}
      - id: COUNT
        type: calculated
        label: Number of medications with a dose
        expression: MEDS.filter(m, has(m.DOSE)).size()
        value_type: integer
checks:
  - {id: DOSES, assert: "MEDS.all(m, !has(m.DOSE) || m.DOSE < 100.0)", message: A dose is unusually high, severity: warning,
     items: [MEDS]}
"""


@pytest.fixture(scope="module")
def group_form(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    (root / "f").mkdir()
    (root / "study.yaml").write_text("id: T\ntitle: T\nmissing_codes: {NA: Not applicable}\n"
                                     "events:\n  - {id: V, label: V, anchor: day0, day: 0, forms: [f]}\n")
    (root / "f" / "1.yaml").write_text(GROUP_FORM)
    return load_study(root).form("f")


def test_hidden_group_refuses_rows(group_form):
    result = validate_entry(group_form, {"ANY": False, "MEDS": [{"NAME": "X"}]}, complete=False, context=context())
    assert result.errors == [{"pointer": "/data/MEDS", "detail": "does not apply (shown only if ANY == true); remove the value"}]
    assert "MEDS" in result.hidden


def test_required_group_needs_a_row_to_complete(group_form):
    result = validate_entry(group_form, {"ANY": True, "MEDS": []}, complete=True, context=context())
    assert result.missing_required == ["MEDS"] and not result.ok
    coded = validate_entry(group_form, {"ANY": True, "MEDS": {"missing": "NA"}}, complete=True, context=context())
    assert coded.ok and coded.values["MEDS"] == {"missing": "NA"}


def test_rules_over_the_rows_of_a_group(group_form):
    data = {"ANY": True, "MEDS": [{"NAME": "A", "DOSE": 10}, {"NAME": "B"}, {"NAME": "C", "DOSE": 150}]}
    result = validate_entry(group_form, data, complete=True, context=context())
    assert result.ok and result.values["COUNT"] == 2
    assert [(w["check"], w["pointers"]) for w in result.warnings] == [("DOSES", ["/data/MEDS"])]
    assert evaluate_warnings(group_form, result.values, context()) == result.warnings
