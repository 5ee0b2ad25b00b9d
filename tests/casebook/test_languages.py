"""The casebook's own words in the chosen language (casebook_words.yaml) and the Arabic casebook mirrored: read back
with pypdf, the text of the Spanish and Arabic casebooks carries their headings, column heads and status words, the
English one its English words, and the x-positions of the column heads run right to left in Arabic, with times,
study numbers and usernames still reading left to right; a shaped cell written again lands where shaping it there
would put it."""

from __future__ import annotations

import ast
import io
import re
import string
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from casebook.conftest import START
from casebook.test_pdf import entries_of, first_subject, flat, render_page
from edc import runtime
from edc.exports import casebook_pdf
from edc.extensions import db
from edc.models import Subject
from edc.models.entries import ENTRY_STATUSES, QUERY_STATES
from edc.models.monitoring import QUERY_MESSAGE_ACTIONS, SIGNATURE_MEANINGS
from edc.models.subjects import SUBJECT_STATUSES
from edc.services.demo import DEMO_PASSWORD

ISOLATES = str.maketrans("", "", casebook_pdf.FSI + casebook_pdf.PDI)


def shape_every_time(pdf, width, height, text, align):
    pdf.set_text_shaping(True, direction="rtl")
    pdf.cell(width, height, text, align=align)
    pdf.set_text_shaping(False)


@pytest.fixture
def casebooks(book, monkeypatch):
    """The consent and vital signs entries of the first subject, with a query, an SDV mark, a signature and the audit
    trail, rendered in English, Spanish and Arabic (a few pages each: the whole book is slow to read back)."""
    number = first_subject(book)
    entries = entries_of(book, number)
    vs = next(e for e in entries if e["form"] == "vs")
    ic = next(e for e in entries if e["form"] == "ic")
    assert book.client.post("/api/v1/queries", headers=book.as_("mon.es01"), json={
        "entry_id": vs["id"], "item": "HR", "message": "Please check the heart rate."}).status_code == 201
    assert book.client.post(f"/api/v1/entries/{vs['id']}/sdv", headers=book.as_("mon.es01"),
                            json={"items": ["HR"]}).status_code == 200
    assert book.client.post(f"/api/v1/entries/{ic['id']}/signatures", headers=book.as_("inv.es01"), json={
        "username": "inv.es01", "password": DEMO_PASSWORD, "meaning": "approval"}).status_code == 201
    study = runtime.for_app(book.app).study
    rendered = {}
    with book.app.app_context():
        reader = db.session
        runtime.bind(reader, runtime.for_app(book.app))
        subject = reader.scalars(sa.select(Subject).where(Subject.number == number)).one()
        for lang in ("en", "es", "ar"):
            record = casebook_pdf.gather(reader, subject, hidden=lambda form_id: frozenset(), include_audit=True)
            record.entries = [page for page in record.entries if page.form.id in ("ic", "vs")]
            options = casebook_pdf.Options(lang=lang, include_audit=True, generated_at=START, generated_by="dm")
            rendered[lang] = casebook_pdf.render(study, record, options)
        with monkeypatch.context() as patch:  # the Arabic casebook again, each shaped cell shaped where it is drawn
            patch.setattr(casebook_pdf, "_shaped_cell", shape_every_time)
            rendered["ar, shaped each time"] = casebook_pdf.render(study, record, options)
        reader.rollback()
    return number, rendered


