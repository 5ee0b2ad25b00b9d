"""Every Questionnaire of the trial (forms/, every version and language) read as an SDC renderer reads it.

Each is checked against the official FHIR R4 JSON schema (the `r4` fixture), then for what a renderer needs to
capture what the server captures: derived values as calculatedExpression and conditions on them as
enableWhenExpression, run here with a real FHIRPath engine (fhirpathpy) and compared with the server's own
derivations; items nothing can compute stay reachable and say so; missing-data codes, partial dates, soft
ranges, unit texts; one id and url per language.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from edc.ecrf import load_study, to_questionnaire
from edc.ecrf.derivations import get_derivation
from test_demo_subjects import TRIAL_FORMS

SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
EXT = "http://hl7.org/fhir/StructureDefinition/"
R4 = models["r4"]


COMPILED: dict[str, Any] = {}   # FHIRPath expression -> compiled function (parsing is the slow part)


@pytest.fixture(scope="module")
def study():
    return load_study(Path(TRIAL_FORMS))


@pytest.fixture(scope="module")
def rendered(study) -> dict[tuple[str, str, str], dict]:
    """Every Questionnaire of the trial: (form, version, language) -> R4 JSON, rendered once."""
    return {(form_id, version, lang): to_questionnaire(study.form(form_id, version), lang)
            for form_id in study.form_ids for version in study.versions(form_id) for lang in study.languages}


def all_questionnaires(study, rendered, lang: str | None = None):
    for (form_id, version, language), questionnaire in rendered.items():
        if lang is None or language == lang:
            yield study.form(form_id, version), language, questionnaire


def flat(items: list[dict]) -> dict[str, dict]:
    found = {}
    for item in items:
        found[item["linkId"]] = item
        found.update(flat(item.get("item", [])))
    return found


def extension(item: dict, url: str) -> dict | None:
    return next((e for e in item.get("extension", []) if e["url"] == url), None)


class Renderer:
    """What an SDC renderer does with a Questionnaire: calculatedExpression fills read-only items, and an item is
    enabled by its enableWhen (the operators these Questionnaires use) or its enableWhenExpression."""

    def __init__(self, questionnaire: dict, patient: dict | None = None) -> None:
        self.questionnaire = questionnaire
        self.items = flat(questionnaire["item"])
        self.env_extra = {"patient": patient if patient is not None else {}}

    def response(self, answers: dict[str, Any]) -> dict:
        qr = {"resourceType": "QuestionnaireResponse", "status": "in-progress", "item": []}
        for link_id, value in answers.items():
            self._answer(qr, link_id, value)
        for _ in range(2):   # calculated items may read other calculated items
            for link_id, item in self.items.items():
                calculated = extension(item, SDC + "sdc-questionnaire-calculatedExpression")
                if calculated:
                    qr["item"] = [one for one in qr["item"] if one["linkId"] != link_id]
                    result = self.run(qr, calculated["valueExpression"]["expression"])
                    if result:
                        self._answer(qr, link_id, result[0])
        return qr

    def _answer(self, qr: dict, link_id: str, value: Any) -> None:
        kind = {"choice": "valueCoding", "integer": "valueInteger", "decimal": "valueDecimal", "date": "valueDate",
                "dateTime": "valueDateTime", "boolean": "valueBoolean"}[self.items[link_id]["type"]]
        if kind == "valueCoding" and isinstance(value, str):
            value = next(option["valueCoding"] for option in self.items[link_id]["answerOption"]
                         if option["valueCoding"]["code"] == value)
        qr["item"].append({"linkId": link_id, "answer": [{kind: value}]})

    def run(self, qr: dict, expression: str) -> list:
        if expression not in COMPILED:
            COMPILED[expression] = compile_fhirpath(expression, R4)
        return COMPILED[expression](qr, {"resource": qr, "questionnaire": self.questionnaire, **self.env_extra})

    def value(self, qr: dict, link_id: str) -> Any:
        answers = [one["answer"][0] for one in qr["item"] if one["linkId"] == link_id]
        if not answers:
            return None
        value = next(iter(answers[0].values()))
        return value["code"] if isinstance(value, dict) else value

    def enabled(self, qr: dict, link_id: str) -> bool:
        item = self.items[link_id]
        expression = extension(item, SDC + "sdc-questionnaire-enableWhenExpression")
        if expression:
            return self.run(qr, expression["valueExpression"]["expression"]) == [True]
        results = [self._condition(qr, condition) for condition in item.get("enableWhen", [])]
        if not results:
            return True
        return all(results) if item.get("enableBehavior", "all") == "all" else any(results)

    def _condition(self, qr: dict, condition: dict) -> bool:
        value = self.value(qr, condition["question"])
        if condition["operator"] == "exists":
            return (value is not None) == condition["answerBoolean"]
        expected = condition.get("answerCoding", {}).get("code", condition.get("answerBoolean"))
        assert condition["operator"] == "=", condition
        return value == expected


# ================================================================ the schema, and one resource per language


def test_every_questionnaire_of_the_trial_in_every_language_is_valid_r4(study, rendered, r4):
    canonicals: dict[tuple[str, str], set[str]] = {}
    count = 0
    for form, lang, questionnaire in all_questionnaires(study, rendered):
        assert r4.errors(questionnaire) == [], (form.id, lang)
        assert questionnaire["language"] == lang and questionnaire["version"] == form.version
        canonicals.setdefault((form.id, form.version), set()).add((questionnaire["id"], questionnaire["url"]))
        if lang != "en":
            assert questionnaire["derivedFrom"] == [f"{form.canonical_url}/Questionnaire/{form.id}|{form.version}"]
        count += 1
    assert count == len(study.form_ids) * len(study.languages) >= 30 * 4
    for key, identities in canonicals.items():   # distinct id and url per language
        assert len({identity[0] for identity in identities}) == len({identity[1] for identity in identities}) \
            == len(study.languages), key


# ================================================================ derived items and the conditions on them


def test_the_sae_section_opens_in_a_renderer_exactly_when_the_server_derives_a_serious_event(study):
    form = study.form("ae")
    renderer = Renderer(to_questionnaire(form))
    criteria = ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")
    sae_items = [item.id for item in form.items.values() if item.show_if == "AESER == 'Y'"]
    assert {"SAENARR", "SAERPTR", "SAEFUNUM", "AEAWDTC"} <= set(sae_items)
    derive = get_derivation("ae_serious")
    # Every sixth yes/no combination, and criteria left unanswered (nothing is derived until all six are N).
    tried = [*itertools.product("YN", repeat=6)][::6] + [("N",) * 5 + (None,), ("Y",) + (None,) * 5]
    for answers in tried:
        given = {item: answer for item, answer in zip(criteria, answers) if answer is not None}
        qr = renderer.response(given)
        served = derive(given, {}, form.items["AESER"].params)
        assert renderer.value(qr, "AESER") == served, answers
        assert all(renderer.enabled(qr, item) is (served == "Y") for item in sae_items), answers


def test_ice_and_capd_items_follow_the_derived_tool_and_stay_reachable_without_the_birth_date(study):
    form = study.form("icans_daily")
    questionnaire = to_questionnaire(form)
    assert extension(questionnaire, SDC + "sdc-questionnaire-launchContext")["extension"][0]["valueCoding"]["code"] \
        == "patient"
    tool = get_derivation("icans_tool")
    at = {"NDTC": "2026-09-01T10:00:00+02:00", "TOOLDONE": "Y"}
    for birth, delay in [("2014-09", "N"), ("2014-10", "N"), ("2020-01", "N"), ("2010-01", "Y"), ("2010-01", "N")]:
        renderer = Renderer(questionnaire, {"resourceType": "Patient", "birthDate": birth})
        qr = renderer.response({**at, "DEVDELAY": delay})
        year, month = map(int, birth.split("-"))
        served = tool({"NDTC": datetime.fromisoformat(at["NDTC"]), "DEVDELAY": delay},
                      {"birth_year": year, "birth_month": month}, form.items["TOOL"].params)
        assert renderer.value(qr, "TOOL") == served, birth
        assert renderer.enabled(qr, "ICE_ORI") is (served == "ICE") and renderer.enabled(qr, "CAPD1") is (served == "CAPD")
    # A renderer without the subject's birth date: the tool is known only with developmental delay.
    bare = Renderer(questionnaire)
    unknown = bare.response({**at, "DEVDELAY": "N"})
    assert bare.value(unknown, "TOOL") is None
    assert bare.enabled(unknown, "ICE_ORI") and bare.enabled(unknown, "CAPD1")
    assert "launch context patient" in flat(questionnaire["item"])["TOOL.computed"]["text"]
    assert bare.value(bare.response({**at, "DEVDELAY": "Y"}), "TOOL") == "CAPD"


def test_ice_and_capd_totals_are_computed_as_the_server_computes_them(study):
    form = study.form("icans_daily")
    renderer = Renderer(to_questionnaire(form), {"resourceType": "Patient", "birthDate": "2010-01"})
    ice = {"ICE_ORI": 3, "ICE_NAME": 2, "ICE_CMD": 1, "ICE_WRITE": 0, "ICE_ATT": 1}
    qr = renderer.response(ice)
    assert renderer.value(qr, "ICETOT") == get_derivation("ice_total")(ice, {}, form.items["ICETOT"].params) == 7
    assert renderer.value(renderer.response({"ICE_ORI": 3, "ICE_NAME": 2}), "ICETOT") is None   # not all answered
    frequencies = ["NEVER", "RARELY", "SOMETIMES", "OFTEN", "ALWAYS"]
    for shift in range(5):
        capd = {f"CAPD{n}": frequencies[(n + shift) % 5] for n in range(1, 9)}
        served = get_derivation("capd_total")(capd, {}, form.items["CAPDTOT"].params)
        assert renderer.value(renderer.response(capd), "CAPDTOT") == served, capd


def test_every_computed_item_and_condition_is_computed_here_or_left_reachable_saying_so(study, rendered):
    for form, _, questionnaire in all_questionnaires(study, rendered, "en"):
        items = flat(questionnaire["item"])
        for item in form.items.values():
            rendered = items[item.id]
            if item.computed:
                assert rendered["readOnly"] is True
                assert extension(rendered, SDC + "sdc-questionnaire-calculatedExpression") \
                    or f"{item.id}.computed" in items, (form.id, item.id)
            if item.show_if:
                note = items.get(f"{item.id}.condition")
                governed = rendered.get("enableWhen") and any(
                    c["question"] != f"{item.id}.missing" for c in rendered["enableWhen"])
                assert governed or extension(rendered, SDC + "sdc-questionnaire-enableWhenExpression") or note, \
                    (form.id, item.id)
                if note:   # reachable, so never required: the server decides whether it applies
                    assert "required" not in rendered and item.show_if in note["text"], (form.id, item.id)


# ================================================================ missing-data codes, partial dates, soft ranges, units


def test_missing_data_codes_are_offered_by_a_companion_that_disables_its_item(study, rendered):
    companions = 0
    for form, lang, questionnaire in all_questionnaires(study, rendered):
        items = flat(questionnaire["item"])
        for node in [*form.items.values(), *form.groups.values()]:
            if not node.missing_codes or getattr(node, "computed", False):
                assert f"{node.id}.missing" not in items
                continue
            companion = items[f"{node.id}.missing"]
            assert companion["type"] == "choice" and "required" not in companion
            assert [(o["valueCoding"]["system"], o["valueCoding"]["code"]) for o in companion["answerOption"]] == [
                (f"{form.canonical_url}/CodeSystem/MISSING_DATA", code) for code in node.missing_codes]
            assert all(o["valueCoding"]["display"] == (form.missing_code_labels[o["valueCoding"]["code"]].get(lang)
                       or form.missing_code_labels[o["valueCoding"]["code"]]["en"]) for o in companion["answerOption"])
            rendered = items[node.id]
            off = {"question": f"{node.id}.missing", "operator": "exists", "answerBoolean": False}
            expression = extension(rendered, SDC + "sdc-questionnaire-enableWhenExpression")
            assert off in rendered.get("enableWhen", []) or f"'{node.id}.missing'" in expression["valueExpression"][
                "expression"], (form.id, node.id)
            companions += 1
    assert companions > 100
    # In a renderer: AEENDAT (UNK allowed) is asked when the event ended, and put aside once UNK is chosen.
    renderer = Renderer(to_questionnaire(study.form("ae")))
    assert renderer.enabled(renderer.response({"AEONGO": "N"}), "AEENDAT")
    assert not renderer.enabled(renderer.response({"AEONGO": "N", "AEENDAT.missing": "UNK"}), "AEENDAT")
    assert renderer.enabled(renderer.response({"AEONGO": "N"}), "AEENDAT.missing")
    assert not renderer.enabled(renderer.response({"AEONGO": "Y"}), "AEENDAT.missing")


def test_partial_dates_are_date_items_with_the_entry_format_they_allow(study, rendered):
    found = 0
    for form, _, questionnaire in all_questionnaires(study, rendered, "en"):
        items = flat(questionnaire["item"])
        for item in form.items.values():
            if item.partial and not item.computed:
                rendered = items[item.id]
                assert rendered["type"] == "date"
                formats = extension(rendered, EXT + "entryFormat")["valueString"]
                assert formats.startswith("YYYY, " if item.partial == "year" else "YYYY-MM or"), (form.id, item.id)
                found += 1
    assert found >= 8


def test_soft_ranges_are_warning_constraints_a_renderer_can_evaluate(study, rendered):
    found = 0
    for form, _, questionnaire in all_questionnaires(study, rendered, "en"):
        renderer = Renderer(questionnaire)
        for item in form.items.values():
            if item.soft_min is None and item.soft_max is None:
                continue
            constraint = extension(renderer.items[item.id], EXT + "targetConstraint")
            parts = {e["url"]: e for e in constraint["extension"]}
            assert parts["severity"]["valueCode"] == "warning" and "query" in parts["human"]["valueString"]
            expression = parts["expression"]["valueExpression"]["expression"]
            low = item.soft_min if item.soft_min is not None else item.soft_max - 1
            for value, expected in [(low, True), (low - 1 if item.soft_min is not None else item.soft_max + 1, False)]:
                value = int(value) if item.value_kind == "integer" else float(value)
                qr = renderer.response({item.id: value})
                assert renderer.run(qr, expression) == [expected], (form.id, item.id, value)
            found += 1
    assert found >= 10


def test_every_unit_has_display_text_not_a_bare_ucum_code(study, rendered):
    units = {}
    for _, _, questionnaire in all_questionnaires(study, rendered, "en"):
        for item in flat(questionnaire["item"]).values():
            unit = extension(item, EXT + "questionnaire-unit")
            if unit:
                coding = unit["valueCoding"]
                units[coding["code"]] = coding["display"]
    assert len(units) > 15
    for code, display in units.items():
        assert display and not set("[]{}*") & set(display), (code, display)
    assert (units["mm[Hg]"], units["10*9/L"], units["{INR}"], units["/uL"]) == ("mmHg", "×10⁹/L", "INR", "/µL")
