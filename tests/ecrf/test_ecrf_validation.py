"""validate_entry: item types, bad input, missing-data codes, show_if, draft and complete."""

import time
from datetime import date
from pathlib import Path

import pytest

from edc.ecrf import ValidationContext, load_study, validate_entry

FORMS = Path(__file__).resolve().parents[2] / "tests" / "demo_forms"
TODAY = date(2026, 11, 25)
SUBJECT = {"site": "ES01", "sex": "F", "birth_year": 2015, "birth_month": 4, "registration_date": date(2026, 1, 10),
           "planned_infusion": date(2026, 2, 10), "day0": date(2026, 2, 16)}

VITALS = {"VSDAT": "2026-11-20", "TEMP": 37.2, "HR": 90, "SBP": 110, "DBP": 70}
INFUSION = {"INFDAT": "2026-02-16", "PRODUCT_ID": "ARI-000123", "WEIGHT": 30, "DOSE": 1.5}
AE = {"AETERM": "Fever", "AESTDAT": "2026-02", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "RELATED"}


@pytest.fixture(scope="module")
def study():
    return load_study(FORMS)


def context(**overrides) -> ValidationContext:
    return ValidationContext(subject=overrides.pop("subject", SUBJECT), other_forms=overrides.pop("other_forms", {}),
                             today=overrides.pop("today", TODAY), **overrides)


def validate(study, form_id, data, *, complete=False, version=None, **context_overrides):
    return validate_entry(study.form(form_id, version), data, complete=complete, context=context(**context_overrides))


def errors_of(result) -> dict[str, str]:
    return {error["pointer"]: error["detail"] for error in result.errors}


# ---------------------------------------------------------------- a valid entry


def test_valid_entry_is_normalised_for_storage(study):
    result = validate(study, "vitals", {**VITALS, "TEMP": 37.24, "SPO2": 98, "VSCOMM": "Sin incidencias"}, complete=True)
    assert result.ok and result.errors == [] and result.warnings == [] and result.missing_required == []
    assert result.values == {"VSDAT": "2026-11-20", "TEMP": 37.2, "HR": 90, "SBP": 110, "DBP": 70, "SPO2": 98,
                             "VSCOMM": "Sin incidencias"}


def test_right_to_left_text_is_kept_as_sent(study):
    comment = "المريض بحالة جيدة"
    result = validate(study, "vitals", {**VITALS, "VSCOMM": comment})
    assert result.ok and result.values["VSCOMM"] == comment


def test_data_must_be_an_object(study):
    result = validate(study, "vitals", ["TEMP", 37])
    assert errors_of(result) == {"/data": "must be an object of item values"} and not result.ok


def test_unknown_item_is_an_error(study):
    assert errors_of(validate(study, "vitals", {**VITALS, "COLOUR": "red"})) == {"/data/COLOUR": "unknown item"}


def test_item_of_a_newer_version_is_unknown_in_an_older_one(study):
    assert errors_of(validate(study, "vitals", {**VITALS, "SPO2": 98}, version="1")) == {"/data/SPO2": "unknown item"}


# ---------------------------------------------------------------- item types


@pytest.mark.parametrize(("value", "detail"), [
    (True, "must be an integer"),
    (90.5, "must be an integer"),
    ("90", "must be an integer"),
    (2 ** 70, "is out of the integer range"),
    (19, "must be at least 20 beats/min"),
    (251, "must be at most 250 beats/min"),
])
def test_bad_integers(study, value, detail):
    assert errors_of(validate(study, "vitals", {**VITALS, "HR": value})) == {"/data/HR": detail}


def test_integral_float_is_an_integer(study):
    assert validate(study, "vitals", {**VITALS, "HR": 90.0}).values["HR"] == 90


@pytest.mark.parametrize(("value", "detail"), [
    ("37.2", "must be a number"),
    (False, "must be a number"),
    (float("nan"), "must be a finite number"),
    (29.9, "must be at least 30 °C"),
    (45.1, "must be at most 45 °C"),
])
def test_bad_decimals(study, value, detail):
    assert errors_of(validate(study, "vitals", {**VITALS, "TEMP": value})) == {"/data/TEMP": detail}


def test_decimal_is_rounded_to_its_precision_and_integers_become_floats(study):
    assert validate(study, "vitals", {**VITALS, "TEMP": 38.25}).values["TEMP"] in (38.2, 38.3)
    assert validate(study, "vitals", {**VITALS, "TEMP": 38}).values["TEMP"] == 38.0


