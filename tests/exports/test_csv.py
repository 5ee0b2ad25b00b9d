"""edc.exports.csv_files: the CSV export of the selected casebooks, checked against the database."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import bearer, login
from edc import runtime
from edc.exports import source
from edc.exports.csv_files import write_csv
from edc.exports.files import Cancelled
from edc.extensions import db
from edc.models import Entry, Site, Subject
from edc.models.monitoring import DataCutEntry
from edc.security.permissions import Actor
from edc.services import locking
from test_demo_subjects import invoke
from test_entries import VITALS, post_entry

KEY_COLUMNS = ["SUBJID", "SITEID", "EVENT", "EVENT_INSTANCE", "ENTRY_ID", "FORM_VERSION", "ENTRY_VERSION", "STATUS"]
ALWAYS = {"items_long.csv", "dictionary.csv", "codelists.csv"}
AUDIT_FILES = {"audit_trail.csv", "signatures.csv"}  # with include_audit only


@pytest.fixture
def out(tmp_path) -> Path:
    """The export directory (tmp_path itself holds the SQLite database)."""
    return tmp_path / "csv"


def export(directory: Path, selection: source.Selection | None = None, **options):
    directory.mkdir(parents=True, exist_ok=True)
    files = write_csv(db.session, selection or source.Selection(), directory, **options)
    return {f.name: f for f in files}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as stream:
        return next(csv.reader(stream))


def selected_entries(selection: source.Selection | None = None) -> list[tuple[source.Casebook, source.EntryRecord]]:
    return [(book, entry) for book in source.casebooks(db.session, selection or source.Selection()) for entry in book.entries]


def wide_files(files) -> list[str]:
    return [name for name in files if name not in ALWAYS | AUDIT_FILES and "__" not in name]


# ---------------------------------------------------------------- files and wide rows


def test_every_file_is_written_parseable_and_described(demo, out):
    files = export(out)
    assert set(files) == {path.name for path in out.iterdir()}
    assert ALWAYS <= set(files) and not AUDIT_FILES & set(files)
    assert {"ae.csv", "pe.csv", "pe__PEEXAM.csv", "dh.csv"} <= set(files)
    for name, described in files.items():
        raw = (out / name).read_bytes()
        assert described.sha256 == hashlib.sha256(raw).hexdigest() and described.size == len(raw)
        assert described.media_type == "text/csv" and described.description
        assert not raw.startswith(b"\xef\xbb\xbf") and b"\r\n" not in raw and raw.endswith(b"\n")
        parsed = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        assert len(parsed) - 1 == described.records, name
        assert len(set(parsed[0])) == len(parsed[0]) and all(len(row) == len(parsed[0]) for row in parsed), name


def test_one_wide_row_per_entry_with_its_keys(demo, out):
    files = export(out)
    per_form = dict(db.session.execute(sa.select(Entry.form_id, sa.func.count(Entry.id)).group_by(Entry.form_id)).all())
    assert {name.removesuffix(".csv"): files[name].records for name in wide_files(files)} == per_form
    expected = {str(entry.id): (book.subject.number, book.subject.site.code, entry) for book, entry in selected_entries()}
    for name in wide_files(files):
        assert header(out / name)[:len(KEY_COLUMNS)] == KEY_COLUMNS
        for row in rows(out / name):
            number, site, entry = expected.pop(row["ENTRY_ID"])
            event, _, instance = entry.event_key.partition("/")
            assert (row["SUBJID"], row["SITEID"], row["EVENT"], row["EVENT_INSTANCE"]) == (number, site, event, instance)
            assert (row["FORM_VERSION"], row["ENTRY_VERSION"], row["STATUS"]) == (entry.form_version, str(entry.version),
                                                                                   entry.status)
            assert name == f"{entry.form_id}.csv"
    assert expected == {}


def test_wide_rows_follow_the_casebook_order(demo, out):
    export(out)
    order = [str(entry.id) for _, entry in selected_entries() if entry.form_id == "crs_daily"]
    assert [row["ENTRY_ID"] for row in rows(out / "crs_daily.csv")] == order


def test_repeating_group_rows_go_to_one_long_file_per_group(demo, out):
    files = export(out)
    study = runtime.of(db.session).study
    expected: Counter = Counter()
    for _, entry in selected_entries():
        for group_id in study.form(entry.form_id, entry.form_version).groups:
            group_rows = entry.values.get(group_id)
            if isinstance(group_rows, list):
                expected[f"{entry.form_id}__{group_id}.csv"] += len(group_rows)
    group_files = {name: described.records for name, described in files.items() if "__" in name}
    assert group_files == {name: expected.get(name, 0) for name in group_files} and sum(expected.values()) > 0
    assert set(expected) <= set(group_files)

    exams = rows(out / "pe__PEEXAM.csv")
    assert header(out / "pe__PEEXAM.csv")[:7] == ["SUBJID", "SITEID", "EVENT", "EVENT_INSTANCE", "ENTRY_ID",
                                                       "FORM_VERSION", "ROW"]
    entries = {str(entry.id): entry for _, entry in selected_entries() if entry.form_id == "pe"}
    for entry_id, entry in entries.items():
        mine = [row for row in exams if row["ENTRY_ID"] == entry_id]
        stored = entry.values.get("PEEXAM") or []
        assert [row["ROW"] for row in mine] == [str(n) for n in range(1, len(stored) + 1)]
        withheld = runtime.of(db.session).study.withheld_items("pe")   # PEDESC: encrypted free text
        for row, values in zip(mine, stored, strict=True):
            for item_id, value in values.items():
                if item_id in withheld:
                    assert item_id not in row
                elif isinstance(value, str):
                    assert row[item_id] == value


def test_items_long_holds_every_stored_value_once(demo, out):
    files = export(out)
    study = runtime.of(db.session).study
    expected = 0
    for _, entry in selected_entries():
        form = study.form(entry.form_id, entry.form_version)
        withheld = study.withheld_items(form.id)   # encrypted free text and identifying items: no row
        for node_id, value in entry.values.items():
            if node_id in form.groups and isinstance(value, list):
                expected += sum(v is not None and k not in withheld for row in value for k, v in row.items())
            elif value is not None and node_id not in withheld:
                expected += 1
    long_rows = rows(out / "items_long.csv")
    assert files["items_long.csv"].records == len(long_rows) == expected
    by_key = {(r["ENTRY_ID"], r["GROUP"], r["ROW"], r["ITEM"]): r for r in long_rows}
    assert len(by_key) == len(long_rows)
    _, ae = next((book, entry) for book, entry in selected_entries() if entry.form_id == "ae")
    row = by_key[(str(ae.id), "", "", "AETOXGR")]
    assert (row["FORM"], row["VALUE"], row["MISSING"]) == ("ae", ae.values["AETOXGR"], "")
    assert row["LABEL"] == study.form("ae", ae.form_version).items["AETOXGR"].code_list[ae.values["AETOXGR"]]["en"]


def test_a_missing_data_code_goes_to_its_companion_column_never_the_value(demo, out):
    export(out)
    coded = [(entry, item_id, value["missing"]) for _, entry in selected_entries()
             for item_id, value in entry.values.items() if isinstance(value, dict) and "missing" in value]
    assert coded, "the demo casebooks hold missing-data codes"
    wide = {name: {row["ENTRY_ID"]: row for row in rows(out / f"{name}.csv")}
            for name in {entry.form_id for entry, _, _ in coded}}
    long_rows = {(r["ENTRY_ID"], r["ITEM"]): r for r in rows(out / "items_long.csv") if not r["GROUP"]}
    for entry, item_id, code in coded:
        row = wide[entry.form_id][str(entry.id)]
        assert row[f"{item_id}_MISSING"] == code and row[item_id] == "" and row.get(f"{item_id}_LABEL", "") == ""
        long = long_rows[(str(entry.id), item_id)]
        assert (long["VALUE"], long["MISSING"], long["LABEL"]) == ("", code, "")
    study_codes = set(runtime.of(db.session).study.missing_codes)
    for name in wide_files({p.name: None for p in out.iterdir()}):
        for row in rows(out / name):
            for column, code in row.items():
                if column.endswith("_MISSING") and code:
                    assert code in study_codes and row[column.removesuffix("_MISSING")] == ""


def test_partial_dates_are_kept_as_collected(demo, out):
    export(out)
    collected = {str(entry.id): entry.values["DXDAT"] for _, entry in selected_entries() if entry.form_id == "dh"}
    assert any(len(value) == 7 for value in collected.values()), "the demo holds year-month diagnosis dates"
    assert {row["ENTRY_ID"]: row["DXDAT"] for row in rows(out / "dh.csv")} == collected


def test_coded_items_carry_their_code_and_english_label(demo, out):
    export(out)
    study = runtime.of(db.session).study
    ae_rows = rows(out / "ae.csv")
    assert {(row["AETOXGR"], row["AETOXGR_LABEL"]) for row in ae_rows} >= {("4", "Grade 4")}
    checked = 0
    for name in ("ae.csv", "dh.csv", "ie.csv", "crs_daily.csv"):
        for row in rows(out / name):
            form = study.form(name.removesuffix(".csv"), row["FORM_VERSION"])
            for column in row:
                if not column.endswith("_LABEL"):
                    continue
                item = form.items[column.removesuffix("_LABEL")]
                codes = [code for code in row[item.id].split(";") if code]
                assert row[column] == "; ".join(item.code_list[code]["en"] for code in codes)
                checked += bool(codes)
    assert checked > 50
    genetics = [row["DXGENET"] for row in rows(out / "dh.csv")]
    stored = [entry.values.get("DXGENET") for _, entry in selected_entries() if entry.form_id == "dh"]
    assert genetics == [";".join(codes) if isinstance(codes, list) else "" for codes in stored]


def test_dictionary_describes_every_exported_column(demo, out):
    files = export(out)
    dictionary = rows(out / "dictionary.csv")
    assert header(out / "dictionary.csv") == ["FORM", "FORM_VERSION", "ITEM", "GROUP", "FILE", "LABEL", "TYPE",
                                                   "VALUE_TYPE", "UNIT", "PARTIAL", "CODELIST", "MISSING_CODES",
                                                   "REQUIRED", "DERIVATION", "EXCLUDED"]
    # Every column is described by a row naming its file: a group's own <GROUP>_MISSING sits in the form's file.
    described = {(row["FILE"], row["ITEM"]) for row in dictionary}
    for name in files:
        if name in ALWAYS:
            continue
        keys = len(KEY_COLUMNS) if "__" not in name else 7
        for column in header(out / name)[keys:]:
            item_id = column.removesuffix("_LABEL").removesuffix("_MISSING").removesuffix("_UTCOFFSET")
            assert (name, item_id) in described, (name, column)
    by_item = {(row["FORM"], row["ITEM"]): row for row in dictionary}
    assert by_item[("ae", "AETOXSCL")]["TYPE"] == "calculated" and "ctcae_version" in by_item[("ae", "AETOXSCL")]["DERIVATION"]
    assert by_item[("ae", "AESER")]["DERIVATION"] == "ae_serious" and by_item[("ae", "AESER")]["VALUE_TYPE"] == "choice"
    assert by_item[("ae", "AERELPROC")]["MISSING_CODES"] == "NA" and by_item[("ae", "AETERM")]["REQUIRED"] == "true"
    assert by_item[("dh", "DXDAT")]["PARTIAL"] == "year-month"
    assert by_item[("pe", "PEEXAM")]["TYPE"] == "group" and by_item[("pe", "PEEXAM")]["FILE"] == "pe.csv"
    assert "PEEXAM_MISSING" in header(out / "pe.csv") and "PEEXAM_MISSING" not in header(out / "pe__PEEXAM.csv")
    assert all(row["FILE"] == ("" if row["EXCLUDED"] else "pe__PEEXAM.csv") for row in dictionary if row["GROUP"] == "PEEXAM")
    assert {row["FORM"] for row in dictionary} == {name.removesuffix(".csv") for name in wide_files(files)}
    # The trial's free text is encrypted and released to no export; the chain-of-identity ID is identifying.
    study = runtime.of(db.session).study
    excluded = {(row["FORM"], row["ITEM"]): row["EXCLUDED"] for row in dictionary if row["EXCLUDED"]}
    assert excluded == {(form_id, item_id): why for form_id in study.all_forms
                        for item_id, why in study.withheld_items(form_id).items() if (form_id, item_id) in by_item}
    assert excluded[("ae", "AETERM")] == "encrypted" and excluded[("aph", "COI")] == "identifying"
    assert all(by_item[key]["FILE"] == "" for key in excluded)


def test_codelists_hold_every_list_in_use_and_the_missing_data_codes(demo, out):
    export(out)
    study = runtime.of(db.session).study
    codes = rows(out / "codelists.csv")
    missing = [(row["CODE"], row["LABEL"]) for row in codes if row["CODELIST"] == "MISSING_DATA"]
    assert missing == [(code, labels["en"]) for code, labels in study.missing_code_labels.items()]
    assert ("ND", "Not done") in missing
    lists = {row["CODELIST"] for row in codes}
    assert {row["CODELIST"] for row in rows(out / "dictionary.csv") if row["CODELIST"]} <= lists
    assert {"CODELIST": "NY", "CODE": "Y", "LABEL": "Yes"} in codes
    assert len({(row["CODELIST"], row["CODE"]) for row in codes}) == len(codes)


def test_two_runs_give_byte_identical_files(demo, out):
    first = export(out / "one", include_audit=True)
    second = export(out / "two", include_audit=True)
    assert list(first) == list(second) and first == second
    for name in first:
        assert (out / "one" / name).read_bytes() == (out / "two" / name).read_bytes()


def test_selection_by_forms_and_sites_is_respected(demo, out):
    site_id, site_code = db.session.execute(sa.select(Site.id, Site.code).join(Subject, Subject.site_id == Site.id)
                                            .order_by(Subject.number).limit(1)).one()
    selection = source.Selection(site_ids=frozenset({site_id}), forms=frozenset({"ae", "pe"}))
    files = export(out, selection)
    assert set(files) == ALWAYS | {"ae.csv", "pe.csv", "pe__PEEXAM.csv"}
    for name in files:
        if name not in {"dictionary.csv", "codelists.csv"}:
            assert {row["SITEID"] for row in rows(out / name)} == {site_code}, name
    assert {row["FORM"] for row in rows(out / "items_long.csv")} == {"ae", "pe"}
    assert {row["FORM"] for row in rows(out / "dictionary.csv")} == {"ae", "pe"}
    assert files["pe.csv"].records == len([e for _, e in selected_entries(selection) if e.form_id == "pe"])


def test_progress_counts_subjects_and_a_cancel_stops_the_writer(demo, out):
    done: list[int] = []
    export(out / "all", progress=done.append)
    assert done == [1, 2, 3]

    calls: list[int] = []

    def cancel_after_first(subjects_done: int) -> None:
        calls.append(subjects_done)
        raise Cancelled()

    with pytest.raises(Cancelled):
        export(out / "cancelled", progress=cancel_after_first)
    assert calls == [1]
    assert not (out / "cancelled" / "dictionary.csv").exists()  # nothing written after the cancel


def test_audit_trail_lists_each_change_of_the_exported_subjects(demo, out):
    assert not AUDIT_FILES & set(export(out / "plain"))
    files = export(out / "audited", include_audit=True)
    assert AUDIT_FILES <= set(files)
    trail = rows(out / "audited" / "audit_trail.csv")
    assert header(out / "audited" / "audit_trail.csv") == ["SUBJID", "SITEID", "SEQ", "TIME", "USER", "ROLE", "ACTION",
                                                               "ENTITY_TYPE", "ENTITY_ID", "FIELD", "OLD", "NEW", "REASON"]
    assert files["audit_trail.csv"].records == len(trail) > 0
    numbers = list(db.session.scalars(sa.select(Subject.number).order_by(Subject.number)))
    assert list(dict.fromkeys(row["SUBJID"] for row in trail)) == numbers
    for number in numbers:
        seqs = [int(row["SEQ"]) for row in trail if row["SUBJID"] == number]
        assert seqs == sorted(seqs) and seqs[0] == 1
    enrolled = [row for row in trail if row["ACTION"] == "subject_enrolled" and row["FIELD"] == "number"]
    assert [row["NEW"] for row in enrolled] == numbers
    assert all(row["TIME"].endswith("+00:00") for row in trail)
    assert any(row["ACTION"] == "entry_updated" and row["REASON"] for row in trail)

    ae_ids = {str(e.id) for _, e in selected_entries() if e.form_id == "ae"}
    export(out / "ae", source.Selection(forms=frozenset({"ae"})), include_audit=True)
    only_ae = rows(out / "ae" / "audit_trail.csv")
    assert {row["ENTITY_ID"] for row in only_ae if row["ENTITY_TYPE"] == "entry"} == ae_ids


def test_a_data_cut_exports_its_snapshot_and_the_audit_up_to_its_cutoff(demo, out):
    created = sorted(db.session.scalars(sa.select(Entry.created_at)))
    cutoff = created[len(created) // 2]
    cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    cut = locking.create_cut(db.session, Actor.system("tests"), name="interim", cutoff_at=cutoff, reason="DSMB")
    files = export(out, source.Selection(cut_id=cut.id), include_audit=True)
    in_cut = dict(db.session.execute(sa.select(DataCutEntry.form_id, sa.func.count()).where(DataCutEntry.cut_id == cut.id)
                                     .group_by(DataCutEntry.form_id)).all())
    assert {name.removesuffix(".csv"): files[name].records for name in wide_files(files)} == in_cut
    assert sum(in_cut.values()) < len(created)
    times = [datetime.fromisoformat(row["TIME"]) for row in rows(out / "audit_trail.csv")]
    assert times and max(times) <= cutoff


# ---------------------------------------------------------------- identifying items and form versions (demo study)


CANARY = "CANARY-NURSE-7c1e55"
CANARY_2 = "CANARY-NURSE-b09d44"


@pytest.fixture
def vitals_in_two_versions(client, staff, session):
    """Vitals entries of one subject on the demo forms: MEASURED_BY (identifying) set and changed, one entry in version 1."""
    inv = bearer(login(client, staff["investigator"]))
    subject = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    number = client.post("/api/v1/subjects", json=subject, headers=inv).get_json()["number"]
    screening = post_entry(client, inv, number, "vitals", {**VITALS, "MEASURED_BY": CANARY, "VSCOMM": "calm"}, event="SCR")
    assert screening.status_code == 201, screening.get_json()
    changed = client.put(screening.headers["Location"], headers={**inv, "If-Match": screening.headers["ETag"]},
                         json={"data": {**VITALS, "MEASURED_BY": CANARY_2, "VSCOMM": "calm"}, "complete": True,
                               "reason": "wrong nurse"})
    assert changed.status_code == 200, changed.get_json()
    old = {key: value for key, value in VITALS.items() if key != "SPO2"}
    day7 = post_entry(client, inv, number, "vitals", {**old, "MEASURED_BY": CANARY}, event="D7").get_json()
    # An entry captured before version 2 was released (as tests/test_capture_operations.py does).
    session.execute(sa.update(Entry.__table__).where(Entry.__table__.c.id == uuid.UUID(day7["id"])).values(form_version="1"))
    session.commit()
    return {"screening": screening.get_json()["id"], "day7": day7["id"]}


def test_identifying_items_never_leave_in_any_file(vitals_in_two_versions, session, out):
    out.mkdir()
    files = write_csv(session, source.Selection(), out, include_audit=True)
    assert {"vitals.csv", "audit_trail.csv"} <= {f.name for f in files}
    for described in files:
        raw = (out / described.name).read_bytes()
        assert b"CANARY" not in raw, described.name
        if described.name != "dictionary.csv":
            assert b"MEASURED_BY" not in raw, described.name
    dictionary = [row for row in rows(out / "dictionary.csv") if row["ITEM"] == "MEASURED_BY"]
    assert [(row["FORM_VERSION"], row["FILE"], row["EXCLUDED"]) for row in dictionary] == [("1", "", "identifying"),
                                                                                           ("2", "", "identifying")]
    trail = rows(out / "audit_trail.csv")
    assert any(row["ACTION"] == "entry_updated" and row["REASON"] == "wrong nurse" for row in trail)
    # Encrypted free text the study releases goes out opened (tests/exports/test_encrypted_canaries.py: the rest never).
    assert any(row["FIELD"] == "VSCOMM" and row["NEW"] == "calm" for row in trail)


def test_versions_of_a_form_share_one_file_with_the_union_of_their_columns(vitals_in_two_versions, session, out):
    out.mkdir()
    write_csv(session, source.Selection(), out)
    columns = header(out / "vitals.csv")
    assert columns[len(KEY_COLUMNS):] == ["VSDAT", "VSDAT_MISSING", "TEMP", "TEMP_MISSING", "HR", "HR_MISSING", "SBP",
                                          "SBP_MISSING", "DBP", "DBP_MISSING", "SPO2", "SPO2_MISSING", "VSCOMM", "VSCOMM_MISSING"]
    by_id = {row["ENTRY_ID"]: row for row in rows(out / "vitals.csv")}
    screening, day7 = by_id[vitals_in_two_versions["screening"]], by_id[vitals_in_two_versions["day7"]]
    assert (screening["FORM_VERSION"], screening["SPO2"], screening["TEMP"], screening["ENTRY_VERSION"]) == ("2", "98", "37.2", "2")
    assert (day7["FORM_VERSION"], day7["SPO2"], day7["EVENT"], day7["EVENT_INSTANCE"]) == ("1", "", "D7", "1")
    assert {(row["FORM_VERSION"], row["ITEM"]) for row in rows(out / "dictionary.csv")} >= {("1", "VSDAT"), ("2", "SPO2")}


# ---------------------------------------------------------------- formulas: raw and spreadsheet-safe

FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1+1"]  # OWASP's characters; CR first has a test of its own
HARMLESS = ["-3.5", "+2", "1-1", "calm"]  # numbers, and text that starts with no formula character
SAFE = {comment: ("'" + comment if comment in FORMULAS else comment) for comment in FORMULAS + HARMLESS}


def enter_comments(app, investigator: str, comments: list[str]) -> dict[str, str]:
    """One subject per comment, its screening vitals carrying the comment (demo forms); comments by study number."""
    client = app.test_client()
    inv = bearer(login(client, investigator))
    subject = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    by_number = {}
    for comment in comments:
        number = client.post("/api/v1/subjects", json=subject, headers=inv).get_json()["number"]
        saved = post_entry(client, inv, number, "vitals", {**VITALS, "VSCOMM": comment}, event="SCR")
        assert saved.status_code == 201, saved.get_json()
        by_number[number] = comment
    return by_number


@pytest.fixture
def exporting_app(app_factory, tmp_path):
    return app_factory(export_dir=str(tmp_path / "exports"))


@pytest.fixture
def comments(exporting_app, staff) -> dict[str, str]:
    return enter_comments(exporting_app, staff["investigator"], FORMULAS + HARMLESS)


def comment_cells(directory: Path) -> dict[str, dict[str, str]]:
    """Where a comment lands: the wide file, the long file and the audit trail's NEW, by study number."""
    return {"wide": {row["SUBJID"]: row["VSCOMM"] for row in rows(directory / "vitals.csv")},
            "long": {row["SUBJID"]: row["VALUE"] for row in rows(directory / "items_long.csv") if row["ITEM"] == "VSCOMM"},
            "audit": {row["SUBJID"]: row["NEW"] for row in rows(directory / "audit_trail.csv") if row["FIELD"] == "VSCOMM"}}


