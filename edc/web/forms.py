"""A case form between the browser and the services: the fields a page posts (strings) as the entry data the
services take (the API's JSON shape), stored values back as the fields' strings, and the form definition as
what a template draws (sections, items, groups, rows, with their values, messages, queries and SDV marks).

No rule lives here: a value that does not convert is passed on as the string the user typed, so the engine
refuses it with the same message as the API gives; show_if, calculated and derived values, errors and
warnings all come from entries.preview_entry or the save itself.

Field names: `v.<ITEM>` an item's value, `m.<ITEM>` its missing-data code, `v.<GROUP>.<row>.<ITEM>` an item of
a repeating group's row, `m.<GROUP>` the group's code, `rows.<GROUP>` its number of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edc.ecrf import FormDef, GroupDef, ItemDef
from edc.ecrf.questionnaire import ucum_display

RADIO_MAX = 4   # choice lists this short are radio buttons, longer ones a select
LONG_TEXT = 255


def value_name(item_id: str, row: tuple[str, int] | None = None) -> str:
    return f"v.{row[0]}.{row[1]}.{item_id}" if row else f"v.{item_id}"


def key_of_pointer(pointer: str) -> str | None:
    """`/data/X` -> `X`, `/data/G/0/X` -> `G.0.X`, `/data/G` -> `G`; None for pointers outside the data."""
    if not pointer.startswith("/data/"):
        return None
    return ".".join(part.replace("~1", "/").replace("~0", "~") for part in pointer[len("/data/"):].split("/"))


def key_of_item_path(path: str | None) -> str | None:
    """A query's or warning's item (`X`, `G/0/X`) as a field key."""
    return path.replace("/", ".") if path else None


# ------------------------------------------------------------------ posted fields -> entry data

def row_count(raw: dict[str, Any], group_id: str) -> int:
    try:
        return max(0, min(int(raw.get(f"rows.{group_id}", 0)), 500))
    except (TypeError, ValueError):
        return 0


def to_data(form: FormDef, raw: dict[str, Any], time_zone: str) -> dict[str, Any]:
    """The entry data (API shape) of the posted fields; computed items are never sent."""
    data: dict[str, Any] = {}
    for node_id in form.top_level:
        group = form.groups.get(node_id)
        code = _text(raw.get(f"m.{node_id}"))
        if code:
            data[node_id] = {"missing": code}
            continue
        if group is not None:
            rows = [_row_data(form, group, raw, index, time_zone) for index in range(row_count(raw, group.id))]
            if rows:
                data[node_id] = rows
            continue
        item = form.items[node_id]
        if item.computed:
            continue
        value = convert(item, raw.get(value_name(node_id)), time_zone)
        if value is not None:
            data[node_id] = value
    return data


def _row_data(form: FormDef, group: GroupDef, raw: dict[str, Any], index: int, time_zone: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for member in group.items:
        item = form.items[member]
        if item.computed:
            continue
        code = _text(raw.get(f"m.{group.id}.{index}.{member}"))
        if code:
            row[member] = {"missing": code}
            continue
        value = convert(item, raw.get(value_name(member, (group.id, index))), time_zone)
        if value is not None:
            row[member] = value
    return row


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def convert(item: ItemDef, raw: Any, time_zone: str) -> Any:
    """One field as the value the API would receive; None when empty, the typed text when it does not convert."""
    kind = item.type
    if kind == "multichoice":
        codes = [code for code in (raw if isinstance(raw, list) else [raw] if raw else []) if code]
        return codes or None
    text = _text(raw)
    if kind != "text":
        text = text.strip()
    if text == "":
        return None
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "decimal":
        try:
            number = float(text.replace(",", ".").replace("٫", "."))
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if kind == "datetime":
        return _with_offset(text, time_zone)
    return text


def _with_offset(text: str, time_zone: str) -> str:
    """A browser's local date-time (`2026-11-19T08:30`) as the site's wall time with its UTC offset then."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        return text
    try:
        zone = ZoneInfo(time_zone)
    except (KeyError, ValueError):
        return text
    return moment.replace(tzinfo=zone).isoformat()


# ------------------------------------------------------------------ stored values -> fields

def to_fields(form: FormDef, values: dict[str, Any]) -> dict[str, Any]:
    """The posted-field form of stored values (what a page shows in its inputs)."""
    raw: dict[str, Any] = {}
    for node_id in form.top_level:
        stored = values.get(node_id)
        if isinstance(stored, dict) and "missing" in stored:
            raw[f"m.{node_id}"] = stored["missing"]
            continue
        group = form.groups.get(node_id)
        if group is not None:
            rows = stored if isinstance(stored, list) else []
            raw[f"rows.{node_id}"] = str(len(rows))
            for index, row in enumerate(rows):
                for member in group.items:
                    value = row.get(member) if isinstance(row, dict) else None
                    if isinstance(value, dict) and "missing" in value:
                        raw[f"m.{node_id}.{index}.{member}"] = value["missing"]
                    elif not form.items[member].computed:
                        raw[value_name(member, (node_id, index))] = field_text(form.items[member], value)
            continue
        if not form.items[node_id].computed:
            raw[value_name(node_id)] = field_text(form.items[node_id], stored)
    return raw


