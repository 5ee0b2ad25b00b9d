"""End to end: what the trial's forms mark `encrypt` or `identifying` is never in clear outside the service.

A unique canary goes into every encrypted item of every trial form, through the entry service as a site
would enter it (the seeded demo study's entries are the base; a form the seed has no entry of gets a
draft). The canaries are then looked for, as bytes, in the SQLite file and its WAL (before and after a
checkpoint) or in a `pg_dump` of the PostgreSQL database, in every log line written meanwhile, and in every
file the statistician's and the registry's exports write (CSV and ODM with their audit trails, FHIR ndjson,
which Bulk Data serves). They must be found in none, while the service still reads every one of them back.
Key rotation and signatures over encrypted trial items: tests/monitoring/test_encrypted_signatures.py.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from edc import runtime
from edc.ecrf.definitions import FormDef, ItemDef, Study
from edc.exports import source
from edc.exports.csv_files import write_csv
from edc.exports.fhir_ndjson import write_ndjson
from edc.exports.odm import write_odm
from edc.extensions import db
from edc.logs import JsonFormatter
from edc.models.entries import Entry
from edc.models.subjects import Subject
from edc.models.users import User
from edc.problems import Problem
from edc.services import entries
from edc.services.auth import actor_for
from edc.services.concurrency import etag_of
from edc.services.demo_subjects import SITE_INVESTIGATORS

# Where a form the seed never enters is entered (its event, None for a subject log), and by whom.
NEW_ENTRY_EVENTS = {"dd": "DTH", "ds": "EOS", "ltfu": "M18", "dv": None}
FORM_WRITERS = {"mfg": "mfg", "sae_review": "safety"}
REASON = "Canary of the encryption test"


def _encrypted_items(study: Study) -> dict[str, list[ItemDef]]:
    """Form id -> its encrypted items (identifying ones included), current versions."""
    found = {}
    for form_id in study.all_forms:
        form = study.form(form_id)
        items = [item for item in form.items.values() if item.encrypt]
        if items:
            found[form_id] = items
    return found


def _canary(form_id: str, item: ItemDef) -> str:
    if item.pattern == "ARI-[0-9]{6}":  # the chain-of-identity product ID: digits only
        return f"ARI-9{secrets.randbelow(10**5):05d}"
    return f"CANARY-{form_id}-{item.id}-{secrets.token_hex(6)}"


# ------------------------------------------------------------------ making each encrypted item shown

def _triggers(form: FormDef, expression: str | None) -> dict[str, Any]:
    """Values that make a simple show_if true: `A == 'V'`, `'V' in A`, `!(A in ['X', ...])`, joined by &&."""
    wanted: dict[str, Any] = {}
    for part in (expression or "").split("&&"):
        part = part.strip()
        if match := re.fullmatch(r"(\w+) == '(\w+)'", part):
            wanted[match[1]] = match[2]
        elif match := re.fullmatch(r"'(\w+)' in (\w+)", part):
            wanted[match[2]] = [match[1]]
        elif match := re.fullmatch(r"!\((\w+) in \[([^\]]*)\]\)", part):
            excluded = set(re.findall(r"'(\w+)'", match[2]))
            wanted[match[1]] = next(code for code in form.items[match[1]].code_list if code not in excluded)
        elif part:
            raise AssertionError(f"{form.id}: no rule here to satisfy show_if {part!r}")
    return wanted


def _with_canaries(form: FormDef, values: dict[str, Any], canaries: dict[str, str]) -> dict[str, Any]:
    """The entry's values with every encrypted item filled with its canary and made visible."""
    data = _captured(form, values)
    for item in (form.items[item_id] for item_id in canaries):
        if item.group is None:
            _show(form, data, item)
            data[item.id] = canaries[item.id]
            continue
        group = form.groups[item.group]
        data.update(_triggers(form, group.show_if))
        rows = [dict(row) for row in data.get(group.id) or [{}]]
        rows[0].update(_conditions(form, item))
        rows[0][item.id] = canaries[item.id]
        data[group.id] = rows
    return data


def _captured(form: FormDef, values: dict[str, Any]) -> dict[str, Any]:
    """What a client sends back of opened values: computed items are the server's."""
    def keep(item_id: str) -> bool:
        return item_id in form.groups or (item_id in form.items and not form.items[item_id].computed)
    return {key: [{k: v for k, v in row.items() if keep(k)} for row in value] if key in form.groups else value
            for key, value in values.items() if keep(key)}


