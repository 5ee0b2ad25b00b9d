"""study.yaml `safety:`, `fhir:` and `exports:`: which of the study's forms and items the engine reads, and as what.

The safety clocks, the safety summary and the FHIR export name no item of their own: they read these
definitions (edc.ecrf.definitions SafetyDef, FhirDef). Parsing records every form and item named, with its
line; `check` then resolves them against the loaded forms (latest version): an unknown form, an unknown item,
an item of the wrong type (a date element fed by an item that is no date, a grade that is no choice or
integer...), a group item where a top-level item is needed, a code that is not in the item's code list. The
keys are described in docs/forms.md §2.1 and §2.2. `exports: encrypted_items` names the encrypted items the
exports may carry (docs/forms.md §2.3); each must be encrypted and not identifying.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .definitions import (
    MAX_GRADE_KEYS,
    AdministrationDef,
    AdverseEventDef,
    AdverseEventItems,
    BelowLimitDef,
    CodedItemDef,
    CodingDef,
    ComponentDef,
    ConceptItemDef,
    ConditionDef,
    ConsentDef,
    CriterionDef,
    DrugsDef,
    FhirDef,
    GradedForm,
    GradeDef,
    ObservationDef,
    ProcedureDef,
    ProductDef,
    ProvisionDef,
    QuantityDef,
    ReviewItems,
    SafetyDef,
    Study,
    SuspectDef,
    ValueDef,
)
from .reading import BadValue, Fields, FileReader, identifier, identifiers, number, text
from .source import YamlList, YamlMap

# Terminologies a code may name by a short name (anything else: an absolute URI or a study code system).
SYSTEMS = {
    "snomed": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "ncit": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "atc": "http://www.whocc.no/atc",
    "ucum": "http://unitsofmeasure.org",
}
# http://terminology.hl7.org/CodeSystem/data-absent-reason (R4)
DATA_ABSENT_REASONS = ("unknown", "asked-unknown", "temp-unknown", "not-asked", "asked-declined", "masked",
                       "not-applicable", "unsupported", "as-text", "error", "not-a-number", "negative-infinity",
                       "positive-infinity", "not-performed", "not-permitted")
OBSERVATION_CATEGORIES = ("social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam",
                          "therapy", "activity")
CODE_SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # part of a resource id (ids join parts with "/")
PRODUCT_SUSPECT = "product"

# What an item must be (value kinds of edc.ecrf.definitions; YES_NO: a choice whose code list has yes and no).
DATE = ("date", "datetime")
DATETIME = ("datetime",)
CHOICE = ("choice",)
GRADE = ("choice", "integer")
NUMBER = ("integer", "decimal")
INTEGER = ("integer",)
TEXT = ("text",)
YES_NO = ("yes/no",)
ANY = ()
KIND_NAMES = {DATE: "a date or date-time item", DATETIME: "a date-time item", CHOICE: "a choice item",
              GRADE: "a choice or integer item", NUMBER: "an integer or decimal item", INTEGER: "an integer item",
              TEXT: "a text item"}


@dataclass
class _ItemUse:
    form: str
    item: str
    line: int
    what: str
    kinds: tuple[str, ...]
    group: str | None = None          # the repeating group the item must be in (None: top level)
    codes: tuple[str, ...] = ()        # codes that must be in the item's code list
    needs_unit: bool = False           # a Quantity without ucum: the item must have a unit


@dataclass
class _Ctx:
    form: str | None = None
    group: str | None = None


class MappingReader:
    """Parses `safety:` and `fhir:` of study.yaml, then checks them against the loaded forms."""

    def __init__(self, reader: FileReader) -> None:
        self.reader = reader
        self.items: list[_ItemUse] = []
        self.forms: list[tuple[str, int, str]] = []               # (form, line, what)
        self.groups: list[tuple[str, str, int, str]] = []         # (form, group, line, what)
        self.suspects: list[tuple[str, int, str]] = []
        self.focus: list[tuple[str, int, str]] = []
        self.absent: tuple[dict[str, str], int] | None = None
        self.parameters: list[tuple[str, int, str]] = []
        self.keys: set[str] = set()                                 # keys of fhir.procedures and fhir.drugs
        self.absent_codes: list[tuple[str, int, str]] = []         # missing-data codes named (value.unknown)
        self.safety: SafetyDef | None = None
        self.fhir: FhirDef | None = None
        self.exported: list[tuple[str, str, int]] = []             # (form, item, line) of exports.encrypted_items

    # ------------------------------------------------------------------ reading helpers

    def _fields(self, node: Any, line: int, what: str, allowed: set[str], required: tuple[str, ...] = ()) -> Fields | None:
        mapping = self.reader.mapping(node, line, what)
        return self.reader.fields(mapping, what, allowed, required) if mapping is not None else None

    def _form(self, f: Fields, key: str, what: str) -> str | None:
        form = f.get(key, identifier)
        if form is not None:
            self.forms.append((form, f.line(key), f"{what}.{key}"))
        return form

    def _item(self, f: Fields, key: str, ctx: _Ctx, what: str, kinds: tuple[str, ...], *,
              codes: tuple[str, ...] = (), needs_unit: bool = False) -> str | None:
        item = f.get(key, identifier)
        if item is not None and ctx.form is not None:
            self.items.append(_ItemUse(ctx.form, item, f.line(key), f"{what}.{key}", kinds, ctx.group, codes, needs_unit))
        return item

    def _items(self, f: Fields, key: str, ctx: _Ctx, what: str, kinds: tuple[str, ...], one_or_more: bool = False) -> tuple[str, ...]:
        value = f.node.get(key)
        parsed = f.get(key, _one_or_list if one_or_more else identifiers, ())
        if parsed and ctx.form is not None:
            lines = value.item_lines if isinstance(value, YamlList) else [f.line(key)] * len(parsed)
            for item, line in zip(parsed, lines, strict=False):
                self.items.append(_ItemUse(ctx.form, item, line, f"{what}.{key}", kinds, ctx.group))
        return parsed

    def _nested(self, f: Fields, key: str, parse: Callable[[Any, int, str], Any]) -> Any:
        return parse(f.node[key], f.line(key), f"{f.what}.{key}") if f.has(key) else None

    def _list(self, f: Fields, key: str, parse: Callable[[Any, int, str], Any]) -> tuple[Any, ...]:
        if not f.has(key):
            return ()
        entries = self.reader.sequence(f.node[key], f.line(key), f"{f.what}.{key}")
        parsed = (parse(entry, entries.item_line(index), f"{f.what}.{key}[{index + 1}]")
                  for index, entry in enumerate(entries or ()))
        return tuple(value for value in parsed if value is not None)

    def _coding(self, node: Any, line: int, what: str) -> CodingDef | None:
        f = self._fields(node, line, what, {"system", "code", "display"}, ("system", "code"))
        if f is None:
            return None
        system = f.get("system", _system)
        code = f.get("code", _code)
        display = f.get("display", text)
        if system is None or code is None:
            return None
        return CodingDef(SYSTEMS.get(system, system), code, display, local=system not in SYSTEMS and ":" not in system)

    def _codings(self, f: Fields, key: str) -> tuple[CodingDef, ...]:
        value = f.node.get(key)
        if isinstance(value, YamlMap):  # one code
            coding = self._coding(value, f.line(key), f"{f.what}.{key}")
            return (coding,) if coding else ()
        return self._list(f, key, self._coding)

    def _concepts(self, f: Fields, key: str) -> dict[str, CodingDef]:
        if not f.has(key):
            return {}
        node = self.reader.mapping(f.node[key], f.line(key), f"{f.what}.{key}")
        concepts = {}
        for code, value in (node or {}).items():
            coding = self._coding(value, node.key_line(code), f"{f.what}.{key}.{code}")
            if coding is not None:
                concepts[str(code)] = coding
        return concepts

    def _declared_key(self, f: Fields) -> str:
        """The key of a procedure or drugs entry, known to the suspects even when the entry itself is broken."""
        key = f.get("key", _key, "")
        self.keys.add(key)
        return key

    def _yes_no(self, f: Fields) -> tuple[str, str]:
        return f.get("yes_no", _yes_no, ("Y", "N"))

    # ------------------------------------------------------------------ safety:

    def read_safety(self, node: Any, line: int) -> SafetyDef | None:
        what = "safety"
        f = self._fields(node, line, what, {"yes_no", "adverse_events", "review", "max_grades"})
        if f is None:
            return None
        yes, no = self._yes_no(f)
        self.safety = SafetyDef(yes=yes, no=no, line=line,
                                adverse_events=self._nested(f, "adverse_events", self._adverse_events),
                                review=self._nested(f, "review", self._review),
                                max_grades=self._max_grades(f))
        if self.safety.review is not None and self.safety.adverse_events is None:
            f.error("review", "safety.review needs safety.adverse_events (the events it reviews)")
        return self.safety

    def _adverse_events(self, node: Any, line: int, what: str) -> AdverseEventItems | None:
        f = self._fields(node, line, what, {"form", "grade", "serious", "awareness", "causality",
                                            "fatal_or_life_threatening"}, ("form",))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        if f.has("awareness"):
            self.parameters.append(("sae_report_hours", f.line("awareness"), "the SAE report clock"))
        return AdverseEventItems(
            form=ctx.form or "", grade=self._item(f, "grade", ctx, what, GRADE),
            serious=self._item(f, "serious", ctx, what, YES_NO),
            awareness=self._item(f, "awareness", ctx, what, DATETIME),
            causality=self._item(f, "causality", ctx, what, CHOICE),
            fatal_or_life_threatening=self._items(f, "fatal_or_life_threatening", ctx, what, YES_NO))

    def _review(self, node: Any, line: int, what: str) -> ReviewItems | None:
        f = self._fields(node, line, what, {"form", "adverse_event", "expected", "first_knowledge", "submitted"},
                         ("form", "adverse_event"))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        if f.has("first_knowledge"):
            self.parameters += [(name, f.line("first_knowledge"), "the SUSAR clock")
                                for name in ("susar_fatal_days", "susar_other_days", "suspected_related_codes")]
        return ReviewItems(form=ctx.form or "", adverse_event=self._item(f, "adverse_event", ctx, what, TEXT) or "",
                           expected=self._item(f, "expected", ctx, what, YES_NO),
                           first_knowledge=self._item(f, "first_knowledge", ctx, what, DATETIME),
                           submitted=self._item(f, "submitted", ctx, what, DATETIME))

    def _max_grades(self, f: Fields) -> dict[str, GradedForm]:
        if not f.has("max_grades"):
            return {}
        node = self.reader.mapping(f.node["max_grades"], f.line("max_grades"), "safety.max_grades")
        graded = {}
        for name, spec in (node or {}).items():
            what = f"safety.max_grades.{name}"
            if name not in MAX_GRADE_KEYS:
                self.reader.error(node.key_line(name), f"{what}: the summary keeps the maximum grades "
                                                       f"{', '.join(MAX_GRADE_KEYS)}, not {name!r}")
                continue
            g = self._fields(spec, node.key_line(name), what, {"form", "grades"}, ("form", "grades"))
            if g is None:
                continue
            ctx = _Ctx(self._form(g, "form", what))
            graded[name] = GradedForm(ctx.form or "", self._items(g, "grades", ctx, what, GRADE))
        return graded

    # ------------------------------------------------------------------ fhir:

    def read_fhir(self, node: Any, line: int) -> FhirDef | None:
        what = "fhir"
        f = self._fields(node, line, what, {"yes_no", "data_absent_reasons", "condition", "consent", "procedures",
                                            "drugs", "product", "observations", "adverse_event"})
        if f is None:
            return None
        yes, no = self._yes_no(f)
        absent = f.get("data_absent_reasons", _absent_reasons, {})
        if absent:
            self.absent = (absent, f.line("data_absent_reasons"))
        self.fhir = FhirDef(
            yes=yes, no=no, absent_reasons=absent, line=line,
            condition=self._nested(f, "condition", self._condition), consent=self._nested(f, "consent", self._consent),
            procedures=self._list(f, "procedures", self._procedure), drugs=self._list(f, "drugs", self._drugs),
            product=self._nested(f, "product", self._product),
            observations=self._list(f, "observations", lambda n, ln, w: self._observation(n, ln, w, None)),
            adverse_event=self._nested(f, "adverse_event", self._adverse_event))
        keys = [p.key for p in self.fhir.procedures] + [d.key for d in self.fhir.drugs]
        for duplicate in sorted({key for key in keys if keys.count(key) > 1}):
            self.reader.error(line, f"fhir: procedures and drugs share the key {duplicate!r}; give each its own")
        return self.fhir

    def read_exports(self, node: Any, line: int) -> dict[str, frozenset[str]]:
        """Parse `exports:`; return the encrypted items the exports carry, form id -> item ids (default none)."""
        f = self._fields(node, line, "exports", {"encrypted_items"})
        if f is None or not f.has("encrypted_items"):
            return {}
        forms = self.reader.mapping(f.node["encrypted_items"], f.line("encrypted_items"), "exports.encrypted_items")
        if forms is None:
            return {}
        per_form = Fields(self.reader, forms, "exports.encrypted_items")
        released: dict[str, frozenset[str]] = {}
        for form_id in forms:
            items = per_form.get(form_id, identifiers, ())
            released[str(form_id)] = frozenset(items)
            self.exported += [(str(form_id), item, forms.key_line(form_id)) for item in items]
        return released

    def _condition(self, node: Any, line: int, what: str) -> ConditionDef | None:
        f = self._fields(node, line, what, {"key", "code", "text", "form", "onset", "prior_relapses", "response",
                                            "relapse_forms"}, ("key", "code", "text"))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        if ctx.form is None and (f.has("onset") or f.has("prior_relapses")):
            f.error(None, f"{what}: onset and prior_relapses are items of the diagnosis form: give form")
        condition = ConditionDef(key=f.get("key", _key, "condition"), code=self._codings(f, "code"),
                                 text=f.get("text", text, ""), form=ctx.form,
                                 onset=self._item(f, "onset", ctx, what, DATE),
                                 prior_relapses=self._item(f, "prior_relapses", ctx, what, INTEGER))
        if f.has("response"):
            r = self._fields(f.node["response"], f.line("response"), f"{what}.response",
                             {"form", "item", "remission", "relapse"}, ("form", "item"))
            if r is not None:
                response_ctx = _Ctx(self._form(r, "form", f"{what}.response"))
                condition.remission = r.get("remission", _codes, ())
                condition.relapse = r.get("relapse", _codes, ())
                condition.response_form = response_ctx.form
                condition.response_item = self._item(r, "item", response_ctx, f"{what}.response", CHOICE,
                                                     codes=condition.remission + condition.relapse)
        condition.relapse_forms = f.get("relapse_forms", identifiers, ())
        self.forms += [(form, f.line("relapse_forms"), f"{what}.relapse_forms") for form in condition.relapse_forms]
        return condition

    def _consent(self, node: Any, line: int, what: str) -> ConsentDef | None:
        f = self._fields(node, line, what, {"form", "date", "version", "provisions"}, ("form",))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))

        def provision(entry: Any, entry_line: int, entry_what: str) -> ProvisionDef | None:
            p = self._fields(entry, entry_line, entry_what, {"item", "text"}, ("item", "text"))
            if p is None:
                return None
            item = self._item(p, "item", ctx, entry_what, YES_NO)
            return ProvisionDef(item, p.get("text", text, "")) if item else None

        return ConsentDef(form=ctx.form or "", date=self._item(f, "date", ctx, what, DATE),
                          version=self._item(f, "version", ctx, what, ANY), provisions=self._list(f, "provisions", provision))

    def _procedure(self, node: Any, line: int, what: str) -> ProcedureDef | None:
        f = self._fields(node, line, what, {"key", "form", "code", "text", "date", "complication", "complication_text"},
                         ("key", "form", "code"))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        code = self._nested(f, "code", self._coding)
        procedure = ProcedureDef(key=self._declared_key(f), form=ctx.form or "", code=code,
                                 text=f.get("text", text), date=self._item(f, "date", ctx, what, DATE),
                                 complication=self._item(f, "complication", ctx, what, YES_NO),
                                 complication_text=f.get("complication_text", text))
        if procedure.complication and not procedure.complication_text:
            f.error("complication", f"{what}: a complication needs complication_text (no free text is sent)")
        return procedure if code and procedure.key else None

    def _drugs(self, node: Any, line: int, what: str) -> DrugsDef | None:
        f = self._fields(node, line, what, {"key", "form", "group", "drug", "codes", "concepts", "date", "dose",
                                            "dose_per_m2", "body_surface_area", "route"},
                         ("key", "form", "group", "drug", "codes", "date"))
        if f is None:
            return None
        top = _Ctx(self._form(f, "form", what))
        group = f.get("group", identifier)
        if group and top.form:
            self.groups.append((top.form, group, f.line("group"), f"{what}.group"))
        rows = _Ctx(top.form, group)
        concepts = self._concepts(f, "concepts")
        drugs = DrugsDef(key=self._declared_key(f), form=top.form or "", group=group or "",
                         drug=self._item(f, "drug", rows, what, CHOICE, codes=tuple(concepts)) or "",
                         codes=f.get("codes", _code_system, ""), date=self._item(f, "date", rows, what, DATE) or "",
                         concepts=concepts, dose=self._nested(f, "dose", lambda n, ln, w: self._quantity(n, ln, w, rows)),
                         dose_per_m2=self._item(f, "dose_per_m2", rows, what, NUMBER, needs_unit=True),
                         body_surface_area=self._item(f, "body_surface_area", top, what, NUMBER, needs_unit=True),
                         route=self._nested(f, "route", self._coding))
        return drugs if drugs.key and group else None

    def _quantity(self, node: Any, line: int, what: str, ctx: _Ctx) -> QuantityDef | None:
        f = self._fields(node, line, what, {"item", "unit", "ucum", "text", "not_recorded"}, ("item",))
        if f is None:
            return None
        item = self._item(f, "item", ctx, what, NUMBER, needs_unit=not f.has("ucum"))
        return QuantityDef(item=item, unit=f.get("unit", text), ucum=f.get("ucum", text), text=f.get("text", text),
                           not_recorded=f.get("not_recorded", text)) if item else None

    def _product(self, node: Any, line: int, what: str) -> ProductDef | None:
        f = self._fields(node, line, what, {"key", "code", "text", "form", "batch", "chain_of_identity", "route",
                                            "administration"}, ("key", "code", "text"))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        if ctx.form is None and (f.has("batch") or f.has("chain_of_identity")):
            f.error(None, f"{what}: batch and chain_of_identity are items of the manufacturing form: give form")
        code = self._nested(f, "code", self._coding)
        product = ProductDef(key=f.get("key", _key, ""), code=code, text=f.get("text", text, ""), form=ctx.form,
                             batch=self._item(f, "batch", ctx, what, ANY),
                             chain_of_identity=self._item(f, "chain_of_identity", ctx, what, ANY),
                             route=self._nested(f, "route", self._coding),
                             administration=self._nested(f, "administration", self._administration))
        return product if code and product.key else None

    def _administration(self, node: Any, line: int, what: str) -> AdministrationDef | None:
        f = self._fields(node, line, what, {"form", "chain_of_identity", "number", "label", "given", "not_given_text",
                                            "date", "dose", "dose_per_kg", "weight"}, ("form", "date"))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        administration = AdministrationDef(
            form=ctx.form or "", date=self._item(f, "date", ctx, what, DATE) or "",
            chain_of_identity=self._item(f, "chain_of_identity", ctx, what, ANY),
            number=self._item(f, "number", ctx, what, INTEGER), label=f.get("label", text),
            given=self._item(f, "given", ctx, what, YES_NO), not_given_text=f.get("not_given_text", text),
            dose=self._nested(f, "dose", lambda n, ln, w: self._quantity(n, ln, w, ctx)),
            dose_per_kg=self._nested(f, "dose_per_kg", lambda n, ln, w: self._quantity(n, ln, w, ctx)),
            weight=self._nested(f, "weight", lambda n, ln, w: self._quantity(n, ln, w, ctx)))
        if administration.given and not administration.not_given_text:
            f.error("given", f"{what}: given needs not_given_text (the status reason of one not given)")
        return administration

    def _observation(self, node: Any, line: int, what: str, parent: _Ctx | None) -> ObservationDef | None:
        allowed = {"key", "category", "code", "text", "date", "value", "done", "method", "components", "focus",
                   "members"} | ({"form"} if parent is None else set())
        f = self._fields(node, line, what, allowed, ("key", "category", "code", "value") + (("form",) if parent is None else ()))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what)) if parent is None else parent
        focus = f.get("focus", _focus)
        if focus:
            self.focus.append((focus, f.line("focus"), f"{what}.focus"))
        value = self._nested(f, "value", lambda n, ln, w: self._value(n, ln, w, ctx))
        method = None
        if f.has("method"):
            m = self._fields(f.node["method"], f.line("method"), f"{what}.method", {"item", "codes"}, ("item", "codes"))
            if m is not None:
                item = self._item(m, "item", ctx, f"{what}.method", CHOICE)
                codes = m.get("codes", _code_system)
                method = CodedItemDef(item, codes) if item and codes else None
        observation = ObservationDef(
            key=f.get("key", _key, ""), form=ctx.form or "",
            category=f.get("category", _category, "exam"), code=self._codings(f, "code"), value=value,
            text=f.get("text", text), date=self._items(f, "date", ctx, what, DATE, one_or_more=True),
            done=self._item(f, "done", ctx, what, YES_NO), method=method,
            components=self._list(f, "components", lambda n, ln, w: self._component(n, ln, w, ctx)), focus=focus,
            members=self._list(f, "members", lambda n, ln, w: self._observation(n, ln, w, ctx)))
        return observation if observation.key and value is not None else None

    def _component(self, node: Any, line: int, what: str, ctx: _Ctx) -> ComponentDef | None:
        f = self._fields(node, line, what, {"code", "text", "value"}, ("code", "value"))
        if f is None:
            return None
        value = self._nested(f, "value", lambda n, ln, w: self._value(n, ln, w, ctx))
        return ComponentDef(self._codings(f, "code"), value, f.get("text", text)) if value else None

    def _value(self, node: Any, line: int, what: str, ctx: _Ctx) -> ValueDef | None:
        f = self._fields(node, line, what, {"item", "codes", "text", "boolean", "unit", "ucum", "below_limit", "unknown"},
                         ("item",))
        if f is None:
            return None
        kinds = {"codes", "boolean"} & set(f.node)
        quantity = bool({"unit", "ucum", "below_limit"} & set(f.node))
        if len(kinds) + quantity > 1:
            f.error(None, f"{what}: give one of codes (a coded value), boolean: true, or unit/ucum (a quantity)")
        if f.has("text") and not f.has("codes"):
            f.error("text", f"{what}: text: true is the label of a coded value; it needs codes")
        if f.has("boolean") and f.node["boolean"] is not True:
            f.error("boolean", f"{what}: boolean: write true, or leave it out")
        expected = CHOICE if f.has("codes") else YES_NO if f.has("boolean") else NUMBER if quantity else INTEGER
        value = ValueDef(item=self._item(f, "item", ctx, what, expected, needs_unit=quantity and not f.has("ucum")) or "",
                         codes=f.get("codes", _code_system), text=f.get("text", _true, False),
                         boolean=f.has("boolean"), unit=f.get("unit", text), ucum=f.get("ucum", text),
                         unknown=f.get("unknown", identifier))
        if f.has("unknown"):
            self.absent_codes.append((value.unknown, f.line("unknown"), f"{what}.unknown"))
        if f.has("below_limit"):
            b = self._fields(f.node["below_limit"], f.line("below_limit"), f"{what}.below_limit",
                             {"flag", "limit", "factor"}, ("flag", "limit"))
            if b is not None:
                flag = self._item(b, "flag", ctx, f"{what}.below_limit", YES_NO)
                limit = self._item(b, "limit", ctx, f"{what}.below_limit", NUMBER)
                value.below_limit = BelowLimitDef(flag, limit, b.get("factor", number, 1)) if flag and limit else None
        return value if value.item else None

    def _adverse_event(self, node: Any, line: int, what: str) -> AdverseEventDef | None:
        f = self._fields(node, line, what, {"form", "term", "category", "start", "awareness", "end", "ongoing", "grade",
                                            "seriousness", "causality", "outcome"}, ("form",))
        if f is None:
            return None
        ctx = _Ctx(self._form(f, "form", what))
        event = AdverseEventDef(
            form=ctx.form or "", term=self._item(f, "term", ctx, what, TEXT),
            category=self._nested(f, "category", lambda n, ln, w: self._concept_item(n, ln, w, ctx)),
            start=self._item(f, "start", ctx, what, DATE), awareness=self._item(f, "awareness", ctx, what, DATE),
            end=self._item(f, "end", ctx, what, DATE), ongoing=self._item(f, "ongoing", ctx, what, YES_NO),
            outcome=self._nested(f, "outcome", lambda n, ln, w: self._concept_item(n, ln, w, ctx)))
        if f.has("grade"):
            g = self._fields(f.node["grade"], f.line("grade"), f"{what}.grade",
                             {"item", "scale", "codes", "codes_by_category", "concepts"}, ("item", "codes"))
            if g is not None:
                concepts = self._concepts(g, "concepts")
                by_category = g.get("codes_by_category", _codes_by, {})
                if by_category and event.category is None:
                    g.error("codes_by_category", f"{what}.grade: codes_by_category needs adverse_event.category")
                elif by_category and event.category:
                    self.items.append(_ItemUse(ctx.form, event.category.item, g.line("codes_by_category"),
                                               f"{what}.grade.codes_by_category", CHOICE, None, tuple(by_category)))
                item = self._item(g, "item", ctx, f"{what}.grade", GRADE, codes=tuple(concepts))
                event.grade = GradeDef(item=item, codes=g.get("codes", _code_system, ""),
                                       scale=self._item(g, "scale", ctx, f"{what}.grade", ANY),
                                       codes_by_category=by_category, concepts=concepts) if item else None
        if f.has("seriousness"):
            s = self._fields(f.node["seriousness"], f.line("seriousness"), f"{what}.seriousness",
                             {"codes", "criteria"}, ("codes", "criteria"))
            if s is not None:
                event.seriousness_codes = s.get("codes", _code_system, event.seriousness_codes)

                def criterion(entry: Any, entry_line: int, entry_what: str) -> CriterionDef | None:
                    c = self._fields(entry, entry_line, entry_what, {"item", "concept"}, ("item",))
                    item = self._item(c, "item", ctx, entry_what, YES_NO) if c else None
                    return CriterionDef(item, self._nested(c, "concept", self._coding)) if item else None

                event.criteria = self._list(s, "criteria", criterion)
        if f.has("causality"):
            c = self._fields(f.node["causality"], f.line("causality"), f"{what}.causality",
                             {"codes", "concepts", "suspects"}, ("codes", "concepts", "suspects"))
            if c is not None:
                event.causality_codes = c.get("codes", _code_system, event.causality_codes)
                event.causality_concepts = self._concepts(c, "concepts")

                def suspect(entry: Any, entry_line: int, entry_what: str) -> SuspectDef | None:
                    s = self._fields(entry, entry_line, entry_what, {"item", "suspect"}, ("item", "suspect"))
                    if s is None:
                        return None
                    item = self._item(s, "item", ctx, entry_what, CHOICE, codes=tuple(event.causality_concepts))
                    name = s.get("suspect", _key)
                    if name:
                        self.suspects.append((name, s.line("suspect"), f"{entry_what}.suspect"))
                    return SuspectDef(item, name) if item and name else None

                event.suspects = self._list(c, "suspects", suspect)
        return event

    def _concept_item(self, node: Any, line: int, what: str, ctx: _Ctx) -> ConceptItemDef | None:
        f = self._fields(node, line, what, {"item", "codes", "concepts"}, ("item", "codes"))
        if f is None:
            return None
        concepts = self._concepts(f, "concepts")
        item = self._item(f, "item", ctx, what, CHOICE, codes=tuple(concepts))
        return ConceptItemDef(item, f.get("codes", _code_system, ""), concepts) if item else None

    # ------------------------------------------------------------------ checking against the forms

    def check(self, study: Study) -> None:
        """Report what the sections name that the loaded forms do not have (or have of the wrong type)."""
        error = self.reader.error
        for form, line, what in self.forms:
            if form not in study.all_forms:
                error(line, f"{what}: unknown form {form!r}")
        for form, group, line, what in self.groups:
            if form in study.all_forms and group not in study.form(form).groups:
                error(line, f"{what}: form {form!r} has no repeating group {group!r}")
        for use in self.items:
            self._check_item(study, use)
        for name, line, what in self.suspects:
            if name == PRODUCT_SUSPECT:
                if self.fhir is None or self.fhir.product is None:
                    error(line, f"{what}: the suspect {PRODUCT_SUSPECT!r} needs fhir.product")
            elif name not in self.keys:
                error(line, f"{what}: {name!r} is not {PRODUCT_SUSPECT!r} nor the key of one of fhir.procedures or fhir.drugs")
        for name, line, what in self.focus:
            if name == "condition" and (self.fhir is None or self.fhir.condition is None):
                error(line, f"{what}: focus condition needs fhir.condition")
        if self.absent is not None:
            reasons, line = self.absent
            for code in reasons:
                if code not in study.missing_codes:
                    error(line, f"fhir.data_absent_reasons: {code!r} is not one of the study's missing_codes")
        for code, line, what in self.absent_codes:
            if code not in study.missing_codes:
                error(line, f"{what}: {code!r} is not one of the study's missing_codes")
        for name, line, needed_by in self.parameters:
            if name not in study.parameters:
                error(line, f"safety: {needed_by} needs the parameter {name!r} in parameters")
        for form_id, item_id, line in self.exported:
            self._check_exported(study, form_id, item_id, line)

    def _check_exported(self, study: Study, form_id: str, item_id: str, line: int) -> None:
        versions = study.all_forms.get(form_id)
        if versions is None:
            self.reader.error(line, f"exports.encrypted_items: unknown form {form_id!r}")
            return
        items = [form.items[item_id] for form in versions.values() if item_id in form.items]
        if not items:
            self.reader.error(line, f"exports.encrypted_items: form {form_id!r} has no item {item_id!r}")
        elif any(item.identifying for item in items):
            self.reader.error(line, f"exports.encrypted_items: {form_id}.{item_id} is identifying: it never leaves the site")
        elif not any(item.encrypt for item in items):
            self.reader.error(line, f"exports.encrypted_items: {form_id}.{item_id} is not encrypted (exports carry it anyway)")

    def _check_item(self, study: Study, use: _ItemUse) -> None:
        if use.form not in study.all_forms:
            return  # reported once, as an unknown form
        form = study.form(use.form)
        item = form.items.get(use.item)
        where = f"{use.form}.{use.item}"
        if item is None:
            kind = "repeating group" if use.item in form.groups else None
            self.reader.error(use.line, f"{use.what}: form {use.form!r} has no item {use.item!r}"
                                        + (f" ({use.item} is a {kind}; name an item)" if kind else ""))
            return
        if use.group is None and item.group is not None:
            self.reader.error(use.line, f"{use.what}: {where} is an item of the repeating group {item.group!r}; "
                                        "name a top-level item")
            return
        if use.group is not None and use.group not in form.groups:
            return  # reported once, as an unknown group
        if use.group is not None and item.group != use.group:
            self.reader.error(use.line, f"{use.what}: {where} is not an item of the repeating group {use.group!r}")
            return
        kind = item.value_kind
        yes_no = self.fhir if use.what.startswith("fhir") else self.safety
        if use.kinds == YES_NO:
            codes = set((item.code_list or {}))
            wanted = (yes_no.yes, yes_no.no) if yes_no else ("Y", "N")
            if kind != "choice" or not set(wanted) <= codes:
                self.reader.error(use.line, f"{use.what}: {where} is a {kind} item; it must be a yes/no choice "
                                            f"(codes {wanted[0]} and {wanted[1]}, see yes_no)")
            return
        if use.kinds and kind not in use.kinds:
            self.reader.error(use.line, f"{use.what}: {where} is a {kind} item; it must be {KIND_NAMES[use.kinds]}")
            return
        if use.codes and item.code_list is not None:
            unknown = [code for code in use.codes if code not in item.code_list]
            if unknown:
                self.reader.error(use.line, f"{use.what}: {', '.join(map(repr, unknown))} not in the code list of {where}")
        if use.needs_unit and not item.unit:
            self.reader.error(use.line, f"{use.what}: {where} has no unit; give its UCUM code (ucum)")


def _system(value: Any) -> str:
    if not isinstance(value, str) or not (value in SYSTEMS or ":" in value or CODE_SYSTEM_NAME.fullmatch(value)):
        raise BadValue(f"{value!r} is not {', '.join(SYSTEMS)}, an absolute URI or a code system name")
    return value


def _code(value: Any) -> str:
    if type(value) is int:
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadValue("must be a code (quote a code that YAML would read as a number, e.g. '1')")
    return value


def _codes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BadValue("must be a list of codes")
    return tuple(_code(code) for code in value)


def _key(value: Any) -> str:
    if not isinstance(value, str) or not KEY.fullmatch(value):
        raise BadValue(f"{value!r} is not a key (letters, digits, '.', '_' or '-')")
    return value


def _code_system(value: Any) -> str:
    if not isinstance(value, str) or not CODE_SYSTEM_NAME.fullmatch(value):
        raise BadValue(f"{value!r} is not a code system name (letters, digits and '-')")
    return value


def _codes_by(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise BadValue("must map codes to code system names")
    return {_code(code): _code_system(name) for code, name in value.items()}


def _one_or_list(value: Any) -> tuple[str, ...]:
    return (identifier(value),) if isinstance(value, str) else identifiers(value)


def _yes_no(value: Any) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2 or value[0] == value[1]:
        raise BadValue("must be [<yes code>, <no code>], e.g. [Y, N]")
    return _code(value[0]), _code(value[1])


def _absent_reasons(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadValue("must map the study's missing-data codes to data-absent-reason codes")
    for code, reason in value.items():
        if reason not in DATA_ABSENT_REASONS:
            raise BadValue(f"{code}: {reason!r} is not a data-absent-reason code ({', '.join(DATA_ABSENT_REASONS)})")
    return {str(code): reason for code, reason in value.items()}


def _category(value: Any) -> str:
    if value not in OBSERVATION_CATEGORIES:
        raise BadValue(f"{value!r} is not an observation category ({', '.join(OBSERVATION_CATEGORIES)})")
    return value


def _focus(value: Any) -> str:
    if value != "condition":
        raise BadValue("the one focus is condition (the subject's Condition)")
    return value


def _true(value: Any) -> bool:
    if value is not True:
        raise BadValue("write true, or leave it out")
    return True
