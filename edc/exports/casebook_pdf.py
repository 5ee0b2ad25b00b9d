"""A subject's casebook as a PDF: the human-readable copy of the record that 21 CFR 11.10(b) asks for.

Two steps. `gather` reads one subject's record (entries with their values opened, SDV marks, queries and
their threads, signatures and, if asked, the subject's audit chain) into plain data; `render` lays it out:
a cover, then every event of the schedule in order and every form entered there, each item as a row
"label | value | flags", then the subject-level logs, the casebook signatures and the audit records that
belong to no entry. Labels, titles, code labels and missing-data codes come from the form definitions in
the chosen language (English where a label has no translation); Arabic is shaped and laid right to left by
HarfBuzz (uharfbuzz) through fpdf2's text shaping. The fonts (DejaVu Sans, licence beside them in fonts/)
are embedded as subsets.

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


class Words:
    """How stored values read in one language."""

    def __init__(self, study: Study, lang: str) -> None:
        self.study, self.lang = study, lang
        self.missing = {code: text_in(labels, lang) for code, labels in study.missing_code_labels.items()}

    def value(self, item: ItemDef | None, value: Any) -> str:
        if value is None or value == "" or value == []:
            return NOT_ANSWERED
        if isinstance(value, dict):
            if "withheld" in value:
                return "withheld (identifying; not shown to your role)"
            if "missing" in value:
                code = value["missing"]
                note = f": {clean(value['note'])}" if value.get("note") else ""
                return f"Missing, {self.missing.get(code, code)} ({code}){note}"
            return clean(str(value))
        if isinstance(value, bool):
            return "Yes" if value else "No"
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
    data_cut: str | None = None
    generated_by: str = ""


class _Document(FPDF):
    def __init__(self, header_text: str) -> None:
        super().__init__(format="A4", unit="mm")
        self.header_text = header_text
        self.set_margins(15, 18, 15)
        self.set_auto_page_break(False, margin=15)  # the layout breaks pages itself, row by row
        self.add_font(FONT, "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.alias_nb_pages()
        self.widths: dict[tuple[str, float, str], float] = {}

    def measure(self, text: str) -> float:
        """The width of `text` in the current font (remembered: a casebook repeats its labels and words)."""
        key = (self.font_style, self.font_size_pt, text)
        width = self.widths.get(key)
        if width is None:
            width = self.widths[key] = self.get_string_width(text)
        return width

    def header(self) -> None:
        self.set_font(FONT, "", 7.5)
        self.set_text_color(90)
        self.set_xy(self.l_margin, 8)
        self.cell(self.epw / 2, 5, self.header_text)
        self.cell(self.epw / 2, 5, f"page {self.page_no()} of {{nb}}", align="R")
        self.line(self.l_margin, 13.5, self.w - self.r_margin, 13.5)
        self.set_text_color(0)
        self.set_xy(self.l_margin, self.t_margin)


def render(study: Study, record: Record, options: Options) -> bytes:
    """Lay a gathered record out as PDF bytes (deterministic for the same record and options)."""
    subject = record.subject
    site = subject.site
    zone = ZoneInfo(site.time_zone)
    words = Words(study, options.lang)
    rtl = options.lang == "ar"
    pdf = _Document(f"{text_in(study.title, 'en')} · {study.id} · casebook of {subject.number}")
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
            _section(pdf, f"{title} [{event.id}]", rtl)
            pages = sorted(by_event[key], key=lambda p: (_form_order(event.forms, p.form.id), p.created_at, str(p.id)))
            for page in pages:
                _entry(pdf, study, words, page, zone, options, rtl)
    logs = [p for p in record.entries if p.event_key == SUBJECT_LOG_KEY]
    if logs:
        _section(pdf, "Logs and repeating forms (tied to no visit)", rtl)
        for page in logs:
            _entry(pdf, study, words, page, zone, options, rtl)
    scheduled = {e.id for e in study.events}
    stray = [p for p in record.entries if p.event_key != SUBJECT_LOG_KEY and p.event_key.split("/")[0] not in scheduled]
    if stray:
        _section(pdf, "Entries of events no longer in the schedule", rtl)
        for page in stray:
            _entry(pdf, study, words, page, zone, options, rtl)
    if not record.entries:
        pdf.set_font(FONT, "", 10)
        _paragraph(pdf, 6, "This subject has no entries: no form has been entered.")
    _casebook_signatures(pdf, record.casebook_signatures, zone)
    if record.other_audit is not None:
        _heading(pdf, "Audit trail of the subject (records that belong to no single entry)")
        _audit_table(pdf, record.other_audit, None, words, zone)
    return bytes(pdf.output())


def _form_order(forms: list[str], form_id: str) -> int:
    return forms.index(form_id) if form_id in forms else len(forms)


def _cover(pdf: _Document, study: Study, record: Record, options: Options, zone: ZoneInfo) -> None:
    subject, site = record.subject, record.subject.site
    pdf.add_page()
    pdf.set_font(FONT, "B", 16)
    _paragraph(pdf, 8, f"Casebook of subject {subject.number}")
    pdf.set_font(FONT, "", 11)
    _paragraph(pdf, 6, text_in(study.title, options.lang))
    pdf.ln(4)
    versions: dict[str, set[str]] = {}
    for page in record.entries:
        versions.setdefault(page.form.id, set()).add(page.form.version)
    rows = [
        ("Study", f"{study.id}: {text_in(study.title, 'en')}"),
        ("Site", f"{site.code}: {site.name} ({site.country}, {site.time_zone})"),
        ("Study number", subject.number),
        ("Subject status", subject.status),
        ("Registration date", subject.registration_date.isoformat() if subject.registration_date else ""),
        ("Planned infusion date", subject.planned_infusion_date.isoformat() if subject.planned_infusion_date else ""),
        ("Day 0 (first infusion)", subject.day0.isoformat() if subject.day0 else ""),
        ("Subject locked", utc_text(subject.locked_at) if subject.locked_at else "no"),
        ("Generated", f"{utc_text(options.generated_at)}\n{local_text(options.generated_at, zone)} (site's local time)"),
        ("Generated by", options.generated_by or ""),
        ("Data cut", options.data_cut or "none: the data as they stand at the generation time"),
        ("Language of labels", options.lang),
        ("Audit trail included", "yes" if options.include_audit else "no"),
        ("Software", f"edc {SOFTWARE_VERSION}"),
        ("Form versions used", ", ".join(f"{f} v{', '.join(sorted(v))}" for f, v in sorted(versions.items())) or "none"),
        ("Entries", str(len(record.entries))),
    ]
    _table(pdf, ("", ""), rows, (45, 135), header=False)
    pdf.ln(3)
    pdf.set_font(FONT, "", 8)
    _paragraph(pdf, 4.5, "A copy of the electronic record, made by the system. Its SHA-256 is recorded in the "
                   "audit trail when it is made: compare that value with the SHA-256 of this file to verify it. "
                   "Times are UTC unless marked as the site's local time. Flags: derived = computed by the system, "
                   "verified = source data verified (SDV), query = a query on the item.")


def _section(pdf: _Document, title: str, rtl: bool) -> None:
    pdf.add_page()
    pdf.set_font(FONT, "B", 13)
    pdf.set_fill_color(225, 232, 240)
    _paragraph(pdf, 8, title, fill=True, align="R" if rtl else "L")
    pdf.ln(2)


def _heading(pdf: _Document, title: str, size: float = 10.5, align: str = "L") -> None:
    if pdf.get_y() > pdf.h - 40:  # a heading never ends a page alone
        pdf.add_page()
    pdf.ln(2)
    pdf.set_font(FONT, "B", size)
    _paragraph(pdf, 6, title, align=align)


# Scripts that need shaping (joining, right to left): Hebrew, Arabic, Syriac, Thaana, N'Ko and Arabic presentation
# forms. Only text holding one of them goes through HarfBuzz: shaping every cell would cost ten times as much time
# and size for text that looks the same without it.
NEEDS_SHAPING = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
PADDING_X, PADDING_Y = 1.2, 0.8


def _cell(pdf: _Document, width: float, height: float, text: str, align: str = "L") -> None:
    """One line of text at the current position; shaped (and laid right to left where the script runs so) only when
    it needs to be. Other text is written straight at its baseline, at half the cost of a cell."""
    if NEEDS_SHAPING.search(text):
        pdf.set_text_shaping(True)
        pdf.cell(width, height, text, align=align)
        pdf.set_text_shaping(False)
        return
    x = pdf.get_x() + (width - pdf.measure(text) if align == "R" else 0.0)
    pdf.text(x, pdf.get_y() + height / 2 + 0.3 * pdf.font_size, text)


def _paragraph(pdf: _Document, height: float, text: str, align: str = "L", fill: bool = False) -> None:
    """Text over the page's width, wrapped."""
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
    """Greedy word wrap by the current font's widths (words wider than a line are cut)."""
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
    return lines


