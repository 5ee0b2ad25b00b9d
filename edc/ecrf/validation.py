"""Validate an entry against its form: types, ranges, show_if, computed values, checks, completeness."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from .definitions import CheckDef, FormDef, GroupDef, ItemDef
from .derivations import get_derivation, get_derivation_note
from .expressions import AGE_MONTHS, ENTRIES, FORMS, SUBJECT, SUBJECT_FACTS, Expression, age_months_function, cel_date
from .values import (
    MISSING,
    InvalidValue,
    check_hard_range,
    coerce_result,
    from_stored,
    is_unanswered,
    natural,
    parse_missing_code,
    parse_value,
    soft_range_message,
)


@dataclass
class ValidationContext:
    """What rules may read beyond the entry: subject facts, other forms' current values, today's date at the site."""

    subject: Mapping[str, Any] = field(default_factory=dict)
    other_forms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # form id -> stored values of each of the subject's OTHER entries of that form (for entries.<form>)
    other_entries: Mapping[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    today: date | None = None
    lang: str = "en"
    cel_subject: dict[str, Any] = field(init=False, repr=False)
    age_months: Any = field(init=False, repr=False)
    _form_values: dict[tuple[str, str], Any] = field(init=False, repr=False)
    _entry_lists: dict[str, list[dict[str, Any]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.today is None:
            self.today = datetime.now(UTC).date()
        self.cel_subject = {fact: _cel_fact(value) for fact, value in self.subject.items()
                            if fact in SUBJECT_FACTS and value is not None}
        self.age_months = age_months_function(self.subject)
        self._form_values = {}
        self._entry_lists = {}

    def form_value(self, form_id: str, item_id: str, item: ItemDef) -> Any:
        """Return the CEL value of another form's item for this subject, or MISSING."""
        key = (form_id, item_id)
        if key not in self._form_values:
            values = self.other_forms.get(form_id) or {}
            self._form_values[key] = from_stored(item, values.get(item_id))
        return self._form_values[key]


    def entry_list(self, form: FormDef) -> list[dict[str, Any]]:
        """Return the CEL list of the subject's other entries of `form`: one map of answered top-level items each."""
        if form.id not in self._entry_lists:
            converted = []
            for values in self.other_entries.get(form.id, ()):
                row = {}
                for item_id, stored in values.items():
                    item = form.items.get(item_id)
                    if item is None or item.group is not None:
                        continue
                    value = from_stored(item, stored)
                    if value is not MISSING:
                        row[item_id] = value
                converted.append(row)
            self._entry_lists[form.id] = converted
        return self._entry_lists[form.id]


def _cel_fact(value: Any) -> Any:
    if isinstance(value, datetime):
        return cel_date(value.date())
    if isinstance(value, date):
        return cel_date(value)
    return value


@dataclass
class ValidationResult:
    """The outcome of validating one entry; `values` is what to store."""

    values: dict[str, Any]
    errors: list[dict[str, str]]
    warnings: list[dict[str, Any]]
    missing_required: list[str]
    hidden: set[str]
    ok: bool


def validate_entry(form: FormDef, data: Any, *, complete: bool, context: ValidationContext) -> ValidationResult:
    """Validate client data for one entry of `form`; compute calculated and derived items."""
    run = _Run(form, context)
    if not isinstance(data, dict):
        run.error("/data", "must be an object of item values")
    else:
        run.capture(run.top, data)
        run.resolve(run.top, form.plan)
        run.soft_ranges()
        run.derivation_notes()
        run.apply_checks(warnings_only=False)
    run.find_missing_required(complete)
    return ValidationResult(run.values(), run.errors, run.warnings, run.missing_required, run.hidden_ids(), not run.errors)


def evaluate_warnings(form: FormDef, values: Mapping[str, Any], context: ValidationContext) -> list[dict[str, Any]]:
    """Return every automatic warning (soft ranges, warning checks, cross-form checks) for stored values."""
    run = _Run(form, context)
    run.load_stored(values)
    run.soft_ranges()
    run.derivation_notes()
    run.stale_derivations()
    run.apply_checks(warnings_only=True)
    return run.warnings


