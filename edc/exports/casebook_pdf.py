"""A subject's casebook as a PDF: the human-readable copy of the record that 21 CFR 11.10(b) asks for.

Two steps. `gather` reads one subject's record (entries with their values opened, SDV marks, queries and
their threads, signatures and, if asked, the subject's audit chain) into plain data; `render` lays it out:
a cover, then every event of the schedule in order and every form entered there, each item as a row
"label | value | flags", then the subject-level logs, the casebook signatures and the audit records that
belong to no entry. Labels, titles, code labels and missing-data codes come from the form definitions in
the chosen language (English where a label has no translation); Arabic is shaped and laid right to left by
HarfBuzz (uharfbuzz) through fpdf2's text shaping. The fonts (DejaVu Sans, licence beside them in fonts/)
are embedded as subsets. The casebook's own words (headings, column heads, status words) come from
casebook_words.yaml beside this module, in the same language; in Arabic the layout is mirrored (columns from right
to left, text right-aligned) and every value set into a sentence (a time, a study number, a username) is a bidi
isolate, so it reads left to right inside the right-to-left text.

The same record, options and generation time give the same bytes: the PDF's dates are the generation time
passed in, fpdf2 numbers its objects in the order they are written, and nothing random goes in. So a copy
is verified later by its SHA-256 (recorded in the audit trail when the copy is made), or by rendering again.

Values are shown as the reader may see them: the caller passes the items hidden from the reader
(identifying items for a monitor), whose values, and audited old and new values, read "withheld".
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import yaml
from fontTools.ttLib import TTFont
from fpdf import FPDF
from sqlalchemy.orm import Session

from edc import runtime
from edc.ecrf import FormDef, Study
from edc.ecrf.definitions import ItemDef
from edc.models.entries import SUBJECT_LOG_KEY, Entry, Query
from edc.models.monitoring import DataCutEntry, QueryMessage, SdvMark, Signature
from edc.models.subjects import Subject
from edc.services import audit, identifying
from edc.services.sealing import StoredDocument, unseal

SOFTWARE_VERSION = "0.1.0"  # pyproject.toml's version (a test holds them together)
MEDIA_TYPE = "application/pdf"
FONTS = Path(__file__).resolve().parent / "fonts"
FONT = "DejaVu"
NOT_ANSWERED = "—"
DERIVED = "derived"
WORDS_FILE = Path(__file__).resolve().parent / "casebook_words.yaml"
RTL_LANGUAGES = frozenset({"ar"})
# Unicode bidi isolates: a value set into right-to-left text keeps its own direction (FSI: the direction of its first
# strong character, left to right for a time or a username) and does not reorder the words around it.
FSI, PDI = "\u2068", "\u2069"
ISOLATES = str.maketrans("", "", FSI + PDI)
HiddenItems = Callable[[str], frozenset[str]]  # form id -> the items whose values the reader may not see


# --------------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class SignatureLine:
    """A signature as it stood when the casebook shows the record (live, or at a data cut's cut-off)."""

    printed_name: str
    signer_username: str
    meaning: str
    signed_at: datetime
    invalidated_at: datetime | None


@dataclass(frozen=True)
class QueryLine:
    """A query as it stood when the casebook shows the record."""

    item_id: str | None
    state: str
    critical: bool
    origin: str
    message: str
    opened_at: datetime
    opened_by: str
    closed_at: datetime | None
    closed_by: str | None


@dataclass(frozen=True)
class Cut:
    """A data cut: the casebook shows the record as it stood at its cut-off."""

    id: uuid.UUID
    name: str
    cutoff_at: datetime


# A query's state after each action of its thread (comments change none).
STATE_AFTER = {"open": "open", "answer": "answered", "reopen": "open", "close": "closed", "cancel": "cancelled"}


@dataclass
class EntryPage:
    """One entry as printed: where it sits, its form, its values and what was done to it."""

    id: uuid.UUID
    event_key: str
    form: FormDef
    status: str
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime | None
    updated_by: str
    locked_at: datetime | None
    values: dict[str, Any]
    hidden: frozenset[str]
    sdv_items: set[str] = field(default_factory=set)   # items with an active SDV mark
    sdv_entry: datetime | None = None                 # when the whole entry was marked verified (active mark)
    queries: list[tuple[QueryLine, list[QueryMessage]]] = field(default_factory=list)
    signatures: list[SignatureLine] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Record:
    """What a casebook shows of one subject."""

    subject: Subject
    entries: list[EntryPage]
    casebook_signatures: list[SignatureLine]
    other_audit: list[dict[str, Any]] | None  # audit records of the subject that belong to no entry (None: not asked)


def gather(session: Session, subject: Subject, *, hidden: HiddenItems, include_audit: bool,
           cut: Cut | None = None) -> Record:
    """Read a subject's whole record (the caller has checked the reader may see it); with a data cut, as it stood
    at the cut-off: the cut's snapshot of each entry, and the SDV marks, queries, signatures and audit records of
    that moment."""
    study = runtime.of(session).study
    until = None if cut is None else utc(cut.cutoff_at)
    if cut is None:
        stmt = (sa.select(Entry.id, Entry.event_key, Entry.form_id, Entry.form_version, Entry.status, Entry.version,
                          Entry.created_at, Entry.created_by, Entry.updated_at, Entry.updated_by, Entry.locked_at,
                          Entry.data)
                .where(Entry.subject_id == subject.id))
    else:
        stmt = (sa.select(DataCutEntry.entry_id, DataCutEntry.event_key, DataCutEntry.form_id, DataCutEntry.form_version,
                          DataCutEntry.status, DataCutEntry.entry_version, Entry.created_at, Entry.created_by,
                          Entry.updated_at, Entry.updated_by, Entry.locked_at, DataCutEntry.data)
                .join(Entry, Entry.id == DataCutEntry.entry_id)
                .where(DataCutEntry.cut_id == cut.id, DataCutEntry.subject_id == subject.id))
    entries: dict[uuid.UUID, EntryPage] = {}
    for (entry_id, event_key, form_id, form_version, status, version, created_at, created_by, updated_at, updated_by,
         locked_at, data) in session.execute(stmt.order_by(Entry.created_at, Entry.id)):
        form = study.form(form_id, form_version)
        values = unseal(session, form, StoredDocument(entry_id, data), in_place=True)
        hide = hidden(form_id)
        if until is not None and updated_at is not None and utc(updated_at) > until:
            updated_at, updated_by = None, ""  # changed after the cut: when it last changed before is in its audit trail
        if until is not None and locked_at is not None and utc(locked_at) > until:
            locked_at = None
        entries[entry_id] = EntryPage(entry_id, event_key, form, status, version, created_at, created_by, updated_at,
                                      updated_by, locked_at, identifying.withhold(values, hide), hide)
    marks = sa.select(SdvMark).where(SdvMark.subject_id == subject.id)
    if until is None:
        marks = marks.where(SdvMark.cleared_at.is_(None))
    else:
        marks = marks.where(SdvMark.verified_at <= until, sa.or_(SdvMark.cleared_at.is_(None), SdvMark.cleared_at > until))
    for mark in session.scalars(marks.order_by(SdvMark.verified_at, SdvMark.id)):
        page = entries.get(mark.entry_id)
        if page is not None:
            if mark.item_id is None:
                page.sdv_entry = mark.verified_at
            else:
                page.sdv_items.add(mark.item_id)
    _gather_queries(session, subject, entries, until)
    casebook_signatures = []
    for signature in session.scalars(sa.select(Signature).where(Signature.subject_id == subject.id)
                                     .order_by(Signature.signed_at, Signature.id)):
        signed_at, invalidated_at = utc(signature.signed_at), signature.invalidated_at
        if until is not None and signed_at > until:
            continue
        if until is not None and invalidated_at is not None and utc(invalidated_at) > until:
            invalidated_at = None  # still valid at the cut-off
        line = SignatureLine(signature.printed_name, signature.signer_username, signature.meaning, signed_at,
                             invalidated_at)
        if signature.entry_id is None:
            casebook_signatures.append(line)
        elif signature.entry_id in entries:
            entries[signature.entry_id].signatures.append(line)
    other_audit = None
    if include_audit:
        other_audit = []
        for record in audit.history(session, chain=audit.subject_chain(subject.id), limit=10_000_000):
            if until is not None and utc(record["occurred_at"]) > until:
                continue
            page = entries.get(_uuid(record["entity_id"])) if record["entity_type"] == "entry" else None
            if page is None:
                other_audit.append(record)
            else:
                page.audit.append({**record, "changes": identifying.withhold_changes(record["changes"], page.hidden)})
    return Record(subject, list(entries.values()), casebook_signatures, other_audit)


def _gather_queries(session: Session, subject: Subject, entries: dict[uuid.UUID, EntryPage],
                    until: datetime | None) -> None:
    stmt = sa.select(Query).where(Query.subject_id == subject.id)
    if until is not None:
        stmt = stmt.where(Query.opened_at <= until)
    found = list(session.scalars(stmt.order_by(Query.opened_at, Query.id)))
    threads: dict[uuid.UUID, list[QueryMessage]] = {}
    if found:
        messages = sa.select(QueryMessage).where(QueryMessage.query_id.in_([q.id for q in found]))
        if until is not None:
            messages = messages.where(QueryMessage.created_at <= until)
        for message in session.scalars(messages.order_by(QueryMessage.created_at, QueryMessage.id)):
            threads.setdefault(message.query_id, []).append(message)
    for query in found:
        if query.entry_id not in entries:
            continue
        thread = threads.get(query.id, [])
        state, closed_at, closed_by = query.state, query.closed_at, query.closed_by
        if until is not None:  # the state the thread had reached at the cut-off
            state = next((STATE_AFTER[m.action] for m in reversed(thread) if m.action in STATE_AFTER), "open")
            if closed_at is not None and utc(closed_at) > until:
                closed_at, closed_by = None, None
        line = QueryLine(query.item_id, state, query.critical, query.origin, query.message, query.opened_at,
                         query.opened_by, closed_at, closed_by)
        entries[query.entry_id].queries.append((line, thread))


def utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives naive UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- words


def text_in(labels: dict[str, str] | None, lang: str) -> str:
    """A label in `lang`, English when it has no translation."""
    if not labels:
        return ""
    return labels.get(lang) or labels.get("en") or next(iter(labels.values()), "")


def utc_text(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:  # SQLite gives naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_text(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone)
    return f"{local.strftime('%Y-%m-%d %H:%M:%S')} {local.strftime('%z')[:3]}:{local.strftime('%z')[3:]} ({zone.key})"


@functools.cache
def catalogue() -> dict[str, Any]:
    """The casebook's own words: `text` (English text -> translations) and `codes` (kind -> code -> words)."""
    return yaml.safe_load(WORDS_FILE.read_text(encoding="utf-8"))


class Words:
    """How the casebook's own words and the stored values read in one language."""

    def __init__(self, study: Study, lang: str) -> None:
        self.study, self.lang = study, lang
        self.rtl = lang in RTL_LANGUAGES
        self.missing = {code: text_in(labels, lang) for code, labels in study.missing_code_labels.items()}
        words = catalogue()
        self.texts = {english: translations.get(lang) or english for english, translations in words["text"].items()}
        self.codes = {kind: {code: names.get(lang) or names["en"] for code, names in codes.items()}
                      for kind, codes in words["codes"].items()}

    def __call__(self, english: str, **values: object) -> str:
        """The casebook's text in the language; `values` fill its {placeholders}, each isolated in right-to-left text
        (a time, a username or a study number reads left to right and leaves the words around it in place)."""
        text = self.texts.get(english, english)
        if not values:
            return text
        if self.rtl:
            values = {name: f"{FSI}{value}{PDI}" for name, value in values.items()}
        return text.format(**values)

    def code(self, kind: str, code: str) -> str:
        """A stored code (a status, a query state, a signature's meaning) as a word; an unknown code as it is."""
        return self.codes[kind].get(code, code)

    def value(self, item: ItemDef | None, value: Any) -> str:
        if value is None or value == "" or value == []:
            return NOT_ANSWERED
        if isinstance(value, dict):
            if "withheld" in value:
                return self("withheld (identifying; not shown to your role)")
            if "missing" in value:
                code = value["missing"]
                note = f": {clean(value['note'])}" if value.get("note") else ""
                return self("Missing, {reason} ({code})", reason=self.missing.get(code, code), code=code) + note
            return clean(str(value))
        if isinstance(value, bool):
            return self("Yes") if value else self("No")
        codes = item.code_list if item is not None else None
        if isinstance(value, list):
            return "; ".join(self._code(codes, one) for one in value)
        if codes and isinstance(value, str) and value in codes:
            return self._code(codes, value)
        text = clean(str(value))
        unit = item.unit_display or item.unit if item is not None else None
        if unit and isinstance(value, (int, float)):
            text = f"{text} {unit}"
        return text

    def _code(self, codes: dict[str, dict[str, str]] | None, code: Any) -> str:
        if isinstance(code, dict):
            return self.value(None, code)
        if codes and code in codes:
            return f"{text_in(codes[code], self.lang)} ({code})"
        return clean(str(code))


@functools.cache
def covered() -> frozenset[int]:
    """The code points the embedded font has glyphs for (regular and bold alike)."""
    with TTFont(FONTS / "DejaVuSans.ttf", lazy=True) as font:
        return frozenset(font.getBestCmap())


def clean(text: str) -> str:
    """Entered text as printed: line ends kept (multi-line free text), tabs as spaces. A character the font has no
    glyph for (CJK, for one) is printed as [U+XXXX] rather than silently left out; so is a control character,
    which never reaches storage (refused when entered) but is never dropped either."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    glyphs = covered()
    return "".join(ch if ch == "\n" or (ord(ch) >= 32 and ord(ch) in glyphs) else f"[U+{ord(ch):04X}]" for ch in text)


# --------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Options:
    lang: str = "en"
    include_audit: bool = False
    generated_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    cut: Cut | None = None
    generated_by: str = ""


class _Document(FPDF):
    def __init__(self, header_text: str, words: Words) -> None:
        super().__init__(format="A4", unit="mm")
        self.header_text, self.words, self.rtl = header_text, words, words.rtl
        self.set_margins(15, 18, 15)
        self.set_auto_page_break(False, margin=15)  # the layout breaks pages itself, row by row
        self.add_font(FONT, "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.alias_nb_pages()
        self.widths: dict[tuple[str, float, str], float] = {}
        self.shaped: dict[tuple, tuple[bytes, float, float]] = {}  # see _shaped_cell

    def measure(self, text: str) -> float:
        """The width of `text` in the current font (remembered: a casebook repeats its labels and words). Bidi
        isolates take no room."""
        key = (self.font_style, self.font_size_pt, text)
        width = self.widths.get(key)
        if width is None:
            width = self.widths[key] = self.get_string_width(text.translate(ISOLATES))
        return width

    def header(self) -> None:
        self.set_font(FONT, "", 7.5)
        self.set_text_color(90)
        half = self.epw / 2
        if self.rtl:  # the study on the right, the page number on the left
            self.set_xy(self.l_margin + half, 8)
            _cell(self, half, 5, self.header_text, "R")
            # "page x of y" with the total drawn apart: fpdf2 fills the {nb} alias in after laying the line out, which
            # would misplace it inside shaped right-to-left text. The total, left to right, ends the line on the left.
            total = "{nb}"
            self.set_xy(self.l_margin, 8)
            self.cell(self.measure(total), 5, total)  # a cell: pdf.text() leaves the alias as it is
            self.set_xy(self.l_margin + self.measure(total + " "), 8)
            _cell(self, half, 5, self.words("page {page} of {pages}", page=self.page_no(), pages="").rstrip(FSI + PDI + " "))
        else:
            self.set_xy(self.l_margin, 8)
            self.cell(half, 5, self.header_text)
            self.cell(half, 5, self.words("page {page} of {pages}", page=self.page_no(), pages="{nb}"), align="R")
        self.line(self.l_margin, 13.5, self.w - self.r_margin, 13.5)
        self.set_text_color(0)
        self.set_xy(self.l_margin, self.t_margin)


def render(study: Study, record: Record, options: Options) -> bytes:
    """Lay a gathered record out as PDF bytes (deterministic for the same record and options)."""
    subject = record.subject
    site = subject.site
    zone = ZoneInfo(site.time_zone)
    words = Words(study, options.lang)
    pdf = _Document(f"{text_in(study.title, 'en')} · {study.id} · {words('casebook of {number}', number=subject.number)}",
                    words)
    pdf.set_title(f"Casebook {subject.number}")
    pdf.set_subject(f"{study.id} casebook of {subject.number}")
    pdf.set_creator(f"edc {SOFTWARE_VERSION}")
    pdf.set_producer(f"edc {SOFTWARE_VERSION}")
    pdf.set_lang(options.lang)
    pdf.set_creation_date(options.generated_at.astimezone(UTC))
    _cover(pdf, study, record, options, zone)
    by_event: dict[str, list[EntryPage]] = {}
    for page in record.entries:
        by_event.setdefault(page.event_key, []).append(page)
    for event in study.events:
        keys = sorted((k for k in by_event if k.split("/")[0] == event.id), key=lambda k: int(k.split("/")[1]))
        for key in keys:
            instance = key.split("/")[1]
            title = text_in(event.label, options.lang) + (f" (#{instance})" if event.repeatable else "")
            _section(pdf, f"{title} [{event.id}]")
            pages = sorted(by_event[key], key=lambda p: (_form_order(event.forms, p.form.id), p.created_at, str(p.id)))
            for page in pages:
                _entry(pdf, study, words, page, zone, options)
    logs = [p for p in record.entries if p.event_key == SUBJECT_LOG_KEY]
    if logs:
        _section(pdf, words("Logs and repeating forms (tied to no visit)"))
        for page in logs:
            _entry(pdf, study, words, page, zone, options)
    scheduled = {e.id for e in study.events}
    stray = [p for p in record.entries if p.event_key != SUBJECT_LOG_KEY and p.event_key.split("/")[0] not in scheduled]
    if stray:
        _section(pdf, words("Entries of events no longer in the schedule"))
        for page in stray:
            _entry(pdf, study, words, page, zone, options)
    if not record.entries:
        pdf.set_font(FONT, "", 10)
        _paragraph(pdf, 6, words("This subject has no entries: no form has been entered."))
    _casebook_signatures(pdf, record.casebook_signatures, words, zone)
    if record.other_audit is not None:
        _heading(pdf, words("Audit trail of the subject (records that belong to no single entry)"))
        _audit_table(pdf, record.other_audit, None, words, zone)
    return bytes(pdf.output())


def _form_order(forms: list[str], form_id: str) -> int:
    return forms.index(form_id) if form_id in forms else len(forms)


def _cover(pdf: _Document, study: Study, record: Record, options: Options, zone: ZoneInfo) -> None:
    subject, site, words = record.subject, record.subject.site, pdf.words
    pdf.add_page()
    pdf.set_font(FONT, "B", 16)
    _paragraph(pdf, 8, words("Casebook of subject {number}", number=subject.number))
    pdf.set_font(FONT, "", 11)
    _paragraph(pdf, 6, text_in(study.title, options.lang))
    pdf.ln(4)
    versions: dict[str, set[str]] = {}
    for page in record.entries:
        versions.setdefault(page.form.id, set()).add(page.form.version)
    cut = options.cut
    rows = [
        (words("Study"), f"{study.id}: {text_in(study.title, 'en')}"),
        (words("Site"), f"{site.code}: {site.name} ({site.country}, {site.time_zone})"),
        (words("Study number"), subject.number),
        (words("Subject status"), words.code("subject_status", subject.status)),
        (words("Registration date"), subject.registration_date.isoformat() if subject.registration_date else ""),
        (words("Planned infusion date"),
         subject.planned_infusion_date.isoformat() if subject.planned_infusion_date else ""),
        (words("Day 0 (first infusion)"), subject.day0.isoformat() if subject.day0 else ""),
        (words("Subject locked"), utc_text(subject.locked_at) if subject.locked_at else words("no")),
        (words("Generated"), f"{utc_text(options.generated_at)}\n"
                             + words("{time} (site's local time)", time=local_text(options.generated_at, zone))),
        (words("Generated by"), options.generated_by or ""),
        (words("Data cut"), words("none: the data as they stand at the generation time") if cut is None
         else words("{name}: the record as it stood at {time}", name=cut.name, time=utc_text(cut.cutoff_at))),
        (words("Language of labels"), options.lang),
        (words("Audit trail included"), words("yes") if options.include_audit else words("no")),
        (words("Software"), f"edc {SOFTWARE_VERSION}"),
        (words("Form versions used"),
         ", ".join(f"{f} v{', '.join(sorted(v))}" for f, v in sorted(versions.items())) or words("none")),
        (words("Entries"), str(len(record.entries))),
    ]
    _table(pdf, ("", ""), rows, (45, 135), header=False)
    pdf.ln(3)
    pdf.set_font(FONT, "", 8)
    _paragraph(pdf, 4.5, words("A copy of the electronic record, made by the system. Its SHA-256 is recorded in the "
                               "audit trail when it is made: compare that value with the SHA-256 of this file to verify "
                               "it. Times are UTC unless marked as the site's local time. Flags: derived = computed by "
                               "the system, verified = source data verified (SDV), query = a query on the item."))


def _section(pdf: _Document, title: str) -> None:
    pdf.add_page()
    pdf.set_font(FONT, "B", 13)
    pdf.set_fill_color(225, 232, 240)
    _paragraph(pdf, 8, title, fill=True)
    pdf.ln(2)


def _heading(pdf: _Document, title: str, size: float = 10.5) -> None:
    if pdf.get_y() > pdf.h - 40:  # a heading never ends a page alone
        pdf.add_page()
    pdf.ln(2)
    pdf.set_font(FONT, "B", size)
    _paragraph(pdf, 6, title)


# Scripts that need shaping (joining, right to left): Hebrew, Arabic, Syriac, Thaana, N'Ko and Arabic presentation
# forms. Only text holding one of them goes through HarfBuzz: shaping every cell would cost ten times as much time
# and size for text that looks the same without it.
NEEDS_SHAPING = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
PADDING_X, PADDING_Y = 1.2, 0.8


def _cell(pdf: _Document, width: float, height: float, text: str, align: str = "L") -> None:
    """One line of text at the current position; shaped (and laid right to left where the script runs so) only when
    it needs to be, as a right-to-left paragraph in a right-to-left casebook. Other text is written straight at its
    baseline, at half the cost of a cell (left to right: a time, a code or a username reads as it is written)."""
    if NEEDS_SHAPING.search(text):
        if pdf.rtl and pdf.current_font_is_set_on_page:
            _shaped_cell(pdf, width, height, text, align)
            return
        pdf.set_text_shaping(True, direction="rtl" if pdf.rtl else None)
        pdf.cell(width, height, text, align=align)
        pdf.set_text_shaping(False)
        return
    text = text.translate(ISOLATES)
    x = pdf.get_x() + (width - pdf.measure(text) if align == "R" else 0.0)
    pdf.text(x, pdf.get_y() + height / 2 + 0.3 * pdf.font_size, text)


def _shaped_cell(pdf: _Document, width: float, height: float, text: str, align: str) -> None:
    """A shaped cell of a right-to-left casebook, shaped once per document: an Arabic casebook repeats the same
    headings, column heads, flags and code labels thousands of times, and the bidi pass, HarfBuzz and fpdf2's cell
    cost a millisecond each time. The first time, the cell is written and the content it added to the page kept;
    then it is written again moved to the new place (`q 1 0 0 1 dx dy cm ... Q`). Only when the page already has the
    font set (then the cell adds text and no font change); the same text, font, size, box and colours give the same
    content."""
    key = (text, pdf.font_style, pdf.font_size_pt, width, height, align, repr(pdf.text_color), repr(pdf.fill_color))
    x, y = pdf.get_x(), pdf.get_y()
    known = pdf.shaped.get(key)
    if known is not None:
        content, x0, y0 = known
        pdf._out(f"q 1 0 0 1 {(x - x0) * pdf.k:.2f} {(y0 - y) * pdf.k:.2f} cm ".encode() + content + b" Q")
        return
    contents = pdf.pages[pdf.page].contents
    start = len(contents)
    pdf.set_text_shaping(True, direction="rtl")
    pdf.cell(width, height, text, align=align)
    pdf.set_text_shaping(False)
    pdf.shaped[key] = (bytes(contents[start:]).rstrip(b"\n"), x, y)


def _paragraph(pdf: _Document, height: float, text: str, align: str = "L", fill: bool = False) -> None:
    """Text over the page's width, wrapped (right-aligned in a right-to-left casebook)."""
    if pdf.rtl:
        align = "R"
    lines = _wrap(pdf, text, pdf.epw - 2 * PADDING_X)
    for line in lines:
        if pdf.get_y() + height > pdf.page_break_trigger:
            pdf.add_page()
        pdf.set_x(pdf.l_margin)
        if fill:
            pdf.cell(pdf.epw, height, "", fill=True)
            pdf.set_x(pdf.l_margin)
        pdf.set_x(pdf.l_margin + PADDING_X)
        _cell(pdf, pdf.epw - 2 * PADDING_X, height, line, align)
        pdf.ln(height)


def _wrap(pdf: _Document, text: str, width: float) -> list[str]:
    """Greedy word wrap by the current font's widths (words wider than a line are cut). An isolated value cut by a
    line end is closed at the end of its line and opened again on the next."""
    measure = pdf.measure
    space = measure(" ")
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, used = "", 0.0
        for word in paragraph.split(" "):
            size = measure(word)
            while size > width and word:  # a very long word: cut it where it fills the line
                cut = max(1, int(len(word) * width / size))
                while cut > 1 and measure(word[:cut]) > width:
                    cut -= 1
                if line:
                    lines.append(line)
                lines.append(word[:cut])
                line, used, word = "", 0.0, word[cut:]
                size = measure(word)
            if not line:
                line, used = word, size
            elif used + space + size <= width:
                line, used = f"{line} {word}", used + space + size
            else:
                lines.append(line)
                line, used = word, size
        lines.append(line)
    if FSI in text and len(lines) > 1:
        lines = _balance_isolates(lines)
    return lines


def _balance_isolates(lines: list[str]) -> list[str]:
    balanced, carried = [], 0
    for line in lines:
        line = FSI * carried + line
        carried = max(0, line.count(FSI) - line.count(PDI))
        balanced.append(line + PDI * carried)
    return balanced


def _table(pdf: _Document, headings: tuple[str, ...], rows: Iterable[tuple[str, ...]], widths: tuple[float, ...], *,
           header: bool = True, size: float = 8.5, aligns: tuple[str, ...] | None = None) -> None:
    """Rows of wrapped cells with a rule under each; the heading row is repeated on each page the table runs to,
    and a row taller than what is left of the page goes on the next one (a row taller than a page is split). In a
    right-to-left casebook the table is mirrored: the first column on the right, every cell right-aligned."""
    height = size * 0.45
    aligns = aligns or ("L",) * len(widths)
    if pdf.rtl:
        aligns = ("R",) * len(widths)
    right = pdf.l_margin + sum(widths)
    # Where each column starts, left to right on the page: the logical order, or its mirror.
    lefts, x = [], pdf.l_margin
    for width in (reversed(widths) if pdf.rtl else widths):
        lefts.append(x)
        x += width
    if pdf.rtl:
        lefts.reverse()

    def rule() -> None:
        pdf.set_draw_color(170)
        pdf.line(pdf.l_margin, pdf.get_y(), right, pdf.get_y())
        pdf.set_draw_color(0)

    def draw(cells: list[list[str]], bold: bool) -> None:
        pdf.set_font(FONT, "B" if bold else "", size)
        done = 0
        total = max(len(lines) for lines in cells)
        while done < total:
            room = int((pdf.page_break_trigger - pdf.get_y() - 2 * PADDING_Y) // height)
            if room < min(total - done, 3) or room < 1:  # keep at least three lines of a row together
                pdf.add_page()
                if header and not bold:
                    draw(heading_cells, True)
                    pdf.set_font(FONT, "", size)
                continue
            top = pdf.get_y() + PADDING_Y
            for lines, left, width, align in zip(cells, lefts, widths, aligns):
                for number, line in enumerate(lines[done:done + room]):
                    if line:
                        pdf.set_xy(left + PADDING_X, top + number * height)
                        _cell(pdf, width - 2 * PADDING_X, height, line, align)
            shown = min(room, total - done)
            done += shown
            pdf.set_y(top + shown * height + PADDING_Y)
            rule()

    pdf.set_font(FONT, "B", size)
    heading_cells = [_wrap(pdf, text, width - 2 * PADDING_X) for text, width in zip(headings, widths)]
    if header:
        draw(heading_cells, True)
    pdf.set_font(FONT, "", size)
    for values in rows:
        draw([_wrap(pdf, text, width - 2 * PADDING_X) for text, width in zip(values, widths)], False)
    pdf.ln(1)


def _entry(pdf: _Document, study: Study, words: Words, page: EntryPage, zone: ZoneInfo, options: Options) -> None:
    form = page.form
    _heading(pdf, words("{title} ({form}, version {version})", title=text_in(form.title, options.lang), form=form.id,
                        version=form.version))
    pdf.set_font(FONT, "", 7.5)
    state = [words("status {status}", status=words.code("entry_status", page.status)),
             words("entry version {version}", version=page.version),
             words("entered {time} by {who}", time=utc_text(page.created_at), who=page.created_by)]
    if page.updated_at and page.version > 1:
        state.append(words("last changed {time} by {who}", time=utc_text(page.updated_at), who=page.updated_by))
    state.append(words("locked {time}", time=utc_text(page.locked_at)) if page.locked_at else words("not locked"))
    requirement = study.sdv_requirement(form.id)
    if page.sdv_entry:
        state.append(words("SDV: verified {time}", time=utc_text(page.sdv_entry)))
    elif requirement == "none":
        state.append(words("SDV: not required"))
    else:
        state.append(words("SDV: {count} item(s) verified, entry not verified", count=len(page.sdv_items)))
    _paragraph(pdf, 4, " · ".join(state))
    queried: dict[str, list[str]] = {}
    for query, _ in page.queries:
        if query.item_id:
            queried.setdefault(query.item_id, []).append(query.state)
    rows = list(_item_rows(form, words, page, queried, options.lang))
    _table(pdf, (words("Item"), words("Value"), words("Flags")), rows, (70, 85, 25))
    if page.queries:
        _heading(pdf, words("Queries"), 9)
        for query, messages in page.queries:
            item = form.items.get(query.item_id) if query.item_id else None
            about = text_in(item.label, options.lang) if item else words("the whole entry")
            pdf.set_font(FONT, "B", 8)
            parts = [words("Query on {about} ({item}): {state}", about=about, item=query.item_id or words("entry"),
                           state=words.code("query_state", query.state))]
            if query.critical:
                parts.append(words("critical"))
            parts += [words.code("query_origin", query.origin),
                      words("opened {time} by {who}", time=utc_text(query.opened_at), who=query.opened_by)]
            if query.closed_at:
                parts.append(words("closed {time} by {who}", time=utc_text(query.closed_at), who=query.closed_by))
            _paragraph(pdf, 4.5, ("، " if words.rtl else ", ").join(parts))
            thread = [(utc_text(m.created_at), f"{m.author_name} ({m.author_role or ''})",
                       words.code("query_action", m.action), clean(m.body))
                      for m in messages] or [("", "", words.code("query_action", "opened"), clean(query.message))]
            _table(pdf, (words("When"), words("Who"), words("Action"), words("Message")), thread, (34, 40, 18, 88),
                   size=7.5)
    if page.signatures:
        _heading(pdf, words("Signatures of this entry"), 9)
        _signature_table(pdf, page.signatures, words, zone)
    if options.include_audit:
        _heading(pdf, words("Audit trail of this entry"), 9)
        _audit_table(pdf, page.audit, form, words, zone)


def _item_rows(form: FormDef, words: Words, page: EntryPage, queried: dict[str, list[str]], lang: str):
    for node_id in form.top_level:
        if node_id in form.groups:
            group = form.groups[node_id]
            value = page.values.get(node_id)
            label = text_in(group.label, lang)
            if not isinstance(value, list):
                yield label, words.value(None, value), _flags(None, node_id, page, queried, words)
                continue
            yield label, words("{count} row(s)", count=len(value)), _flags(None, node_id, page, queried, words)
            for number, row in enumerate(value, start=1):
                for item_id in group.items:
                    item = form.items[item_id]
                    yield (f"  {label} #{number}: {text_in(item.label, lang)}", words.value(item, row.get(item_id)),
                           words(DERIVED) if item.computed else "")
        else:
            item = form.items[node_id]
            yield (text_in(item.label, lang), words.value(item, page.values.get(node_id)),
                   _flags(item, node_id, page, queried, words))


def _flags(item: ItemDef | None, item_id: str, page: EntryPage, queried: dict[str, list[str]], words: Words) -> str:
    flags = []
    if item is not None and item.computed:
        flags.append(words(DERIVED))
    if item_id in page.sdv_items:
        flags.append(words("verified"))
    for state in queried.get(item_id, ()):
        flags.append(words("query {state}", state=words.code("query_state", state)))
    return "\n".join(flags)


def _signature_rows(signatures: list[SignatureLine], words: Words, zone: ZoneInfo):
    for s in signatures:
        status = words("valid") if s.invalidated_at is None else words("invalidated {time}", time=utc_text(s.invalidated_at))
        yield (f"{s.printed_name}\n({s.signer_username})", words.code("signature_meaning", s.meaning),
               f"{utc_text(s.signed_at)}\n{local_text(s.signed_at, zone)}", status)


def _signature_table(pdf: _Document, signatures: list[SignatureLine], words: Words, zone: ZoneInfo) -> None:
    _table(pdf, (words("Signed by (printed name)"), words("Meaning"), words("Signed at (UTC and site's local time)"),
                 words("Status")),
           list(_signature_rows(signatures, words, zone)), (48, 22, 70, 40), size=7.5)


def _casebook_signatures(pdf: _Document, signatures: list[SignatureLine], words: Words, zone: ZoneInfo) -> None:
    _heading(pdf, words("Casebook signatures"))
    if signatures:
        _signature_table(pdf, signatures, words, zone)
    else:
        pdf.set_font(FONT, "", 8.5)
        _paragraph(pdf, 5, words("The casebook as a whole has not been signed."))


def _audit_table(pdf: _Document, records: list[dict[str, Any]], form: FormDef | None, words: Words,
                 zone: ZoneInfo) -> None:
    rows = []
    for record in records:
        who = f"{record.get('actor_name') or record['actor']} ({record.get('role') or ''})"
        action = record["action"] if form is not None else f"{record['action']} ({record['entity_type']})"
        changes = record["changes"] or [{"field": "", "old": None, "new": None}]
        for number, change in enumerate(changes):
            item = form.items.get(change.get("field")) if form is not None else None
            label = text_in(item.label, words.lang) if item is not None else str(change.get("field") or "")
            old, new = change.get("old"), change.get("new")
            first = number == 0
            rows.append((f"#{record['seq']} {utc_text(record['occurred_at'])}" if first else "",
                         who if first else "", action if first else "", label,
                         "" if old is None else _audit_value(words, item, old),
                         "" if new is None else _audit_value(words, item, new),
                         clean(record.get("reason") or "") if first else ""))
    if not rows:
        pdf.set_font(FONT, "", 8)
        _paragraph(pdf, 4.5, words("No audit records."))
        return
    _table(pdf, (words("When"), words("Who"), words("Action"), words("Item"), words("Old"), words("New"),
                 words("Reason")), rows, (27, 27, 19, 31, 29, 29, 18), size=6.5)


def _audit_value(words: Words, item: ItemDef | None, value: Any) -> str:
    if isinstance(value, (dict, list)) and item is None:
        return clean(str(value))
    return words.value(item, value)