def _table(pdf: _Document, headings: tuple[str, ...], rows: Iterable[tuple[str, ...]], widths: tuple[float, ...], *,
           header: bool = True, size: float = 8.5, aligns: tuple[str, ...] | None = None) -> None:
    """Rows of wrapped cells with a rule under each; the heading row is repeated on each page the table runs to,
    and a row taller than what is left of the page goes on the next one (a row taller than a page is split)."""
    height = size * 0.45
    aligns = aligns or ("L",) * len(widths)
    right = pdf.l_margin + sum(widths)

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
            x = pdf.l_margin
            for lines, width, align in zip(cells, widths, aligns):
                for number, line in enumerate(lines[done:done + room]):
                    if line:
                        pdf.set_xy(x + PADDING_X, top + number * height)
                        _cell(pdf, width - 2 * PADDING_X, height, line, align)
                x += width
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


def _entry(pdf: _Document, study: Study, words: Words, page: EntryPage, zone: ZoneInfo, options: Options,
           rtl: bool) -> None:
    form = page.form
    _heading(pdf, f"{text_in(form.title, options.lang)} ({form.id}, version {form.version})",
             align="R" if rtl else "L")
    pdf.set_font(FONT, "", 7.5)
    state = [f"status {page.status}", f"entry version {page.version}",
             f"entered {utc_text(page.created_at)} by {page.created_by}"]
    if page.updated_at and page.version > 1:
        state.append(f"last changed {utc_text(page.updated_at)} by {page.updated_by}")
    state.append(f"locked {utc_text(page.locked_at)}" if page.locked_at else "not locked")
    requirement = study.sdv_requirement(form.id)
    if page.sdv_entry:
        state.append(f"SDV: verified {utc_text(page.sdv_entry)}")
    elif requirement == "none":
        state.append("SDV: not required")
    else:
        state.append(f"SDV: {len(page.sdv_items)} item(s) verified, entry not verified")
    _paragraph(pdf, 4, " · ".join(state))
    queried: dict[str, list[str]] = {}
    for query, _ in page.queries:
        if query.item_id:
            queried.setdefault(query.item_id, []).append(query.state)
    rows = list(_item_rows(form, words, page, queried, options.lang))
    _table(pdf, ("Item", "Value", "Flags"), rows, (70, 85, 25), aligns=("R" if rtl else "L", "L", "L"))
    if page.queries:
        _heading(pdf, "Queries", 9)
        for query, messages in page.queries:
            item = form.items.get(query.item_id) if query.item_id else None
            about = text_in(item.label, options.lang) if item else "the whole entry"
            pdf.set_font(FONT, "B", 8)
            _paragraph(pdf, 4.5, f"Query on {about} ({query.item_id or 'entry'}): {query.state}"
                           f"{', critical' if query.critical else ''}, {query.origin}, opened "
                           f"{utc_text(query.opened_at)} by {query.opened_by}"
                           + (f", closed {utc_text(query.closed_at)} by {query.closed_by}" if query.closed_at else ""))
            thread = [(utc_text(m.created_at), f"{m.author_name} ({m.author_role or ''})", m.action, clean(m.body))
                      for m in messages] or [("", "", "opened", clean(query.message))]
            _table(pdf, ("When", "Who", "Action", "Message"), thread, (34, 40, 18, 88), size=7.5)
    if page.signatures:
        _heading(pdf, "Signatures of this entry", 9)
        _signature_table(pdf, page.signatures, zone)
    if options.include_audit:
        _heading(pdf, "Audit trail of this entry", 9)
        _audit_table(pdf, page.audit, form, words, zone)


