"""to_questionnaire renders a form as a valid FHIR R4 Questionnaire (checked with the R4B models)."""

from pathlib import Path

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire

from edc.ecrf import load_study, to_questionnaire

FORMS = Path(__file__).resolve().parents[2] / "tests" / "demo_forms"
EXT = "http://hl7.org/fhir/StructureDefinition/"


@pytest.fixture(scope="module")
def study():
    return load_study(FORMS)


def items_by_link(questionnaire: dict) -> dict[str, dict]:
    found = {}

    def walk(items):
        for item in items:
            found[item["linkId"]] = item
            walk(item.get("item", []))

    walk(questionnaire["item"])
    return found


def NOT_CODED_MISSING(link_id: str) -> dict:  # noqa: N802 - reads as the condition it stands for
    """The enableWhen condition of an item that takes missing-data codes: none is given in its companion."""
    return {"question": f"{link_id}.missing", "operator": "exists", "answerBoolean": False}


def extension(item: dict, name: str) -> dict:
    return next(ext for ext in item["extension"] if ext["url"] == EXT + name)


@pytest.mark.parametrize("form_id", ["screening", "vitals", "apheresis", "infusion", "ae", "daily"])
def test_every_demo_form_is_a_valid_questionnaire(study, form_id):
    for version in study.versions(form_id):
        questionnaire = to_questionnaire(study.form(form_id, version))
        Questionnaire.model_validate(questionnaire)
        assert questionnaire["resourceType"] == "Questionnaire"
        assert questionnaire["version"] == version


def test_header(study):
    questionnaire = to_questionnaire(study.form("vitals", "1"))
    assert questionnaire["url"] == "https://edc.example.org/demo/Questionnaire/vitals"
    assert questionnaire["id"] == "vitals-1" and questionnaire["name"] == "Vitals"
    assert questionnaire["status"] == "active" and questionnaire["title"] == "Vital signs"   # released
    assert to_questionnaire(study.form("vitals", "2"))["status"] == "draft"


def test_none_values_are_left_out(study):
    questionnaire = to_questionnaire(study.form("vitals"))
    assert "null" not in str(questionnaire) and "None" not in str(questionnaire)


def test_item_types_required_units_and_ranges(study):
    items = items_by_link(to_questionnaire(study.form("infusion")))
    assert items["INF"]["type"] == "group"
    assert (items["INFDAT"]["type"], items["INFDAT"]["required"]) == ("date", True)
    assert items["INFSTTIM"]["type"] == "dateTime"
    assert "required" not in items["INFSTTIM"]
    dose = items["DOSE"]
    assert dose["type"] == "decimal"
    assert extension(dose, "minValue") == {"url": EXT + "minValue", "valueDecimal": 0.01}
    assert extension(dose, "maxValue") == {"url": EXT + "maxValue", "valueDecimal": 10.0}
    assert extension(dose, "questionnaire-unit")["valueCoding"] == {
        "system": "http://unitsofmeasure.org", "code": "10*6/kg", "display": "×10⁶ cells/kg"}
    assert extension(dose, "maxDecimalPlaces")["valueInteger"] == 2
    assert items["TOTAL_CELLS"]["readOnly"] is True
    assert items["PRODUCT_ID"]["type"] == "string" and items["PRODUCT_ID"]["maxLength"] == 10
    assert extension(items["PRODUCT_ID"], "regex")["valueString"] == "ARI-[0-9]{6}"


def test_integer_ranges_use_value_integer(study):
    items = items_by_link(to_questionnaire(study.form("vitals")))
    assert extension(items["HR"], "minValue") == {"url": EXT + "minValue", "valueInteger": 20}
    assert extension(items["HR"], "maxValue") == {"url": EXT + "maxValue", "valueInteger": 250}


def test_choices_have_answer_options(study):
    items = items_by_link(to_questionnaire(study.form("ae")))
    assert items["AESER"]["type"] == "choice"
    assert items["AESER"]["answerOption"] == [
        {"valueCoding": {"system": "https://edc.example.org/demo/CodeSystem/NY", "code": "Y", "display": "Yes"}},
        {"valueCoding": {"system": "https://edc.example.org/demo/CodeSystem/NY", "code": "N", "display": "No"}}]
    assert items["AESCRIT"]["repeats"] is True and len(items["AESCRIT"]["answerOption"]) == 5


def test_simple_show_if_becomes_enable_when(study):
    items = items_by_link(to_questionnaire(study.form("ae")))
    assert items["AESCRIT"]["enableWhen"] == [{"question": "AESER", "operator": "=", "answerCoding": {
        "system": "https://edc.example.org/demo/CodeSystem/NY", "code": "Y"}}, NOT_CODED_MISSING("AESCRIT")]
    assert items["AESCRIT"]["enableBehavior"] == "all"
    assert items["AEENDAT"]["enableWhen"] == [{"question": "AEONGO", "operator": "=", "answerBoolean": False},
                                              NOT_CODED_MISSING("AEENDAT")]
    assert items["CMDOSU"]["enableWhen"] == [{"question": "CMDOSE", "operator": ">=", "answerDecimal": 0.0},
                                             NOT_CODED_MISSING("CMDOSU")]


def test_membership_in_a_multichoice_becomes_enable_when(study):
    items = items_by_link(to_questionnaire(study.form("screening")))
    assert items["HSCTDAT"]["enableWhen"] == [{"question": "PRIORTX", "operator": "=", "answerCoding": {
        "system": "https://edc.example.org/demo/CodeSystem/PRIORTX", "code": "HSCT"}}, NOT_CODED_MISSING("HSCTDAT")]


def test_complex_show_if_has_no_enable_when(study):
    items = items_by_link(to_questionnaire(study.form("screening")))
    lansky = items["LANSKY"]   # reads a study parameter: not expressible, so reachable (only its missing code disables it)
    assert lansky["enableWhen"] == [NOT_CODED_MISSING("LANSKY")] and "required" not in lansky
    assert items["LANSKY.condition"]["type"] == "display" and "params." in items["LANSKY.condition"]["text"]


def test_repeating_group(study):
    items = items_by_link(to_questionnaire(study.form("infusion")))
    assert items["PREMED"]["type"] == "group" and items["PREMED"]["repeats"] is True
    assert [child["linkId"] for child in items["PREMED"]["item"] if not child["linkId"].endswith(".missing")] == [
        "PMTRT", "PMOTH", "PMDOSE"]


def test_help_text_is_a_help_display_item(study):
    items = items_by_link(to_questionnaire(study.form("apheresis")))
    help_item = items["PRODUCT_ID.help"]
    assert help_item["type"] == "display" and help_item["text"].startswith("As printed on the bag label")
    assert help_item["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "help"


def test_texts_in_another_language_including_right_to_left(study):
    arabic = to_questionnaire(study.form("screening"), lang="ar")
    items = items_by_link(arabic)
    assert arabic["language"] == "ar" and arabic["title"] == "الفحص"
    assert items["CONSDAT"]["text"] == "تاريخ الموافقة المستنيرة"
    spanish = items_by_link(to_questionnaire(study.form("vitals"), lang="es"))
    assert spanish["TEMP"]["text"] == "Temperatura"
    assert items_by_link(to_questionnaire(study.form("infusion"), lang="ar"))["INFDAT"]["text"] == "Date of infusion"
