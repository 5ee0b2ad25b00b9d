"""Reference data (forms/reference/): loading and its rules, the laboratory derivations, and the MedDRA loader.

The loader tests build a small study in a temporary folder from the repository's own reference files and
LB form, changing one thing at a time; the derivation tests read the repository's reference data.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, UTC
from decimal import Decimal
from pathlib import Path

import pytest

from edc.ecrf import check_definitions, load_study, register_derivation, validate_entry, ValidationContext
from edc.ecrf.derivations import derivation_references, get_derivation
from edc.ecrf.labs import CTCAE, LAB_RANGES, ctcae_lab_grade, lab_range_flag, lab_range_reference
from edc.ecrf.reading import Problems
from edc.ecrf.reference import (
    HIGH,
    LOW,
    NORMAL,
    Ctcae,
    LabRanges,
    Limits,
    MeddraError,
    Threshold,
    decimal_of,
    load_meddra_file,
    load_reference,
    meddra_lookup,
    parse_meddra_file,
    range_flag,
)

ROOT = Path(__file__).resolve().parents[2]
FORMS = ROOT / "forms"
REFERENCE = FORMS / "reference"
LAB_TEXT = (REFERENCE / "lab_ranges.yaml").read_text(encoding="utf-8")
CTCAE_TEXT = (REFERENCE / "ctcae_v5.yaml").read_text(encoding="utf-8")
LB_TEXT = (FORMS / "lb" / "1.yaml").read_text(encoding="utf-8")
STUDY_TEXT = """id: LBTEST
title: Reference data test study
missing_codes: {ND: Not done, NA: Not applicable}
events:
  - {id: SCR, label: Screening, anchor: registration, day: 0, forms: [lb]}
"""


@pytest.fixture(scope="module")
def reference():
    problems = Problems()
    data = load_reference(FORMS, problems)
    assert problems.messages() == []
    return data


@pytest.fixture(scope="module")
def ranges(reference) -> LabRanges:
    return reference[LAB_RANGES]


@pytest.fixture(scope="module")
def ctcae(reference) -> Ctcae:
    return reference[CTCAE]


ANC_GRADE_TERMS = "terms: [Neutrophil count decreased]}\n        value_type: integer"    # ANC_TOXGR (not ANC_TOXBASIS)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle`."""
    lines = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    return lines[occurrence - 1]


def make_study(tmp_path: Path, *, lab: str | None = LAB_TEXT, ctcae: str | None = CTCAE_TEXT, lb: str = LB_TEXT,
               extra: dict[str, str] | None = None) -> Path:
    root = tmp_path / "forms"
    (root / "lb").mkdir(parents=True)
    (root / "study.yaml").write_text(STUDY_TEXT, encoding="utf-8")
    (root / "lb" / "1.yaml").write_text(lb, encoding="utf-8")
    files = {"lab_ranges.yaml": lab, "ctcae_v5.yaml": ctcae, **(extra or {})}
    if any(content is not None for content in files.values()):
        (root / "reference").mkdir()
    for name, content in files.items():
        if content is not None:
            (root / "reference" / name).write_text(content, encoding="utf-8")
    return root


def problems_of(root: Path) -> list[str]:
    return [message.replace(str(root.parent) + "/", "") for message in check_definitions(root)]


# ================================================================ the repository's reference data


def test_repository_reference_data_and_lb_form_load_cleanly(tmp_path):
    assert problems_of(make_study(tmp_path)) == []
    study = load_study(make_study(tmp_path / "again"))
    assert set(study.reference) == {"lab_ranges", "ctcae_v5"}
    assert [message for message in check_definitions(FORMS) if "reference/" in message or "lb/" in message] == []


def test_lab_ranges_cover_the_four_sites_with_one_named_laboratory_each(ranges):
    assert ranges.sites == ("ES01", "IT01", "LB01", "JO01")
    assert sorted(ranges.laboratories) == ["ES01", "IT01", "JO01", "LB01"]
    for laboratory in ranges.laboratories.values():
        assert "example" in laboratory.name
        for range_set in laboratory.range_sets:
            assert [(band.from_months, band.to_months) for band in range_set.bands] == \
                [(12, 72), (72, 144), (144, 216), (216, None)]
            for band in range_set.bands:
                assert set(band.ranges) == set(ranges.analytes)
    assert [s.effective_from for s in ranges.laboratories["ES01"].range_sets] == [date(2024, 1, 1), date(2026, 3, 1)]
    assert "EXAMPLE VALUES" in LAB_TEXT and "replace" in LAB_TEXT


def test_ctcae_data_has_names_and_grade_texts_but_no_meddra_codes(ctcae):
    assert ctcae.version == "5.0"
    header = CTCAE_TEXT.split("kind:")[0]
    assert "US Government" in header and "MedDRA codes" in header and "ABSENT" in header
    assert not re.search(r"\b1[0-9]{7}\b", CTCAE_TEXT), "no 8-digit MedDRA code may appear"
    for name in ("Neutrophil count decreased", "Platelet count decreased", "White blood cell decreased",
                 "Lymphocyte count decreased", "Anemia", "Febrile neutropenia", "Cytokine release syndrome",
                 "Encephalopathy", "Seizure", "Tremor", "Depressed level of consciousness", "Headache", "Dysphasia",
                 "Intracranial hemorrhage", "Sepsis", "Lung infection", "Tumor lysis syndrome", "Hypotension", "Hypoxia",
                 "Fever", "Alanine aminotransferase increased", "Aspartate aminotransferase increased",
                 "Blood bilirubin increased", "Creatinine increased", "Hypokalemia", "Hypophosphatemia", "Hypocalcemia",
                 "Hyperuricemia", "Fibrinogen decreased", "INR increased", "Graft versus host disease",
                 "Immune system disorders - Other, specify: Hypogammaglobulinemia"):
        assert name in ctcae.terms, name
    crs = ctcae.terms["Cytokine release syndrome"]
    assert crs.soc == "Immune system disorders" and "ASTCT" in crs.note
    assert ctcae.terms["Febrile neutropenia"].grades[1] is None and ctcae.terms["Febrile neutropenia"].grades[5] == "Death"
    assert ctcae.terms["Hyperuricemia"].verify and ctcae.terms["Hyperuricemia"].lab is None