@pytest.mark.parametrize(("value", "detail"), [
    ("2026-13-01", "is not a valid calendar date"),
    ("2026-02-30", "is not a valid calendar date"),
    ("2026-11", "must be a full date YYYY-MM-DD"),
    ("20/11/2026", "must be a full date YYYY-MM-DD"),
    ("2026-11-20T10:00:00+01:00", "must be a full date YYYY-MM-DD"),
    (20261120, "must be a date string YYYY-MM-DD"),
    ("2026-11-26", "must not be in the future"),
])
def test_bad_dates(study, value, detail):
    assert errors_of(validate(study, "vitals", {**VITALS, "VSDAT": value})) == {"/data/VSDAT": detail}


def test_today_is_not_in_the_future(study):
    assert validate(study, "vitals", {**VITALS, "VSDAT": "2026-11-25"}).ok


@pytest.mark.parametrize("value", ["2026-02", "2026-02-03"])
def test_year_month_partial_date_accepts_month_or_day_precision(study, value):
    result = validate(study, "ae", {**AE, "AESTDAT": value})
    assert result.ok and result.values["AESTDAT"] == value


@pytest.mark.parametrize(("value", "detail"), [
    ("2026", "must be a date YYYY-MM or YYYY-MM-DD"),
    ("2026-13", "is not a valid calendar date"),
    ("2026-12", "must not be in the future"),
])
def test_bad_year_month_partial_dates(study, value, detail):
    assert errors_of(validate(study, "ae", {**AE, "AESTDAT": value})) == {"/data/AESTDAT": detail}


def test_partial_date_in_the_current_month_is_not_in_the_future(study):
    assert validate(study, "ae", {**AE, "AESTDAT": "2026-11"}).ok


def test_year_only_partial_date_where_the_item_allows_it(study):
    data = {"CONSDAT": "2026-01-05", "PRIORTX": ["HSCT"], "HSCTDAT": "2024"}
    result = validate(study, "screening", data)
    assert result.ok and result.values["HSCTDAT"] == "2024"


def test_datetime_keeps_its_utc_offset(study):
    result = validate(study, "infusion", {**INFUSION, "INFSTTIM": "2026-02-16T10:30:00+02:00"})
    assert result.ok and result.values["INFSTTIM"] == "2026-02-16T10:30:00+02:00"
    assert validate(study, "infusion", {**INFUSION, "INFSTTIM": "2026-02-16T10:30Z"}).values["INFSTTIM"] == "2026-02-16T10:30:00+00:00"


@pytest.mark.parametrize(("value", "detail"), [
    ("2026-02-16T10:30:00", "must be a date-time with a UTC offset"),
    ("2026-02-16", "must be a date-time with a UTC offset"),
    ("2026-02-30T10:30:00+01:00", "is not a valid date-time"),
    ("2026-11-26T00:30:00+01:00", "must not be in the future"),
])
def test_bad_datetimes(study, value, detail):
    assert errors_of(validate(study, "infusion", {**INFUSION, "INFSTTIM": value}))["/data/INFSTTIM"].startswith(detail)


@pytest.mark.parametrize("value", ["true", 1, 0])
def test_bad_booleans(study, value):
    assert errors_of(validate(study, "ae", {**AE, "AEONGO": value})) == {"/data/AEONGO": "must be true or false"}


@pytest.mark.parametrize(("value", "detail"), [
    ("X", "'X' is not one of the codes Y, N"),
    (1, "must be a code (a string)"),
    (["Y"], "must be a code (a string)"),
    ("Yes", "'Yes' is not one of the codes Y, N"),
])
def test_bad_choices(study, value, detail):
    assert errors_of(validate(study, "ae", {**AE, "AESER": value})) == {"/data/AESER": detail}


def test_multichoice_is_stored_in_code_list_order(study):
    result = validate(study, "screening", {"CONSDAT": "2026-01-05", "PRIORTX": ["RT", "CHEMO"]})
    assert result.ok and result.values["PRIORTX"] == ["CHEMO", "RT"]


@pytest.mark.parametrize(("value", "detail"), [
    ("CHEMO", "must be a list of codes (strings)"),
    (["CHEMO", 3], "must be a list of codes (strings)"),
    (["CHEMO", "CHEMO"], "must not repeat a code"),
    (["CHEMO", "MAGIC"], "'MAGIC' is not one of the codes CHEMO, HSCT, BLINA, INO, RT"),
])
def test_bad_multichoices(study, value, detail):
    data = {"CONSDAT": "2026-01-05", "PRIORTX": value}
    assert errors_of(validate(study, "screening", data)) == {"/data/PRIORTX": detail}


