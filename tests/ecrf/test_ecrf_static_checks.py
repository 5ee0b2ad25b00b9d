"""`check_definitions` reports every broken definition as file:line: message."""

import textwrap
from pathlib import Path

import pytest

from edc.ecrf import DefinitionError, check_definitions, load_study

STUDY = """\
id: T
title: Test study
languages: [en, es]
missing_codes: {ND: Not done, UNK: Unknown, NA: Not applicable}
parameters: {limit: 10}
events:
  - id: V1
    label: Visit 1
    anchor: day0
    day: 0
    forms: [f]
"""

HEAD = """\
id: f
version: 1
title: F
sections:
  - id: S
    items:
"""  # the first item starts at line 7


def form(body: str) -> str:
    """Return a form file: HEAD, then `body` indented under `items:` (body line 1 is file line 7)."""
    return HEAD + textwrap.indent(textwrap.dedent(body), "      ")


def write(tmp_path: Path, form_text: str, *, study: str = STUDY, codelists: str | None = None,
          files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "forms"
    (root / "f").mkdir(parents=True)
    (root / "study.yaml").write_text(study, encoding="utf-8")
    (root / "f" / "1.yaml").write_text(form_text, encoding="utf-8")
    if codelists is not None:
        (root / "codelists.yaml").write_text(codelists, encoding="utf-8")
    for relative, text in (files or {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, encoding="utf-8")
    return root


def expect(tmp_path: Path, form_text: str, line: int, fragment: str, *, file: str = "f/1.yaml", **kwargs) -> str:
    """Assert that the definitions have exactly one problem, at file:line, containing `fragment`."""
    root = write(tmp_path, form_text, **kwargs)
    messages = check_definitions(root)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{root}/{file}:{line}: "), messages
    assert fragment in messages[0], messages
    return messages[0]


VALID = form("""\
    - id: A
      type: integer
      label: {en: A, es: A}
      min: 0
      max: 10
""")


def test_valid_minimal_definitions_have_no_problems(tmp_path):
    root = write(tmp_path, VALID)
    assert check_definitions(root) == []
    assert load_study(root).form("f").items["A"].max == 10


def test_invalid_definitions_refuse_to_load(tmp_path):
    root = write(tmp_path, VALID.replace("max: 10", "max: ten"))
    with pytest.raises(DefinitionError) as raised:
        load_study(root)
    assert raised.value.messages == [f"{root}/f/1.yaml:11: max: must be a number"]


# ---------------------------------------------------------------- unknown keys, at every level


def test_unknown_item_key(tmp_path):
    expect(tmp_path, VALID + "        colour: red\n", 12, "unknown key 'colour' in item 'A'")


def test_key_that_does_not_apply_to_the_item_type(tmp_path):
    expect(tmp_path, VALID + "        precision: 1\n", 12, "unknown key 'precision'")


def test_unknown_form_key(tmp_path):
    expect(tmp_path, VALID.replace("title: F\n", "title: F\ncolour: red\n"), 4, "unknown key 'colour' in the form")


def test_unknown_section_key(tmp_path):
    expect(tmp_path, VALID.replace("  - id: S\n", "  - id: S\n    colour: red\n"), 6, "unknown key 'colour' in a section")


def test_unknown_check_key(tmp_path):
    checks = "checks:\n  - id: K\n    assert: A > 1\n    message: m\n    severity: warning\n    colour: red\n"
    expect(tmp_path, VALID + checks, 17, "unknown key 'colour' in check 'K'")


def test_unknown_event_key(tmp_path):
    study = STUDY.replace("    day: 0\n", "    day: 0\n    colour: red\n")
    expect(tmp_path, VALID, 11, "unknown key 'colour' in event 'V1'", file="study.yaml", study=study)


def test_unknown_study_key(tmp_path):
    expect(tmp_path, VALID, 12, "unknown key 'colour' in the study", file="study.yaml", study=STUDY + "colour: red\n")


def test_unknown_setting(tmp_path):
    study = STUDY + "settings:\n  text_max_length: 100\n  colour: red\n"
    expect(tmp_path, VALID, 14, "unknown key 'colour' in settings", file="study.yaml", study=study)


def test_unknown_code_key(tmp_path):
    codelists = "NY:\n  - {code: 'Y', label: 'Yes'}\n  - {code: 'N', label: 'No', colour: red}\n"
    expect(tmp_path, VALID, 3, "unknown key 'colour' in a code of code list 'NY'", file="codelists.yaml", codelists=codelists)


# ---------------------------------------------------------------- duplicates


def test_duplicate_item_id(tmp_path):
    expect(tmp_path, VALID + "      - {id: A, type: text, label: Again, encrypt: true}\n", 12, "duplicate id 'A' (first defined at line 7)")


def test_duplicate_id_inside_a_group(tmp_path):
    group = "- id: G\n  type: group\n  label: G\n  items:\n    - {id: A, type: text, label: Again, encrypt: true}\n"
    expect(tmp_path, VALID + textwrap.indent(group, "      "), 16, "duplicate id 'A'")


def test_duplicate_check_id(tmp_path):
    checks = ("checks:\n  - {id: K, assert: A > 1, message: m, severity: warning}\n"
              "  - {id: K, assert: A < 9, message: m, severity: warning}\n")
    expect(tmp_path, VALID + checks, 14, "duplicate check id 'K' (first defined at line 13)")


def test_duplicate_event_id(tmp_path):
    study = STUDY + "  - {id: V1, label: Again, anchor: day0, day: 7, forms: [f]}\n"
    expect(tmp_path, VALID, 12, "duplicate event id 'V1'", file="study.yaml", study=study)


def test_duplicate_code(tmp_path):
    codelists = "NY:\n  - {code: 'Y', label: 'Yes'}\n  - {code: 'Y', label: 'Yes again'}\n"
    expect(tmp_path, VALID, 3, "duplicate code 'Y'", file="codelists.yaml", codelists=codelists)


def test_duplicate_yaml_key(tmp_path):
    expect(tmp_path, VALID + "        max: 11\n", 12, "duplicate key 'max'")


def test_form_id_must_match_its_directory(tmp_path):
    expect(tmp_path, VALID.replace("id: f\n", "id: g\n", 1), 1, "form id 'g' does not match its directory 'f'")


def test_version_must_match_its_file_name(tmp_path):
    expect(tmp_path, VALID.replace("version: 1", "version: 2"), 2, "does not match its file name '1'.yaml")


# ---------------------------------------------------------------- bad types and values


@pytest.mark.parametrize(("replace", "by", "line", "fragment"), [
    ("type: integer", "type: number", 8, "type: 'number' is not one of text, integer"),
    ("min: 0", "min: zero", 10, "min: must be a number"),
    ("min: 0", "min: 20", 10, "min is greater than max"),
    ("label: {en: A, es: A}", "label: {es: A}", 9, "label: needs an English ('en') text"),
    ("label: {en: A, es: A}", "label: {en: A, fr: A}", 9, "language 'fr' is not among the study's languages"),
    ("label: {en: A, es: A}", "label: {en: A, es: No}", 9, "the es text is read by YAML as False: quote it"),
    ("- id: A", "- id: 9A", 7, "'9A' is not an identifier"),
    ("- id: A", "- id: forms", 7, "'forms' is a reserved name"),
    ("version: 1", "version: 1.10", 2, "write a dotted version as a string"),
])
def test_bad_values_are_reported_at_their_line(tmp_path, replace, by, line, fragment):
    expect(tmp_path, VALID.replace(replace, by), line, fragment)


def test_required_must_be_a_boolean(tmp_path):
    expect(tmp_path, VALID + "        required: 'yes'\n", 12, "required: must be true or false")


def test_bad_regular_expression(tmp_path):
    expect(tmp_path, form("- {id: T, type: text, label: T, encrypt: true, pattern: '([a-z'}\n"), 7, "pattern: not a valid regular expression")


def test_bad_precision(tmp_path):
    expect(tmp_path, form("- {id: D, type: decimal, label: D, precision: -1}\n"), 7, "precision: must not be negative")


def test_unknown_missing_data_code(tmp_path):
    expect(tmp_path, VALID + "        missing_codes: [ND, LOST]\n", 12, "unknown missing-data code 'LOST'")


def test_choice_needs_a_code_list(tmp_path):
    expect(tmp_path, form("- {id: C, type: choice, label: C}\n"), 7, "item 'C' needs a code_list")


def test_missing_code_list(tmp_path):
    expect(tmp_path, form("- {id: C, type: choice, label: C, code_list: NOPE}\n"), 7, "code_list: unknown code list 'NOPE'")


def test_code_read_by_yaml_as_a_boolean(tmp_path):
    codelists = "NY:\n  - {code: YES, label: 'Yes'}\n"
    expect(tmp_path, VALID, 2, "quote codes such as 'NO'", file="codelists.yaml", codelists=codelists)


def test_group_inside_a_group(tmp_path):
    body = """\
        - id: G
          type: group
          label: G
          items:
            - id: H
              type: group
              label: H
              items: []
        """
    expect(tmp_path, form(body), 12, "group 'G' cannot contain another group")


def test_yaml_syntax_error(tmp_path):
    expect(tmp_path, VALID + "      - {id: B, type: text\n", 13, "invalid YAML")


def test_impossible_unquoted_date_is_reported_not_raised(tmp_path):
    # YAML turns 2026-02-30 into a date and fails inside the parser with a bare ValueError.
    expect(tmp_path, VALID + "# released\nreleased_on: 2026-02-30\n", 1, "invalid YAML: day is out of range for month")


def test_empty_form_file(tmp_path):
    expect(tmp_path, "", 1, "the file is empty")


# ---------------------------------------------------------------- expressions


def check(assertion: str, severity: str = "warning", extra: str = "") -> str:
    """Return a checks: block with one check after VALID (the check on line 13, its assert on line 14)."""
    return f"checks:\n  - id: K\n    assert: \"{assertion}\"\n    message: m\n    severity: {severity}\n{extra}"


def test_expression_that_does_not_compile(tmp_path):
    expect(tmp_path, VALID + "        show_if: 'A =='\n", 12, "show_if: expression does not compile")


def test_expression_naming_an_unknown_item(tmp_path):
    expect(tmp_path, VALID + check("A > 1 && B < 2"), 14, "unknown name 'B' in check expression")


def test_comprehension_variables_are_not_unknown_names(tmp_path):
    codelists = "L:\n  - {code: X, label: X}\n  - {code: Y, label: Y}\n"
    text = VALID + "      - {id: M, type: multichoice, label: M, code_list: L}\n" + check("M.exists(x, x == 'X') || M.all(y, y != 'Y')")
    root = write(tmp_path, text, codelists=codelists)
    assert check_definitions(root) == []


def test_type_error_found_on_sample_values(tmp_path):
    text = form("- {id: TMAX, type: decimal, label: T, min: 30, max: 45}\n") + \
        "checks:\n  - {id: K, assert: \"TMAX > 'abc'\", message: m, severity: warning}\n"
    expect(tmp_path, text, 9, "check expression fails on sample values (typical values): No such overload")


def test_int_and_double_mixed_found_on_sample_values(tmp_path):
    expect(tmp_path, VALID + "      - {id: C, type: calculated, label: C, expression: 'A + 1.0', value_type: decimal}\n", 12,
           "calculated expression fails on sample values")


def test_error_on_a_bound_found_by_the_minimum_sample(tmp_path):
    # 100 / A only fails when A is 0: the minimum sample catches it.
    expect(tmp_path, VALID + "      - {id: C, type: calculated, label: C, expression: '100 / A', value_type: integer}\n", 12,
           "calculated expression fails on sample values (all minimum): division by zero")


def test_calculated_result_of_the_wrong_type(tmp_path):
    expect(tmp_path, VALID + "      - {id: C, type: calculated, label: C, expression: 'A > 1', value_type: integer}\n", 12,
           "calculated expression returns True, not a integer value")


def test_show_if_that_is_not_a_boolean(tmp_path):
    expect(tmp_path, VALID + "      - {id: B, type: text, label: B, encrypt: true, show_if: 'A + 1'}\n", 12, "show_if expression returns int, not a boolean")


def test_show_if_cycle(tmp_path):
    body = """\
        - {id: A, type: integer, label: A, show_if: 'B > 1'}
        - {id: B, type: integer, label: B, show_if: 'C > 1'}
        - {id: C, type: integer, label: C, show_if: 'A > 1'}
        """
    expect(tmp_path, form(body), 7, "show_if or computation cycle: A -> B -> C -> A")


def test_calculation_reading_itself(tmp_path):
    expect(tmp_path, form("- {id: C, type: calculated, label: C, expression: 'C + 1', value_type: integer}\n"), 7,
           "cycle: C -> C")


def test_unknown_function(tmp_path):
    expect(tmp_path, VALID + check("frobnicate(A)"), 14, "unknown function 'frobnicate'")


def test_unknown_study_parameter(tmp_path):
    expect(tmp_path, VALID + check("A < params.nope"), 14, "unknown study parameter 'nope'")


def test_study_parameter_is_known(tmp_path):
    assert check_definitions(write(tmp_path, VALID + check("A < params.limit"))) == []


def test_unknown_subject_fact(tmp_path):
    expect(tmp_path, VALID + check("A < subject.shoe_size", extra="    scope: subject\n"), 14, "unknown subject fact 'shoe_size'")


def test_subject_facts_need_scope_subject(tmp_path):
    expect(tmp_path, VALID + check("A < subject.birth_year"), 14, "reads other forms or subject facts: declare scope: subject")


def test_scope_subject_without_reading_another_form(tmp_path):
    expect(tmp_path, VALID + check("A < 3", extra="    scope: subject\n"), 13, "has scope: subject but reads no other form")


def test_cross_form_check_cannot_be_an_error(tmp_path):
    expect(tmp_path, VALID + check("A < subject.birth_year", "error", "    scope: subject\n"), 13,
           "a cross-form or subject check must be a warning, not an error")


def test_other_form_must_be_read_by_form_and_item(tmp_path):
    expect(tmp_path, VALID + check("A < forms.g", extra="    scope: subject\n"), 14, "read `forms` only as forms.<form>.<item>")


def test_unknown_form_in_a_cross_form_check(tmp_path):
    expect(tmp_path, VALID + check("A < forms.nope.A", extra="    scope: subject\n"), 14, "unknown form 'nope' in forms.nope.A")


def test_unknown_item_of_another_form(tmp_path):
    other = "id: g\nversion: 1\ntitle: G\nsections:\n  - id: S\n    items:\n      - {id: B, type: integer, label: B}\n"
    study = STUDY.replace("forms: [f]", "forms: [f, g]")
    expect(tmp_path, VALID + check("A < forms.g.Z", extra="    scope: subject\n"), 14, "form 'g' has no top-level item 'Z'",
           study=study, files={"g/1.yaml": other})


def test_cross_form_sample_type_error(tmp_path):
    other = "id: g\nversion: 1\ntitle: G\nsections:\n  - id: S\n    items:\n      - {id: B, type: text, label: B, encrypt: true}\n"
    study = STUDY.replace("forms: [f]", "forms: [f, g]")
    expect(tmp_path, VALID + check("A < forms.g.B", extra="    scope: subject\n"), 14, "fails on sample values",
           study=study, files={"g/1.yaml": other})


def test_a_calculation_may_not_read_other_forms(tmp_path):
    other = "id: g\nversion: 1\ntitle: G\nsections:\n  - id: S\n    items:\n      - {id: B, type: integer, label: B}\n"
    study = STUDY.replace("forms: [f]", "forms: [f, g]")
    expect(tmp_path, VALID + "      - {id: C, type: calculated, label: C, expression: 'forms.g.B + A', value_type: integer}\n",
           12, "a calculated expression may not read other forms", study=study, files={"g/1.yaml": other})


def test_check_naming_an_unknown_query_item(tmp_path):
    expect(tmp_path, VALID + check("A > 1", extra="    items: [A, Z]\n"), 13, "check 'K': unknown item 'Z' in items")


def test_row_item_is_not_visible_at_the_form_level(tmp_path):
    body = """\
        - id: G
          type: group
          label: G
          items:
            - {id: R, type: integer, label: R}
        - {id: B, type: integer, label: B, show_if: 'R > 1'}
        """
    expect(tmp_path, form(body), 12, "unknown name 'R' in show_if expression")


# ---------------------------------------------------------------- derivations


def test_unknown_derivation(tmp_path):
    text = VALID + "      - {id: D, type: derived, label: D, derivation: nope, inputs: [A], value_type: integer}\n"
    expect(tmp_path, text, 12, "unknown derivation 'nope' (register it with @register_derivation)")


def test_derivation_failing_on_sample_values(tmp_path):
    text = VALID + "      - {id: D, type: derived, label: D, derivation: band, inputs: [A], params: {value: A}, value_type: integer}\n"
    expect(tmp_path, text, 12, "derivation 'band' of D fails on sample values (typical inputs): KeyError")


def test_derivation_with_an_unknown_input(tmp_path):
    text = VALID + "      - {id: D, type: derived, label: D, derivation: band, inputs: [Z], params: {value: Z, cutoffs: [1]}, value_type: integer}\n"
    expect(tmp_path, text, 12, "derived item 'D': unknown input 'Z'")


# ---------------------------------------------------------------- study and schedule


def test_schedule_naming_an_unknown_form(tmp_path):
    expect(tmp_path, VALID, 7, "event 'V1': unknown form 'nope'", file="study.yaml", study=STUDY.replace("forms: [f]", "forms: [f, nope]"))


def test_form_attached_nowhere(tmp_path):
    expect(tmp_path, VALID, 1, "form 'g' is in no event", file="g/1.yaml", files={"g/1.yaml": VALID.replace("id: f", "id: g", 1)})


def test_subject_log_must_be_repeating(tmp_path):
    study = STUDY.replace("forms: [f]", "forms: []") + "subject_logs: [f]\n"
    expect(tmp_path, VALID, 12, "subject_logs: form 'f' must be repeating: true", file="study.yaml", study=study)


def test_repeating_form_date_item_must_be_a_required_date(tmp_path):
    study = STUDY.replace("forms: [f]", "forms: []") + \
        "repeating_forms:\n  f: {anchor: day0, from_day: 0, to_day: 14, date_item: A}\n"
    expect(tmp_path, VALID.replace("title: F\n", "title: F\nrepeating: true\n"), 13,
           "date_item 'A' must be a required full-date or date-time item", file="study.yaml", study=study)


def test_scheduled_event_needs_an_anchor(tmp_path):
    expect(tmp_path, VALID, 7, "scheduled event 'V1' needs 'anchor'", file="study.yaml", study=STUDY.replace("    anchor: day0\n", ""))


def test_unknown_anchor(tmp_path):
    expect(tmp_path, VALID, 9, "anchor: 'birthday' is not one of registration", file="study.yaml",
           study=STUDY.replace("anchor: day0", "anchor: birthday"))


def test_unexpected_file_in_the_forms_directory(tmp_path):
    expect(tmp_path, VALID, 1, "unexpected file", file="vitals.yaml", files={"vitals.yaml": VALID})


def test_form_file_named_other_than_a_version(tmp_path):
    expect(tmp_path, VALID, 1, "form files are <form id>/<version>.yaml", file="f/draft.yaml", files={"f/draft.yaml": VALID})


def test_missing_study_file(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert check_definitions(root) == [f"{root}/study.yaml:1: missing study.yaml in {root}"]


def test_unknown_role(tmp_path):
    expect(tmp_path, VALID, 12, "unknown role 'baker'", file="study.yaml", study=STUDY + "form_roles:\n  f: [baker]\n")


# Free text and encryption: every text item says whether it is encrypted, and why not when it is not.

def test_free_text_that_declares_no_encryption_is_refused(tmp_path):
    expect(tmp_path, VALID + "      - {id: NOTE, type: text, label: Note}\n", 12,
           "free-text item 'NOTE' must declare encrypt: true (or identifying: true), or encrypt: false with an encrypt_reason")


def test_free_text_not_encrypted_needs_a_reason(tmp_path):
    expect(tmp_path, VALID + "      - {id: NOTE, type: text, label: Note, encrypt: false}\n", 12,
           "free-text item 'NOTE' is not encrypted: give the reason in encrypt_reason")


@pytest.mark.parametrize("flags", ["encrypt: true", "identifying: true",
                                   "encrypt: false, encrypt_reason: 'a time of day by its pattern'"])
def test_free_text_with_a_declared_protection_loads(tmp_path, flags):
    root = write(tmp_path, VALID + f"      - {{id: NOTE, type: text, label: Note, {flags}}}\n")
    assert check_definitions(root) == []
    note = load_study(root).form("f").items["NOTE"]
    assert note.encrypt == ("true" in flags) and (note.encrypt_reason != "") == ("reason" in flags)


EXPORTS = STUDY + "exports:\n  encrypted_items: {f: [ITEM]}\n"   # study.yaml line 13: encrypted_items


@pytest.mark.parametrize(("flags", "fragment"), [
    ("encrypt: false, encrypt_reason: coded", "exports.encrypted_items: f.NOTE is not encrypted"),
    ("identifying: true", "exports.encrypted_items: f.NOTE is identifying: it never leaves the site"),
])
def test_exports_release_only_encrypted_items_that_are_not_identifying(tmp_path, flags, fragment):
    expect(tmp_path, VALID + f"      - {{id: NOTE, type: text, label: Note, {flags}}}\n", 13, fragment,
           file="study.yaml", study=EXPORTS.replace("ITEM", "NOTE"))


def test_exports_name_an_unknown_item(tmp_path):
    expect(tmp_path, VALID, 13, "exports.encrypted_items: form 'f' has no item 'NOPE'", file="study.yaml",
           study=EXPORTS.replace("ITEM", "NOPE"))


def test_exports_release_an_encrypted_item(tmp_path):
    root = write(tmp_path, VALID + "      - {id: NOTE, type: text, label: Note, encrypt: true}\n"
                                   "      - {id: OTHER, type: text, label: Other, encrypt: true}\n",
                 study=EXPORTS.replace("ITEM", "NOTE"))
    study = load_study(root)
    assert study.exported_encrypted == {"f": frozenset({"NOTE"})}
    assert study.withheld_items("f") == {"OTHER": "encrypted"}


def test_the_trial_and_demo_forms_classify_every_free_text_item():
    for root in (Path(__file__).resolve().parents[2] / "forms", Path(__file__).resolve().parents[1] / "demo_forms"):
        study = load_study(root)
        text_items = [item for versions in study.all_forms.values() for form in versions.values()
                      for item in form.items.values() if item.type == "text"]
        assert text_items and all(item.encrypt or item.encrypt_reason for item in text_items)