def test_lb_form_has_a_flag_for_every_analyte_and_a_grade_for_every_graded_one(tmp_path, ranges, ctcae):
    form = load_study(make_study(tmp_path)).form("lb")
    graded = {criteria.analyte for term in ctcae.lab_terms().values() for criteria in term.labs}
    for analyte in ranges.analytes:
        assert form.items[analyte].unit == ranges.analytes[analyte].unit
        assert form.items[f"{analyte}_NRIND"].derivation == "lab_range_flag"
        grade = "CACORR_TOXGR" if analyte == "CA" else f"{analyte}_TOXGR"     # total calcium: graded once corrected
        assert (grade in form.items) == (analyte in graded), analyte
        if grade in form.items:   # each grade says what decided it
            basis = form.items[grade.replace("_TOXGR", "_TOXBASIS")]
            assert basis.derivation == "ctcae_lab_basis" and basis.params == form.items[grade].params
    assert form.items["LBDAT"].required and form.items["IGG"].group is None
    assert form.items["ANC"].min == 0 and form.items["PLT"].min == 0 and form.items["WBC"].min == 0


# ================================================================ loader rules: lab_ranges.yaml


def test_reference_directory_is_not_a_form_and_is_optional(tmp_path):
    root = make_study(tmp_path, lab=None, ctcae=None, lb=LB_TEXT)
    problems = problems_of(root)
    assert "forms/lb/1.yaml" in problems[0] and "add reference/lab_ranges.yaml" in problems[0]
    assert not any("form files are" in message or "unexpected file" in message for message in problems)


@pytest.mark.parametrize(("new", "message"), [
    ("ANC: [8.5, 1.5]", "ANC: low 8.5 is not below high 1.5"),
    ("ANC: [1.5]", "ANC: must be [low, high]"),
    ("ANC: [null, null]", "ANC: needs a low or a high limit"),
    ("ANC: [low, 8.5]", "ANC: must be a number"),
    ("NEUT: [1.5, 8.5]", "unknown analyte 'NEUT'"),
])
def test_malformed_ranges_are_reported_at_their_line(tmp_path, new, message):
    text = LAB_TEXT.replace("ANC: [1.5, 8.5]", new, 1)       # the first band of the first laboratory
    problems = problems_of(make_study(tmp_path, lab=text))
    prefix = f"forms/reference/lab_ranges.yaml:{line_of(text, new)}: {message}"
    assert any(problem.startswith(prefix) for problem in problems), problems


def test_a_band_missing_an_analyte_is_reported(tmp_path):
    text = LAB_TEXT.replace("ANC: [1.5, 8.5], ", "", 1)
    problems = problems_of(make_study(tmp_path, lab=text))
    assert any("no range for ANC: every band gives every analyte" in problem for problem in problems), problems


@pytest.mark.parametrize(("old", "new", "message"), [
    ("    site: JO01\n", "    site: XX01\n", "unknown site 'XX01': add it to sites"),
    ("    site: JO01\n", "    site: ES01\n", "site ES01 already has a laboratory (ES01_CDB)"),
    ("    site: JO01\n", "    site: jordan\n", "is not a site code"),
    ("sites: [ES01, IT01, LB01, JO01]", "sites: [ES01, IT01, LB01, JO01, FR01]", "site FR01 has no laboratory"),
    ("  - id: JO01_KHCC\n", "  - id: LB01_AUBMC\n", "duplicate laboratory id 'LB01_AUBMC'"),
])
def test_unknown_sites_and_laboratory_problems(tmp_path, old, new, message):
    text = replace_once(LAB_TEXT, old, new)
    problems = problems_of(make_study(tmp_path, lab=text))
    assert any(message in problem and problem.startswith("forms/reference/lab_ranges.yaml:") for problem in problems), problems


def test_overlapping_and_unordered_effective_dates(tmp_path):
    same = replace_once(LAB_TEXT, "effective_from: 2026-03-01", "effective_from: 2024-01-01")
    problems = problems_of(make_study(tmp_path / "same", lab=same))
    line = line_of(same, "effective_from: 2024-01-01", 2)
    assert f"forms/reference/lab_ranges.yaml:{line}: effective_from 2024-01-01 overlaps the range set at line " \
           f"{line_of(same, 'effective_from: 2024-01-01') } (same date): one set is in force per day" in problems
    earlier = replace_once(LAB_TEXT, "effective_from: 2026-03-01", "effective_from: 2023-06-01")
    problems = problems_of(make_study(tmp_path / "earlier", lab=earlier))
    assert any(problem.startswith(f"forms/reference/lab_ranges.yaml:{line_of(earlier, '2023-06-01')}: ")
               and "is before the previous range set's (2024-01-01" in problem for problem in problems), problems
    bad = replace_once(LAB_TEXT, "effective_from: 2026-03-01", 'effective_from: "2026-02-30"')
    assert any("effective_from: must be a date" in problem for problem in problems_of(make_study(tmp_path / "bad", lab=bad)))
    # YAML itself refuses an impossible unquoted date: reported, not raised.
    bad = replace_once(LAB_TEXT, "effective_from: 2026-03-01", "effective_from: 2026-02-30")
    assert problems_of(make_study(tmp_path / "yaml", lab=bad)) == \
        ["forms/reference/lab_ranges.yaml:1: invalid YAML: day is out of range for month"]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("age_months: [72, 144]", "age_months: [60, 144]", "overlaps the band at line"),
    ("age_months: [72, 144]", "age_months: [84, 144]", "ages 72-<84 months have no band"),
    ("age_months: [72, 144]", "age_months: [144, 72]", "is not an age band"),
    ("age_months: [72, 144]", "age_months: [72.5, 144]", "must be [from, to] in whole months"),
])
def test_age_band_problems(tmp_path, old, new, message):
    text = LAB_TEXT.replace(old, new, 1)
    problems = problems_of(make_study(tmp_path, lab=text))
    assert any(problem.startswith(f"forms/reference/lab_ranges.yaml:{line_of(text, new)}: ") and message in problem
               for problem in problems), problems