def _show(form: FormDef, data: dict[str, Any], item: ItemDef) -> None:
    """Set what makes a top-level item shown (computed conditions are met by the entry chosen: _base_entry)."""
    data.update({name: value for name, value in _conditions(form, item).items() if not form.items[name].computed})


def _writer(session, form_id: str, subject: Subject):
    username = FORM_WRITERS.get(form_id, SITE_INVESTIGATORS[subject.site.code])
    return actor_for(session.scalar(sa.select(User).where(User.username == username)))


def _conditions(form: FormDef, item: ItemDef) -> dict[str, Any]:
    """Every value that must hold for a top-level item to be shown, through the items that show it."""
    wanted = {}
    for name, value in _triggers(form, item.show_if).items():
        wanted.update(_conditions(form, form.items[name]))
        wanted[name] = value
    return wanted


def _computed_triggers(form: FormDef, items: list[ItemDef]) -> dict[str, Any]:
    """Conditions on computed items (AESER: serious) that no value sent can make true: an entry must meet them."""
    wanted = {}
    for item in items:
        if item.group is None:
            wanted.update(_conditions(form, item))
    return {name: value for name, value in wanted.items() if form.items[name].computed}


def _batches(form: FormDef, items: list[ItemDef]) -> list[list[ItemDef]]:
    """The items split so that each batch can be shown in one entry (EXREASND needs EXOCCUR N, COI needs Y)."""
    batches: list[tuple[list[ItemDef], dict[str, Any]]] = []
    for item in items:
        wanted = _conditions(form, item) if item.group is None else {}
        for batch, conditions in batches:
            if all(conditions.get(name, value) == value for name, value in wanted.items()):
                batch.append(item)
                conditions.update(wanted)
                break
        else:
            batches.append(([item], dict(wanted)))
    return [batch for batch, _ in batches]


def _base_entry(session, form: FormDef, items: list[ItemDef], used: set) -> tuple[Entry | None, dict[str, Any]]:
    """The first seeded entry of the form, not yet used, that meets the computed conditions, with its opened values."""
    needed = _computed_triggers(form, items)
    data_manager = actor_for(session.scalar(sa.select(User).where(User.username == "dm")))
    for entry in session.scalars(sa.select(Entry).where(Entry.form_id == form.id).order_by(Entry.created_at)):
        if entry.id in used:
            continue
        _, values = entries.get_entry(session, data_manager, entry.id)
        if all(values.get(name) == value for name, value in needed.items()):
            return entry, values
    assert not needed, f"{form.id}: no seeded entry with {needed}"
    return None, {}


def plant_canaries(session, study: Study) -> dict[tuple[str, str], str]:
    """Put a canary in every encrypted item of the trial forms; return (form, item) -> canary."""
    planted = {}
    first_subject = session.scalar(sa.select(Subject).order_by(Subject.number))
    used: set = set()
    for form_id, items, form in ((f, batch, study.form(f)) for f, all_items in _encrypted_items(study).items()
                                 for batch in _batches(study.form(f), all_items)):
        canaries = {item.id: _canary(form_id, item) for item in items}
        entry, values = _base_entry(session, form, items, used)
        if entry is not None:
            used.add(entry.id)
        subject = entry.subject if entry is not None else first_subject
        actor = _writer(session, form_id, subject)
        data = _with_canaries(form, values, canaries)
        for _ in range(5):
            try:
                if entry is None:
                    entries.create_entry(session, actor, subject.number, form=form_id, event=NEW_ENTRY_EVENTS[form_id],
                                         data=data, complete=False)
                else:
                    entries.update_entry(session, actor, entry.id, data=data, complete=False,
                                         expected_etag=etag_of(entry), reason=REASON)
                break
            except Problem as problem:
                session.rollback()
                # Values the new answers hide (an assent date once assent was not obtained): drop them, as a user would.
                hidden = [error["pointer"].removeprefix("/data/") for error in problem.errors or ()
                          if "does not apply" in error["detail"]]
                if not hidden or set(hidden) & set(canaries):
                    raise AssertionError(f"{form_id}: {problem.detail} {problem.errors}") from None
                for item_id in hidden:
                    data.pop(item_id, None)
        else:
            raise AssertionError(f"{form_id}: still refused after dropping hidden values")
        session.commit()
        planted.update({(form_id, item_id): canary for item_id, canary in canaries.items()})
    return planted


