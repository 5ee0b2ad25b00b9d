"""study.yaml `safety:` and `fhir:` (edc.ecrf.mapping): parsed into typed definitions on the Study, checked by
`check_definitions` (`flask edc forms check`) against the loaded forms, each problem as file:line: message; and
read by the engine: a study whose items are not the trial's gets its FHIR export and safety summary from them.
(The safety clocks read the same definitions: tests/trial/test_safety_clocks.py.)"""

import textwrap
import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from edc.ecrf import check_definitions, load_study
from edc.ecrf.definitions import CodingDef
from edc.exports import fhir
from edc.services import summaries

BASE = """\
id: T
title: Test study
missing_codes: {ND: Not done, UNK: Unknown}
parameters: {sae_report_hours: 24, susar_fatal_days: 7, susar_other_days: 15, suspected_related_codes: [REL]}
events:
  - {id: V1, label: Visit 1, anchor: registration, day: 0, forms: [lab]}
subject_logs: [adv, rev]
"""

SAFETY = """\
safety:
  adverse_events:
    form: adv
    grade: GR
    serious: SER
    awareness: AWARE
    causality: REL
    fatal_or_life_threatening: [DEATH]
  review:
    form: rev
    adverse_event: REF
    expected: EXP
    first_knowledge: KNOWN
    submitted: SENT
  max_grades:
    crs: {form: lab, grades: [LABGR]}
"""

FHIR = """\
fhir:
  data_absent_reasons: {ND: not-performed}
  procedures:
    - {key: biopsy, form: lab, code: {system: procedure, code: BX}, date: LABDAT}
  drugs:
    - key: chemo
      form: lab
      group: RX
      drug: DRUG
      codes: drug
      date: RXDAT
      dose: {item: DOSE}
  observations:
    - key: GRADE
      form: lab
      category: laboratory
      code: [{system: loinc, code: 1234-5}]
      date: LABDAT
      value: {item: LABGR, codes: grade}
      components:
        - code: [{system: observation, code: VALUE}]
          value: {item: VAL, unit: mmol/L}
  adverse_event:
    form: adv
    term: TERM
    start: START
    grade: {item: GR, codes: ctcae-grade, concepts: {'1': {system: ncit, code: C41338}}}
    seriousness:
      codes: criterion
      criteria: [{item: DEATH}]
    causality:
      codes: relatedness
      concepts: {REL: {system: ncit, code: C53260}}
      suspects: [{item: REL, suspect: biopsy}]
    outcome: {item: OUT, codes: outcome, concepts: {DEAD: {system: ncit, code: C48275}}}
"""

CODELISTS = """\
NY: [{code: 'Y', label: 'Yes'}, {code: 'N', label: 'No'}]
GRADE: [{code: '1', label: Grade 1}, {code: '2', label: Grade 2}]
REL: [{code: REL, label: Related}, {code: UNREL, label: Not related}]
OUT: [{code: DEAD, label: Fatal}, {code: ALIVE, label: Recovered}]
DRUG: [{code: CYTA, label: Cytarabine}]
"""

FORMS = {
    "adv/1.yaml": """\
        id: adv
        version: 1
        title: Adverse event
        repeating: true
        sections:
          - id: S
            items:
              - {id: TERM, type: text, label: Term, encrypt: true}
              - {id: START, type: date, label: Start}
              - {id: GR, type: choice, code_list: GRADE, label: Grade}
              - {id: SER, type: choice, code_list: NY, label: Serious}
              - {id: DEATH, type: choice, code_list: NY, label: Death}
              - {id: AWARE, type: datetime, label: Aware}
              - {id: REL, type: choice, code_list: REL, label: Related}
              - {id: OUT, type: choice, code_list: OUT, label: Outcome}
        """,
    "rev/1.yaml": """\
        id: rev
        version: 1
        title: Review
        repeating: true
        sections:
          - id: S
            items:
              - {id: REF, type: text, label: Event, encrypt: false, encrypt_reason: an entry id}
              - {id: EXP, type: choice, code_list: NY, label: Expected}
              - {id: KNOWN, type: datetime, label: Known}
              - {id: SENT, type: datetime, label: Sent}
        """,
    "lab/1.yaml": """\
        id: lab
        version: 1
        title: Lab
        sections:
          - id: S
            items:
              - {id: LABDAT, type: date, label: Date}
              - {id: LABGR, type: choice, code_list: GRADE, label: Grade}
              - {id: VAL, type: decimal, unit: mmol/L, label: Value}
              - {id: COUNT, type: integer, label: Count}
              - id: RX
                type: group
                label: Drugs
                items:
                  - {id: DRUG, type: choice, code_list: DRUG, label: Drug}
                  - {id: RXDAT, type: date, label: Given}
                  - {id: DOSE, type: decimal, unit: mg, label: Dose}
        """,
}