def test_file_level_problems(tmp_path):
    broken = replace_once(LAB_TEXT, "kind: lab_ranges", "kind: lab_range")
    assert f"forms/reference/lab_ranges.yaml:{line_of(broken, 'kind: lab_range')}: reference data needs kind: " \
           "ctcae or lab_ranges" in problems_of(make_study(tmp_path / "kind", lab=broken))
    syntax = replace_once(LAB_TEXT, "sites: [ES01, IT01, LB01, JO01]", "sites: [ES01, IT01")
    problems = problems_of(make_study(tmp_path / "syntax", lab=syntax))
    assert any(p.startswith("forms/reference/lab_ranges.yaml:") and "invalid YAML" in p for p in problems), problems
    # An invalid lab_ranges file reports its own problems only: no cascade into ctcae_v5.yaml or the form.
    assert all(p.startswith("forms/reference/lab_ranges.yaml:") for p in problems), problems
    unknown_key = replace_once(LAB_TEXT, "title: Site laboratory", "colour: red\ntitle: Site laboratory")
    assert any("unknown key 'colour' in the lab ranges" in p for p in problems_of(make_study(tmp_path / "key", lab=unknown_key)))
    empty = problems_of(make_study(tmp_path / "empty", extra={"notes.yaml": ""}))
    assert "forms/reference/notes.yaml:1: the file is empty" in empty
    bad_name = problems_of(make_study(tmp_path / "name", extra={"lab-ranges-2.yaml": "kind: lab_ranges\n"}))
    assert any("reference data file names are identifiers" in p for p in bad_name)


def test_load_study_refuses_invalid_reference_data(tmp_path):
    from edc.ecrf import DefinitionError

    with pytest.raises(DefinitionError) as caught:
        load_study(make_study(tmp_path, lab=LAB_TEXT.replace("ANC: [1.5, 8.5]", "ANC: [8.5, 1.5]", 1)))
    assert any("lab_ranges.yaml" in message for message in caught.value.messages)


# ================================================================ loader rules: ctcae_v5.yaml


@pytest.mark.parametrize(("old", "new", "message"), [
    ("    soc: Blood and lymphatic system disorders\n    grades:\n      1: \"Hemoglobin",
     "    soc: Blood disorders\n    grades:\n      1: \"Hemoglobin", "unknown system organ class 'Blood disorders'"),
    ("      5: \"Death\"\n    lab:\n      analyte: HGB", "    lab:\n      analyte: HGB",
     "grade 5 is missing (write 5: null when CTCAE has no such grade)"),
    ("      grades: {1: LLN, 2: 1.5, 3: 1.0, 4: 0.5}", "      grades: {1: LLN, 2: 1.5, 3: 1.0, 5: 0.5}",
     "laboratory grades are 1 to 4, not 5"),
    ("      grades: {1: LLN, 2: 1.5, 3: 1.0, 4: 0.5}", "      grades: {1: LLN, 2: 1.5, 3: 1.0, 4: 1.2}",
     "grade 4 threshold 1.2 is not below grade 3's 1"),
    ("      grades: {1: ULN, 2: 3.0 x ULN, 3: 5.0 x ULN, 4: 20.0 x ULN}\n      abnormal_baseline: {1: \">= 1.5 x baseline\", 2: 3.0 x baseline, 3: 5.0 x baseline, 4: 20.0 x baseline}\n  - term: Aspartate",
     "      grades: {1: ULN, 2: 3.0 x ULN, 3: 2.0 x ULN, 4: 20.0 x ULN}\n  - term: Aspartate",
     "grade 3 threshold 2 x ULN is not above grade 2's 3 x ULN"),
    ("      grades: {1: LLN, 2: 75, 3: 50, 4: 25}", "      grades: {1: LLN, 2: 75, 3: 50, 4: quarter of LLN}",
     "grade 4: 'quarter of LLN' is not a threshold"),
    ("      analyte: ANC\n      direction: low", "      analyte: ANC\n      direction: down", "direction: must be low"),
])
def test_ctcae_problems_are_reported(tmp_path, old, new, message):
    text = replace_once(CTCAE_TEXT, old, new)
    problems = problems_of(make_study(tmp_path, ctcae=text))
    assert any(problem.startswith("forms/reference/ctcae_v5.yaml:") and message in problem for problem in problems), problems


def test_ctcae_duplicate_terms_and_grade_texts(tmp_path):
    text = replace_once(CTCAE_TEXT, "  - term: Tremor\n", "  - term: Headache\n")
    problems = problems_of(make_study(tmp_path / "dup", ctcae=text))
    assert f"forms/reference/ctcae_v5.yaml:{line_of(text, '- term: Headache', 2)}: duplicate term 'Headache' " \
           f"(first at line {line_of(text, '- term: Headache')})" in problems
    text = replace_once(CTCAE_TEXT, "      1: \"Mild pain\"", "      1: 7")
    assert any("grade 1: write the CTCAE text" in p for p in problems_of(make_study(tmp_path / "text", ctcae=text)))


