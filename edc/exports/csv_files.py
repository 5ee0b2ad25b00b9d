"""The CSV export for statisticians: wide form files, long group and item files, a data dictionary, code lists.

Files (described in docs/exports.md):
- `<form>.csv`: one row per entry, one column per item (union of the form versions in use), with
  `<ITEM>_LABEL` beside coded items, `<ITEM>_MISSING` beside items that take a missing-data code, and
  `<ITEM>_UTCOFFSET` beside date-times (written in UTC, so a column mixing sites parses as one time zone);
- `<form>__<group>.csv`: one row per row of a repeating group;
- `items_long.csv`: one row per stored item value;
- `dictionary.csv`, `codelists.csv`, and `audit_trail.csv` and `signatures.csv` when asked for.

Values are written exactly as entered, so analyses read what was collected. The spreadsheet-safe variant,
asked for per export, defuses text a spreadsheet would run as a formula (OWASP CSV injection rule, below).

Only pseudonymised content leaves: items flagged `identifying`, and encrypted items that study.yaml
`exports: encrypted_items` does not release (in any version of their form: `Study.withheld_items`), get no
column, no long row and no audit change. Rows are written while the casebooks stream, so memory does not
grow with the study. The same data give byte-identical files: fixed column order, "\\n" line ends, UTF-8
without BOM, rows in casebook order (study number, then entry creation), nothing about the run itself.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.ecrf import FormDef, Study
from edc.ecrf.definitions import GroupDef, ItemDef
from edc.models.entries import Entry

from . import source
from .files import MULTI_SEPARATOR, ExportFile, Progress, describe, no_progress
from .source import Casebook, EntryRecord, Selection, utc

MEDIA_TYPE = "text/csv"
LONG_FILE, DICTIONARY_FILE, CODELISTS_FILE = "items_long.csv", "dictionary.csv", "codelists.csv"
AUDIT_FILE, SIGNATURES_FILE = "audit_trail.csv", "signatures.csv"
MISSING_CODE_LIST = "MISSING_DATA"  # the code list of every <ITEM>_MISSING column, in codelists.csv

KEY_COLUMNS = ("SUBJID", "SITEID", "EVENT", "EVENT_INSTANCE")
ENTRY_COLUMNS = (*KEY_COLUMNS, "ENTRY_ID", "FORM_VERSION", "ENTRY_VERSION", "STATUS")
GROUP_COLUMNS = (*KEY_COLUMNS, "ENTRY_ID", "FORM_VERSION", "ROW")
LONG_COLUMNS = (*KEY_COLUMNS, "FORM", "FORM_VERSION", "ENTRY_ID", "GROUP", "ROW", "ITEM", "VALUE", "MISSING", "LABEL")
DICTIONARY_COLUMNS = ("FORM", "FORM_VERSION", "ITEM", "GROUP", "FILE", "LABEL", "TYPE", "VALUE_TYPE", "UNIT",
                      "PARTIAL", "CODELIST", "MISSING_CODES", "REQUIRED", "DERIVATION", "EXCLUDED")
CODELIST_COLUMNS = ("CODELIST", "CODE", "LABEL")
AUDIT_COLUMNS = ("SUBJID", "SITEID", "SEQ", "TIME", "USER", "ROLE", "ACTION", "ENTITY_TYPE", "ENTITY_ID", "FIELD",
                 "OLD", "NEW", "REASON")
SIGNATURE_COLUMNS = ("SUBJID", "SITEID", "SCOPE", "EVENT", "EVENT_INSTANCE", "FORM", "ENTRY_ID", "ENTRY_VERSION", "USER",
                     "PRINTED_NAME", "MEANING", "TIME", "STATUS", "INVALIDATED_AT")
# OWASP CSV injection: a cell starting with one of these is run as a formula by spreadsheet programs.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)  # a number (-3.5, +2, 1e-3) is no formula


def write_csv(session: Session, selection: Selection, directory: Path, *, include_audit: bool = False,
              spreadsheet_safe: bool = False, progress: Progress = no_progress) -> list[ExportFile]:
    """Write the selected casebooks as CSV files into `directory`; return one ExportFile per file.
    With `spreadsheet_safe`, every cell passes through `spreadsheet_safe_cell`."""
    study = runtime.of(session).study
    layouts = {form_id: FormLayout.build(study, form_id, versions)
               for form_id, versions in source.form_versions(session, _versions_read(selection)).items()}
    tables = _Tables(directory, spreadsheet_safe)
    try:
        long_table = tables.add(LONG_FILE, LONG_COLUMNS, "Every item value, one row each (long format)", eager=True)
        audit = _AuditWriter(session, study, selection, tables) if include_audit else None
        writer = _EntryWriter(layouts, tables, long_table)
        for done, book in enumerate(source.casebooks(session, selection), start=1):
            writer.write_casebook(book)
            if audit is not None:
                audit.write_casebook(book)
            progress(done)
        tables.add(DICTIONARY_FILE, DICTIONARY_COLUMNS, "Data dictionary: every item of the exported form versions",
                   eager=True).write_rows(dictionary_rows(layouts))
        tables.add(CODELISTS_FILE, CODELIST_COLUMNS, "Code lists of the exported items and the missing-data codes",
                   eager=True).write_rows(codelist_rows(study, layouts))
    finally:
        tables.close()
    return tables.described(_file_order(layouts, include_audit))


def _versions_read(selection: Selection) -> Selection:
    # With whole_casebooks a changed subject brings its unchanged entries too: their versions need columns.
    if selection.since is not None and selection.whole_casebooks:
        return replace(selection, since=None)
    return selection


def _file_order(layouts: dict[str, FormLayout], include_audit: bool) -> list[str]:
    names = [name for layout in layouts.values() for name in (layout.file, *layout.group_files.values())]
    return [*names, LONG_FILE, DICTIONARY_FILE, CODELISTS_FILE, *([AUDIT_FILE, SIGNATURES_FILE] if include_audit else [])]


# ---------------------------------------------------------------- column plans


@dataclass(frozen=True, slots=True)
class Column:
    """One exported item (or a group's missing code) of a file, and the columns it fills."""

    id: str
    value: bool        # <ID>: the value (False for a group: its rows go to the group file)
    label: bool        # <ID>_LABEL: English label of the code(s)
    missing: bool      # <ID>_MISSING: the missing-data code
    offset: bool = False   # <ID>_UTCOFFSET: a date-time's local UTC offset (the value itself is written in UTC)

    def names(self) -> list[str]:
        return [name for name, present in ((self.id, self.value), (f"{self.id}_UTCOFFSET", self.offset),
                                           (f"{self.id}_LABEL", self.label), (f"{self.id}_MISSING", self.missing))
                if present]


@dataclass(frozen=True, slots=True)
class Cell:
    """How one column of the layout is filled from one form version's values (computed once per version)."""

    id: str
    value: bool
    label: bool
    missing: bool
    labels: dict[str, str] | None  # code -> English label in this version, for coded items
    blank: tuple[str, ...]         # what the columns hold when the item has no value
    offset: bool = False           # the column has <ID>_UTCOFFSET
    moment: bool = False           # this version's item is a date-time: written in UTC, its offset beside it


@dataclass
class FormLayout:
    """The columns of a form's files over the versions in use, and each version's cells."""

    form_id: str
    versions: list[FormDef]                      # in use, oldest first
    withheld: dict[str, str]                     # item id -> why no export carries it (Study.withheld_items)
    columns: list[Column]
    group_columns: dict[str, list[Column]]
    cells: dict[str, list[Cell]] = field(default_factory=dict)                  # version -> top-level cells
    group_cells: dict[str, dict[str, list[Cell]]] = field(default_factory=dict)  # version -> group -> cells
    header: list[str] = field(default_factory=list)
    group_headers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return f"{self.form_id}.csv"

    @property
    def group_files(self) -> dict[str, str]:
        return {group_id: f"{self.form_id}__{group_id}.csv" for group_id in self.group_columns}


    @classmethod
    def build(cls, study: Study, form_id: str, versions: list[str]) -> FormLayout:
        """Plan the columns: the union over `versions`, newest version's order first, then older-only items."""
        forms = [study.form(form_id, version) for version in versions]
        newest_first = forms[::-1]
        withheld = study.withheld_items(form_id)
        top_ids = _union([form.top_level for form in newest_first], withheld)
        group_ids = [node_id for node_id in top_ids if any(node_id in form.groups for form in forms)]
        layout = cls(form_id, forms, withheld, [_column(node_id, forms) for node_id in top_ids],
                     {group_id: [_column(item_id, forms) for item_id in
                                 _union([f.groups[group_id].items for f in newest_first if group_id in f.groups], withheld)]
                      for group_id in group_ids})
        for form in forms:
            layout.cells[form.version] = [_cell(column, form) for column in layout.columns]
            layout.group_cells[form.version] = {group_id: [_cell(column, form) for column in columns]
                                                for group_id, columns in layout.group_columns.items()
                                                if group_id in form.groups}
        # Built (and checked for clashing names) before any file is written.
        layout.header = _header(layout.file, ENTRY_COLUMNS, layout.columns)
        layout.group_headers = {group_id: _header(name, GROUP_COLUMNS, layout.group_columns[group_id])
                                for group_id, name in layout.group_files.items()}
        return layout


def _union(orders: Iterable[Iterable[str]], excluded: Collection[str]) -> list[str]:
    seen: dict[str, None] = {}
    for order in orders:
        for node_id in order:
            if node_id not in excluded:
                seen.setdefault(node_id)
    return list(seen)


def _column(node_id: str, forms: list[FormDef]) -> Column:
    items = [form.items[node_id] for form in forms if node_id in form.items]
    groups = [form.groups[node_id] for form in forms if node_id in form.groups]
    return Column(node_id, value=bool(items), label=any(item.code_list for item in items),
                  missing=any(node.missing_codes for node in (*items, *groups)),
                  offset=any(item.value_kind == "datetime" for item in items))


def _cell(column: Column, form: FormDef) -> Cell:
    item = form.items.get(column.id)
    labels = None
    if item is not None and item.code_list:
        labels = {code: _english(text) for code, text in item.code_list.items()}
    return Cell(column.id, column.value, column.label, column.missing, labels, ("",) * len(column.names()),
                column.offset, item is not None and item.value_kind == "datetime")


def utc_and_offset(value: str) -> tuple[str, str]:
    """A stored date-time (local wall time with the site's UTC offset) as UTC ISO 8601, and that offset
    (`+02:00`); one without an offset (never stored so) is left as it is."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value, ""
    if moment.utcoffset() is None:
        return value, ""
    return moment.astimezone(UTC).isoformat(), moment.isoformat()[-6:]


def _header(file: str, keys: tuple[str, ...], columns: list[Column]) -> list[str]:
    header = [*keys, *(name for column in columns for name in column.names())]
    clashes = sorted({name for name in header if header.count(name) > 1})
    if clashes:  # e.g. an item named STATUS, or items A and A_LABEL: the file would be ambiguous
        raise ValueError(f"{file}: column name(s) {', '.join(clashes)} would appear twice; rename the item")
    return header


def _english(labels: dict[str, str]) -> str:
    return labels.get("en") or next(iter(labels.values()), "")


# ---------------------------------------------------------------- files


def spreadsheet_safe_cell(value: Any) -> Any:
    """A text cell that starts with = + - @ tab or CR gets a leading single quote, which spreadsheet programs
    take as "this is text"; numbers (-3.5 as stored, or as text) and every other cell are left as they are."""
    if type(value) is str and value.startswith(FORMULA_TRIGGERS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


class _SpreadsheetSafeWriter:
    """A csv writer whose every cell passes through spreadsheet_safe_cell."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([spreadsheet_safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        self._writer.writerows([spreadsheet_safe_cell(value) for value in row] for row in rows)


class _Table:
    """One CSV file: opened on its first row (or at once when eager), rows counted, described when closed."""

    def __init__(self, path: Path, header: list[str] | tuple[str, ...], description: str,
                 spreadsheet_safe: bool = False) -> None:
        self.path, self.header, self.description = path, header, description
        self.spreadsheet_safe = spreadsheet_safe
        self.records = 0
        self._stream: IO[str] | None = None
        self._writer: Any = None

    def open(self) -> None:
        # newline="" lets the csv module write exactly "\n" (and keep "\r" inside quoted values) on every OS.
        self._stream = self.path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(_LineFeedRows(self._stream), lineterminator="\r\n")
        if self.spreadsheet_safe:  # the raw export keeps the plain writer: the hot loop stays as it is
            self._writer = _SpreadsheetSafeWriter(self._writer)
        self._writer.writerow(self.header)

    def write_row(self, row: Iterable[Any]) -> None:
        if self._writer is None:
            self.open()
        self._writer.writerow(row)
        self.records += 1

    def write_rows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.write_row(row)

    def write_batch(self, rows: list[tuple[Any, ...]]) -> None:
        """Write rows already in a list (the inner loop's long rows) in one call."""
        if rows:
            if self._writer is None:
                self.open()
            self._writer.writerows(rows)
            self.records += len(rows)

    @property
    def written(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # a failing final flush (disk full) still closes the file, then raises


class _LineFeedRows:
    """Where a csv writer ending its rows in CRLF writes: each row goes on with LF instead.

    The csv module quotes a value only for the characters of its line terminator: with "\n" alone a value
    holding a bare CR (allowed in free text) went out unquoted, and readers split the row there. Writing with
    "\r\n" quotes both; the writer hands over one whole row per write, whose terminator becomes "\n" here.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._write = stream.write

    def write(self, row: str) -> int:
        return self._write(row[:-2] + "\n")


class _Tables:
    """The export's files by name; closes every handle, even when the export is cancelled."""

    def __init__(self, directory: Path, spreadsheet_safe: bool = False) -> None:
        self.directory, self.spreadsheet_safe = directory, spreadsheet_safe
        self.by_name: dict[str, _Table] = {}

    def add(self, name: str, header: list[str] | tuple[str, ...], description: str, *, eager: bool = False) -> _Table:
        table = self.by_name[name] = _Table(self.directory / name, header, description, self.spreadsheet_safe)
        if eager:
            table.open()
        return table

    def close(self) -> None:
        """Close every table even when one fails to (disk full: its last flush fails), then raise the first failure:
        a worker meeting a full disk again and again must not leak a descriptor per file."""
        failures = []
        for table in self.by_name.values():
            try:
                table.close()
            except OSError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def described(self, order: list[str]) -> list[ExportFile]:
        return [describe(table.path, records=table.records, media_type=MEDIA_TYPE, description=table.description)
                for name in order if (table := self.by_name.get(name)) is not None and table.written]


# ---------------------------------------------------------------- entries


class _EntryWriter:
    """Writes each entry's wide row, its group rows and its long rows; form files open on their first entry."""

    def __init__(self, layouts: dict[str, FormLayout], tables: _Tables, long_table: _Table) -> None:
        self.layouts, self.tables, self.long_table = layouts, tables, long_table
        self.form_tables: dict[str, _Table] = {}
        self.group_tables: dict[str, dict[str, _Table]] = {}

    def write_casebook(self, book: Casebook) -> None:
        subject = (book.subject.number, book.subject.site.code)
        long_rows: list[tuple[Any, ...]] = []
        for entry in book.entries:
            self.write_entry(subject, entry, long_rows)
        self.long_table.write_batch(long_rows)

    def write_entry(self, subject: tuple[str, str], entry: EntryRecord, long_rows: list[tuple[Any, ...]]) -> None:
        layout = self.layouts[entry.form_id]
        cells = layout.cells.get(entry.form_version)
        if cells is None:
            raise RuntimeError(f"entry {entry.id}: {entry.form_id} version {entry.form_version} is not among the "
                               "versions the export planned columns for")
        event, _, instance = entry.event_key.partition("/")
        entry_id = str(entry.id)
        keys = (*subject, event, instance)
        long_prefix = (*keys, entry.form_id, entry.form_version, entry_id)
        values = entry.values
        row = [*keys, entry_id, entry.form_version, entry.version, entry.status]
        _fill(row, cells, values, long_prefix, "", "", long_rows)
        self._form_table(layout).write_row(row)
        for group_id, group_cells in layout.group_cells[entry.form_version].items():
            rows = values.get(group_id)
            if type(rows) is not list:  # no rows, or the whole group carries a missing-data code (wide file)
                continue
            group_keys = (*keys, entry_id, entry.form_version)
            table = self.group_tables[layout.form_id][group_id]
            for number, group_values in enumerate(rows, start=1):
                group_row = [*group_keys, number]
                _fill(group_row, group_cells, group_values, long_prefix, group_id, number, long_rows)
                table.write_row(group_row)

    def _form_table(self, layout: FormLayout) -> _Table:
        table = self.form_tables.get(layout.form_id)
        if table is None:
            title = _english(layout.versions[-1].title)
            table = self.form_tables[layout.form_id] = self.tables.add(
                layout.file, layout.header, f"{title} ({layout.form_id}): one row per entry", eager=True)
            # A form's group files exist whenever the form's file does, header only when no entry has rows.
            self.group_tables[layout.form_id] = {
                group_id: self.tables.add(name, layout.group_headers[group_id],
                                          f"{title} ({layout.form_id}), group {group_id}: one row per group row",
                                          eager=True)
                for group_id, name in layout.group_files.items()}
        return table


def _fill(row: list[Any], cells: list[Cell], values: dict[str, Any], long_prefix: tuple[Any, ...], group: str,
          number: int | str, long_rows: list[tuple[Any, ...]]) -> None:
    """Append the cells' columns to `row` and one long row per stored value (the hot loop: keep it lean)."""
    get, extend, append, add_long = values.get, row.extend, row.append, long_rows.append
    for cell in cells:
        value = get(cell.id)
        if value is None:
            extend(cell.blank)
            continue
        kind = type(value)
        code = label = offset = ""
        if kind is str and cell.moment:  # a local date-time with its offset: UTC, so one column parses as one
            text, offset = utc_and_offset(value)
        elif kind is str or kind is int or kind is float:  # dates and partial dates are strings, kept as collected
            text = value
            if cell.labels is not None:
                label = cell.labels.get(value, "")
        elif kind is dict:  # {"missing": code, "note": ...}: the code goes to <ID>_MISSING only
            text, code = "", value.get("missing", "")
        elif not cell.value:  # a group's rows: they go to the group's file
            extend(cell.blank)
            continue
        elif kind is bool:
            text = "true" if value else "false"
        else:  # a multi-choice answer: its codes in code-list order
            text = MULTI_SEPARATOR.join(value)
            if cell.labels is not None:
                label = "; ".join(cell.labels.get(one, "") for one in value)
        if cell.value:
            append(text)
        if cell.offset:
            append(offset)
        if cell.label:
            append(label)
        if cell.missing:
            append(code)
        add_long((*long_prefix, group, number, cell.id, text, code, label))


# ---------------------------------------------------------------- dictionary and code lists


def dictionary_rows(layouts: dict[str, FormLayout]) -> Iterator[tuple[Any, ...]]:
    """One row per item (and group) of every exported form version, in form order; withheld ones marked why."""
    for layout in layouts.values():
        for form in layout.versions:
            for node_id in form.top_level:
                if node_id in form.groups:
                    group = form.groups[node_id]
                    yield _group_row(layout, form, group)
                    for item_id in group.items:
                        yield _item_row(layout, form, form.items[item_id], layout.group_files[group.id])
                else:
                    yield _item_row(layout, form, form.items[node_id], layout.file)


def _group_row(layout: FormLayout, form: FormDef, group: GroupDef) -> tuple[Any, ...]:
    # FILE is where the group's own column is: <GROUP>_MISSING sits in the form's file, one per entry (a group
    # coded missing has no rows); its items' rows, in the group file, name that file.
    return (form.id, form.version, group.id, "", layout.file, _english(group.label), "group", "",
            "", "", "", " ".join(group.missing_codes), _bool(group.required), "", "")


def _item_row(layout: FormLayout, form: FormDef, item: ItemDef, file: str) -> tuple[Any, ...]:
    withheld = layout.withheld.get(item.id, "")
    derivation = item.expression if item.type == "calculated" else item.derivation or ""
    return (form.id, form.version, item.id, item.group or "", "" if withheld else file, _english(item.label),
            item.type, item.value_kind, item.unit or "", item.partial or "", item.code_list_name or "",
            " ".join(item.missing_codes), _bool(item.required), derivation or "", withheld)


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def codelist_rows(study: Study, layouts: dict[str, FormLayout]) -> Iterator[tuple[str, str, str]]:
    """The missing-data codes, then every code list of an exported coded item (by name; codes in list order)."""
    for code, labels in study.missing_code_labels.items():
        yield MISSING_CODE_LIST, code, _english(labels)
    lists: dict[str, dict[str, str]] = {}
    for layout in layouts.values():
        for form in reversed(layout.versions):  # the newest version's label wins when versions differ
            for item in form.items.values():
                if item.code_list and item.id not in layout.withheld:
                    codes = lists.setdefault(item.code_list_name, {})
                    for code, labels in item.code_list.items():
                        codes.setdefault(code, _english(labels))
    for name in sorted(lists):
        for code, label in lists[name].items():
            yield name, code, label


# ---------------------------------------------------------------- audit trail and signatures


class _AuditWriter:
    """Writes each casebook's audit records and signatures; for a data cut, only what came up to its cut-off."""

    def __init__(self, session: Session, study: Study, selection: Selection, tables: _Tables) -> None:
        self.session, self.study, self.selection = session, study, selection
        self.until = source.cutoff(session, selection)  # a data cut's audit stops where its snapshot does
        self.trail = tables.add(AUDIT_FILE, AUDIT_COLUMNS, "Audit trail of the exported subjects, pseudonymised",
                                eager=True)
        self.signatures = tables.add(SIGNATURES_FILE, SIGNATURE_COLUMNS,
                                     "Electronic signatures of the exported subjects, with their manifestation", eager=True)

    def write_casebook(self, book: Casebook) -> None:
        self.trail.write_rows(audit_rows(self.session, self.study, book, self.selection, until=self.until))
        self.signatures.write_rows(signature_rows(self.session, book, self.selection, until=self.until))


def audit_rows(session: Session, study: Study, book: Casebook, selection: Selection, *,
               until: datetime | None = None) -> Iterator[tuple[Any, ...]]:
    """The subject's audit chain, one row per changed field: withheld items' changes dropped; records of
    entries of forms outside the selection, and records after `until` (a data cut's cut-off), left out."""
    entry_forms = {entry_id: (form_id, version) for entry_id, form_id, version in session.execute(
        sa.select(Entry.id, Entry.form_id, Entry.form_version).where(Entry.subject_id == book.subject.id))}
    subject = (book.subject.number, book.subject.site.code)
    for record in source.subject_audit_trail(session, book.subject.id):
        if until is not None and utc(record["occurred_at"]) > until:
            continue
        changes = record["changes"]
        if record["entity_type"] == "entry":
            form = _entry_form(study, entry_forms, record["entity_id"])
            if form is None or (selection.forms is not None and form.id not in selection.forms):
                continue
            changes = _pseudonymised(study, form, changes)
        head = (*subject, record["seq"], utc(record["occurred_at"]).isoformat(), record["actor"], record["role"] or "",
                record["action"], record["entity_type"], record["entity_id"] or "")
        reason = record["reason"] or ""
        if not changes:
            yield (*head, "", "", "", reason)
        for change in changes:
            yield (*head, change["field"], _audit_value(change.get("old")), _audit_value(change.get("new")), reason)


def _entry_form(study: Study, entry_forms: dict[uuid.UUID, tuple[str, str]], entity_id: str | None) -> FormDef | None:
    try:
        form_id, version = entry_forms[uuid.UUID(entity_id)]
        return study.form(form_id, version)
    except (KeyError, TypeError, ValueError):  # not an entry of this subject, or a form the study no longer has
        return None


def _pseudonymised(study: Study, form: FormDef, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    withheld = study.withheld_items(form.id)  # as for the data files
    kept = []
    for change in changes:
        if change["field"] in withheld:
            continue
        if change["field"] in form.groups:  # a group changes as a whole: strip withheld items from its rows
            change = {**change, "old": _without(change.get("old"), withheld),
                      "new": _without(change.get("new"), withheld)}
        kept.append(change)
    return kept


def _without(rows: Any, withheld: Collection[str]) -> Any:
    if not isinstance(rows, list):
        return rows
    return [{key: value for key, value in row.items() if key not in withheld} if isinstance(row, dict) else row
            for row in rows]


def _audit_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def signature_rows(session: Session, book: Casebook, selection: Selection, *,
                   until: datetime | None = None) -> Iterator[tuple[Any, ...]]:
    """Every signature of the subject, oldest first, with its manifestation (21 CFR 11.50: printed name, UTC
    time, meaning) and whether it still stands (at `until`, a data cut's cut-off). Entry signatures of forms
    outside the selection are left out."""
    subject = (book.subject.number, book.subject.site.code)
    for signature in source.subject_signatures(session, book.subject.id, until=until):
        if signature.entry_id is not None and selection.forms is not None and signature.form_id not in selection.forms:
            continue
        event, _, instance = (signature.event_key or "").partition("/")
        yield (*subject, "entry" if signature.entry_id else "casebook", event, instance, signature.form_id or "",
               signature.entry_id or "", signature.entry_version or "", signature.signer_username,
               signature.printed_name, signature.meaning, signature.signed_at.isoformat(),
               "valid" if signature.valid else "invalidated",
               signature.invalidated_at.isoformat() if signature.invalidated_at else "")
