"""docs/trial.md is generated from the definitions (`flask edc forms doc`) and kept current by a test."""

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edc.cli import forms_doc_command
from edc.ecrf import load_study, register_derivation
from edc.ecrf.trialdoc import derivation_info, render_trial_doc

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "demo_forms"
TRIAL_DOC = ROOT / "docs" / "trial.md"


@pytest.fixture(scope="module")
def demo_doc():
    return render_trial_doc(load_study(DEMO))


def section(doc: str, heading: str) -> str:
    """The text of a `## ...` section."""
    start = doc.index(f"\n## {heading}")
    end = doc.find("\n## ", start + 1)
    return doc[start:end if end > 0 else None]


def form_section(doc: str, form_id: str) -> str:
    start = doc.index(f'<a id="form-{form_id}"></a>')
    end = doc.find('<a id="form-', start + 1)
    return doc[start:end if end > 0 else doc.index("\n## 4.")]


def test_title_introduction_and_sections(demo_doc):
    assert demo_doc.startswith("# eCRF engine demonstration study (not the real trial)\n")
    assert "flask edc forms doc" in demo_doc and "tests/ecrf/test_trialdoc.py" in demo_doc
    for heading in ("1. Schedule", "2. Protocol parameters", "3. Forms", "4. Derivations",
                    "5. Cross-form rules X1-X13", "6. Shared code lists"):
        assert f"\n## {heading}\n" in demo_doc
    assert demo_doc.endswith("\n") and not demo_doc.endswith("\n\n")


def test_deterministic_and_free_of_machine_paths(demo_doc):
    assert render_trial_doc(load_study(DEMO)) == demo_doc
    assert str(ROOT) not in demo_doc and "/tmp" not in demo_doc
    assert not re.search(r"\b20\d\d-\d\d-\d\dT", demo_doc)      # no generation timestamp


def test_schedule_lists_every_event_log_repeating_form_and_anchor(demo_doc):
    schedule = section(demo_doc, "1. Schedule")
    study = load_study(DEMO)
    for event in study.events:
        assert f"| `{event.id}` | {event.label['en']} |" in schedule
    assert "| `APH` | Apheresis | planned_infusion | -28 | -7 / +7 | [apheresis](#form-apheresis), [vitals](#form-vitals) |" \
        in schedule
    assert "| `UNS` | Unscheduled visit | — | — | — |" in schedule and "repeatable" in schedule
    assert "| [ae](#form-ae) | Adverse event |" in schedule
    assert "| [daily](#form-daily) | Daily assessment | day0 | 0 | 14 | `DADAT` |" in schedule
    assert "| `day0` | [infusion](#form-infusion) | `INFDAT` | any |" in schedule


def test_parameters_carry_value_comment_and_readers(demo_doc):
    parameters = section(demo_doc, "2. Protocol parameters")
    assert "| `lansky_max_age_months` | `191` | Lansky below 16 years, Karnofsky from 16 | screening |" in parameters
    assert "| `min_age_months` | `12` |  | screening |" in parameters
    assert "| `ND` | Not done |" in parameters


def test_every_form_item_and_check_is_described(demo_doc):
    study = load_study(DEMO)
    for form_id in study.form_ids:
        form = study.form(form_id)
        text = form_section(demo_doc, form_id)
        assert f"### {form_id} — {form.title['en']}" in text
        for item in form.items.values():
            ref = f"{item.group}/{item.id}" if item.group else item.id
            assert f"| `{ref}` | {item.label['en']} |" in text
        for check in form.checks:
            assert f"- **`{check.id}`**" in text
    forms = section(demo_doc, "3. Forms")
    assert "| [apheresis](#form-apheresis) | Apheresis | 1 | APH | site staff, manufacturing |" in forms
    vitals = form_section(demo_doc, "vitals")
    assert "Version 2 (not released); file `demo_forms/vitals/2.yaml`" in vitals and "earlier versions 1" in vitals
    assert "| `TEMP` | Temperature | decimal | °C (Cel) | 30 to 45; expected 35 to 40; 1 decimal | yes |  |" in vitals
    assert "- **`BP_ORDER`** — error, scope form, on `SBP`, `DBP`\n  - rule: `SBP > DBP`\n" in vitals
    infusion = form_section(demo_doc, "infusion")
    assert "- **`PRODUCT_MATCH`** — warning, critical, scope subject, on `PRODUCT_ID`" in infusion
    assert "  - reads: `forms.apheresis.PRODUCT_ID`" in infusion
    assert "| `TOTAL_CELLS` | Total CAR+ cells infused | calculated (decimal) |" in infusion
    assert "= `DOSE * WEIGHT`" in infusion
    assert "| `PREMED/PMTRT` | Medication | choice |  | PREMED: PARACET, ANTIHIST, OTHER | yes |" in infusion
    ae = form_section(demo_doc, "ae")
    assert "derivation [`band`](#derivation-band) `{value: TMAX, cutoffs: [38.0, 39.0, 40.0]}`" in ae
    assert "row check of `AETRT`" in ae
    assert "| `AEENDAT` | End date | date (partial: year-month) |" in ae and "shown if `AEONGO == false`" in ae
    assert "Sets the schedule anchor `day0` (INFDAT)" in infusion