def test_ctcae_criteria_must_match_the_lab_ranges(tmp_path):
    unit = replace_once(CTCAE_TEXT, "      unit: g/dL\n      grades: {1: LLN, 2: 10.0", "      unit: g/L\n      grades: {1: LLN, 2: 10.0")
    problems = problems_of(make_study(tmp_path / "unit", ctcae=unit))
    assert any("term 'Anemia': unit g/L differs from lab_ranges's g/dL for HGB" in p for p in problems), problems
    analyte = replace_once(CTCAE_TEXT, "      analyte: HGB\n      direction: low", "      analyte: HB\n      direction: low")
    assert any("term 'Anemia': unknown analyte 'HB' (not in lab_ranges)" in p
               for p in problems_of(make_study(tmp_path / "analyte", ctcae=analyte)))
    # CRP has no lower limit, so no term may grade it on LLN.
    crp = replace_once(CTCAE_TEXT, "      analyte: HGB\n      direction: low\n      unit: g/dL",
                       "      analyte: CRP\n      direction: low\n      unit: mg/L")
    problems = problems_of(make_study(tmp_path / "crp", ctcae=crp))
    assert any("term 'Anemia' grades on the LLN of CRP, but ES01_CDB (2024-01-01, 12-<72 months) gives no low limit" in p
               for p in problems), problems
    # Without lab ranges, the CTCAE criteria cannot be checked (and the form's derivations need them anyway).
    problems = problems_of(make_study(tmp_path / "none", lab=None))
    assert any("no lab_ranges reference data defines analyte 'HGB'" in p for p in problems)
    assert any("lb/1.yaml" in p and "add reference/lab_ranges.yaml" in p for p in problems)


# ================================================================ loader rules: derived items that read reference data


def test_derived_item_params_are_checked_against_the_reference_data(tmp_path):
    lb = replace_once(LB_TEXT, "params: {value: ANC, date: LBDAT, analyte: ANC}", "params: {value: ANC, date: LBDAT, analyte: NEUT}")
    problems = problems_of(make_study(tmp_path / "analyte", lb=lb))
    item_line = line_of(lb, "- id: ANC_NRIND")
    assert any(p.startswith(f"forms/lb/1.yaml:{item_line}: derived item 'ANC_NRIND': params.analyte: unknown analyte 'NEUT'")
               for p in problems), problems
    assert len([p for p in problems if "ANC_NRIND" in p]) == 1       # no second report from the sample run
    lb = replace_once(LB_TEXT, ANC_GRADE_TERMS, ANC_GRADE_TERMS.replace("[Neutrophil count decreased]", "[Neutropenia]"))
    problems = problems_of(make_study(tmp_path / "term", lb=lb))
    assert any("derived item 'ANC_TOXGR': params.terms: 'Neutropenia' is not a CTCAE term with laboratory criteria" in p
               for p in problems), problems
    lb = replace_once(LB_TEXT, ANC_GRADE_TERMS, ANC_GRADE_TERMS.replace("[Neutrophil count decreased]", "[Hypotension]"))
    assert any("'Hypotension' is not a CTCAE term with laboratory criteria" in p
               for p in problems_of(make_study(tmp_path / "nolab", lb=lb)))
    lb = replace_once(LB_TEXT, ANC_GRADE_TERMS, ANC_GRADE_TERMS.replace("[Neutrophil count decreased]", "[Neutrophil count decreased, Anemia]"))
    assert any("params.terms grade different analytes (ANC, HGB)" in p for p in problems_of(make_study(tmp_path / "two", lb=lb)))


def test_derived_item_units_and_dates_must_match(tmp_path):
    lb = LB_TEXT.replace('      - id: HGB\n        type: decimal\n        label: Haemoglobin\n        unit: g/dL',
                         '      - id: HGB\n        type: decimal\n        label: Haemoglobin\n        unit: g/L', 1)
    problems = problems_of(make_study(tmp_path / "unit", lb=lb))
    assert any("derived item 'HGB_NRIND': params.value: item HGB is in g/L, but analyte HGB is in g/dL" in p for p in problems)
    assert any("derived item 'HGB_TOXGR': params.value: item HGB is in g/L, but the criteria of 'Anemia' is in g/dL" in p
               for p in problems), problems
    lb = replace_once(LB_TEXT, "params: {value: ANC, date: LBDAT, analyte: ANC}", "params: {value: ANC, date: ANC, analyte: ANC}")
    assert any("derived item 'ANC_NRIND': params.date must name the full sample date item" in p
               for p in problems_of(make_study(tmp_path / "date", lb=lb)))


def test_params_reference_is_reserved_for_the_loader(tmp_path):
    lb = replace_once(LB_TEXT, "params: {value: ANC, date: LBDAT, analyte: ANC}",
                      "params: {value: ANC, date: LBDAT, analyte: ANC, reference: mine}")
    problems = problems_of(make_study(tmp_path, lb=lb))
    assert any("derived item 'ANC_NRIND': params.reference is set by the loader" in p for p in problems), problems