@pytest.mark.parametrize(("value", "detail"), [
    (123456, "must be a string"),
    ("ARI-123", "does not match the expected format ARI-[0-9]{6}"),
    ("ARI-0001234", "is longer than 10 characters"),
])
def test_bad_text(study, value, detail):
    assert errors_of(validate(study, "infusion", {**INFUSION, "PRODUCT_ID": value})) == {"/data/PRODUCT_ID": detail}


def test_ten_megabyte_text_is_refused_quickly(study):
    started = time.perf_counter()
    result = validate(study, "vitals", {**VITALS, "VSCOMM": "x" * 10_000_000})
    assert errors_of(result) == {"/data/VSCOMM": "is longer than 1000 characters"}
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("text, refused", [("a\x00b", "U+0000"), ("a\x1bb", "U+001B"), ("a\x7fb", "U+007F"),
                                           ("a\ud800b", "surrogate")])
def test_control_characters_and_lone_surrogates_are_refused_in_free_text(study, text, refused):
    errors = errors_of(validate(study, "vitals", {**VITALS, "VSCOMM": text}))
    assert list(errors) == ["/data/VSCOMM"] and refused in errors["/data/VSCOMM"]


def test_free_text_keeps_tabs_and_line_breaks(study):
    result = validate(study, "vitals", {**VITALS, "VSCOMM": "a\tb\rc\r\nd\ne"})
    assert result.ok and result.values["VSCOMM"] == "a\tb\rc\r\nd\ne"


@pytest.mark.parametrize("day", ["1899-12-31", "2101-01-01", "9999-12-30", "0001-01-01"])
def test_every_date_item_keeps_to_the_study_wide_range(study, day):
    assert errors_of(validate(study, "vitals", {**VITALS, "VSDAT": day})) == {
        "/data/VSDAT": "must lie between 1900-01-01 and 2100-12-31"}


def test_empty_values_mean_unanswered(study):
    result = validate(study, "vitals", {**VITALS, "VSCOMM": "", "HR": None})
    assert result.ok and "VSCOMM" not in result.values and "HR" not in result.values


# ---------------------------------------------------------------- computed items


def test_calculated_value_is_computed_by_the_server(study):
    result = validate(study, "infusion", INFUSION)
    assert result.ok and result.values["TOTAL_CELLS"] == 45.0


def test_calculated_value_is_absent_when_an_input_is_missing(study):
    result = validate(study, "infusion", {**INFUSION, "DOSE": None})
    assert "TOTAL_CELLS" not in result.values


def test_client_value_for_a_calculated_item_is_refused(study):
    result = validate(study, "infusion", {**INFUSION, "TOTAL_CELLS": 99.0})
    assert errors_of(result) == {"/data/TOTAL_CELLS": "is computed by the server; do not send a value"}


def test_client_value_for_a_derived_item_is_refused(study):
    assert errors_of(validate(study, "ae", {**AE, "FEVGR": 3})) == {"/data/FEVGR": "is computed by the server; do not send a value"}


def test_null_for_a_computed_item_is_ignored(study):
    assert validate(study, "infusion", {**INFUSION, "TOTAL_CELLS": None}).ok


@pytest.mark.parametrize(("tmax", "band"), [(37.9, 0), (38.0, 1), (39.5, 2), (40.2, 3)])
def test_derived_value_uses_the_cutoffs_of_the_form(study, tmax, band):
    assert validate(study, "ae", {**AE, "TMAX": tmax}).values["FEVGR"] == band


@pytest.mark.parametrize(("consent", "months"), [("2026-03-31", 131), ("2026-04-01", 132), ("2015-04-30", 0)])
def test_age_is_counted_in_completed_months_from_the_first_of_the_birth_month(study, consent, months):
    result = validate(study, "screening", {"CONSDAT": consent}, today=date(2026, 11, 25))
    assert result.values["AGEM"] == months


def test_derived_age_needs_the_birth_year_and_month(study):
    result = validate(study, "screening", {"CONSDAT": "2026-01-05"}, subject={"site": "ES01"})
    assert "AGEM" not in result.values


def test_calculated_value_from_a_subject_fact(study):
    assert validate(study, "daily", {"DADAT": "2026-02-20"}).values["DAYNUM"] == 4
    assert "DAYNUM" not in validate(study, "daily", {"DADAT": "2026-02-20"}, subject={**SUBJECT, "day0": None}).values