def test_derivations_come_from_the_docstring_tables(demo_doc):
    crs = derivation_info("astct_crs_grade")
    assert crs.section == "§3.1, §3.2" and crs.module == "edc.ecrf.clinical"
    assert crs.rule.startswith("ASTCT CRS grade 0-5") and crs.rule.endswith("else max(1, hypotension tier, oxygen tier)")
    assert "§8.3 X4" in derivation_info("cumulative_dose_per_kg").section
    flag = derivation_info("lab_range_flag")
    assert "reference data: lab_ranges" in flag.rule and flag.section.startswith("§4.1")
    assert derivation_info("band").rule.startswith("Count the ascending cutoffs")
    derivations = section(demo_doc, "4. Derivations")
    assert "| <a id=\"derivation-band\"></a>`band` |" in derivations and "| ae.FEVGR |" in derivations
    assert "`astct_crs_grade` | ASTCT CRS grade 0-5" in derivations


def test_derivations_registered_outside_the_engine_are_not_listed():
    register_derivation("trialdoc_test_only")(lambda values, subject, params: None)
    assert "trialdoc_test_only" not in render_trial_doc(load_study(DEMO))


def test_x_rule_tags_param_references_and_parameter_comments(tmp_path):
    forms = tmp_path / "demo_forms"
    shutil.copytree(DEMO, forms)
    study_yaml = forms / "study.yaml"
    study_yaml.write_text(study_yaml.read_text().replace(
        "  daily_assessment_last_day: 14\n",
        "  daily_assessment_last_day: 14\n  # Fever\n  fever_cutoff: 38.0            # [P] ASTCT fever (§3.1)\n"))
    ae = forms / "ae" / "1.yaml"
    ae.write_text(ae.read_text().replace("cutoffs: [38.0, 39.0, 40.0]", "cutoffs: [{param: fever_cutoff}, 39.0, 40.0]"))
    infusion = forms / "infusion" / "1.yaml"
    infusion.write_text(infusion.read_text().replace(
        "  - id: PRODUCT_MATCH\n", "  # X5: chain of identity\n  - id: PRODUCT_MATCH\n"))
    doc = render_trial_doc(load_study(forms))
    parameters = section(doc, "2. Protocol parameters")
    assert "**Fever**\n\n| Parameter | Value | Comment in study.yaml | Read by |" in parameters
    assert "| `fever_cutoff` | `38.0` | [P] ASTCT fever (§3.1) | ae |" in parameters
    assert "`{value: TMAX, cutoffs: [params.fever_cutoff (= 38.0), 39.0, 40.0]}`" in form_section(doc, "ae")
    assert "- **`PRODUCT_MATCH`** (X5) — warning" in doc and "  - note: X5: chain of identity" in doc
    rules = section(doc, "5. Cross-form rules X1-X13")
    assert "| X5 | MFG.COI = APH.COI = INF.COI | hard | [infusion.PRODUCT_MATCH](#form-infusion) | — |" in rules


def test_cli_writes_and_checks_the_document(tmp_path):
    output = tmp_path / "trial.md"
    runner = CliRunner()
    args = ["--dir", str(DEMO), "--output", str(output)]
    assert runner.invoke(forms_doc_command, [*args, "--check"]).exit_code == 1      # no file yet
    result = runner.invoke(forms_doc_command, args)
    assert result.exit_code == 0 and "wrote" in result.output
    assert output.read_text(encoding="utf-8") == render_trial_doc(load_study(DEMO))
    assert runner.invoke(forms_doc_command, [*args, "--check"]).exit_code == 0
    output.write_text(output.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    result = runner.invoke(forms_doc_command, [*args, "--check"])
    assert result.exit_code == 1 and "out of date" in result.output
    assert "edited by hand" in output.read_text(encoding="utf-8")                    # --check writes nothing


def test_docs_trial_md_is_current():
    """docs/trial.md is what `flask edc forms doc` writes for forms/: run it after changing a form."""
    expected = render_trial_doc(load_study(ROOT / "forms"))
    assert TRIAL_DOC.is_file(), "docs/trial.md is missing: run `flask edc forms doc`"
    assert TRIAL_DOC.read_text(encoding="utf-8") == expected, "docs/trial.md is out of date: run `flask edc forms doc`"
