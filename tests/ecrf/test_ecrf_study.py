"""The demo definitions in tests/demo_forms/ load cleanly, and the Study API answers the service layer's questions."""

import ast
import shutil
from pathlib import Path

import pytest

from edc.ecrf import DefinitionError, check_definitions, check_recorded_hashes, load_study, release

ROOT = Path(__file__).resolve().parents[2]
FORMS = ROOT / "tests" / "demo_forms"
ENGINE = ROOT / "edc" / "ecrf"


@pytest.fixture(scope="module")
def study():
    return load_study(FORMS)


def test_forms_directory_has_no_definition_problems():
    assert check_definitions(FORMS) == []


def test_study_header(study):
    assert study.id == "DEMO-CART19"
    assert study.parameters["min_age_months"] == 12
    assert study.settings == {"reason_required_after_first_save": False, "text_max_length": 4000, "max_group_rows": 100}
    assert study.missing_codes == {"ND": "Not done", "UNK": "Unknown", "NA": "Not applicable"}
    assert study.missing_code_labels["NA"]["ar"] == "لا ينطبق"
    assert study.languages == ("en", "es", "ar")


def test_schedule_has_anchored_events_with_windows(study):
    events = {event.id: event for event in study.events}
    assert [event.id for event in study.events] == ["SCR", "APH", "D0", "D7", "D28", "UNS"]
    assert (events["SCR"].anchor, events["SCR"].day, events["SCR"].window_after) == ("registration", 0, 28)
    assert (events["APH"].anchor, events["APH"].day, events["APH"].window_before) == ("planned_infusion", -28, 7)
    assert (events["D7"].anchor, events["D7"].day) == ("day0", 7)
    assert events["UNS"].repeatable and events["UNS"].day is None
    assert not events["D0"].repeatable


def test_forms_at_an_event(study):
    assert study.forms_at("D0") == ["infusion", "vitals"]
    with pytest.raises(KeyError):
        study.forms_at("NOPE")


def test_logs_repeating_forms_and_roles(study):
    assert study.subject_logs == ["ae"]
    assert study.repeating_forms == {"daily": {"anchor": "day0", "from_day": 0, "to_day": 14, "date_item": "DADAT"}}
    assert study.form_roles == {"apheresis": {"manufacturing"}}
    assert study.form("ae").repeating and study.form("daily").repeating
    assert not study.form("vitals").repeating


def test_versions_and_latest_form(study):
    assert study.versions("vitals") == ["1", "2"]
    assert study.form("vitals").version == "2"
    assert "SPO2" in study.form("vitals").items
    assert "SPO2" not in study.form("vitals", "1").items
    assert study.form("vitals", 1).version == "1"


def test_unknown_form_or_version_is_a_key_error(study):
    with pytest.raises(KeyError):
        study.form("nope")
    with pytest.raises(KeyError):
        study.form("vitals", "9")


def test_items_know_their_group_and_flags(study):
    infusion = study.form("infusion")
    assert infusion.items["PMTRT"].group == "PREMED"
    assert infusion.items["PRODUCT_ID"].group is None
    assert infusion.groups["PREMED"].items == ("PMTRT", "PMOTH", "PMDOSE")
    vitals = study.form("vitals")
    assert vitals.items["MEASURED_BY"].identifying and vitals.items["MEASURED_BY"].encrypt
    assert vitals.items["VSCOMM"].encrypt and not vitals.items["VSCOMM"].identifying
    assert vitals.encrypted_items == {"MEASURED_BY", "VSCOMM"}
    assert vitals.items["TEMP"].code_list is None and vitals.items["TEMP"].unit == "Cel"


def test_shared_code_lists_are_resolved(study):
    assert study.form("ae").items["AESER"].code_list == {"Y": {"en": "Yes", "es": "Sí", "ar": "نعم"},
                                                       "N": {"en": "No", "es": "No", "ar": "لا"}}


def test_cross_form_and_subject_fact_dependencies(study):
    assert study.cross_form_dependencies == {"apheresis": {"infusion"}}
    assert study.subject_fact_dependencies["day0"] == {"daily"}
    assert "infusion" in study.subject_fact_dependencies["planned_infusion"]