def without_comments(directory: Path) -> dict[str, list[dict[str, str]]]:
    """Every file's rows, the comment's cells left out."""
    def kept(row: dict[str, str], column: str) -> bool:
        return column != "VSCOMM" and not (column == "NEW" and row.get("FIELD") == "VSCOMM") and not (
            column == "VALUE" and row.get("ITEM") == "VSCOMM")

    return {path.name: [{k: v for k, v in row.items() if kept(row, k)} for row in rows(path)]
            for path in sorted(directory.glob("*.csv"))}


def export_both(session, tmp_path: Path) -> tuple[Path, Path]:
    raw, safe = tmp_path / "raw", tmp_path / "safe"
    raw.mkdir(), safe.mkdir()
    write_csv(session, source.Selection(), raw, include_audit=True)
    write_csv(session, source.Selection(), safe, include_audit=True, spreadsheet_safe=True)
    return raw, safe


def test_the_raw_csv_keeps_formula_text_exactly_as_entered(comments, session, out):
    out.mkdir()
    write_csv(session, source.Selection(), out, include_audit=True)  # the default: analyses read what was entered
    assert comment_cells(out) == {"wide": comments, "long": comments, "audit": comments}
    assert b"=1+1," in (out / "vitals.csv").read_bytes()  # not even quoted: a plain value


