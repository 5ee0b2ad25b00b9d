"""Render a form as a FHIR R4 Questionnaire (built and validated with the fhir.resources R4B models)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire

from .definitions import FormDef, GroupDef, ItemDef, SectionDef

EXTENSION = "http://hl7.org/fhir/StructureDefinition/"
UCUM = "http://unitsofmeasure.org"
ITEM_CONTROL = "http://hl7.org/fhir/questionnaire-item-control"
_FHIR_TYPES = {"text": "string", "integer": "integer", "decimal": "decimal", "date": "date", "datetime": "dateTime",
               "boolean": "boolean", "choice": "choice", "multichoice": "choice"}
_CLAUSE = re.compile(r"\s*([A-Za-z]\w*)\s*(==|!=|>=|<=|>|<)\s*('[^'\\]*'|\"[^\"\\]*\"|-?\d+(?:\.\d+)?|true|false)\s*")
_MEMBERSHIP = re.compile(r"\s*('[^'\\]*'|\"[^\"\\]*\")\s+in\s+([A-Za-z]\w*)\s*")
_OPERATORS = {"==": "=", "!=": "!=", ">=": ">=", "<=": "<=", ">": ">", "<": "<"}


def to_questionnaire(form: FormDef, lang: str = "en") -> dict[str, Any]:
    """Return `form` as FHIR R4 Questionnaire JSON, with texts in `lang` (English where missing)."""
    renderer = _Renderer(form, lang)
    resource = {
        "resourceType": "Questionnaire",
        "id": re.sub(r"[^A-Za-z0-9.-]", "-", f"{form.id}-{form.version}")[:64],
        "url": f"{form.canonical_url}/Questionnaire/{form.id}",
        "version": form.version,
        "name": re.sub(r"\W", "", form.id.title()) or "Form",
        "title": renderer.text(form.title),
        "status": "active" if form.released else "draft",
        "language": lang,
        "subjectType": ["Patient"],
        "description": renderer.text(form.description) if form.description else None,
        "item": [renderer.section(section) for section in form.sections],
    }
    model = Questionnaire.model_validate(resource)
    return json.loads(model.model_dump_json(exclude_none=True))


class _Renderer:
    def __init__(self, form: FormDef, lang: str):
        self.form = form
        self.lang = lang

    def text(self, labels: dict[str, str]) -> str:
        return labels.get(self.lang) or labels["en"]

    def section(self, section: SectionDef) -> dict[str, Any]:
        item = {"linkId": section.id, "type": "group", "text": self.text(section.title) if section.title else None,
                "item": [self.member(member) for member in section.items]}
        return _compact(item)

    def member(self, member_id: str) -> dict[str, Any]:
        group = self.form.groups.get(member_id)
        return self.group(group) if group is not None else self.item(self.form.items[member_id])

    def group(self, group: GroupDef) -> dict[str, Any]:
        item = {"linkId": group.id, "type": "group", "text": self.text(group.label), "repeats": True,
                "required": group.required or None, "enableWhen": None,
                "item": [self.item(self.form.items[member]) for member in group.items] + self._help(group)}
        self._enable_when(item, group.show_if)
        return _compact(item)

    def item(self, item: ItemDef) -> dict[str, Any]:
        kind = item.value_kind
        fhir_type = _FHIR_TYPES[kind]
        if kind == "text" and (item.max_length is None or item.max_length > 255):
            fhir_type = "text"
        rendered: dict[str, Any] = {
            "linkId": item.id, "type": fhir_type, "text": self.text(item.label),
            "required": item.required or None, "repeats": (kind == "multichoice") or None,
            "readOnly": item.computed or None, "maxLength": item.max_length,
            "extension": self._extensions(item, kind) or None,
            "answerOption": self._answer_options(item) if kind in ("choice", "multichoice") else None,
            "item": self._help(item) or None,
        }
        self._enable_when(rendered, item.show_if)
        return _compact(rendered)

    def _extensions(self, item: ItemDef, kind: str) -> list[dict[str, Any]]:
        extensions = []
        for bound, url in ((item.min, "minValue"), (item.max, "maxValue")):
            if bound is None:
                continue
            if kind == "integer":
                value = {"valueInteger": math.ceil(bound) if url == "minValue" else math.floor(bound)}
            elif kind == "decimal":
                value = {"valueDecimal": float(bound)}
            else:
                value = {"valueDate": bound.isoformat()}
            extensions.append({"url": EXTENSION + url, **value})
        if item.unit:
            extensions.append({"url": EXTENSION + "questionnaire-unit",
                               "valueCoding": _compact({"system": UCUM, "code": item.unit, "display": item.unit_display})})
        if item.precision is not None:
            extensions.append({"url": EXTENSION + "maxDecimalPlaces", "valueInteger": item.precision})
        if item.pattern:
            extensions.append({"url": EXTENSION + "regex", "valueString": item.pattern})
        return extensions

    def _answer_options(self, item: ItemDef) -> list[dict[str, Any]]:
        system = self._code_system(item)
        return [{"valueCoding": {"system": system, "code": code, "display": self.text(labels)}}
                for code, labels in item.code_list.items()]

    def _code_system(self, item: ItemDef) -> str:
        return f"{self.form.canonical_url}/CodeSystem/{item.code_list_name}"

    def _help(self, node: ItemDef | GroupDef) -> list[dict[str, Any]]:
        if not node.help:
            return []
        control = {"coding": [{"system": ITEM_CONTROL, "code": "help"}]}
        return [{"linkId": f"{node.id}.help", "type": "display", "text": self.text(node.help),
                 "extension": [{"url": EXTENSION + "questionnaire-itemControl", "valueCodeableConcept": control}]}]

    def _enable_when(self, rendered: dict[str, Any], show_if: str | None) -> None:
        """Add enableWhen for simple show_if conditions (comparisons joined by one kind of && or ||)."""
        if not show_if:
            return
        joiner = "&&" if "&&" in show_if else "||"
        if "&&" in show_if and "||" in show_if:
            return
        conditions = [self._condition(clause) for clause in show_if.split(joiner)]
        if not conditions or None in conditions:
            return
        rendered["enableWhen"] = conditions
        if len(conditions) > 1:
            rendered["enableBehavior"] = "all" if joiner == "&&" else "any"

    def _condition(self, clause: str) -> dict[str, Any] | None:
        match = _CLAUSE.fullmatch(clause)
        if match:
            question, operator, literal = match.groups()
        else:
            match = _MEMBERSHIP.fullmatch(clause)
            if not match:
                return None
            literal, question, operator = match.group(1), match.group(2), "=="
        item = self.form.items.get(question)
        answer = self._answer(item, _literal(literal)) if item is not None else None
        if answer is None or (item.value_kind == "multichoice") != (match.re is _MEMBERSHIP):
            return None
        if operator not in ("==", "!=") and not ({"answerInteger", "answerDecimal"} & set(answer)):
            return None
        return {"question": question, "operator": _OPERATORS[operator], **answer}

    def _answer(self, item: ItemDef, value: Any) -> dict[str, Any] | None:
        kind = item.value_kind
        if kind in ("choice", "multichoice") and isinstance(value, str) and value in item.code_list:
            return {"answerCoding": {"system": self._code_system(item), "code": value}}
        if kind == "boolean" and isinstance(value, bool):
            return {"answerBoolean": value}
        if kind == "integer" and type(value) is int:
            return {"answerInteger": value}
        if kind == "decimal" and type(value) is float:
            return {"answerDecimal": value}
        if kind == "text" and isinstance(value, str):
            return {"answerString": value}
        return None


def _literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None and value != []}