def test_reference_data_is_passed_in_params_and_kept_out_of_the_content_hash(tmp_path):
    study = load_study(make_study(tmp_path / "one"))
    item = study.form("lb").items["ANC_TOXGR"]
    assert set(item.params["reference"]) == {"lab_ranges", "ctcae_v5"}
    assert item.params["reference"]["lab_ranges"] is study.reference["lab_ranges"]
    assert "reference" not in study.form("lb").items["IGG"].params
    # A new range set (a site's new ranges from a date) changes no form: released versions stay valid.
    jo01_set = LAB_TEXT[LAB_TEXT.index("      - effective_from: 2024-01-01\n", LAB_TEXT.index("JO01_KHCC")):]
    newer = LAB_TEXT + jo01_set.replace("effective_from: 2024-01-01", "effective_from: 2027-01-01")   # JO01 is last
    other = load_study(make_study(tmp_path / "two", lab=newer))
    assert len(other.reference["lab_ranges"].laboratories["JO01"].range_sets) == 2
    assert other.form("lb").content_hash == study.form("lb").content_hash


def test_register_derivation_declares_reference_data():
    assert derivation_references("lab_range_flag") == ("lab_ranges",)
    assert derivation_references("ctcae_lab_grade") == ("lab_ranges", "ctcae_v5")
    assert derivation_references("band") == ()

    @register_derivation("test_reference_reader", reference="lab_ranges")
    def reader(values, subject, params):
        return len(params["reference"]["lab_ranges"].sites)

    assert get_derivation("test_reference_reader") is reader
    assert derivation_references("test_reference_reader") == ("lab_ranges",)


# ================================================================ derivations: range in force, flags


def subject(site="ES01", birth_year=2016, birth_month=3):
    return {"site": site, "birth_year": birth_year, "birth_month": birth_month, "sex": "F"}


def params(reference, **extra):
    return {"value": "X", "date": "D", **extra, "reference": reference}


def flag(reference, value, day, analyte, who=None):
    return lab_range_flag({"X": value, "D": day}, who or subject(), params(reference, analyte=analyte))


def grade(reference, value, day, terms, who=None):
    return ctcae_lab_grade({"X": value, "D": day}, who or subject(), params(reference, terms=terms))


def test_range_flag_limits_are_inclusive():
    assert range_flag(1.5, 1.5, 8.5) == NORMAL and range_flag(8.5, 1.5, 8.5) == NORMAL
    assert range_flag(1.49, 1.5, 8.5) == LOW and range_flag(8.51, 1.5, 8.5) == HIGH
    assert range_flag(0.0, None, 5.0) == NORMAL and range_flag(5.1, None, 5.0) == HIGH
    assert range_flag(-1.0, None, 5.0) == NORMAL and range_flag(100.0, 2.0, None) == NORMAL


def test_flag_edges_for_every_site_version_band_and_analyte(reference, ranges):
    """Exhaustive: at each limit NORMAL, just outside LOW/HIGH, for every range of every set, at its first day."""
    checked = 0
    for site, laboratory in ranges.laboratories.items():
        for range_set in laboratory.range_sets:
            for band in range_set.bands:
                day = range_set.effective_from
                # born so that the age on the set's first day is exactly the band's lower edge
                year, month = divmod(day.year * 12 + day.month - 1 - band.from_months, 12)
                who = subject(site, year, month + 1)
                assert lab_range_reference({"D": day}, who, {"date": "D", "reference": reference}).endswith(band.label)
                for analyte, (low, high) in band.ranges.items():
                    if low is not None:
                        assert flag(reference, low, day, analyte, who) == NORMAL
                        assert flag(reference, low - 0.01, day, analyte, who) == LOW, (site, day, band.label, analyte)
                    if high is not None:
                        assert flag(reference, high, day, analyte, who) == NORMAL
                        assert flag(reference, high + 0.01, day, analyte, who) == HIGH, (site, day, band.label, analyte)
                    checked += 1
    assert checked == 27 * 4 * 5


@pytest.mark.parametrize(("birth", "band_label"), [
    ((2025, 3), None),                        # 11 months on 2026-02-01: below the youngest band
    ((2025, 2), "12-<72 months"),             # exactly 12 months
    ((2020, 3), "12-<72 months"),             # 71 months
    ((2020, 2), "72-<144 months"),            # exactly 72 months
    ((2014, 3), "72-<144 months"),            # 143 months
    ((2014, 2), "144-<216 months"),           # 144
    ((2008, 3), "144-<216 months"),           # 215
    ((2008, 2), ">=216 months"),              # 216
    ((1990, 1), ">=216 months"),
])
def test_age_band_edges(reference, birth, band_label):
    who = subject("IT01", *birth)
    found = lab_range_reference({"D": date(2026, 2, 1)}, who, {"date": "D", "reference": reference})
    assert found == (None if band_label is None else f"IT01_OPBG 2024-01-01 {band_label}")


def test_age_counts_completed_months_from_the_first_of_the_birth_month(reference):
    # Born March 2020: 71 months on the last day of February 2026, 72 from 1 March (the 1st counts).
    who = subject("IT01", 2020, 3)
    assert flag(reference, 14.5, date(2026, 2, 28), "WBC", who) == NORMAL     # 1-<6 y: WBC high 15.5
    assert flag(reference, 14.5, date(2026, 3, 1), "WBC", who) == HIGH        # 6-<12 y: WBC high 13.5