def test_the_spreadsheet_safe_csv_quotes_formula_text_and_leaves_numbers_and_all_else(comments, session, tmp_path):
    raw, safe = export_both(session, tmp_path)
    expected = {number: SAFE[comment] for number, comment in comments.items()}
    assert comment_cells(safe) == {"wide": expected, "long": expected, "audit": expected}
    assert {row["TEMP"] for row in rows(safe / "vitals.csv")} == {"37.2"}
    safe_rows, raw_rows = without_comments(safe), without_comments(raw)
    assert {name: len(found) for name, found in safe_rows.items()} == {name: len(found) for name, found in raw_rows.items()}
    changed = {(raw_row[column], safe_row[column]) for name in raw_rows
               for raw_row, safe_row in zip(raw_rows[name], safe_rows[name], strict=True)
               for column in raw_row if raw_row[column] != safe_row[column]}
    assert changed == {("@status", "'@status")}  # the audit trail's name of the entry status: text like any other


def test_a_carriage_return_first_is_quoted_in_the_spreadsheet_safe_csv(exporting_app, staff, session, tmp_path):
    # Compared as bytes: how a CR inside a value is read back depends on the CSV quoting, not on this rule.
    enter_comments(exporting_app, staff["investigator"], ["\r=1+1"])
    raw, safe = export_both(session, tmp_path)
    for name in ("vitals.csv", "items_long.csv", "audit_trail.csv"):
        assert b"\r=1+1" in (raw / name).read_bytes() and b"'\r" not in (raw / name).read_bytes(), name
        assert b"'\r=1+1" in (safe / name).read_bytes(), name