def write(tmp_path: Path, study: str) -> Path:
    root = tmp_path / "forms"
    root.mkdir()
    (root / "study.yaml").write_text(study, encoding="utf-8")
    (root / "codelists.yaml").write_text(CODELISTS, encoding="utf-8")
    for relative, text in FORMS.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def changed(old: str, new: str) -> tuple[str, int]:
    """The full study.yaml with `old` (once) replaced by `new`, and the line where `new` starts."""
    study = BASE + SAFETY + FHIR
    assert study.count(old) == 1, old
    start = study.index(old)
    return study.replace(old, new), study[:start].count("\n") + 1


def test_the_sections_parse_into_typed_definitions_and_check_clean(tmp_path):
    root = write(tmp_path, BASE + SAFETY + FHIR)
    assert check_definitions(root) == []
    study = load_study(root)
    events = study.safety.adverse_events
    assert (events.form, events.grade, events.serious, events.awareness, events.causality) == ("adv", "GR", "SER", "AWARE", "REL")
    assert events.fatal_or_life_threatening == ("DEATH",)
    assert study.safety.review.first_knowledge == "KNOWN" and study.safety.max_grades["crs"].grades == ("LABGR",)
    assert study.safety.summary_forms == ("adv", "lab")
    fhir = study.fhir
    assert fhir.drugs[0].group == "RX" and fhir.drugs[0].dose.item == "DOSE"
    assert fhir.observations[0].code == (CodingDef("http://loinc.org", "1234-5"),)
    assert fhir.observations[0].components[0].code == (CodingDef("observation", "VALUE", local=True),)
    assert fhir.adverse_event.grade.concepts["1"].system == "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
    assert fhir.absent_reasons == {"ND": "not-performed"}


def test_a_study_without_the_sections_loads_and_the_engine_reads_nothing(tmp_path):
    root = write(tmp_path, BASE)
    assert check_definitions(root) == []
    study = load_study(root)
    assert study.safety is None and study.fhir is None


@pytest.mark.parametrize(("old", "new", "fragment"), [
    # unknown forms and items
    ("    form: adv\n    grade: GR", "    form: nope\n    grade: GR", "safety.adverse_events.form: unknown form 'nope'"),
    ("grade: GR\n", "grade: NOPE\n", "safety.adverse_events.grade: form 'adv' has no item 'NOPE'"),
    ("    first_knowledge: KNOWN", "    first_knowledge: GONE", "safety.review.first_knowledge: form 'rev' has no item 'GONE'"),
    ("grades: [LABGR]", "grades: [RX]", "form 'lab' has no item 'RX' (RX is a repeating group; name an item)"),
    ("    form: adv\n    term: TERM", "    form: ghost\n    term: TERM", "fhir.adverse_event.form: unknown form 'ghost'"),
    ("date: LABDAT}", "date: NODATE}", "fhir.procedures[1].date: form 'lab' has no item 'NODATE'"),
    # items of the wrong type
    ("grade: GR\n", "grade: TERM\n", "adv.TERM is a text item; it must be a choice or integer item"),
    ("grades: [LABGR]", "grades: [VAL]", "lab.VAL is a decimal item; it must be a choice or integer item"),
    ("awareness: AWARE", "awareness: START", "safety.adverse_events.awareness: adv.START is a date item; it must be a date-time item"),
    ("serious: SER", "serious: GR", "adv.GR is a choice item; it must be a yes/no choice (codes Y and N"),
    ("    start: START", "    start: TERM", "fhir.adverse_event.start: adv.TERM is a text item; it must be a date or date-time item"),
    ("      date: LABDAT\n      value", "      date: [VAL, LABDAT]\n      value", "lab.VAL is a decimal item; it must be a date or date-time item"),
    ("value: {item: LABGR, codes: grade}", "value: {item: VAL, codes: grade}", "lab.VAL is a decimal item; it must be a choice item"),
    ("value: {item: VAL, unit: mmol/L}", "value: {item: COUNT}", None),  # an integer: valueInteger
    ("value: {item: VAL, unit: mmol/L}", "value: {item: VAL}", "lab.VAL is a decimal item; it must be an integer item"),
    ("value: {item: VAL, unit: mmol/L}", "value: {item: COUNT, unit: cells}", "lab.COUNT has no unit; give its UCUM code (ucum)"),
    ("value: {item: VAL, unit: mmol/L}", "value: {item: VAL, ucum: mmol/L}", None),
    ("value: {item: LABGR, codes: grade}", "value: {item: LABGR, codes: grade, boolean: true}", "give one of codes"),
    # items of a repeating group, and top-level items
    ("      date: RXDAT", "      date: LABDAT", "fhir.drugs[1].date: lab.LABDAT is not an item of the repeating group 'RX'"),
    ("      group: RX", "      group: RXX", "fhir.drugs[1].group: form 'lab' has no repeating group 'RXX'"),
    ("date: LABDAT}", "date: RXDAT}", "lab.RXDAT is an item of the repeating group 'RX'; name a top-level item"),
    # codes
    ("concepts: {DEAD: {system: ncit, code: C48275}}", "concepts: {DEAD: {system: ncit, code: C48275}, GONE: {system: ncit, code: C1}}",
     "fhir.adverse_event.outcome.item: 'GONE' not in the code list of adv.OUT"),
    ("{'1': {system: ncit, code: C41338}}", "{'7': {system: ncit, code: C41338}}", "'7' not in the code list of adv.GR"),
    ("{ND: not-performed}", "{ND: not-done}", "'not-done' is not a data-absent-reason code"),
    ("{ND: not-performed}", "{XX: unknown}", "fhir.data_absent_reasons: 'XX' is not one of the study's missing_codes"),
    ("code: 1234-5}", "code: 1234-5, sytem: x}", "unknown key 'sytem'"),
    ("{system: procedure, code: BX}", "{system: 'no such', code: BX}", "is not snomed, loinc"),
    # names between the sections and the study
    ("suspect: biopsy", "suspect: surgery", "'surgery' is not 'product' nor the key of one of fhir.procedures or fhir.drugs"),
    ("suspect: biopsy", "suspect: product", "the suspect 'product' needs fhir.product"),
    ("    awareness: AWARE", "    awareness: AWARE  # params.sae_report_hours", None),
    ("    crs: {form: lab", "    fever: {form: lab", "the summary keeps the maximum grades crs, icans, not 'fever'"),
    ("    causality: REL\n", "    causality: REL\n    casuality: REL\n", "unknown key 'casuality' in safety.adverse_events"),
    ("  review:\n    form: rev\n    adverse_event: REF\n", "  review:\n    form: rev\n", "safety.review needs 'adverse_event'"),
])
def test_each_problem_is_reported_at_its_line(tmp_path, old, new, fragment):
    study, line = changed(old, new)
    root = write(tmp_path, study)
    messages = check_definitions(root)
    if fragment is None:
        assert messages == []
        return
    assert len(messages) == 1, messages
    prefix = f"{root}/study.yaml:"
    assert messages[0].startswith(prefix) and fragment in messages[0], messages
    reported = int(messages[0][len(prefix):].split(":")[0])
    assert line <= reported <= line + new.count("\n"), messages