@pytest.mark.parametrize(("day", "expected_set", "alt_flag", "alt_grade"), [
    (date(2023, 12, 31), None, None, None),                       # before the laboratory's first range set
    (date(2024, 1, 1), "2024-01-01", NORMAL, 0),
    (date(2026, 2, 28), "2024-01-01", NORMAL, 0),                 # last day of version 1: ALT ULN 30
    (date(2026, 3, 1), "2026-03-01", HIGH, 1),                    # version 2 from its effective date: ULN 25
    (date(2027, 12, 31), "2026-03-01", HIGH, 1),
])
def test_range_set_in_force_changes_on_its_effective_date(reference, day, expected_set, alt_flag, alt_grade):
    who = subject("ES01", 2016, 3)                                # 6-<12 years throughout 2024-2026
    found = lab_range_reference({"D": day}, who, {"date": "D", "reference": reference})
    assert found == (None if expected_set is None else f"ES01_CDB {expected_set} 72-<144 months")
    assert flag(reference, 28, day, "ALT", who) == alt_flag
    assert grade(reference, 28, day, ["Alanine aminotransferase increased"], who) == alt_grade


def test_flags_give_none_when_a_fact_or_input_is_missing(reference):
    day = date(2026, 6, 1)
    assert flag(reference, 1.0, day, "ANC") == LOW
    assert flag(reference, None, day, "ANC") is None
    assert flag(reference, True, day, "ANC") is None
    assert flag(reference, 1.0, "2026-06", "ANC") is None                          # partial date: no day
    assert flag(reference, 1.0, datetime(2026, 6, 1, 8, 0, tzinfo=UTC), "ANC") == LOW
    assert flag(reference, 1.0, day, "ANC", subject(site=None)) is None
    assert flag(reference, 1.0, day, "ANC", subject(site="FR01")) is None          # a site without a laboratory
    assert flag(reference, 1.0, day, "ANC", subject(birth_year=None)) is None
    assert flag(reference, 1.0, date(2015, 1, 1), "ANC") is None                   # sample before birth
    assert flag(reference, 1.0, day, "NEUT") is None                               # unknown analyte
    assert lab_range_flag({"X": 1.0, "D": day}, subject(), {"value": "X", "date": "D", "analyte": "ANC"}) is None
    assert lab_range_reference({}, subject(), {"date": "D", "reference": reference}) is None


# ================================================================ derivations: CTCAE grades


def test_threshold_values():
    d = Decimal
    assert Threshold(d("1.5")).value(Limits()) == d("1.5")
    assert Threshold(d("3.0"), "ULN").value(Limits(d(5), d(40))) == 120
    assert Threshold(d("0.5"), "LLN").value(Limits(d(180), d(400))) == 90
    assert Threshold(d("1.5"), "ULN").value(Limits(d("0.1"), d("0.70"))) == d("1.05")      # exactly, as decimals
    assert Threshold(d("1.0"), "LLN").value(Limits(None, d(40))) is None
    assert Threshold(d("2"), "ULN", offset=True).value(Limits(d(11), d("15.5"))) == d("17.5")
    assert Threshold(d("1.5"), "baseline").value(Limits(baseline=d("0.20"))) == d("0.30")
    assert str(Threshold(d("1.0"), "ULN")) == "ULN" and str(Threshold(d("2.5"), "ULN")) == "2.5 x ULN"
    assert str(Threshold(d("50.0"))) == "50"


def test_grade_edges_for_every_graded_term_site_and_band(reference, ranges, ctcae):
    """Exhaustive: at each threshold the lower grade (CTCAE's bounds are strict), just beyond it that grade."""
    checked = 0
    for name, term in ctcae.lab_terms().items():
        criteria = term.lab
        for site, laboratory in ranges.laboratories.items():
            for range_set in laboratory.range_sets:
                for band in range_set.bands:
                    low, high = band.ranges[criteria.analyte]
                    limits = Limits(*(None if x is None else decimal_of(x) for x in (low, high)))
                    for g, alternatives in criteria.thresholds.items():
                        for threshold in alternatives:
                            limit = threshold.value(limits)
                            if limit is None:           # relative to a baseline: none here
                                continue
                            beyond = limit - Decimal("0.001") if criteria.direction == "low" else limit + Decimal("0.001")
                            assert criteria.grade(beyond, low, high) >= g, (name, site, band.label, g)
                            # exactly at the limit this alternative does not hold: grade g only through another one
                            others = [t.value(limits) for t in alternatives if t is not threshold and t.value(limits)]
                            other_holds = any((limit < o) if criteria.direction == "low" else (limit > o) for o in others)
                            assert criteria.grade(limit, low, high) != g or other_holds, (name, site, band.label, g)
                            checked += 1
    assert checked > 500


def test_grades_through_the_derivation(reference):
    day, older = date(2026, 6, 1), subject("IT01", 2000, 1)          # adult band at IT01
    anc = ["Neutrophil count decreased"]
    assert [grade(reference, v, day, anc, older) for v in (1.8, 1.79, 1.5, 1.49, 1.0, 0.99, 0.5, 0.49, 0.0)] == \
        [0, 1, 1, 2, 2, 3, 3, 4, 4]
    alt = ["Alanine aminotransferase increased"]                          # adult ULN 40
    assert [grade(reference, v, day, alt, older) for v in (40, 41, 120, 121, 200, 201, 800, 801)] == [0, 1, 1, 2, 2, 3, 3, 4]
    fib = ["Fibrinogen decreased"]                                         # adult LLN 200: 150 / 100 / 50 and absolute 50
    assert [grade(reference, v, day, fib, older) for v in (200, 199, 150, 149, 100, 99, 50, 49)] == [0, 1, 1, 2, 2, 3, 3, 4]
    child = subject("IT01", 2016, 3)                                       # LLN 180: 0.25 x LLN = 45 < 50
    assert grade(reference, 49, day, fib, child) == 4 and grade(reference, 50, day, fib, child) == 3
    potassium = ["Hypokalemia", "Hyperkalemia"]                            # adult K 3.5-5.1 at IT01
    assert [grade(reference, v, day, potassium, older) for v in (3.5, 3.4, 3.0, 2.99, 2.5, 2.49, 5.1, 5.2, 5.5, 5.51, 6.01, 7.01)] == \
        [0, 1, 1, 3, 3, 4, 0, 1, 1, 2, 3, 4]
    inr = ["INR increased"]
    assert [grade(reference, v, day, inr, older) for v in (1.2, 1.21, 1.5, 1.51, 2.5, 2.51, 9.0)] == [0, 1, 1, 2, 2, 3, 3]
    hgb = ["Anemia"]
    assert [grade(reference, v, day, hgb, child) for v in (11.5, 11.4, 10.0, 9.9, 8.0, 7.9, 3.0)] == [0, 1, 1, 2, 2, 3, 3]
    sodium = ["Hyponatremia", "Hypernatremia"]
    assert [grade(reference, v, day, sodium, older) for v in (135, 134, 130, 129, 125, 124, 120, 119, 145, 146, 151, 156, 161)] == \
        [0, 1, 1, 2, 2, 3, 3, 4, 0, 1, 2, 3, 4]