def _item_rows(form: FormDef, words: Words, page: EntryPage, queried: dict[str, list[str]], lang: str):
    for node_id in form.top_level:
        if node_id in form.groups:
            group = form.groups[node_id]
            value = page.values.get(node_id)
            label = text_in(group.label, lang)
            if not isinstance(value, list):
                yield label, words.value(None, value), _flags(None, node_id, page, queried)
                continue
            yield label, f"{len(value)} row(s)", _flags(None, node_id, page, queried)
            for number, row in enumerate(value, start=1):
                for item_id in group.items:
                    item = form.items[item_id]
                    yield (f"  {label} #{number}: {text_in(item.label, lang)}", words.value(item, row.get(item_id)),
                           DERIVED if item.computed else "")
        else:
            item = form.items[node_id]
            yield text_in(item.label, lang), words.value(item, page.values.get(node_id)), _flags(item, node_id, page, queried)


def _flags(item: ItemDef | None, item_id: str, page: EntryPage, queried: dict[str, list[str]]) -> str:
    flags = []
    if item is not None and item.computed:
        flags.append(DERIVED)
    if item_id in page.sdv_items:
        flags.append("verified")
    for state in queried.get(item_id, ()):
        flags.append(f"query {state}")
    return "\n".join(flags)


def _signature_rows(signatures: list[SignatureLine], zone: ZoneInfo):
    for s in signatures:
        status = "valid" if s.invalidated_at is None else f"invalidated {utc_text(s.invalidated_at)}"
        yield (f"{s.printed_name}\n({s.signer_username})", s.meaning,
               f"{utc_text(s.signed_at)}\n{local_text(s.signed_at, zone)}", status)


def _signature_table(pdf: _Document, signatures: list[SignatureLine], zone: ZoneInfo) -> None:
    _table(pdf, ("Signed by (printed name)", "Meaning", "Signed at (UTC and site's local time)", "Status"),
           list(_signature_rows(signatures, zone)), (48, 22, 70, 40), size=7.5)


def _casebook_signatures(pdf: _Document, signatures: list[SignatureLine], zone: ZoneInfo) -> None:
    _heading(pdf, "Casebook signatures")
    if signatures:
        _signature_table(pdf, signatures, zone)
    else:
        pdf.set_font(FONT, "", 8.5)
        _paragraph(pdf, 5, "The casebook as a whole has not been signed.")


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
        _paragraph(pdf, 4.5, "No audit records.")
        return
    _table(pdf, ("When", "Who", "Action", "Item", "Old", "New", "Reason"), rows, (27, 27, 19, 31, 29, 29, 18), size=6.5)


def _audit_value(words: Words, item: ItemDef | None, value: Any) -> str:
    if isinstance(value, (dict, list)) and item is None:
        return clean(str(value))
    return words.value(item, value)