def evaluate_cross_form_warnings(form: FormDef, values: Mapping[str, Any], context: ValidationContext) -> list[dict[str, Any]]:
    """Return the warnings of the checks that read other forms or subject facts: all that a change
    elsewhere in the casebook can move, so rechecking a dependant entry runs nothing else."""
    run = _Run(form, context)
    run.load_stored(values)
    run.stale_derivations()
    run.apply_checks(warnings_only=True, subject_scope_only=True)
    return run.warnings


class _Scope:
    """The values of the entry's top level, or of one row of a repeating group."""

    __slots__ = ("coded", "env", "hidden", "path", "prefix", "provided", "stored")

    def __init__(self, prefix: str, env: dict[str, Any], path: str = ""):
        self.prefix = prefix      # JSON pointer prefix: "/data/" or "/data/CM/0/"
        self.path = path          # "" or "CM/0/", for ids in missing_required and hidden
        self.env = env            # CEL values of answered, visible items (rows also see the top level)
        self.stored: dict[str, Any] = {}
        self.coded: set[str] = set()
        self.hidden: set[str] = set()
        self.provided: set[str] = set()

    def pointer(self, item_id: str) -> str:
        return self.prefix + item_id.replace("~", "~0").replace("/", "~1")


class _Run:
    """One validation or re-evaluation of one entry."""

    def __init__(self, form: FormDef, context: ValidationContext):
        self.form = form
        self.context = context
        self.top = _Scope("/data/", {})
        self.rows: dict[str, list[_Scope]] = {}
        self.group_data: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []
        self.warnings: list[dict[str, Any]] = []
        self.missing_required: list[str] = []

    def error(self, pointer: str, detail: str) -> None:
        self.errors.append({"pointer": pointer, "detail": detail})

    # ------------------------------------------------------------ client values

    def capture(self, scope: _Scope, data: dict[str, Any], group: str | None = None) -> None:
        """Parse each client value of one scope; remember groups for later."""
        for key, raw in data.items():
            item = self.form.items.get(key)
            if item is None or item.group != group:
                if group is None and key in self.form.groups:
                    self.group_data[key] = raw
                else:
                    self.error(scope.pointer(str(key)[:200]), "unknown item")
                continue
            if item.computed:
                if raw is not None:
                    self.error(scope.pointer(key), "is computed by the server; do not send a value")
                continue
            if is_unanswered(raw):
                continue
            scope.provided.add(key)
            self._capture_one(scope, item, raw)

    def _capture_one(self, scope: _Scope, item: ItemDef, raw: Any) -> None:
        try:
            if type(raw) is dict:
                scope.stored[item.id] = parse_missing_code(raw, item.missing_codes, self.form.text_max_length)
                scope.coded.add(item.id)
            else:
                scope.env[item.id], scope.stored[item.id] = parse_value(item, raw, self.context.today)
        except InvalidValue as exc:
            self.error(scope.pointer(item.id), str(exc))

    # ------------------------------------------------------------ show_if, groups, computed values

    def resolve(self, scope: _Scope, plan: tuple[ItemDef | GroupDef, ...]) -> None:
        """Apply show_if, process groups and compute values, in dependency order."""
        for node in plan:
            if node.show_if_program is not None and not self._visible(node.show_if_program, scope.env):
                self._hide(scope, node)
            elif isinstance(node, GroupDef):
                self._group(node)
            elif node.type == "calculated":
                self._calculate(scope, node)
            elif node.type == "derived":
                self._derive(scope, node)

    def _visible(self, program: Expression, env: dict[str, Any]) -> bool:
        variables = self._bind(program, env)
        if variables is None:
            return False            # a show_if with missing inputs hides its item
        try:
            return program.program.execute(variables) is True
        except Exception:  # an expression that cannot be evaluated hides, like a missing input
            return False

    def _hide(self, scope: _Scope, node: ItemDef | GroupDef) -> None:
        scope.hidden.add(node.id)
        sent = node.id in scope.provided or (isinstance(node, GroupDef) and not is_unanswered(self.group_data.get(node.id)))
        if sent:
            self.error(scope.pointer(node.id), f"does not apply (shown only if {node.show_if}); remove the value")
        scope.env.pop(node.id, None)
        scope.stored.pop(node.id, None)
        scope.coded.discard(node.id)

    def _group(self, group: GroupDef) -> None:
        raw = self.group_data.get(group.id)
        pointer = self.top.pointer(group.id)
        rows: list[_Scope] = []
        self.rows[group.id] = rows
        if type(raw) is dict and "missing" in raw:
            self.top.provided.add(group.id)
            self._capture_group_code(group, raw)
            return
        if raw is not None and not isinstance(raw, list):
            self.error(pointer, "must be a list of rows")
            return
        if raw and len(raw) > group.max_rows:
            self.error(pointer, f"has more than {group.max_rows} rows")
            return
        for index, row in enumerate(raw or ()):
            scope = _Scope(f"{pointer}/{index}/", dict(self.top.env), f"{group.id}/{index}/")
            if not isinstance(row, dict):
                self.error(f"{pointer}/{index}", "a row must be an object of item values")
                continue
            self.capture(scope, row, group.id)
            self.resolve(scope, group.row_plan)
            rows.append(scope)
        if raw is not None:
            self.top.stored[group.id] = None  # placeholder keeps the group in `values`, rows filled at the end
        self.top.env[group.id] = [_row_map(group, row) for row in rows]

    def _capture_group_code(self, group: GroupDef, raw: dict) -> None:
        try:
            self.top.stored[group.id] = parse_missing_code(raw, group.missing_codes, self.form.text_max_length)
            self.top.coded.add(group.id)
        except InvalidValue as exc:
            self.error(self.top.pointer(group.id), str(exc))

    def _calculate(self, scope: _Scope, item: ItemDef) -> None:
        variables = self._bind(item.expression_program, scope.env)
        if variables is None:
            return
        try:
            result = item.expression_program.program.execute(variables)
            value, stored = coerce_result(item, result)
        except Exception:  # an incomputable calculation yields no value, as with missing inputs
            return
        self._store_computed(scope, item, value, stored)

    def _derive(self, scope: _Scope, item: ItemDef) -> None:
        inputs = {name: natural(self.form.items[name], scope.env[name]) for name in item.inputs if name in scope.env}
        result = get_derivation(item.derivation)(inputs, self.context.subject, item.params)
        if result is not None:
            value, stored = coerce_result(item, result)   # a mistyped result is a bug in the derivation: raise
            self._store_computed(scope, item, value, stored)

    def _store_computed(self, scope: _Scope, item: ItemDef, value: Any, stored: Any) -> None:
        if item.value_type in ("integer", "decimal"):
            try:
                check_hard_range(item, value)
            except InvalidValue as exc:
                self.error(scope.pointer(item.id), f"computed value {value} {exc}")
                return
        scope.env[item.id], scope.stored[item.id] = value, stored

    # ------------------------------------------------------------ warnings and checks

    def soft_ranges(self) -> None:
        """Warn about numbers outside their soft range."""
        for item in self.form.soft_items:
            for scope in self._scopes_of(item.group):
                value = scope.env.get(item.id)
                message = soft_range_message(item, value) if value is not None else None
                if message:
                    pointer = scope.pointer(item.id)
                    self.warnings.append({"check": "soft_range", "key": f"soft_range:{pointer}", "kind": "soft_range",
                                          "message": message, "items": [scope.path + item.id], "pointers": [pointer],
                                          "critical": False})

    def derivation_notes(self) -> None:
        """Warn where a derivation says why it derived nothing (a grade without its reference range)."""
        for item in self.form.noted_items:
            note = get_derivation_note(item.derivation)
            for scope in self._scopes_of(item.group):
                if item.id in scope.hidden or item.id in scope.stored:
                    continue
                inputs = {name: natural(self.form.items[name], scope.env[name]) for name in item.inputs if name in scope.env}
                message = note(inputs, self.context.subject, item.params) if note is not None else None
                if message:
                    pointer = scope.pointer(item.id)
                    self.warnings.append({"check": f"{item.derivation}_note", "key": f"derivation:{pointer}",
                                          "kind": "derivation", "message": message, "items": [scope.path + item.id],
                                          "pointers": [pointer], "critical": False})

    def stale_derivations(self) -> None:
        """Warn where a stored derived value that reads other entries (a lab grade and its baseline) would now be
        derived differently: the entry is not rewritten, a query asks for it to be saved again."""
        for item in self.form.rechecked_items:
            for scope in self._scopes_of(item.group):
                if item.id in scope.hidden:
                    continue
                inputs = {name: natural(self.form.items[name], scope.env[name]) for name in item.inputs if name in scope.env}
                result = get_derivation(item.derivation)(inputs, self.context.subject, item.params)
                now = None if result is None else coerce_result(item, result)[1]
                before = scope.stored.get(item.id)
                if now != before:
                    pointer = scope.pointer(item.id)
                    self.warnings.append({
                        "check": "derived_out_of_date", "key": f"derived_out_of_date:{pointer}", "kind": "cross_form",
                        "message": f"{item.id} was derived as {_shown(before)} and would now be {_shown(now)} after a "
                                   "change elsewhere in the casebook (a baseline or treatment date): save the entry "
                                   "again to derive it anew.",
                        "items": [scope.path + item.id], "pointers": [pointer], "critical": False})

    def apply_checks(self, *, warnings_only: bool, subject_scope_only: bool = False) -> None:
        """Evaluate the form's checks (row checks once per row); skip those with missing inputs."""
        for check in self.form.checks:
            if warnings_only and check.severity == "error":
                continue
            if subject_scope_only and check.scope != "subject":
                continue
            for scope in self._scopes_of(check.group):
                self._apply_check(check, scope)

    def _apply_check(self, check: CheckDef, scope: _Scope) -> None:
        variables = self._bind(check.program, scope.env)
        if variables is None:
            return
        try:
            holds = check.program.program.execute(variables)
        except Exception:  # a rule that cannot be evaluated is skipped, like one with missing inputs
            return
        if holds is not False:
            return
        message = check.message.get(self.context.lang) or check.message["en"]
        pointers = [scope.pointer(name) for name in check.items]
        if check.severity == "error":
            for pointer in pointers:
                self.error(pointer, message)
            return
        key = check.id if check.group is None else f"{check.id}:{scope.path.rstrip('/')}"
        self.warnings.append({"check": check.id, "key": key, "kind": "cross_form" if check.scope == "subject" else "check",
                              "message": message, "items": [scope.path + name for name in check.items], "pointers": pointers,
                              "critical": check.critical})

    def _scopes_of(self, group: str | None) -> list[_Scope]:
        return [self.top] if group is None else self.rows.get(group, [])

    def _bind(self, program: Expression, env: dict[str, Any]) -> dict[str, Any] | None:
        """Return the CEL variables of `program`, or None when an input is missing (the rule is skipped)."""
        variables = dict(program.constants)
        for name in program.names:
            value = env.get(name)
            if value is None:
                return None
            variables[name] = value
        if program.form_refs:
            forms: dict[str, dict[str, Any]] = {}
            for (form_id, item_id), item in program.form_ref_items.items():
                value = self.context.form_value(form_id, item_id, item)
                if value is MISSING:
                    return None
                forms.setdefault(form_id, {})[item_id] = value
            variables[FORMS] = forms
        if program.entry_refs:
            variables[ENTRIES] = {form_id: self.context.entry_list(form)
                                  for form_id, form in program.entry_ref_forms.items()}
        if program.subject_facts:
            subject = self.context.cel_subject
            if any(fact not in subject for fact in program.subject_facts):
                return None
            variables[SUBJECT] = subject
            if AGE_MONTHS in program.functions:
                variables[AGE_MONTHS] = self.context.age_months
        return variables

    # ------------------------------------------------------------ completeness and output

    def find_missing_required(self, complete: bool) -> None:
        """List visible required items without an answer or code; with complete=True they are errors."""
        for item_id in self.form.top_level:
            if item_id in self.top.hidden:
                continue
            group = self.form.groups.get(item_id)
            if group is not None:
                self._missing_in_rows(group, complete)
                if group.required and not self.rows.get(item_id) and item_id not in self.top.coded:
                    self._missing(self.top, item_id, complete)
            elif self._unanswered_required(self.top, self.form.items.get(item_id)):
                self._missing(self.top, item_id, complete)

    def _missing_in_rows(self, group: GroupDef, complete: bool) -> None:
        for row in self.rows.get(group.id, ()):
            for member in group.items:
                if member not in row.hidden and self._unanswered_required(row, self.form.items.get(member)):
                    self._missing(row, member, complete)

    @staticmethod
    def _unanswered_required(scope: _Scope, item: ItemDef | None) -> bool:
        return item is not None and item.required and item.id not in scope.stored

    def _missing(self, scope: _Scope, item_id: str, complete: bool) -> None:
        self.missing_required.append(scope.path + item_id)
        if complete:
            self.error(scope.pointer(item_id), "is required to complete the form (give a value or a missing-data code)")

    def values(self) -> dict[str, Any]:
        """Return the normalised values to store, in form order."""
        values: dict[str, Any] = {}
        for item_id in self.form.top_level:
            if item_id not in self.top.stored:
                continue
            group = self.form.groups.get(item_id)
            if group is not None and item_id not in self.top.coded:
                values[item_id] = [_row_values(group, row) for row in self.rows.get(item_id, ())]
            else:
                values[item_id] = self.top.stored[item_id]
        return values

    def hidden_ids(self) -> set[str]:
        """Return hidden item ids (rows as GROUP/index/ITEM)."""
        hidden = set(self.top.hidden)
        for rows in self.rows.values():
            for row in rows:
                hidden |= {row.path + item_id for item_id in row.hidden}
        return hidden

    # ------------------------------------------------------------ stored values

    def load_stored(self, values: Mapping[str, Any]) -> None:
        """Load stored values (trusted, already normalised) as CEL values."""
        for item_id in self.form.top_level:
            if item_id in self.form.groups or item_id not in values:
                continue
            self._load_value(self.top, self.form.items.get(item_id), values[item_id])
        for group in self.form.groups.values():
            raw = values.get(group.id)
            rows = self.rows.setdefault(group.id, [])
            if not isinstance(raw, list):
                continue
            for index, row in enumerate(raw):
                scope = _Scope(f"/data/{group.id}/{index}/", dict(self.top.env), f"{group.id}/{index}/")
                for member in group.items:
                    if isinstance(row, dict) and member in row:
                        self._load_value(scope, self.form.items.get(member), row[member])
                rows.append(scope)
            self.top.env[group.id] = [_row_map(group, row) for row in rows]

    @staticmethod
    def _load_value(scope: _Scope, item: ItemDef | None, stored: Any) -> None:
        if item is None or stored is None:
            return
        scope.stored[item.id] = stored
        value = from_stored(item, stored)
        if value is not MISSING:
            scope.env[item.id] = value


def _shown(value: Any) -> str:
    return "nothing" if value is None else str(value)


def _row_map(group: GroupDef, row: _Scope) -> dict[str, Any]:
    return {member: row.env[member] for member in group.items if member in row.env}


def _row_values(group: GroupDef, row: _Scope) -> dict[str, Any]:
    return {member: row.stored[member] for member in group.items if member in row.stored}