def field_text(item: ItemDef, value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return [] if item.type == "multichoice" else ""
    if item.type == "multichoice":
        return list(value) if isinstance(value, list) else []
    if isinstance(value, bool):
        return "true" if value else "false"
    if item.type == "datetime" and isinstance(value, str):
        return value[:16]   # the wall time; the offset is the site's (datetime-local has none)
    return str(value)


def posted_fields(form_data) -> dict[str, Any]:
    """A request's form as field name -> text, or list of texts for multi-choice checkboxes."""
    raw: dict[str, Any] = {}
    for name in form_data:
        values = form_data.getlist(name)
        raw[name] = values if name.startswith("v.") and len(values) != 1 else values[0]
    return raw


def change_rows(form: FormDef, raw: dict[str, Any], action: str) -> dict[str, Any]:
    """The fields after an `add:<GROUP>` or `remove:<GROUP>:<row>` button: one row more, or that row gone."""
    verb, _, rest = action.partition(":")
    group_id, _, index_text = rest.partition(":")
    group = form.groups.get(group_id)
    if group is None:
        return raw
    count = row_count(raw, group_id)
    if verb == "add":
        if count < group.max_rows:
            raw = {**raw, f"rows.{group_id}": str(count + 1)}
        return raw
    if verb != "remove" or not index_text.isdigit() or int(index_text) >= count:
        return raw
    removed = int(index_text)
    changed = {name: value for name, value in raw.items()
               if not (name.startswith((f"v.{group_id}.", f"m.{group_id}.")) and name.count(".") >= 3)}
    for index in range(count):
        if index == removed:
            continue
        target = index if index < removed else index - 1
        for member in group.items:
            for prefix in ("v", "m"):
                name = f"{prefix}.{group_id}.{index}.{member}"
                if name in raw:
                    changed[f"{prefix}.{group_id}.{target}.{member}"] = raw[name]
    changed[f"rows.{group_id}"] = str(count - 1)
    return changed


# ------------------------------------------------------------------ what a template draws

def text(labels: dict[str, str] | None, lang: str) -> str:
    if not labels:
        return ""
    return labels.get(lang) or labels.get("en") or ""


@dataclass
class Field:
    """One item where the page shows it (top level or in a row)."""

    item: ItemDef
    key: str                     # X or G.0.X: field key of messages, queries, marks
    name: str                    # the input's name
    dom: str                     # the input's id (f-<dom>)
    label: str
    help: str
    widget: str                  # text, textarea, number, date, partial, datetime, radio, select, checkboxes, boolean, computed
    value: Any                   # the field's text (list for checkboxes)
    missing: str                 # the chosen missing-data code
    missing_codes: list[tuple[str, str]]
    options: list[tuple[str, str]] = field(default_factory=list)
    unit: str = ""
    shown: str = ""              # a computed item's value as text
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queries: list[Any] = field(default_factory=list)
    verified: bool = False
    placeholder: str = ""
    required: bool = False
    display: str = ""            # the value as read-only text (a page that cannot be edited)

    @property
    def described_by(self) -> str:
        ids = [f"e-{self.dom}"] if self.errors else []
        ids += [f"w-{self.dom}"] if self.warnings else []
        ids += [f"h-{self.dom}"] if self.help else []
        return " ".join(ids)


@dataclass
class Group:
    group: GroupDef
    key: str
    dom: str
    label: str
    help: str
    rows: list[list[Field]]
    missing: str
    missing_codes: list[tuple[str, str]]
    can_add: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queries: list[Any] = field(default_factory=list)
    verified: bool = False


@dataclass
class Section:
    id: str
    title: str
    nodes: list[Field | Group]


PARTIAL_FORMATS = {"year": "YYYY, YYYY-MM, YYYY-MM-DD", "year-month": "YYYY-MM, YYYY-MM-DD"}


class Layout:
    """Builds the sections of one form for one page: labels in `lang`, the posted fields, the preview's values and
    hidden items, messages by field key, and (for a saved entry) its queries and SDV marks by item."""

    def __init__(self, form: FormDef, lang: str, raw: dict[str, Any], *, values: dict[str, Any], hidden: set[str],
                 errors: dict[str, list[str]], warnings: dict[str, list[str]], queries: dict[str, list[Any]],
                 verified: set[str], yes_no: tuple[str, str]):
        self.form, self.lang, self.raw, self.values, self.hidden = form, lang, raw, values, hidden
        self.errors, self.warnings, self.queries, self.verified, self.yes_no = errors, warnings, queries, verified, yes_no
        self.shown_keys: set[str] = set()

    def erring(self, sections: list[Section]) -> list[tuple[str, str, list[str]]]:
        """(input id, label, messages) of every drawn field or group with an error, in page order: the summary's links."""
        found = []
        for section in sections:
            for node in section.nodes:
                if node.errors:
                    found.append((node.dom, node.label, node.errors))
                for row in getattr(node, "rows", []):
                    found += [(f.dom, f"{node.label} {f.label}", f.errors) for f in row if f.errors]
        return found

    def sections(self) -> list[Section]:
        built = []
        for section in self.form.sections:
            nodes = [node for node in (self._node(member) for member in section.items) if node is not None]
            if nodes:
                built.append(Section(section.id, text(section.title, self.lang), nodes))
        return built

    def _codes(self, codes: tuple[str, ...]) -> list[tuple[str, str]]:
        labels = self.form.missing_code_labels
        return [(code, text(labels.get(code) or {"en": code}, self.lang)) for code in codes]

    def _node(self, node_id: str) -> Field | Group | None:
        if node_id in self.hidden:
            return None
        group = self.form.groups.get(node_id)
        if group is None:
            return self._field(self.form.items[node_id], None, self.values.get(node_id))
        self.shown_keys.add(node_id)
        stored_rows = self.values.get(node_id)
        stored_rows = stored_rows if isinstance(stored_rows, list) else []
        rows = []
        for index in range(row_count(self.raw, node_id)):
            stored = stored_rows[index] if index < len(stored_rows) and isinstance(stored_rows[index], dict) else {}
            rows.append([self._field(self.form.items[member], (node_id, index), stored.get(member))
                         for member in group.items if f"{node_id}/{index}/{member}" not in self.hidden])
        return Group(group=group, key=node_id, dom=node_id, label=text(group.label, self.lang),
                     help=text(group.help, self.lang), rows=rows, missing=_text(self.raw.get(f"m.{node_id}")),
                     missing_codes=self._codes(group.missing_codes), can_add=len(rows) < group.max_rows,
                     errors=self.errors.get(node_id, []), warnings=self.warnings.get(node_id, []),
                     queries=[q for key, found in self.queries.items() if key == node_id or key.startswith(node_id + ".")
                              for q in found], verified=node_id in self.verified)

    def _field(self, item: ItemDef, row: tuple[str, int] | None, computed_value: Any) -> Field:
        key = f"{row[0]}.{row[1]}.{item.id}" if row else item.id
        self.shown_keys.add(key)
        name = value_name(item.id, row)
        kind = item.value_kind
        options = [(code, text(labels, self.lang)) for code, labels in (item.code_list or {}).items()]
        widget = {"integer": "number", "decimal": "number", "datetime": "datetime", "multichoice": "checkboxes",
                  "boolean": "boolean"}.get(kind, kind)
        if kind == "text" and (item.max_length is None or item.max_length > LONG_TEXT):
            widget = "textarea"
        if kind == "date" and item.partial:
            widget = "partial"
        if kind == "choice":
            widget = "radio" if len(options) <= RADIO_MAX else "select"
        if item.computed:
            widget = "computed"
        missing_name = f"m.{row[0]}.{row[1]}.{item.id}" if row else f"m.{item.id}"
        value = self.raw.get(name, [] if kind == "multichoice" else "")
        if kind == "multichoice" and not isinstance(value, list):
            value = [value] if value else []
        return Field(item=item, key=key, name=name, dom=key.replace(".", "-"), label=text(item.label, self.lang),
                     help=text(item.help, self.lang), widget=widget, value=value,
                     missing=_text(self.raw.get(missing_name)) if not item.computed else "",
                     missing_codes=[] if item.computed else self._codes(item.missing_codes), options=options,
                     unit=item.unit_display or (ucum_display(item.unit) if item.unit else ""), shown=self._shown(item, computed_value),
                     errors=self.errors.get(key, []), warnings=self.warnings.get(key, []),
                     queries=self.queries.get(key, []), verified=(row is None and item.id in self.verified),
                     placeholder=PARTIAL_FORMATS.get(item.partial or "", "") if widget == "partial" else "",
                     required=item.required and not item.computed,
                     display=self._display(item, value, missing_name, computed_value))

    def _display(self, item: ItemDef, value: Any, missing_name: str, computed_value: Any) -> str:
        if item.computed:
            return self._shown(item, computed_value)
        code = _text(self.raw.get(missing_name))
        if code:
            return dict(self._codes((code,)))[code]
        labels = {code: text(labels, self.lang) for code, labels in (item.code_list or {}).items()}
        if isinstance(value, list):
            return ", ".join(labels.get(code, code) for code in value)
        if item.type == "boolean":
            return {"true": self.yes_no[0], "false": self.yes_no[1]}.get(value, value)
        return labels.get(value, value) if labels else value

    def _shown(self, item: ItemDef, value: Any) -> str:
        if not item.computed or value is None:
            return ""
        if isinstance(value, dict):
            return value.get("missing", "")
        if isinstance(value, bool):
            return self.yes_no[0] if value else self.yes_no[1]
        if item.code_list and isinstance(value, str) and value in item.code_list:
            return text(item.code_list[value], self.lang)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)