def test_a_review_needs_the_adverse_events(tmp_path):
    study = BASE + SAFETY.replace("  adverse_events:\n", "  other:\n", 1)
    messages = check_definitions(write(tmp_path, study))
    assert any("safety.review needs safety.adverse_events" in m for m in messages), messages


def test_other_yes_no_codes_are_checked_on_every_yes_no_item(tmp_path):
    study, _ = changed("safety:\n", "safety:\n  yes_no: [J, N]\n")
    messages = check_definitions(write(tmp_path, study))
    assert len(messages) == 3 and all("must be a yes/no choice (codes J and N" in m for m in messages), messages
    assert [m.split("safety.")[1].split(":")[0] for m in messages] == [
        "adverse_events.serious", "adverse_events.fatal_or_life_threatening", "review.expected"]


def test_a_clock_needs_its_parameters_reported_where_the_item_starting_it_is_named(tmp_path):
    study, _ = changed("sae_report_hours: 24, susar_fatal_days: 7, ", "")
    root = write(tmp_path, study)
    lines = study.splitlines()
    aware, known = lines.index("    awareness: AWARE") + 1, lines.index("    first_knowledge: KNOWN") + 1
    assert check_definitions(root) == [
        f"{root}/study.yaml:{aware}: safety: the SAE report clock needs the parameter 'sae_report_hours' in parameters",
        f"{root}/study.yaml:{known}: safety: the SUSAR clock needs the parameter 'susar_fatal_days' in parameters"]


# ================================================================ another study: the engine reads its items, not the trial's


def _subject():
    moment = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    site = SimpleNamespace(id=uuid.UUID(int=1), code="XX01", status="active", name="Site", country="XX",
                           created_at=moment, updated_at=moment)
    return SimpleNamespace(id=uuid.UUID(int=2), site=site, number="XX01-0001", sex="F", birth_year=2015, birth_month=4,
                           status="enrolled", registration_date=date(2026, 1, 5), consent_date=date(2026, 1, 4),
                           created_at=moment, updated_at=moment, version=1)


