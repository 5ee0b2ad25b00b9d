"""Build one FormDef from one form file, reporting every problem as file:line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .definitions import CAPTURED_TYPES, COMPUTED_TYPES, NUMERIC_TYPES, CheckDef, FormDef, GroupDef, ItemDef, SectionDef
from .derivations import derivation_rechecked, get_derivation, get_derivation_note
from .expressions import FUNCTIONS, KNOWN_FUNCTIONS, SUBJECT_FACTS, Expression, ExpressionError, cel_constant, compile_expression
from .reading import (
    BadValue,
    Fields,
    FileReader,
    boolean,
    identifier,
    identifiers,
    iso_date,
    non_negative,
    number,
    one_of,
    positive,
    text,
    version,
)
from .source import YamlList, YamlMap, content_hash, plain

FORM_KEYS = {"id", "version", "title", "description", "repeating", "missing_codes", "codelists", "sections", "checks"}
SECTION_KEYS = {"id", "title", "items"}
CHECK_KEYS = {"id", "assert", "message", "severity", "items", "critical", "scope"}
CODE_KEYS = {"code", "label"}
_COMMON_KEYS = {"id", "type", "label", "help", "show_if"}
_CAPTURED_KEYS = {"required", "missing_codes", "encrypt", "identifying", "encrypt_reason"}
_RANGE_KEYS = {"min", "max", "soft_min", "soft_max", "unit"}
_VALUE_KEYS = {
    "text": {"max_length", "pattern"},
    "integer": _RANGE_KEYS,
    "decimal": _RANGE_KEYS | {"precision"},
    "date": {"min", "max", "partial", "not_future"},
    "datetime": {"not_future"},
    "boolean": set(),
    "choice": {"code_list"},
    "multichoice": {"code_list"},
}
_COMPUTED_VALUE_TYPES = ("integer", "decimal", "text", "date", "datetime", "boolean", "choice")
_COMPUTED_KEYS = {"calculated": {"expression", "value_type"}, "derived": {"derivation", "inputs", "params", "value_type"}}
_GROUP_KEYS = {"id", "type", "label", "help", "show_if", "required", "missing_codes", "max_rows", "items", "checks"}
_UNIT_KEYS = {"code", "display"}
_CAPTURE_ONLY_KEYS = {"partial", "not_future", "pattern", "max_length"}


@dataclass
class StudyBasics:
    """What a form file needs from the study: languages, codes, shared code lists, parameters, settings."""

    study_id: str
    canonical_url: str
    languages: tuple[str, ...]
    missing_codes: tuple[str, ...]
    missing_code_labels: dict[str, dict[str, str]]
    code_lists: dict[str, dict[str, dict[str, str]]]
    parameters: dict[str, Any]
    text_max_length: int
    max_group_rows: int


@dataclass
class PendingExpression:
    """An expression whose names are checked once every item of the form is known."""

    program: Expression
    line: int
    role: str               # "show_if", "calculated" or "check"
    group: str | None       # row scope of this group, or None for the form level
    owner: Any              # the ItemDef, GroupDef or CheckDef it belongs to


@dataclass
class FormBuild:
    """A form under construction, plus what the static checks need afterwards."""

    form: FormDef
    expressions: list[PendingExpression] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)       # ids whose definitions are invalid
    reader: FileReader | None = None


def parse_code_list(reader: FileReader, value: Any, line: int, what: str) -> dict[str, dict[str, str]] | None:
    """Parse a code list: a list of {code, label}; codes are distinct strings."""
    entries = reader.sequence(value, line, what)
    if entries is None:
        return None
    if not entries:
        reader.error(line, f"{what} has no codes")
    codes: dict[str, dict[str, str]] = {}
    for index, entry in enumerate(entries):
        node = reader.mapping(entry, entries.item_line(index), f"a code of {what}")
        if node is None:
            continue
        fields = reader.fields(node, f"a code of {what}", CODE_KEYS, CODE_KEYS)
        code = fields.get("code", _code)
        label = fields.get("label", reader.labels)
        if code is None:
            continue
        if code in codes:
            fields.error("code", f"duplicate code {code!r} in {what}")
        codes[code] = label or {"en": code}
    return codes


def _code(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadValue("must be a string (quote codes such as 'NO', 'Y' or '1' so YAML keeps them as text)")
    return value


class FormFileBuilder:
    """Reads one form file; `build()` returns a FormBuild (its problems go to the reader)."""

    def __init__(self, reader: FileReader, basics: StudyBasics, node: Any, *, form_dir: str, file_version: str):
        self.reader = reader
        self.basics = basics
        self.node = node
        self.form_dir = form_dir
        self.file_version = file_version
        self.ids: dict[str, int] = {}                 # item, group and section ids -> first line
        self.items: dict[str, ItemDef] = {}
        self.groups: dict[str, GroupDef] = {}
        self.checks: list[CheckDef] = []
        self.local_code_lists: dict[str, dict[str, dict[str, str]]] = {}
        self.used_shared_lists: set[str] = set()
        self.pending: list[PendingExpression] = []
        self.broken: set[str] = set()
        self.top_level: list[str] = []
        self.form_missing_codes: tuple[str, ...] = basics.missing_codes

    # ------------------------------------------------------------ form

    def build(self) -> FormBuild | None:
        """Parse, check and compile the form file."""
        node = self.reader.mapping(self.node, getattr(self.node, "line", 1), "a form file")
        if node is None:
            return None
        fields = self.reader.fields(node, "the form", FORM_KEYS, ("id", "version", "title", "sections"))
        form_id = fields.get("id", identifier)
        form_version = fields.get("version", version)
        if form_id is not None and form_id != self.form_dir:
            fields.error("id", f"form id {form_id!r} does not match its directory {self.form_dir!r}")
        if form_version is not None and form_version != self.file_version:
            fields.error("version", f"version {form_version!r} does not match its file name {self.file_version!r}.yaml")
        self.form_missing_codes = fields.get("missing_codes", self._missing_codes, self.basics.missing_codes)
        if fields.has("codelists"):
            self._local_code_lists(fields)
        sections = self._sections(fields) if fields.has("sections") else []
        if fields.has("checks"):
            self._checks(fields.node["checks"], fields.line("checks"), None)
        self._check_expression_names()
        plan = self._plan()
        form = FormDef(
            id=self.form_dir, version=self.file_version,  # the path is authoritative; a mismatch is reported
            title=fields.get("title", self.reader.labels, {"en": self.form_dir}),
            description=fields.get("description", self.reader.labels, {}),
            repeating=fields.get("repeating", boolean, False),
            items=self.items, groups=self.groups, sections=sections, checks=self.checks,
            content_hash=content_hash(plain(node), self._shared_lists_used()),
            source=self.reader.file, missing_codes=self.form_missing_codes,
            study_id=self.basics.study_id, canonical_url=self.basics.canonical_url,
            top_level=tuple(self.top_level), plan=plan,
            soft_items=tuple(item for item in self.items.values() if item.soft_min is not None or item.soft_max is not None),
            noted_items=tuple(item for item in self.items.values()
                              if item.type == "derived" and get_derivation_note(item.derivation or "") is not None),
            rechecked_items=tuple(item for item in self.items.values()
                                  if item.type == "derived" and derivation_rechecked(item.derivation or "")),
            missing_code_labels=self.basics.missing_code_labels, text_max_length=self.basics.text_max_length,
        )
        return FormBuild(form, self.pending, self.broken, self.reader)

    def _shared_lists_used(self) -> dict[str, Any]:
        # A shared code list is part of the form's content: changing it changes the hash of every form using it.
        return {name: self.basics.code_lists[name] for name in sorted(self.used_shared_lists)}

    def _missing_codes(self, value: Any) -> tuple[str, ...]:
        codes = identifiers(value)
        unknown = [code for code in codes if code not in self.basics.missing_codes]
        if unknown:
            raise BadValue(f"unknown missing-data code {unknown[0]!r} (the study defines {', '.join(self.basics.missing_codes)})")
        return codes

    def _local_code_lists(self, fields: Fields) -> None:
        lists = self.reader.mapping(fields.node["codelists"], fields.line("codelists"), "codelists")
        if lists is None:
            return
        for key, line in lists.duplicate_keys:
            self.reader.error(line, f"duplicate code list {key!r}")
        for name, entries in lists.items():
            try:
                identifier(name)
            except BadValue as exc:
                self.reader.error(lists.key_line(name), f"code list name: {exc}")
                continue
            if name in self.basics.code_lists:
                self.reader.error(lists.key_line(name), f"code list {name!r} is already defined in codelists.yaml")
            parsed = parse_code_list(self.reader, entries, lists.key_line(name), f"code list {name!r}")
            if parsed is not None:
                self.local_code_lists[name] = parsed

    def _sections(self, fields: Fields) -> list[SectionDef]:
        entries = self.reader.sequence(fields.node["sections"], fields.line("sections"), "sections")
        sections = []
        for index, entry in enumerate(entries or ()):
            node = self.reader.mapping(entry, entries.item_line(index), "a section")
            if node is None:
                continue
            section_fields = self.reader.fields(node, "a section", SECTION_KEYS, ("id", "items"))
            section_id = section_fields.get("id", identifier)
            self._claim(section_id, section_fields.line("id"))
            members = self._items(section_fields, group=None)
            sections.append(SectionDef(section_id or f"section{index + 1}",
                                       section_fields.get("title", self.reader.labels, {}), tuple(members), node.line))
        return sections

    def _claim(self, item_id: str | None, line: int) -> None:
        if item_id is None:
            return
        if item_id in self.ids:
            self.reader.error(line, f"duplicate id {item_id!r} (first defined at line {self.ids[item_id]})")
        else:
            self.ids[item_id] = line

    # ------------------------------------------------------------ items

    def _items(self, fields: Fields, group: str | None) -> list[str]:
        entries = self.reader.sequence(fields.node.get("items"), fields.line("items"), "items") if fields.has("items") else None
        members = []
        for index, entry in enumerate(entries or ()):
            node = self.reader.mapping(entry, entries.item_line(index), "an item")
            if node is None:
                continue
            item_id = self._item_or_group(node, group)
            if item_id is not None:
                members.append(item_id)
        if group is None:
            self.top_level.extend(members)
        return members

    def _item_or_group(self, node: YamlMap, group: str | None) -> str | None:
        kind = node.get("type")
        if kind == "group":
            if group is not None:
                self.reader.error(node.key_line("type"), f"group {group!r} cannot contain another group")
                return None
            return self._group(node)
        return self._item(node, group)

    def _item(self, node: YamlMap, group: str | None) -> str | None:
        kind = node.get("type")
        allowed = set(_COMMON_KEYS)
        if kind in CAPTURED_TYPES:
            allowed |= _CAPTURED_KEYS | _VALUE_KEYS[kind]
        elif kind in COMPUTED_TYPES:
            value_type = node.get("value_type")
            allowed |= _COMPUTED_KEYS[kind] | (_VALUE_KEYS.get(value_type, set()) - _CAPTURE_ONLY_KEYS)
        else:  # an unknown type is reported once; its other keys cannot be judged
            allowed |= set(node)
        what = f"item {node.get('id')!r}" if isinstance(node.get("id"), str) else "an item"
        what += f" (type {kind})" if isinstance(kind, str) else ""
        fields = self.reader.fields(node, what, allowed, ("id", "type", "label"))
        item_id = fields.get("id", identifier)
        self._claim(item_id, fields.line("id"))
        type_ok = fields.get("type", one_of(*CAPTURED_TYPES, *COMPUTED_TYPES, "group")) is not None
        if item_id is None:
            return None
        if not type_ok:
            self.broken.add(item_id)
            return item_id
        item = ItemDef(id=item_id, type=kind, label=fields.get("label", self.reader.labels, {"en": item_id}),
                       help=fields.get("help", self.reader.labels, {}), group=group, line=node.line)
        self._item_flags(item, fields)
        value_kind = fields.get("value_type", one_of(*_COMPUTED_VALUE_TYPES)) if item.computed else kind
        self._item_value_rules(item, fields, value_kind)
        self._item_computation(item, fields)
        if fields.has("show_if"):
            item.show_if = fields.get("show_if", text)
            item.show_if_program = self._compile(fields, "show_if", "show_if", group, item)
        self.items[item_id] = item
        return item_id

    def _item_flags(self, item: ItemDef, fields: Fields) -> None:
        item.required = fields.get("required", boolean, False)
        item.identifying = fields.get("identifying", boolean, False)
        item.encrypt = fields.get("encrypt", boolean, False) or item.identifying
        item.encrypt_reason = fields.get("encrypt_reason", text, "")
        if item.type == "text":
            self._check_text_protection(item, fields)
        item.not_future = fields.get("not_future", boolean, False)
        item.partial = fields.get("partial", one_of("year", "year-month"))
        item.missing_codes = () if item.computed else fields.get("missing_codes", self._missing_codes, self.form_missing_codes)

    @staticmethod
    def _check_text_protection(item: ItemDef, fields: Fields) -> None:
        # Free text can hold anything, identifiers included: it is encrypted unless the author says why not.
        if not (fields.has("encrypt") or fields.has("identifying")):
            fields.error(None, f"free-text item {item.id!r} must declare encrypt: true (or identifying: true), "
                               "or encrypt: false with an encrypt_reason")
        elif not item.encrypt and not item.encrypt_reason:
            fields.error("encrypt" if fields.has("encrypt") else "identifying", f"free-text item {item.id!r} is not encrypted: give the reason in encrypt_reason")

    def _item_value_rules(self, item: ItemDef, fields: Fields, kind: str | None) -> None:
        if kind is None:
            self.broken.add(item.id)
            return
        item.value_type = kind if item.computed else None
        if kind in NUMERIC_TYPES:
            self._numeric_rules(item, fields, kind)
        elif kind == "date":
            item.min, item.max = fields.get("min", iso_date), fields.get("max", iso_date)
            self._ordered(fields, item.min, item.max, "min", "max")
        elif kind in ("choice", "multichoice"):
            item.code_list = self._resolve_code_list(item, fields)
        item.max_length = fields.get("max_length", positive)
        item.text_limit = item.max_length or self.basics.text_max_length
        if fields.has("pattern"):
            item.pattern = fields.get("pattern", text)
            try:
                item.pattern_re = re.compile(item.pattern) if item.pattern else None
            except re.error as exc:
                fields.error("pattern", f"pattern: not a valid regular expression ({exc})")

    def _numeric_rules(self, item: ItemDef, fields: Fields, kind: str) -> None:
        item.min, item.max = fields.get("min", number), fields.get("max", number)
        item.soft_min, item.soft_max = fields.get("soft_min", number), fields.get("soft_max", number)
        self._ordered(fields, item.min, item.max, "min", "max")
        self._ordered(fields, item.soft_min, item.soft_max, "soft_min", "soft_max")
        item.precision = fields.get("precision", _precision)
        if fields.has("unit"):
            item.unit, item.unit_display = fields.get("unit", self._unit, (None, None))

    @staticmethod
    def _ordered(fields: Fields, low: Any, high: Any, low_key: str, high_key: str) -> None:
        if low is not None and high is not None and low > high:
            fields.error(low_key, f"{low_key} is greater than {high_key}")

    def _unit(self, value: Any) -> tuple[str, str | None]:
        if isinstance(value, str) and value.strip():
            return value, None
        if isinstance(value, dict) and set(value) <= _UNIT_KEYS and isinstance(value.get("code"), str):
            display = value.get("display")
            if display is not None and not isinstance(display, str):
                raise BadValue("display must be text")
            return value["code"], display
        raise BadValue("must be a UCUM code or {code: <UCUM code>, display: <text>}")

    def _resolve_code_list(self, item: ItemDef, fields: Fields) -> dict[str, dict[str, str]] | None:
        if not fields.has("code_list"):
            fields.error(None, f"item {item.id!r} needs a code_list")
            self.broken.add(item.id)
            return None
        value = fields.node["code_list"]
        if isinstance(value, YamlList):
            item.code_list_name = f"{self.form_dir}.{item.id}"
            codes = parse_code_list(self.reader, value, fields.line("code_list"), f"the code list of {item.id}")
        elif isinstance(value, str) and value in self.local_code_lists:
            item.code_list_name, codes = value, self.local_code_lists[value]
        elif isinstance(value, str) and value in self.basics.code_lists:
            item.code_list_name, codes = value, self.basics.code_lists[value]
            self.used_shared_lists.add(value)
        else:
            fields.error("code_list", f"code_list: unknown code list {value!r}")
            codes = None
        if codes is None:
            self.broken.add(item.id)
        return codes

    def _item_computation(self, item: ItemDef, fields: Fields) -> None:
        if item.type == "calculated":
            if not fields.has("expression"):
                fields.error(None, f"calculated item {item.id!r} needs an expression")
            item.expression = fields.get("expression", text)
            item.expression_program = self._compile(fields, "expression", "calculated", item.group, item)
        elif item.type == "derived":
            self._derivation(item, fields)
        if item.computed and not fields.has("value_type"):
            fields.error(None, f"{item.type} item {item.id!r} needs a value_type")
            self.broken.add(item.id)

    def _derivation(self, item: ItemDef, fields: Fields) -> None:
        for key in ("derivation", "inputs"):
            if not fields.has(key):
                fields.error(None, f"derived item {item.id!r} needs {key!r}")
        item.derivation = fields.get("derivation", identifier)
        item.inputs = fields.get("inputs", identifiers, ())
        item.params = self._study_parameters_in(fields, fields.get("params", _params, {}))
        if item.derivation is not None and get_derivation(item.derivation) is None:
            fields.error("derivation", f"unknown derivation {item.derivation!r} (register it with @register_derivation)")
            self.broken.add(item.id)

    def _study_parameters_in(self, fields: Fields, params: Any) -> Any:
        """Replace each `{param: name}` in a derivation's params by that study parameter's value."""
        if isinstance(params, dict) and set(params) == {"param"}:
            name = params["param"]
            if name not in self.basics.parameters:
                fields.error("params", f"unknown study parameter {name!r} in params")
                return None
            return self.basics.parameters[name]
        if isinstance(params, dict):
            return {key: self._study_parameters_in(fields, value) for key, value in params.items()}
        if isinstance(params, list):
            return [self._study_parameters_in(fields, value) for value in params]
        return params

    def _compile(self, fields: Fields, key: str, role: str, group: str | None, owner: Any) -> Expression | None:
        if not fields.has(key) or not isinstance(fields.node[key], str):
            return None
        try:
            program = compile_expression(fields.node[key])
        except ExpressionError as exc:
            fields.error(key, f"{key}: {exc}")
            self.broken.add(getattr(owner, "id", ""))
            return None
        self.pending.append(PendingExpression(program, fields.line(key), role, group, owner))
        return program

    # ------------------------------------------------------------ groups

    def _group(self, node: YamlMap) -> str | None:
        fields = self.reader.fields(node, f"group {node.get('id')!r}", _GROUP_KEYS, ("id", "label", "items"))
        group_id = fields.get("id", identifier)
        self._claim(group_id, fields.line("id"))
        if group_id is None:
            return None
        members = self._items(fields, group=group_id)
        group = GroupDef(group_id, fields.get("label", self.reader.labels, {"en": group_id}), tuple(members),
                         help=fields.get("help", self.reader.labels, {}), required=fields.get("required", boolean, False),
                         max_rows=fields.get("max_rows", positive, self.basics.max_group_rows),
                         missing_codes=fields.get("missing_codes", self._missing_codes, self.form_missing_codes),
                         line=node.line)
        if fields.has("show_if"):
            group.show_if = fields.get("show_if", text)
            group.show_if_program = self._compile(fields, "show_if", "show_if", None, group)
        self.groups[group_id] = group
        if fields.has("checks"):
            self._checks(node["checks"], fields.line("checks"), group_id)
        return group_id

    # ------------------------------------------------------------ checks

    def _checks(self, value: Any, line: int, group: str | None) -> None:
        entries = self.reader.sequence(value, line, "checks")
        seen = {check.id: check.line for check in self.checks}
        for index, entry in enumerate(entries or ()):
            node = self.reader.mapping(entry, entries.item_line(index), "a check")
            if node is None:
                continue
            fields = self.reader.fields(node, f"check {node.get('id')!r}", CHECK_KEYS, ("id", "assert", "message", "severity"))
            check_id = fields.get("id", identifier)
            if check_id in seen:
                fields.error("id", f"duplicate check id {check_id!r} (first defined at line {seen[check_id]})")
            check = CheckDef(id=check_id or f"check{index + 1}", expression=fields.get("assert", text, ""),
                             message=fields.get("message", self.reader.labels, {"en": ""}),
                             severity=fields.get("severity", one_of("error", "warning"), "warning"),
                             items=fields.get("items", identifiers, ()), critical=fields.get("critical", boolean, False),
                             scope=fields.get("scope", one_of("form", "subject"), "form"), group=group, line=node.line)
            seen[check.id] = check.line
            check.program = self._compile(fields, "assert", "check", group, check)
            self.checks.append(check)

    # ------------------------------------------------------------ names, scopes and order

    def _scope(self, group: str | None) -> set[str]:
        names = set(self.top_level) | self.broken
        if group is not None and group in self.groups:
            names |= set(self.groups[group].items)
        return names

    def _check_expression_names(self) -> None:
        for pending in self.pending:
            program, scope = pending.program, self._scope(pending.group)
            unknown = [name for name in program.names if name not in scope]
            for name in unknown:
                self.reader.error(pending.line, f"unknown name {name!r} in {pending.role} expression")
            for function in program.functions:
                if function not in KNOWN_FUNCTIONS:
                    self.reader.error(pending.line, f"unknown function {function!r} in {pending.role} expression")
            for fact in program.subject_facts:
                if fact not in SUBJECT_FACTS:
                    self.reader.error(pending.line, f"unknown subject fact {fact!r} (known: {', '.join(SUBJECT_FACTS)})")
            for param in program.params:
                if param not in self.basics.parameters:
                    self.reader.error(pending.line, f"unknown study parameter {param!r}")
            program.constants = self._constants(program)
            if pending.role == "check":
                self._check_scope(pending)
            elif program.form_refs or program.entry_refs:
                self.reader.error(pending.line, f"a {pending.role} expression may not read other forms")
        for item in self.items.values():
            if item.type == "derived":
                self._check_inputs(item)
        for check in self.checks:
            scope = self._scope(check.group)
            for name in check.items:
                if name not in scope:
                    self.reader.error(check.line, f"check {check.id!r}: unknown item {name!r} in items")

    def _constants(self, program: Expression) -> dict[str, Any]:
        constants: dict[str, Any] = {name: FUNCTIONS[name] for name in program.functions if name in FUNCTIONS}
        if program.params:
            constants["params"] = {name: cel_constant(self.basics.parameters[name])
                                   for name in program.params if name in self.basics.parameters}
        return constants

    def _check_scope(self, pending: PendingExpression) -> None:
        check, program = pending.owner, pending.program
        if program.reads_subject and check.scope != "subject":
            self.reader.error(pending.line, f"check {check.id!r} reads other forms or subject facts: declare scope: subject")
        if check.scope == "subject" and not program.reads_subject:
            self.reader.error(check.line, f"check {check.id!r} has scope: subject but reads no other form or subject fact")
        if check.scope == "subject" and check.severity == "error":
            self.reader.error(check.line, f"check {check.id!r}: a cross-form or subject check must be a warning, not an error")
        if not check.items:
            check.items = tuple(name for name in program.names if name in self._scope(check.group))
            if not check.items:
                self.reader.error(check.line, f"check {check.id!r} reads no item of this form: "
                                              "name the items its query goes on (items:)")

    def _check_inputs(self, item: ItemDef) -> None:
        scope = self._scope(item.group)
        for name in item.inputs:
            if name not in scope:
                self.reader.error(item.line, f"derived item {item.id!r}: unknown input {name!r}")

    def _plan(self) -> tuple[ItemDef | GroupDef, ...]:
        top = set(self.top_level)
        nodes: dict[str, ItemDef | GroupDef] = {}
        deps: dict[str, set[str]] = {}
        for item_id in self.top_level:
            node = self.items.get(item_id) or self.groups.get(item_id)
            if node is None:
                continue
            nodes[item_id] = node
            deps[item_id] = _dependencies(node) & top
            if isinstance(node, GroupDef):
                for member in node.items:
                    if member in self.items:
                        deps[item_id] |= _dependencies(self.items[member]) & top
                rows = {member: self.items[member] for member in node.items if member in self.items}
                row_deps = {member: _dependencies(item) & set(rows) for member, item in rows.items()}
                node.row_plan = self._ordered_nodes(rows, row_deps)
        return self._ordered_nodes(nodes, deps)

    def _ordered_nodes(self, nodes: dict[str, Any], deps: dict[str, set[str]]) -> tuple[Any, ...]:
        """Return the dynamic nodes (show_if, computed, groups) in dependency order; report cycles."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(node_id: str, path: list[str]) -> None:
            if state.get(node_id) == "done":
                return
            if state.get(node_id) == "active":
                cycle = path[path.index(node_id):] + [node_id]
                self.reader.error(nodes[cycle[0]].line, "show_if or computation cycle: " + " -> ".join(cycle))
                return
            state[node_id] = "active"
            for dep in sorted(deps.get(node_id, ())):
                if dep in nodes:
                    visit(dep, path + [node_id])
            state[node_id] = "done"
            order.append(node_id)

        for node_id in nodes:
            visit(node_id, [])
        return tuple(nodes[node_id] for node_id in order if _is_dynamic(nodes[node_id]))


def _dependencies(node: ItemDef | GroupDef) -> set[str]:
    names: set[str] = set()
    if node.show_if_program is not None:
        names |= set(node.show_if_program.names)
    if isinstance(node, ItemDef):
        if node.expression_program is not None:
            names |= set(node.expression_program.names)
        names |= set(node.inputs)
    return names


def _is_dynamic(node: ItemDef | GroupDef) -> bool:
    return isinstance(node, GroupDef) or node.show_if_program is not None or node.computed


def _precision(value: Any) -> int:
    if non_negative(value) > 10:
        raise BadValue("must be at most 10")
    return value


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue("must be a mapping")
    return plain(value)