# ---------------------------------------------------------------- missing-data codes


def test_missing_code_is_stored_with_its_note_and_counts_as_answered(study):
    data = {**VITALS, "TEMP": {"missing": "ND", "note": "thermometer broken"}}
    result = validate(study, "vitals", data, complete=True)
    assert result.ok and result.values["TEMP"] == {"missing": "ND", "note": "thermometer broken"}
    assert result.missing_required == []


def test_missing_code_without_a_note(study):
    assert validate(study, "vitals", {**VITALS, "HR": {"missing": "UNK"}}).values["HR"] == {"missing": "UNK"}


@pytest.mark.parametrize(("value", "detail"), [
    ({"missing": "LOST"}, "missing-data code must be one of: ND, UNK, NA"),
    ({"missing": "ND", "value": 1}, 'a missing-data code is {"missing": code, "note": optional text}'),
    ({"missing": "ND", "note": 3}, "must be a string"),
    ({"note": "forgot"}, "missing-data code must be one of: ND, UNK, NA"),
])
def test_bad_missing_codes(study, value, detail):
    assert errors_of(validate(study, "vitals", {**VITALS, "HR": value})) == {"/data/HR": detail}


def test_missing_code_not_allowed_by_the_item(study):
    assert errors_of(validate(study, "ae", {**AE, "AEREL": {"missing": "NA"}})) == {
        "/data/AEREL": "missing-data code must be one of: UNK"}


def test_missing_code_not_allowed_by_the_form(study):
    assert errors_of(validate(study, "ae", {**AE, "AETERM": {"missing": "ND"}})) == {
        "/data/AETERM": "missing-data code must be one of: UNK, NA"}


def test_item_that_allows_no_missing_code(study):
    assert errors_of(validate(study, "infusion", {**INFUSION, "PRODUCT_ID": {"missing": "UNK"}})) == {
        "/data/PRODUCT_ID": "missing-data code must be one of: none"}


def test_coded_input_skips_checks_and_calculations(study):
    result = validate(study, "vitals", {**VITALS, "SBP": {"missing": "ND"}, "DBP": 120})
    assert result.ok
    assert "TOTAL_CELLS" not in validate(study, "infusion", {**INFUSION, "DOSE": {"missing": "ND"}}).values


# ---------------------------------------------------------------- show_if


def test_item_shown_when_its_condition_holds(study):
    result = validate(study, "ae", {**AE, "AEONGO": False, "AEENDAT": "2026-03"})
    assert result.ok and result.values["AEENDAT"] == "2026-03" and "AEENDAT" not in result.hidden


def test_value_for_a_hidden_item_is_refused(study):
    result = validate(study, "ae", {**AE, "AEONGO": True, "AEENDAT": "2026-03"})
    assert errors_of(result) == {"/data/AEENDAT": "does not apply (shown only if AEONGO == false); remove the value"}
    assert "AEENDAT" not in result.values


def test_missing_code_for_a_hidden_item_is_refused(study):
    result = validate(study, "ae", {**AE, "AEONGO": True, "AEENDAT": {"missing": "UNK"}})
    assert list(errors_of(result)) == ["/data/AEENDAT"]


def test_show_if_with_a_missing_input_hides_the_item(study):
    data = {key: value for key, value in AE.items() if key != "AEONGO"}
    result = validate(study, "ae", data)
    assert "AEENDAT" in result.hidden and "AEENDAT" not in result.missing_required


def test_show_if_on_a_multichoice(study):
    hidden = validate(study, "screening", {"CONSDAT": "2026-01-05", "PRIORTX": ["CHEMO"]})
    shown = validate(study, "screening", {"CONSDAT": "2026-01-05", "PRIORTX": ["CHEMO", "HSCT"]})
    assert "HSCTDAT" in hidden.hidden and "HSCTDAT" not in hidden.missing_required
    assert "HSCTDAT" not in shown.hidden and "HSCTDAT" in shown.missing_required


def test_show_if_on_a_derived_item_and_a_study_parameter(study):
    child = validate(study, "screening", {"CONSDAT": "2026-01-05"})                  # 129 months
    adolescent = validate(study, "screening", {"CONSDAT": "2026-01-05"}, subject={**SUBJECT, "birth_year": 2009})
    assert "KARNOFSKY" in child.hidden and "LANSKY" not in child.hidden
    assert "LANSKY" in adolescent.hidden and "KARNOFSKY" not in adolescent.hidden