def _entry(n: int, form_id: str, values: dict, status: str = "complete"):
    moment = datetime(2026, 3, 1, 9, n, tzinfo=UTC)
    return SimpleNamespace(id=uuid.UUID(int=100 + n), event_key="", form_id=form_id, form_version="1", version=1,
                           status=status, created_at=moment, updated_at=moment), values


RELEASE_TERM = "exports:\n  encrypted_items: {adv: [TERM]}\n"   # the verbatim term is encrypted: released here


def test_another_study_exports_fhir_from_its_own_items(tmp_path):
    study = load_study(write(tmp_path, BASE + SAFETY + FHIR + RELEASE_TERM))
    resources = fhir.subject_resources(study, _subject(), [
        _entry(1, "lab", {"LABDAT": "2026-02-01", "LABGR": "2", "VAL": 4.5,
                          "RX": [{"DRUG": "CYTA", "RXDAT": "2026-02-01", "DOSE": 120.0}]}),
        _entry(2, "adv", {"TERM": "Sepsis", "START": "2026-02-03", "GR": "1", "SER": "Y", "DEATH": "Y", "REL": "REL",
                          "OUT": "DEAD"}),
    ])
    by_type = {}
    for resource in map(fhir.to_json, resources):
        by_type.setdefault(resource["resourceType"], []).append(resource)
    assert "condition" not in by_type["ResearchStudy"][0] and "Condition" not in by_type
    [procedure] = by_type["Procedure"]
    assert procedure["code"]["coding"] == [{"system": "urn:edc:T/fhir/CodeSystem/procedure", "code": "BX"}]
    assert procedure["performedDateTime"] == "2026-02-01"
    [given] = by_type["MedicationAdministration"]
    assert given["dosage"]["dose"] == {"value": 120.0, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    [observation] = by_type["Observation"]
    assert observation["code"]["coding"] == [{"system": "http://loinc.org", "code": "1234-5"}]
    assert observation["valueCodeableConcept"]["coding"] == [
        {"system": "urn:edc:T/fhir/CodeSystem/grade", "code": "2", "display": "Grade 2"}]
    assert observation["component"][0]["valueQuantity"]["code"] == "mmol/L"
    [event] = by_type["AdverseEvent"]
    assert event["event"]["text"] == "Sepsis" and event["date"] == "2026-02-03"
    assert event["seriousness"]["coding"][0]["code"] == "serious"
    assert event["outcome"]["coding"][0]["code"] == "C48275"
    suspects = [e for e in event["extension"] if e["url"].endswith("/suspect-entity")]
    assert [s["extension"][0]["valueReference"] for s in suspects] == [{"reference": f"Procedure/{procedure['id']}"}]
    grade = next(e for e in event["extension"] if e["url"].endswith("/ae-grade"))
    assert [c["code"] for c in grade["valueCodeableConcept"]["coding"]] == ["C41338", "1"]


def test_another_study_without_a_fhir_section_exports_the_subject_only(tmp_path):
    study = load_study(write(tmp_path, BASE + SAFETY))
    resources = fhir.subject_resources(study, _subject(), [_entry(1, "adv", {"TERM": "Sepsis", "GR": "1"})])
    assert [r.get_resource_type() for r in resources] == ["Organization", "ResearchStudy", "Patient", "Consent",
                                                          "ResearchSubject", "Provenance"]


def test_another_study_counts_its_safety_summary_from_its_own_items(tmp_path):
    study = load_study(write(tmp_path, BASE + SAFETY))
    counted = summaries.count_safety([("adv", {"GR": "2", "SER": "Y"}), ("adv", {"GR": None, "SER": "N"}),
                                      ("lab", {"LABGR": "1"}), ("lab", {"LABGR": "2"}), ("rev", {"EXP": "N"})],
                                     study.safety)
    assert counted == {"ae_total": 2, "sae_total": 1, "ae_by_grade": {"2": 1, "unknown": 1}, "sae_by_grade": {"2": 1},
                       "max_crs_grade": 2, "max_icans_grade": None}
    assert summaries.count_safety([("adv", {"GR": "2"})], None)["ae_total"] == 0


def test_an_encrypted_verbatim_term_is_not_exported_unless_the_study_releases_it(tmp_path):
    study = load_study(write(tmp_path, BASE + SAFETY + FHIR))
    entry = _entry(2, "adv", {"TERM": "CANARY-TERM-5c1e", "START": "2026-02-03", "GR": "1", "SER": "N", "REL": "REL"})
    resources = [fhir.to_json(resource) for resource in fhir.subject_resources(study, _subject(), [entry])]
    [event] = [resource for resource in resources if resource["resourceType"] == "AdverseEvent"]
    assert event["event"]["text"] == "Adverse event" and "CANARY-TERM" not in json.dumps(resources)