def test_demo_release_marks_vitals_1_immutable(study):
    assert study.form("vitals", "1").released and not study.form("vitals", "2").released


def test_every_entry_version_keeps_its_own_definition(study):
    assert study.form("vitals", "1").content_hash != study.form("vitals", "2").content_hash
    assert study.form("vitals", "1").source.endswith("vitals/1.yaml")


def test_engine_imports_no_flask_sqlalchemy_or_other_edc_packages():
    for module in ENGINE.glob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert not name.startswith(("flask", "sqlalchemy", "edc")), f"{module.name} imports {name}"


# ---------------------------------------------------------------- content hashes and released versions


def copy_forms(tmp_path: Path) -> Path:
    target = tmp_path / "forms"
    shutil.copytree(FORMS, target)
    return target


def test_same_content_gives_the_same_hash(tmp_path, study):
    copy = load_study(copy_forms(tmp_path))
    assert copy.content_hashes() == study.content_hashes()


def test_comments_layout_and_key_order_do_not_change_the_hash(tmp_path, study):
    forms = copy_forms(tmp_path)
    path = forms / "apheresis" / "1.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    version_line, title_line = lines.index("version: 1"), next(i for i, line in enumerate(lines) if line.startswith("title:"))
    lines[version_line], lines[title_line] = lines[title_line], lines[version_line]
    path.write_text("# a new comment\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    assert load_study(forms).form("apheresis").content_hash == study.form("apheresis").content_hash


def test_changed_content_gives_a_different_hash(tmp_path, study):
    forms = copy_forms(tmp_path)
    path = forms / "apheresis" / "1.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("max: 100", "max: 101"), encoding="utf-8")
    assert load_study(forms).form("apheresis").content_hash != study.form("apheresis").content_hash


def test_a_changed_shared_code_list_changes_the_hash_of_forms_using_it(tmp_path, study):
    forms = copy_forms(tmp_path)
    path = forms / "codelists.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("Grade 4", "Grade four"), encoding="utf-8")
    changed = load_study(forms)
    assert changed.form("ae").content_hash != study.form("ae").content_hash
    assert changed.form("vitals").content_hash == study.form("vitals").content_hash


def test_released_version_changed_without_a_bump_is_refused(tmp_path):
    forms = copy_forms(tmp_path)
    digest = release(forms, "apheresis", "1")
    assert load_study(forms).form("apheresis").released
    assert load_study(forms).form("apheresis").content_hash == digest
    path = forms / "apheresis" / "1.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("max: 100", "max: 101"), encoding="utf-8")
    messages = check_definitions(forms)
    assert len(messages) == 1
    assert messages[0].startswith(f"{forms}/apheresis/1.yaml:1: released version 1 of form 'apheresis' has changed")
    with pytest.raises(DefinitionError) as raised:
        load_study(forms)
    assert raised.value.messages == messages


def test_new_version_next_to_a_released_one_is_accepted(tmp_path):
    forms = copy_forms(tmp_path)
    release(forms, "apheresis", "1")
    text = (forms / "apheresis" / "1.yaml").read_text(encoding="utf-8")
    (forms / "apheresis" / "2.yaml").write_text(text.replace("version: 1", "version: 2").replace("max: 100", "max: 101"),
                                                encoding="utf-8")
    study = load_study(forms)
    assert study.versions("apheresis") == ["1", "2"]
    assert study.form("apheresis", "1").released and not study.form("apheresis", "2").released


def test_a_released_version_cannot_be_removed(tmp_path):
    forms = copy_forms(tmp_path)
    release(forms, "vitals", "1")
    (forms / "vitals" / "1.yaml").unlink()
    assert check_definitions(forms) == [
        f"{forms}/released.yaml:4: released version 1 of form 'vitals' is missing: a released version is never removed"]


def test_recorded_hashes_from_the_database_are_compared(study):
    form = study.form("vitals", "1")
    assert check_recorded_hashes(study, {("vitals", "1"): form.content_hash}) == []
    problems = check_recorded_hashes(study, {("vitals", "1"): "0" * 64, ("gone", "1"): "0" * 64})
    assert len(problems) == 2
    assert "changed after entries were captured" in problems[0]
    assert "has entries but no definition" in problems[1]