def test_a_normal_value_can_still_reach_an_absolute_grade(reference):
    # LB01 adult ANC LLN is 1.5: 1.45 is LOW and grade 2 ("<1500 - 1000/mm3"), literally as CTCAE writes it.
    who, day = subject("LB01", 2000, 1), date(2026, 6, 1)
    assert flag(reference, 1.45, day, "ANC", who) == LOW
    assert grade(reference, 1.45, day, ["Neutrophil count decreased"], who) == 2
    # INR > 1.2 is grade 1 even within a laboratory range up to 1.2 inclusive.
    assert flag(reference, 1.2, day, "INR", who) == NORMAL and grade(reference, 1.2, day, ["INR increased"], who) == 0


def test_grade_gives_none_when_it_cannot_grade(reference):
    day = date(2026, 6, 1)
    anc = ["Neutrophil count decreased"]
    assert grade(reference, 0.4, day, anc) == 4
    assert grade(reference, None, day, anc) is None
    assert grade(reference, 0.4, None, anc) is None
    # Without a range in force, the absolute criteria still grade; a value only the LLN could grade does not.
    assert grade(reference, 0.4, day, anc, subject(site="FR01")) == 4
    assert grade(reference, 0.4, date(2023, 1, 1), anc) == 4
    assert grade(reference, 1.6, day, anc, subject(site="FR01")) is None
    assert grade(reference, 1.6, date(2023, 1, 1), anc) is None
    assert grade(reference, 0.4, day, []) is None
    assert grade(reference, 0.4, day, ["Hypotension"]) is None            # a term without laboratory criteria
    assert grade(reference, 0.4, day, ["No such term"]) is None
    assert grade(reference, 0.4, day, "Neutrophil count decreased") is None
    only_ranges = {"lab_ranges": reference["lab_ranges"]}
    assert grade(only_ranges, 0.4, day, anc) is None


# ================================================================ through validate_entry


def test_lb_entry_derives_flags_grades_and_the_range_reference(tmp_path):
    form = load_study(make_study(tmp_path)).form("lb")
    context = ValidationContext(subject=subject("ES01", 2016, 3))
    data = {"LBDAT": "2026-03-01", "ANC": 0.4, "WBC": 1.2, "PLT": 20, "ALT": 28, "K": 2.9, "FIBRINO": 45, "IGG": 300,
            "CRP": 12.0}
    result = validate_entry(form, data, complete=True, context=context)
    assert result.errors == [] and result.warnings == []
    values = result.values
    assert values["LBNRREF"] == "ES01_CDB 2026-03-01 72-<144 months"
    assert (values["ANC_NRIND"], values["ANC_TOXGR"]) == ("LOW", 4)
    assert (values["WBC_NRIND"], values["WBC_TOXGR"]) == ("LOW", 3)
    assert (values["PLT_NRIND"], values["PLT_TOXGR"]) == ("LOW", 4)
    assert (values["ALT_NRIND"], values["ALT_TOXGR"]) == ("HIGH", 1)
    assert (values["K_NRIND"], values["K_TOXGR"]) == ("LOW", 3)
    assert (values["FIBRINO_NRIND"], values["FIBRINO_TOXGR"]) == ("LOW", 4)
    assert values["IGG_NRIND"] == "LOW" and values["CRP_NRIND"] == "HIGH" and "IGG_TOXGR" not in form.items
    assert "HGB_NRIND" not in values                                      # not answered: nothing derived
    negative = validate_entry(form, {**data, "ANC": -0.1}, complete=True, context=context)
    assert any(error["pointer"] == "/data/ANC" for error in negative.errors)


# ================================================================ MedDRA (synthetic files: clearly fake codes)