def text_of(content: bytes) -> str:
    return flat("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)).translate(ISOLATES)


def x_of(content: bytes, words: tuple[str, ...]) -> dict[str, float]:
    """Where each of `words` (item, value, flags, when, reason) is first drawn as a text run of its own: x in points
    on the page (its text matrix moved by the transformation matrix, which places a shaped cell written again)."""
    found: dict[str, list[float]] = {}

    def visit(text, cm, tm, font, size):
        text = text.translate(ISOLATES).strip()
        if text in words:
            found.setdefault(text, []).append(cm[0] * tm[4] + cm[4])

    for page in PdfReader(io.BytesIO(content)).pages:
        page.extract_text(visitor_text=visit)
    assert set(found) == set(words), found
    for word in words[1:3] + words[4:]:  # a column head stays over its column in every table of its kind ("item" heads
        # two columns, "when" is the first of two tables of different sizes)
        assert len(found[word]) > 1 and max(found[word]) - min(found[word]) < 0.5, (word, found[word])
    return {word: places[0] for word, places in found.items()}


def test_the_spanish_casebook_has_its_own_words_in_spanish_and_the_english_one_its_english_words(casebooks):
    number, rendered = casebooks
    text = text_of(rendered["es"])
    for words in (f"Cuaderno de recogida de datos del sujeto {number}", "página 1 de", "Estado del sujeto",
                  "Ítem Valor Indicadores", "Consultas", "Consulta sobre", "consulta abierta", "Firmas de este registro",
                  "Firmado por (nombre)", "aprobación", "válida", "Pista de auditoría de este registro",
                  "Cuándo Quién Acción Ítem Anterior Nuevo Motivo", "verificación de datos fuente (SDV): 1 ítem(s)",
                  "no bloqueado", "Firmas del cuaderno", "(hora local del centro)", "incluido", "estado: completo"):
        assert words in text, words
    for english in ("Item Value Flags", "Audit trail of this entry", "Signatures of this entry", "not locked"):
        assert english not in text, english
    render_page(rendered["es"], "words-es")

    text = text_of(rendered["en"])
    for words in (f"Casebook of subject {number}", "page 1 of", "Item Value Flags", "Queries", "query open",
                  "Signatures of this entry", "approval", "valid", "Audit trail of this entry",
                  "When Who Action Item Old New Reason", "SDV: 1 item(s) verified, entry not verified", "not locked",
                  "Casebook signatures", "(site's local time)", "status complete"):
        assert words in text, words
    assert "Ítem" not in text and "البند" not in text


def test_the_arabic_casebook_has_its_own_words_in_arabic_and_its_tables_mirrored(casebooks):
    number, rendered = casebooks
    content = rendered["ar"]
    text = text_of(content)
    for words in ("ملف حالة المشارك", "الاستفسارات", "توقيعات هذا الإدخال", "مسار التدقيق لهذا الإدخال",
                  "توقيعات ملف الحالة", "موافقة", "غير مقفل", "المصدرية", "الصفحة"):
        assert words in text, words
    assert "Item" not in text and "Flags" not in text and "Audit trail" not in text
    # Times, the study number and usernames read left to right inside the right-to-left lines.
    assert number in text and "inv.es01" in text and "2026-09-01 09:00:00 UTC" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)

    english = x_of(rendered["en"], ("Item", "Value", "Flags", "When", "Reason"))
    assert english["Item"] < english["Value"] < english["Flags"] and english["When"] < english["Reason"]
    arabic = x_of(content, ("البند", "القيمة", "العلامات", "الوقت", "السبب"))
    assert arabic["البند"] > arabic["القيمة"] > arabic["العلامات"]  # item on the right, flags on the left
    assert arabic["الوقت"] > arabic["السبب"]
    page_width = 595.28
    assert arabic["البند"] > page_width / 2 > arabic["العلامات"]
    render_page(content, "words-ar")

    # Each shaped cell is shaped once and written again where it recurs: it lands where shaping it there would put it.
    again, each_time = runs(rendered["ar"]), runs(rendered["ar, shaped each time"])
    assert len(again) > 500 and [run[:2] for run in again] == [run[:2] for run in each_time]
    # Positions are written to a hundredth of a point, the move of the cell too.
    assert all(abs(a[2] - b[2]) < 0.02 and abs(a[3] - b[3]) < 0.02 for a, b in zip(again, each_time))
    assert rendered["ar"] != rendered["ar, shaped each time"]  # and cells were written again, not shaped again


def runs(content: bytes) -> list[tuple[int, str, float, float]]:
    """Every text run: page, text, and where it is on the page (points)."""
    found = []
    for number, page in enumerate(PdfReader(io.BytesIO(content)).pages):
        page.extract_text(visitor_text=lambda text, cm, tm, font, size: found.append(
            (number, text, cm[0] * tm[4] + cm[4], cm[3] * tm[5] + cm[5])) if text.strip() else None)
    return found


def test_every_word_the_layout_prints_is_in_the_catalogue_with_its_three_translations():
    catalogue = casebook_pdf.catalogue()
    fields = string.Formatter()
    for english, translations in catalogue["text"].items():
        assert set(translations) == {"es", "it", "ar"}, english
        wanted = {name for _, name, _, _ in fields.parse(english) if name}
        for lang, text in translations.items():
            assert {name for _, name, _, _ in fields.parse(text) if name} == wanted, (english, lang)
    for kind, codes in (("subject_status", SUBJECT_STATUSES), ("entry_status", ENTRY_STATUSES),
                        ("query_state", QUERY_STATES), ("query_action", QUERY_MESSAGE_ACTIONS),
                        ("signature_meaning", SIGNATURE_MEANINGS)):
        assert set(codes) <= set(catalogue["codes"][kind]), kind
        for code in codes:
            assert set(catalogue["codes"][kind][code]) == {"en", "es", "it", "ar"}, (kind, code)
            assert catalogue["codes"][kind][code]["en"] == code  # English prints the code as it always did
    # Every literal the layout passes to Words (words("..."), self("..."), self.words("...")) is catalogued.
    source = ast.parse(Path(casebook_pdf.__file__).read_text(encoding="utf-8"))
    used = set()
    for node in ast.walk(source):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("words", "self") or (isinstance(node.func, ast.Name) and node.func.id == "self"):
                used.add(node.args[0].value)
    used.add(casebook_pdf.DERIVED)
    assert len(used) > 60 and used <= set(catalogue["text"]), sorted(used - set(catalogue["text"]))


def test_a_value_isolated_in_right_to_left_text_stays_whole_across_a_line_end():
    fsi, pdi = casebook_pdf.FSI, casebook_pdf.PDI
    lines = casebook_pdf._balance_isolates([f"أُدخل في {fsi}2026-03-29", f"07:50:00 UTC{pdi} بواسطة {fsi}inv.es01{pdi}"])
    assert lines == [f"أُدخل في {fsi}2026-03-29{pdi}", f"{fsi}07:50:00 UTC{pdi} بواسطة {fsi}inv.es01{pdi}"]
    words = casebook_pdf.Words(type("S", (), {"missing_code_labels": {}})(), "ar")
    assert words("entered {time} by {who}", time="2026-03-29 07:50:00 UTC", who="inv.es01") == \
        f"أُدخل في {fsi}2026-03-29 07:50:00 UTC{pdi} بواسطة {fsi}inv.es01{pdi}"
    english = casebook_pdf.Words(type("S", (), {"missing_code_labels": {}})(), "en")
    assert english("entered {time} by {who}", time="t", who="u") == "entered t by u"  # no marks outside RTL
