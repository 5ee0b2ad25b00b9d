"""The CSV and ODM exports as statisticians' tools read them: the pandas example of docs/exports.md run on every
file of an export of the demo study, date-times that parse as one time zone, and one rule for multi-choice
answers and partial dates in both formats."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from edc import runtime
from edc.exports import source
from edc.exports.csv_files import write_csv
from edc.extensions import db
from exports.test_odm import NS, export as export_odm

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exports.md"


def documented_reader() -> dict:
    """The Python example under "Reading the files" in docs/exports.md, run as written."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Reading the files"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - the documented example itself
    return namespace


def export_csv(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return [f.name for f in write_csv(db.session, source.Selection(), directory)]


def csv_cells(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def test_the_documented_pandas_settings_read_every_file_cell_for_cell(demo, tmp_path):
    out = tmp_path / "csv"
    names = export_csv(out)
    frames = documented_reader()["read_export"](out)
    assert sorted(frames) == sorted(names)
    for name, frame in frames.items():
        header, *rows = csv_cells(out / name)
        assert list(frame.columns) == header, name
        assert frame.fillna("").values.tolist() == rows, name   # only empty cells are NaN
    # Every missing-data code comes back, NA among them, and labels such as "None".
    codes = [code for frame in frames.values() for column in frame.columns if column.endswith("_MISSING")
             for code in frame[column].dropna()]
    assert set(codes) <= set(runtime.of(db.session).study.missing_codes) and "NA" in codes
    labels = {label for frame in frames.values() for column in frame.columns if column.endswith("_LABEL")
              for label in frame[column].dropna()}
    assert "None" in labels
    # Which is why the settings are documented: pandas' defaults turn both into NaN.
    naive = pd.read_csv(out / "items_long.csv", dtype=str)
    written = frames["items_long.csv"]
    assert naive["MISSING"].isna().sum() > written["MISSING"].isna().sum()
    assert naive["LABEL"].isna().sum() > written["LABEL"].isna().sum()


def test_date_times_are_written_in_utc_with_their_local_offset_beside_them(demo, tmp_path):
    out = tmp_path / "csv"
    export_csv(out)
    reader = documented_reader()
    frames = reader["read_export"](out)
    study = runtime.of(db.session).study
    stored = {}
    for book in source.casebooks(db.session, source.Selection()):
        for entry in book.entries:
            for item in study.form(entry.form_id, entry.form_version).items.values():
                if item.value_kind == "datetime" and not item.group and isinstance(entry.values.get(item.id), str):
                    stored[(str(entry.id), item.id)] = datetime.fromisoformat(entry.values[item.id])
    offsets = {moment.utcoffset() for moment in stored.values()}
    assert len(offsets) > 1   # sites in several time zones: a column of local times would mix offsets
    checked = 0
    for name, frame in frames.items():
        for column in (c.removesuffix("_UTCOFFSET") for c in frame.columns if c.endswith("_UTCOFFSET")):
            if frame[column].isna().all():
                continue
            times = reader["utc_times"](frame, column)   # no utc=True: one time zone
            assert str(times.dt.tz) == "UTC", (name, column)
            for entry_id, moment, offset in zip(frame["ENTRY_ID"], times, frame[f"{column}_UTCOFFSET"], strict=True):
                if (entry_id, column) in stored:
                    local = stored[(entry_id, column)]
                    assert moment.to_pydatetime() == local.astimezone(UTC) and offset == local.isoformat()[-6:]
                    checked += 1
    assert checked == len(stored) > 0


def test_multi_choice_answers_and_partial_dates_follow_one_rule_in_csv_and_odm(demo, tmp_path):
    export_csv(tmp_path / "csv")
    with (tmp_path / "csv" / "items_long.csv").open(encoding="utf-8", newline="") as stream:
        in_csv = {(row["ENTRY_ID"], row["ITEM"]): row["VALUE"] for row in csv.DictReader(stream) if not row["GROUP"]}
    _, root = export_odm(tmp_path / "odm")
    in_odm: dict[str, set[str]] = {}
    for data in root.iterfind(".//odm:ItemData", NS):
        in_odm.setdefault(data.get("ItemOID"), set()).add(data.get("Value"))
    study = runtime.of(db.session).study
    multi = partial = 0
    for book in source.casebooks(db.session, source.Selection()):
        for entry in book.entries:
            for item in study.form(entry.form_id, entry.form_version).items.values():
                value = entry.values.get(item.id)
                if item.group or value is None or isinstance(value, dict):
                    continue
                if item.value_kind == "multichoice":
                    expected, multi = ";".join(value), multi + (len(value) > 1)
                elif item.partial:   # kept as collected, never completed with a day
                    expected, partial = value, partial + (len(value) < 10)
                else:
                    continue
                assert in_csv[(str(entry.id), item.id)] == expected, (entry.form_id, item.id)
                assert expected in in_odm[f"I.{entry.form_id.upper()}.{item.id}"], (entry.form_id, item.id)
    assert multi > 0 and partial > 0