def test_the_variant_is_asked_for_in_the_export_request_and_named_in_its_manifest(exporting_app, comments, staff):
    client = exporting_app.test_client()
    stat = bearer(login(client, staff["statistician"]))
    raw = client.post("/api/v1/exports", json={"format": "csv"}, headers=stat).get_json()["id"]
    safe = client.post("/api/v1/exports", json={"format": "csv", "spreadsheet_safe": True}, headers=stat)
    assert safe.status_code == 202, safe.get_json()
    assert safe.get_json()["filters"]["spreadsheet_safe"] is True
    assert invoke(exporting_app, "worker", "--once").exit_code == 0
    for job_id, flag, cell in ((raw, False, "=1+1"), (safe.get_json()["id"], True, "'=1+1")):
        manifest = client.get(f"/api/v1/exports/{job_id}/manifest", headers=stat).get_json()
        assert manifest["filters"]["spreadsheet_safe"] is flag
        download = client.get(f"/api/v1/exports/{job_id}/files/vitals.csv", headers=stat)
        wide = list(csv.DictReader(io.StringIO(download.get_data(as_text=True), newline="")))
        download.close()
        assert cell in {row["VSCOMM"] for row in wide}
    for body in ({"format": "odm", "spreadsheet_safe": True}, {"format": "csv", "spreadsheet_safe": "sometimes"}):
        refused = client.post("/api/v1/exports", json=body, headers=stat)
        assert refused.status_code == 422 and [e["pointer"] for e in refused.get_json()["errors"]] == ["/spreadsheet_safe"]