FAKE_LLT = (
    "99000001$Fake fever term$99000001$$$$$$$Y$$\n"
    "99000002$Fake pyrexia synonym$99000001$$$$$$$Y$$\n"
    "99000003$Fake febrile old term$99000001$$$$$$$N$$\n"
    "99000010$Fake cytokine storm$99000010$$$$$$$Y$$\n"
)
FAKE_MDHIER = (
    "99000001$99100001$99200001$99300001$Fake fever term$Fake HLT febrile$Fake HLGT body temperature$"
    "Fake SOC general$FGEN$$99300001$Y$\n"
    "99000010$99100010$99200010$99300010$Fake cytokine storm$Fake HLT immune$Fake HLGT immune$Fake SOC immune$"
    "FIMM$$99300010$Y$\n"
)


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def test_meddra_files_are_parsed_and_checked(tmp_path):
    kind, records = parse_meddra_file(write(tmp_path / "llt.asc", FAKE_LLT))
    assert kind == "llt.asc" and len(records) == 4 and records[1]["pt_code"] == "99000001"
    kind, records = parse_meddra_file(write(tmp_path / "MDHIER.ASC", FAKE_MDHIER))
    assert kind == "mdhier.asc" and records[0]["soc_name"] == "Fake SOC general"
    for content, message in [
        ("99000001$Fake$99000001$$$\n", "line 1: 5 fields, expected 11"),
        ("9900000X$Fake$99000001$$$$$$$Y$$\n", "line 1: bad llt_code"),
        ("99000001$ $99000001$$$$$$$Y$$\n", "line 1: bad llt_name"),
        ("99000001$Fake$99000001$$$$$$$maybe$$\n", "line 1: bad llt_currency"),
        (FAKE_LLT + "99000001$Again$99000001$$$$$$$Y$$\n", "line 5: duplicate llt_code 99000001"),
        ("\n\n", "holds no records"),
        ("99000002$Fake$99000001$$$$$$$Y$$\n", "no LLT is its own PT"),
    ]:
        with pytest.raises(MeddraError, match=re.escape(message)):
            parse_meddra_file(write(tmp_path / "bad" / "llt.asc", content))
    with pytest.raises(MeddraError, match="expected one of llt.asc, mdhier.asc"):
        parse_meddra_file(write(tmp_path / "pt.asc", FAKE_LLT))


def test_meddra_load_installs_atomically_and_lookup_finds_terms(tmp_path):
    target = tmp_path / "deploy" / "meddra"
    with pytest.raises(MeddraError, match="no MedDRA dictionary"):
        meddra_lookup(target, "fever")
    entry = load_meddra_file(write(tmp_path / "in" / "llt.asc", FAKE_LLT), target, "99.0")
    assert entry["file"] == "llt.asc" and entry["records"] == 4 and entry["version"] == "99.0"
    found = meddra_lookup(target, "fever")
    assert [row["llt_code"] for row in found] == ["99000001"] and found[0]["pt_name"] is None
    load_meddra_file(write(tmp_path / "in" / "mdhier.asc", FAKE_MDHIER), target)
    found = meddra_lookup(target, "FAKE FE")          # case-insensitive; current terms before non-current ones
    assert [row["llt_name"] for row in found] == ["Fake fever term", "Fake febrile old term"]
    exact = meddra_lookup(target, "fake fever term")
    assert exact[0] == {"llt_code": "99000001", "llt_name": "Fake fever term", "pt_code": "99000001", "current": True,
                        "pt_name": "Fake fever term", "soc_name": "Fake SOC general", "soc_code": "99300001"}
    # A bad file never replaces the installed one.
    with pytest.raises(MeddraError):
        load_meddra_file(write(tmp_path / "bad" / "llt.asc", "garbage\n"), target)
    assert (target / "llt.asc").read_text(encoding="utf-8") == FAKE_LLT
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest) == {"llt.asc", "mdhier.asc"} and manifest["llt.asc"]["records"] == 4
    assert sorted(path.name for path in target.iterdir()) == ["llt.asc", "manifest.json", "mdhier.asc"]


def test_meddra_cli_load_and_lookup(app_factory, tmp_path):
    target = tmp_path / "meddra"
    runner = app_factory(meddra_dir=str(target)).test_cli_runner()
    result = runner.invoke(args=["edc", "meddra", "lookup", "fever"])
    assert result.exit_code == 1 and "no MedDRA dictionary" in result.output
    llt, mdhier = write(tmp_path / "in" / "llt.asc", FAKE_LLT), write(tmp_path / "in" / "mdhier.asc", FAKE_MDHIER)
    result = runner.invoke(args=["edc", "meddra", "load", str(llt), str(mdhier), "--version", "99.0"])
    assert result.exit_code == 0, result.output
    assert "installed llt.asc: 4 records" in result.output and "installed mdhier.asc: 2 records" in result.output
    result = runner.invoke(args=["edc", "meddra", "lookup", "cytokine"])
    assert result.exit_code == 0, result.output
    assert "LLT 99000010 Fake cytokine storm  PT 99000010 Fake cytokine storm  SOC 99300010 Fake SOC immune" in result.output
    assert result.output.strip().endswith("1 term(s)")
    result = runner.invoke(args=["edc", "meddra", "lookup", "febrile"])
    assert "(non-current)" in result.output
    bad = write(tmp_path / "bad" / "llt.asc", "1$2$3\n")
    result = runner.invoke(args=["edc", "meddra", "load", str(bad)])
    assert result.exit_code == 1 and "is not a valid MedDRA llt.asc file: line 1: 3 fields, expected 11" in result.output


def test_meddra_dir_setting_defaults_outside_git():
    from edc.settings import PROJECT_ROOT, load_settings

    settings = load_settings(environ={})
    assert settings["meddra_dir"] == str(PROJECT_ROOT / "instance" / "meddra")
    assert "instance/" in (PROJECT_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert load_settings({"meddra_dir": "/srv/meddra"}, environ={})["meddra_dir"] == "/srv/meddra"


def test_forms_check_command_reports_reference_problems(runner, tmp_path):
    text = LAB_TEXT.replace("effective_from: 2026-03-01", "effective_from: 2024-01-01", 1)
    root = make_study(tmp_path, lab=text)
    result = runner.invoke(args=["edc", "forms", "check", "--dir", str(root)])
    line = line_of(text, "effective_from: 2024-01-01", 2)
    assert result.exit_code == 1
    assert f"{root}/reference/lab_ranges.yaml:{line}: effective_from 2024-01-01 overlaps the range set" in result.output
    assert runner.invoke(args=["edc", "forms", "check", "--dir", str(make_study(tmp_path / "ok"))]).exit_code == 0