def test_hidden_items_of_a_hidden_chain(study):
    # CONSDAT missing: AGEM is not derived, so both LANSKY and KARNOFSKY are hidden.
    result = validate(study, "screening", {"CD19": "POS"})
    assert {"LANSKY", "KARNOFSKY"} <= result.hidden


# ---------------------------------------------------------------- repeating groups


def test_group_rows_are_validated_with_pointers(study):
    data = {**INFUSION, "PREMED": [{"PMTRT": "PARACET", "PMDOSE": 300}, {"PMTRT": "OTHER", "PMOTH": "Ondansetron"},
                                   {"PMTRT": "ANTIHIST", "PMOTH": "no", "PMDOSE": -1}]}
    result = validate(study, "infusion", data)
    assert errors_of(result) == {"/data/PREMED/2/PMOTH": "does not apply (shown only if PMTRT == 'OTHER'); remove the value",
                                 "/data/PREMED/2/PMDOSE": "must be at least 0 mg"}
    assert result.values["PREMED"][:2] == [{"PMTRT": "PARACET", "PMDOSE": 300.0}, {"PMTRT": "OTHER", "PMOTH": "Ondansetron"}]
    assert "PREMED/0/PMOTH" in result.hidden


@pytest.mark.parametrize(("value", "pointer", "detail"), [
    ({"PMTRT": "PARACET"}, "/data/PREMED", "must be a list of rows"),
    (["PARACET"], "/data/PREMED/0", "a row must be an object of item values"),
    ([{"PMTRT": "PARACET"}] * 11, "/data/PREMED", "has more than 10 rows"),
    ([{"PMTRT": "PARACET", "WEIGHT": 3}], "/data/PREMED/0/WEIGHT", "unknown item"),
])
def test_bad_groups(study, value, pointer, detail):
    assert errors_of(validate(study, "infusion", {**INFUSION, "PREMED": value})) == {pointer: detail}


def test_row_item_sent_at_the_top_level_is_unknown(study):
    assert errors_of(validate(study, "infusion", {**INFUSION, "PMTRT": "PARACET"})) == {"/data/PMTRT": "unknown item"}


def test_empty_group_is_stored_as_no_rows(study):
    assert validate(study, "infusion", {**INFUSION, "PREMED": []}).values["PREMED"] == []


def test_group_may_carry_a_missing_code(study):
    result = validate(study, "infusion", {**INFUSION, "PREMED": {"missing": "NA"}})
    assert result.ok and result.values["PREMED"] == {"missing": "NA"}


# ---------------------------------------------------------------- draft and complete


def test_draft_may_miss_required_items(study):
    result = validate(study, "ae", {"AETERM": "Fever"})
    assert result.ok
    assert result.missing_required == ["AESTDAT", "AEONGO", "AETOXGR", "AESER", "AEREL"]


def test_complete_needs_every_visible_required_item(study):
    result = validate(study, "ae", {"AETERM": "Fever", "AESER": "Y"}, complete=True)
    assert not result.ok
    assert result.missing_required == ["AESTDAT", "AEONGO", "AETOXGR", "AESCRIT", "AEREL"]
    assert set(errors_of(result)) == {f"/data/{item}" for item in result.missing_required}


def test_complete_entry_with_every_required_item(study):
    result = validate(study, "ae", {**AE, "AESER": "Y", "AESCRIT": ["HOSP"]}, complete=True)
    assert result.ok and result.missing_required == []


def test_required_items_inside_rows(study):
    data = {**AE, "AETRT": [{"CMTRT": "Paracetamol", "CMDOSE": 500}]}
    draft = validate(study, "ae", data)
    assert draft.ok and draft.missing_required == ["AETRT/0/CMSTDAT", "AETRT/0/CMDOSU"]
    complete = validate(study, "ae", data, complete=True)
    assert set(errors_of(complete)) == {"/data/AETRT/0/CMSTDAT", "/data/AETRT/0/CMDOSU"}


def test_complete_with_a_type_error_is_not_ok(study):
    assert not validate(study, "vitals", {**VITALS, "HR": "fast"}, complete=True).ok


def test_non_ascii_digits_are_not_a_date(study):
    assert errors_of(validate(study, "vitals", {**VITALS, "VSDAT": "٢٠٢٦-١١-٢٠"})) == {"/data/VSDAT": "must be a full date YYYY-MM-DD"}
