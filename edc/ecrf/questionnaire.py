"""Render a form as a FHIR R4 Questionnaire (built and validated with the fhir.resources R4B models) that SDC
renderers can fill in: docs/forms.md §13 says what each form feature becomes.

In short: `show_if` becomes enableWhen, or an SDC enableWhenExpression (FHIRPath) when it reads a derived
item; derived items whose rule has a FHIRPath form (edc.ecrf.derivations.register_fhirpath) get an SDC
calculatedExpression; a condition or value a renderer cannot compute leaves its items reachable and says so
in a display item. Missing-data codes are a companion choice item `<linkId>.missing`; partial dates carry
`entryFormat`; soft ranges are warning `targetConstraint`s; each language is its own Questionnaire.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire

from .definitions import FormDef, GroupDef, ItemDef, SectionDef
from .derivations import Calculation, fhirpath_calculation

EXTENSION = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
CALCULATED_EXPRESSION = SDC + "sdc-questionnaire-calculatedExpression"
ENABLE_WHEN_EXPRESSION = SDC + "sdc-questionnaire-enableWhenExpression"
LAUNCH_CONTEXT = SDC + "sdc-questionnaire-launchContext"
TARGET_CONSTRAINT = EXTENSION + "targetConstraint"
ENTRY_FORMAT = EXTENSION + "entryFormat"
UCUM = "http://unitsofmeasure.org"
ITEM_CONTROL = "http://hl7.org/fhir/questionnaire-item-control"
SOURCE_LANGUAGE = "en"   # every label has it: the other languages are translations of it
MISSING_SUFFIX = ".missing"
MISSING_CODE_SYSTEM = "MISSING_DATA"   # <canonical>/CodeSystem/MISSING_DATA: the study's missing-data codes
_FHIR_TYPES = {"text": "string", "integer": "integer", "decimal": "decimal", "date": "date", "datetime": "dateTime",
               "boolean": "boolean", "choice": "choice", "multichoice": "choice"}
_CLAUSE = re.compile(r"\s*([A-Za-z]\w*)\s*(==|!=|>=|<=|>|<)\s*('[^'\\]*'|\"[^\"\\]*\"|-?\d+(?:\.\d+)?|true|false)\s*")
_MEMBERSHIP = re.compile(r"\s*('[^'\\]*'|\"[^\"\\]*\")\s+in\s+([A-Za-z]\w*)\s*")
_OPERATORS = {"==": "=", "!=": "!=", ">=": ">=", "<=": "<=", ">": ">", "<": "<"}
_ENTRY_FORMATS = {"year": "YYYY, YYYY-MM or YYYY-MM-DD", "year-month": "YYYY-MM or YYYY-MM-DD"}
# Notes a renderer shows where it cannot do what the server does (engine text: English in every language).
SERVER_CONDITION = ("Shown by the server only when {condition}; this form cannot evaluate that, so the question "
                    "stays available: leave it empty when the condition does not hold.")
SERVER_VALUE = "Computed by the server when the entry is saved; this form does not compute it."
PARTIAL_VALUE = ("Computed here when the form has what it needs ({needs}); otherwise by the server when the entry is "
                 "saved, and the questions that depend on it stay available meanwhile.")
SOFT_RANGE = "Outside the expected range ({low} to {high}): check the value. It is accepted and a query is opened."


def questionnaire_id(form: FormDef, lang: str = SOURCE_LANGUAGE) -> str:
    """The Questionnaire id of a form version in a language: `<form>-<version>`, plus `-<lang>` for translations."""
    suffix = "" if lang == SOURCE_LANGUAGE else f"-{lang}"
    return re.sub(r"[^A-Za-z0-9.-]", "-", f"{form.id}-{form.version}")[:60] + suffix


def questionnaire_url(form: FormDef, lang: str = SOURCE_LANGUAGE) -> str:
    """The canonical URL: `<base>/Questionnaire/<form>`, plus `-<lang>` for a translation (each its own resource)."""
    suffix = "" if lang == SOURCE_LANGUAGE else f"-{lang}"
    return f"{form.canonical_url}/Questionnaire/{form.id}{suffix}"


def to_questionnaire(form: FormDef, lang: str = SOURCE_LANGUAGE) -> dict[str, Any]:
    """Return `form` as FHIR R4 Questionnaire JSON, with texts in `lang` (English where missing)."""
    renderer = _Renderer(form, lang)
    items = [renderer.section(section) for section in form.sections]
    resource = {
        "resourceType": "Questionnaire",
        "id": questionnaire_id(form, lang),
        "extension": renderer.launch_contexts() or None,
        "url": questionnaire_url(form, lang),
        "version": form.version,
        "name": re.sub(r"\W", "", form.id.title()) or "Form",
        "title": renderer.text(form.title),
        "status": "active" if form.released else "draft",
        "derivedFrom": [f"{questionnaire_url(form)}|{form.version}"] if lang != SOURCE_LANGUAGE else None,
        "language": lang,
        "subjectType": ["Patient"],
        "description": renderer.text(form.description) if form.description else None,
        "item": items,
    }
    model = Questionnaire.model_validate(_compact(resource))
    return json.loads(model.model_dump_json(exclude_none=True))


def answers_of(link_ids: list[str] | tuple[str, ...]) -> str:
    """FHIRPath: the values of the answers to these items anywhere in the QuestionnaireResponse."""
    if len(link_ids) == 1:
        return f"%resource.repeat(item).where(linkId = {_fhirpath_string(link_ids[0])}).answer.value"
    return f"%resource.repeat(item).where(linkId in ({' | '.join(map(_fhirpath_string, link_ids))})).answer.value"


@dataclass(frozen=True, slots=True)
class _Clause:
    item: ItemDef
    operator: str
    answer: dict[str, Any]   # the enableWhen answer[x]
    fhirpath: str


class _Renderer:
    def __init__(self, form: FormDef, lang: str):
        self.form = form
        self.lang = lang
        self.contexts: dict[str, None] = {}
        self.calculations: dict[str, Calculation | None] = {}

    def text(self, labels: dict[str, str]) -> str:
        return labels.get(self.lang) or labels[SOURCE_LANGUAGE]

    # ------------------------------------------------------------------ structure

    def section(self, section: SectionDef) -> dict[str, Any]:
        item = {"linkId": section.id, "type": "group", "text": self.text(section.title) if section.title else None,
                "item": [rendered for member in section.items for rendered in self.member(member)]}
        return _compact(item)

    def member(self, member_id: str) -> list[dict[str, Any]]:
        """A top-level item or group, preceded by its missing-data companion when it takes codes."""
        group = self.form.groups.get(member_id)
        return self.group(group) if group is not None else self.item(self.form.items[member_id])

    def group(self, group: GroupDef) -> list[dict[str, Any]]:
        rendered = {"linkId": group.id, "type": "group", "text": self.text(group.label), "repeats": True,
                    "required": group.required or None,
                    "item": [one for member in group.items for one in self.item(self.form.items[member])]
                    + self._help(group)}
        companion = self._missing_companion(group, self.text(group.label), group.show_if)
        self._enable(rendered, group.show_if, group.id if companion else None, row_of=None)
        return [*([companion] if companion else []), _compact(rendered)]

    def item(self, item: ItemDef) -> list[dict[str, Any]]:
        kind = item.value_kind
        fhir_type = _FHIR_TYPES[kind]
        if kind == "text" and (item.max_length is None or item.max_length > 255):
            fhir_type = "text"
        rendered: dict[str, Any] = {
            "linkId": item.id, "type": fhir_type, "text": self.text(item.label),
            "required": (item.required and not item.computed) or None, "repeats": (kind == "multichoice") or None,
            "readOnly": item.computed or None, "maxLength": item.max_length,
            "extension": self._extensions(item, kind) or None,
            "answerOption": self._answer_options(item) if kind in ("choice", "multichoice") else None,
            "item": self._help(item) + self._value_note(item) or None,
        }
        companion = None if item.computed else self._missing_companion(item, self.text(item.label), item.show_if)
        self._enable(rendered, item.show_if, item.id if companion else None, row_of=item.group)
        return [*([companion] if companion else []), _compact(rendered)]

    # ------------------------------------------------------------------ item details

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
            display = item.unit_display or ucum_display(item.unit)
            extensions.append({"url": EXTENSION + "questionnaire-unit",
                               "valueCoding": {"system": UCUM, "code": item.unit, "display": display}})
        if item.precision is not None:
            extensions.append({"url": EXTENSION + "maxDecimalPlaces", "valueInteger": item.precision})
        if item.pattern:
            extensions.append({"url": EXTENSION + "regex", "valueString": item.pattern})
        if kind == "date" and item.partial in _ENTRY_FORMATS and not item.computed:
            extensions.append({"url": ENTRY_FORMAT, "valueString": _ENTRY_FORMATS[item.partial]})
        soft = self._soft_range(item, kind)
        if soft:
            extensions.append(soft)
        calculation = self._calculation(item)
        if calculation is not None:
            expression = calculation.expression
            if kind in ("choice", "multichoice"):   # a coded answer is one of the item's own answerOptions
                expression = (f"%questionnaire.repeat(item).where(linkId = {_fhirpath_string(item.id)})"
                              f".answerOption.value.where(code = ({expression}))")
            extensions.append({"url": CALCULATED_EXPRESSION, "valueExpression": _fhirpath(expression)})
        return extensions

    def _soft_range(self, item: ItemDef, kind: str) -> dict[str, Any] | None:
        if kind not in ("integer", "decimal") or (item.soft_min is None and item.soft_max is None):
            return None
        tests = [f"$this {op} {bound}" for op, bound in ((">=", item.soft_min), ("<=", item.soft_max)) if bound is not None]
        human = SOFT_RANGE.format(low=_bound(item.soft_min, "-∞"), high=_bound(item.soft_max, "∞"))
        return {"url": TARGET_CONSTRAINT, "extension": [
            {"url": "key", "valueId": re.sub(r"[^A-Za-z0-9.-]", "-", f"{item.id}-soft-range")[:64]},
            {"url": "severity", "valueCode": "warning"},
            {"url": "expression", "valueExpression": _fhirpath(f"{answers_of([item.id])}.all({' and '.join(tests)})")},
            {"url": "human", "valueString": human},
            {"url": "location", "valueString": item.id}]}

    def _answer_options(self, item: ItemDef) -> list[dict[str, Any]]:
        system = self._code_system(item.code_list_name)
        return [{"valueCoding": {"system": system, "code": code, "display": self.text(labels)}}
                for code, labels in item.code_list.items()]

    def _code_system(self, name: str | None) -> str:
        return f"{self.form.canonical_url}/CodeSystem/{name}"

    def _help(self, node: ItemDef | GroupDef) -> list[dict[str, Any]]:
        return [self._display(f"{node.id}.help", self.text(node.help), "help")] if node.help else []

    @staticmethod
    def _display(link_id: str, text: str, control: str | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"linkId": link_id, "type": "display", "text": text}
        if control:
            item["extension"] = [{"url": EXTENSION + "questionnaire-itemControl",
                                  "valueCodeableConcept": {"coding": [{"system": ITEM_CONTROL, "code": control}]}}]
        return item

    # ------------------------------------------------------------------ computed values

    def _calculation(self, item: ItemDef) -> Calculation | None:
        """The item's FHIRPath calculation (derived items whose rule has one), remembering launch contexts."""
        if item.id not in self.calculations:
            found = None
            if item.type == "derived" and item.derivation and not item.group:
                found = fhirpath_calculation(item.derivation, item.params, answers_of)
            self.calculations[item.id] = found
            for context in found.launch_context if found else ():
                self.contexts[context] = None
        return self.calculations[item.id]

    def _value_note(self, item: ItemDef) -> list[dict[str, Any]]:
        if not item.computed:
            return []
        calculation = self._calculation(item)
        if calculation is None:
            return [self._display(f"{item.id}.computed", SERVER_VALUE)]
        if calculation.partial:
            needs = ", ".join(f"the launch context {context}" for context in calculation.launch_context) or "its inputs"
            return [self._display(f"{item.id}.computed", PARTIAL_VALUE.format(needs=needs))]
        return []

    def launch_contexts(self) -> list[dict[str, Any]]:
        return [{"url": LAUNCH_CONTEXT, "extension": [
            {"url": "name", "valueCoding": {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/launchContext", "code": name}},
            {"url": "type", "valueCode": name.capitalize()},
            {"url": "description", "valueString": "The subject (birthDate: year and month) for derived values"}]}
            for name in self.contexts]

    # ------------------------------------------------------------------ missing-data codes

    def _missing_companion(self, node: ItemDef | GroupDef, label: str, show_if: str | None) -> dict[str, Any] | None:
        """`<linkId>.missing`: the node's missing-data codes as answer options. Answering it disables the node,
        and the entry stores {"missing": code} for the node (docs/forms.md §13)."""
        if not node.missing_codes:
            return None
        labels = self.form.missing_code_labels
        system = self._code_system(MISSING_CODE_SYSTEM)
        companion: dict[str, Any] = {
            "linkId": node.id + MISSING_SUFFIX, "type": "choice",
            "text": f"{label}: {' / '.join(self.text(labels.get(code) or {SOURCE_LANGUAGE: code}) for code in node.missing_codes)}",
            "answerOption": [{"valueCoding": {"system": system, "code": code,
                                              "display": self.text(labels.get(code) or {SOURCE_LANGUAGE: code})}}
                             for code in node.missing_codes],
            "extension": [{"url": EXTENSION + "questionnaire-itemControl", "valueCodeableConcept": {
                "coding": [{"system": ITEM_CONTROL, "code": "radio-button"}]}}]}
        self._enable(companion, show_if, None, row_of=getattr(node, "group", None))
        return companion

    # ------------------------------------------------------------------ show_if

    def _enable(self, rendered: dict[str, Any], show_if: str | None, missing_of: str | None, row_of: str | None) -> None:
        """Make `rendered` enabled when show_if holds and, with `missing_of`, while no missing-data code is given."""
        parsed = self._clauses(show_if) if show_if else ("&&", [])
        if parsed is None:
            self._server_condition(rendered, show_if)
            parsed = ("&&", [])
        joiner, clauses = parsed
        missing = ({"question": missing_of + MISSING_SUFFIX, "operator": "exists", "answerBoolean": False}
                   if missing_of else None)
        needs_expression = any(clause.item.computed for clause in clauses) or (
            missing is not None and joiner == "||" and len(clauses) > 1)
        if not needs_expression:
            conditions = [{"question": c.item.id, "operator": c.operator, **c.answer} for c in clauses]
            conditions += [missing] if missing else []
            if conditions:
                rendered["enableWhen"] = conditions
            if len(conditions) > 1:
                rendered["enableBehavior"] = "all" if joiner == "&&" or missing else "any"
            return
        if row_of is not None:   # a FHIRPath over the whole response cannot tell one row's answers from another's
            self._server_condition(rendered, show_if)
            if missing:
                rendered["enableWhen"] = [missing]
            return
        expression = f" {'and' if joiner == '&&' else 'or'} ".join(f"({c.fhirpath})" for c in clauses)
        if missing:
            expression = f"({expression}) and {answers_of([missing_of + MISSING_SUFFIX])}.empty()"
        rendered["extension"] = [*(rendered.get("extension") or []),
                                 {"url": ENABLE_WHEN_EXPRESSION, "valueExpression": _fhirpath(expression)}]

    def _server_condition(self, rendered: dict[str, Any], show_if: str) -> None:
        """A condition no renderer can evaluate: the question stays reachable, optional, and says why."""
        rendered.pop("required", None)
        note = self._display(f"{rendered['linkId']}.condition", SERVER_CONDITION.format(condition=show_if))
        rendered["item"] = [note, *(rendered.get("item") or [])]

    def _clauses(self, show_if: str) -> tuple[str, list[_Clause]] | None:
        """Comparisons of one item with a literal joined by one kind of && or ||; None for anything else."""
        if "&&" in show_if and "||" in show_if:
            return None
        joiner = "&&" if "&&" in show_if else "||"
        clauses = [self._clause(text) for text in show_if.split(joiner)]
        if not clauses or None in clauses:
            return None
        return joiner, clauses

    def _clause(self, text: str) -> _Clause | None:
        match = _CLAUSE.fullmatch(text)
        if match:
            question, operator, literal = match.groups()
        else:
            match = _MEMBERSHIP.fullmatch(text)
            if not match:
                return None
            literal, question, operator = match.group(1), match.group(2), "=="
        item = self.form.items.get(question)
        value = _literal(literal)
        if item is not None and value == "" and operator == "!=" and not item.computed:   # "X != ''": X is answered
            return _Clause(item, "exists", {"answerBoolean": True}, f"{answers_of([item.id])}.exists()")
        answer = self._answer(item, value) if item is not None else None
        if answer is None or (item.value_kind == "multichoice") != (match.re is _MEMBERSHIP):
            return None
        if operator not in ("==", "!=") and not ({"answerInteger", "answerDecimal"} & set(answer)):
            return None
        if item.computed and (item.group or self._calculation(item) is None):
            return None
        return _Clause(item, _OPERATORS[operator], answer, self._fhirpath_clause(item, _OPERATORS[operator], value))

    def _fhirpath_clause(self, item: ItemDef, operator: str, value: Any) -> str:
        values = answers_of([item.id])
        if item.value_kind == "multichoice":
            test = f"{values}.code contains {_fhirpath_string(value)}"
        elif item.value_kind == "choice":
            test = f"{values}.code {operator} {_fhirpath_string(value)}"
        else:
            literal = _fhirpath_string(value) if isinstance(value, str) else str(value).lower()
            test = f"{values} {operator} {literal}"
        calculation = self._calculation(item) if item.computed else None
        if calculation is not None and calculation.partial:   # not computable here: keep what it governs reachable
            test = f"{values}.empty() or {test}"
        return test

    def _answer(self, item: ItemDef, value: Any) -> dict[str, Any] | None:
        kind = item.value_kind
        if kind in ("choice", "multichoice") and isinstance(value, str) and value in item.code_list:
            return {"answerCoding": {"system": self._code_system(item.code_list_name), "code": value}}
        if kind == "boolean" and isinstance(value, bool):
            return {"answerBoolean": value}
        if kind == "integer" and type(value) is int:
            return {"answerInteger": value}
        if kind == "decimal" and type(value) is float:
            return {"answerDecimal": value}
        if kind == "text" and isinstance(value, str):
            return {"answerString": value}
        return None


# ---------------------------------------------------------------- units

_UCUM_WORDS = {"Cel": "°C", "[degF]": "°F", "a": "years", "mo": "months", "wk": "weeks", "d": "days", "h": "hours",
               "min": "minutes", "s": "seconds", "%": "%", "mm[Hg]": "mmHg", "[IU]": "IU", "[iU]": "IU"}
_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def ucum_display(code: str) -> str:
    """Readable text for a UCUM code a form gives without its own display: `10*9/L` -> `×10⁹/L`,
    `mm[Hg]` -> `mmHg`, `{INR}` -> `INR`, `uL` -> `µL`, `m2` -> `m²`, `Cel` -> `°C`."""
    if code in _UCUM_WORDS:
        return _UCUM_WORDS[code]
    text = re.sub(r"10\*(-?\d+)", lambda m: "×10" + m.group(1).translate(_SUPERSCRIPTS), code)
    text = re.sub(r"\[([^\]]+)\]", lambda m: _UCUM_WORDS.get(m.group(0), m.group(1)), text)
    text = re.sub(r"\{([^}]*)\}", r"\1", text)
    text = re.sub(r"(?<![A-Za-z])u(?=[gLlm]|mol)", "µ", text)
    return re.sub(r"(?<=[a-zA-Z])([23])(?![0-9])", lambda m: m.group(1).translate(_SUPERSCRIPTS), text)


# ---------------------------------------------------------------- helpers


def _fhirpath(expression: str) -> dict[str, str]:
    return {"language": "text/fhirpath", "expression": expression}


def _fhirpath_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _bound(value: Any, default: str) -> str:
    return default if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None and value != []}