def read_back(session) -> set[str]:
    """Every encrypted value as the service opens it (proof that the canaries were stored)."""
    opened = set()
    data_manager = actor_for(session.scalar(sa.select(User).where(User.username == "dm")))
    for entry in session.scalars(sa.select(Entry)):
        _, values = entries.get_entry(session, data_manager, entry.id)
        for value in values.values():
            for row in value if isinstance(value, list) else [value]:
                opened |= {v for v in (row.values() if isinstance(row, dict) else [row]) if isinstance(v, str)}
    return opened


# ------------------------------------------------------------------ where clear text could leak

def _found(canaries: dict[tuple[str, str], str], data: bytes) -> list[str]:
    return [f"{form}.{item}" for (form, item), canary in canaries.items() if canary.encode() in data]


def _database_bytes(app, *, checkpoint: bool) -> bytes:
    """SQLite: the database file and its WAL as on disk. PostgreSQL: a pg_dump of the data (else COPY of every table)."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        db.session.rollback()  # a session's transaction holds the write lock on SQLite (BEGIN IMMEDIATE)
        if checkpoint:
            raw = db.engine.raw_connection()
            try:
                busy, _, _ = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                assert busy == 0, "the checkpoint did not complete"
            finally:
                raw.close()
        path = Path(url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal")]
        assert checkpoint or files[1].stat().st_size > 0, "no WAL to read before the checkpoint"
        return b"".join(file.read_bytes() for file in files if file.exists())
    if shutil.which("pg_dump"):
        plain = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
        dump = subprocess.run(["pg_dump", "--data-only", plain], capture_output=True, check=True)
        return dump.stdout
    chunks = []  # no pg_dump on PATH: every table's rows as COPY text
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            for table in db.metadata.sorted_tables:
                with cursor.copy(f'COPY "{table.name}" TO STDOUT') as copy:
                    chunks += [bytes(block) for block in copy]
    return b"".join(chunks)


def _export_bytes(session, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / "exports"
    selection = source.Selection()
    for kind in ("csv", "odm", "fhir"):
        (out / kind).mkdir(parents=True)
    write_csv(session, selection, out / "csv", include_audit=True)
    write_odm(session, selection, out / "odm", include_audit=True, file_oid="canaries", created_at=datetime.now(UTC))
    write_ndjson(session, source.Selection(whole_casebooks=True), out / "fhir")
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


@pytest.fixture
def log_lines():
    """Every log record written meanwhile, at every level, as the app's JSON lines and as plain messages."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    watched = [logging.getLogger(), logging.getLogger("edc"), logging.getLogger("sqlalchemy.engine")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.setLevel(logging.DEBUG if logger.name != "sqlalchemy.engine" else logging.INFO)  # INFO: SQL and parameters
    watched[0].addHandler(handler)
    yield stream
    watched[0].removeHandler(handler)
    for logger, level in zip(watched, levels, strict=True):
        logger.setLevel(level)


# ------------------------------------------------------------------ the tests

def test_canaries_in_every_encrypted_item_are_in_no_file_dump_log_or_export(demo, tmp_path, log_lines, caplog):
    caplog.set_level(logging.DEBUG)
    study = runtime.of(db.session).study
    planted = plant_canaries(db.session, study)
    assert {form for form, _ in planted} == set(_encrypted_items(study))
    assert len(planted) == sum(len(items) for items in _encrypted_items(study).values()) >= 25
    assert set(planted.values()) <= read_back(db.session), "a canary was not stored"

    assert _found(planted, _database_bytes(demo, checkpoint=False)) == []
    for name, data in _export_bytes(db.session, tmp_path).items():
        assert _found(planted, data) == [], name
    assert _found(planted, _database_bytes(demo, checkpoint=True)) == []
    logged = log_lines.getvalue() + "\n".join(record.getMessage() for record in caplog.records)
    assert "INSERT" in logged or "UPDATE" in logged  # the SQL log was on
    assert _found(planted, logged.encode()) == [] and _found(planted, logged.encode("unicode_escape")) == []

