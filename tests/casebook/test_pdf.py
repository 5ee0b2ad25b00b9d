"""The casebook PDF over HTTP and the command line: read back with pypdf (labels, values, queries, SDV, signature
manifestations, audit rows), byte-identical renderings, Arabic labels, an empty casebook, every script a value may
hold, scope and permissions, and the audit record of each copy with its SHA-256."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pypdf import PdfReader

from casebook.conftest import ARTIFACTS, START, text_of
from edc import runtime
from edc.exports import casebook_pdf
from edc.extensions import db
from edc.models import AuditRecord, Subject
from edc.services.demo import DEMO_PASSWORD
from test_demo_subjects import invoke


def flat(text: str) -> str:
    """Text with every run of white space as one space (cells wrap over lines)."""
    return " ".join(text.split())


PLAIN_ARABIC = re.compile("[\u0621-\u064a ]+")
ARABIC_WORD = re.compile("[\u0621-\u064a]{2,}")
MARKS = re.compile("[\u064b-\u065f\u0670]")


def first_subject(book) -> str:
    return book.session.scalars(sa.select(Subject.number).order_by(Subject.number)).first()


def entries_of(book, number: str, username: str = "mon.es01") -> list[dict]:
    response = book.client.get(f"/api/v1/subjects/{number}/entries", headers=book.as_(username))
    assert response.status_code == 200
    return response.get_json()


def copies_audited(book) -> list[AuditRecord]:
    book.session.expire_all()
    return list(book.session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "casebook_generated")
                                     .order_by(AuditRecord.seq)))


def test_a_monitor_reads_every_label_value_query_sdv_mark_signature_and_audit_row(book):
    number = first_subject(book)
    entries = entries_of(book, number)
    vs = next(e for e in entries if e["form"] == "vs")
    query = book.client.post("/api/v1/queries", headers=book.as_("mon.es01"),
                             json={"entry_id": vs["id"], "item": "HR", "message": "Please check the heart rate."})
    assert query.status_code == 201, query.get_json()
    assert book.client.post(f"/api/v1/entries/{vs['id']}/sdv", headers=book.as_("mon.es01"),
                            json={"entry": True}).status_code == 200
    ic = next(e for e in entries if e["form"] == "ic")
    signed = book.client.post(f"/api/v1/entries/{ic['id']}/signatures", headers=book.as_("inv.es01"),
                              json={"username": "inv.es01", "password": DEMO_PASSWORD, "meaning": "approval"})
    assert signed.status_code == 201, signed.get_json()

    response = book.pdf(number, include_audit=True)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/pdf"
    content = response.get_data()
    digest = hashlib.sha256(content).hexdigest()
    assert response.headers["ETag"] == f'"{digest}"' and response.headers["Cache-Control"] == "no-store"
    assert f"casebook-{number}-en.pdf" in response.headers["Content-Disposition"]
    text = flat(text_of(content))
    assert f"Casebook of subject {number}" in text and "Hospital Clínic Barcelona" in text and "page 1 of" in text
    assert_no_blank_page(content)

    study = runtime.for_app(book.app).study
    words = casebook_pdf.Words(study, "en")
    for entry in entries:  # every item's label and value of every entry
        form = study.form(entry["form"], entry["form_version"])
        for item_id, item in form.items.items():
            if item.group is None:
                assert flat(item.label["en"]) in text, (entry["form"], item_id)
                assert flat(words.value(item, entry["data"].get(item_id))) in text, (entry["form"], item_id)
    assert "Please check the heart rate." in text and "query open" in text
    assert "SDV: verified 2026-09-01 09:00:00 UTC" in text and "verified" in text
    manifestation = ("Demo Investigator ES01 (inv.es01) approval 2026-09-01 09:00:00 UTC "
                     "2026-09-01 11:00:00 +02:00 (Europe/Madrid) valid")
    assert manifestation in text
    assert "entry_created" in text and "sdv_verified" in text and "entry_signed" in text and "query_opened (query)" in text
    assert "Audit trail of the subject" in text and "enrolled" in text

    (copy,) = copies_audited(book)
    assert copy.actor_username == "mon.es01" and copy.entity_type == "casebook"
    changes = {c["field"]: c["new"] for c in copy.changes}
    assert changes["sha256"] == digest and changes["bytes"] == len(content)
    assert changes["options"] == {"lang": "en", "include_audit": True, "data_cut": None,
                                  "generated_at": "2026-09-01T09:00:00+00:00"}
    render_page(content, "monitor-en")


def assert_no_blank_page(content: bytes) -> None:
    """Every page holds more than its running header (the study, the subject's number and page x of y)."""
    pages = PdfReader(io.BytesIO(content)).pages
    for number, page in enumerate(pages, start=1):
        header, _, body = page.extract_text().partition("\n")
        assert f"page {number} of {len(pages)}" in header and body.strip(), f"page {number} is blank"


def render_page(content: bytes, name: str) -> None:
    """Page 2 as PNG for a reviewer to look at (tests/.cache/casebook/), where pdftoppm is installed."""
    if shutil.which("pdftoppm") is None:
        return  # only this check is skipped without poppler
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    source = ARTIFACTS / f"{name}.pdf"
    source.write_bytes(content)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "2", "-l", "2", "-singlefile", str(source),
                    str(ARTIFACTS / name)], check=True, timeout=60)
    png = (ARTIFACTS / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000  # a page with text on it, not a blank one


def test_two_renderings_of_the_same_data_and_options_are_byte_identical(book):
    number = first_subject(book)
    first = book.pdf(number, "dm").get_data()
    second = book.pdf(number, "dm").get_data()
    assert first == second and first.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(first))
    assert reader.metadata["/CreationDate"] == "D:20260901090000Z"
    fonts = {}
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts[font["/BaseFont"]] = font
    assert len(fonts) == 2  # DejaVu Sans and its bold, nothing else
    for name, font in fonts.items():  # embedded (as subsets), never left to the reader's machine
        descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
        assert "/FontFile2" in descriptor and "DejaVuSans" in name, name
    assert len(copies_audited(book)) == 2  # each copy made is audited, though the bytes are the same


def test_the_arabic_casebook_carries_the_arabic_labels_shaped_right_to_left(book):
    number = first_subject(book)
    study = runtime.for_app(book.app).study
    with book.app.app_context():  # the same rendering, of the daily CRS assessments only (the whole book is slow to read)
        reader = db.session
        runtime.bind(reader, runtime.for_app(book.app))
        subject = reader.scalars(sa.select(Subject).where(Subject.number == number)).one()
        record = casebook_pdf.gather(reader, subject, hidden=lambda form_id: frozenset(), include_audit=False)
        record.entries = [page for page in record.entries if page.form.id == "crs_daily"][:3]
        assert record.entries
        content = casebook_pdf.render(study, record, casebook_pdf.Options(lang="ar", generated_at=START))
        reader.rollback()
    text = flat(text_of(content))
    labels = [item.label["ar"] for item in study.form("crs_daily").items.values() if "ar" in item.label and not item.group]
    # Labels in Arabic letters alone read back whole and in logical order. (An extractor reading glyphs in visual
    # order moves brackets and embedded Latin words of a right-to-left run, and marks on ligatures may not map back.)
    plain = [label for label in labels if PLAIN_ARABIC.fullmatch(label)]
    assert len(plain) >= 3, labels
    for label in plain:
        assert label in text, label
    assert all(word in text for label in labels for word in ARABIC_WORD.findall(label) if not MARKS.search(word))
    render_page(content, "crs-ar")


def test_a_casebook_at_a_data_cut_shows_the_record_as_it_stood_at_its_cut_off(book):
    number = first_subject(book)
    cut = book.client.post("/api/v1/data-cuts", headers=book.as_("dm"),
                           json={"name": "interim", "cutoff_at": START.isoformat(), "reason": "DSMB review"})
    assert cut.status_code == 201, cut.get_json()
    book.clock.now = START + timedelta(hours=2)
    book.headers.clear()  # the tokens bought before have expired
    deviation = {"form": "dv", "complete": True, "data": {
        "DVDAT": "2026-08-20", "DVCAT": "DOSING", "DVTERM": "Entered after the cut", "DVSEV": "MINOR",
        "DVACN": "Retrained staff", "DVECREP": "N"}}
    assert book.client.post(f"/api/v1/subjects/{number}/entries", headers=book.as_("inv.es01"),
                            json=deviation).status_code == 201
    vs = next(e for e in entries_of(book, number) if e["form"] == "vs")
    assert book.client.post("/api/v1/queries", headers=book.as_("mon.es01"), json={
        "entry_id": vs["id"], "item": "HR", "message": "Raised after the cut."}).status_code == 201
    live = flat(text_of(book.pdf(number, "dm").get_data()))
    assert "Entered after the cut" in live and "Raised after the cut." in live
    at_cut = book.pdf(number, "dm", data_cut="interim", include_audit=True)
    assert at_cut.status_code == 200
    text = flat(text_of(at_cut.get_data()))
    assert "interim: the record as it stood at 2026-09-01 09:00:00 UTC" in text
    assert "Entered after the cut" not in text and "Raised after the cut." not in text and "query_opened" not in text
    assert {c["field"]: c["new"] for c in copies_audited(book)[-1].changes}["options"]["data_cut"] == "interim"
    assert book.pdf(number, "dm", data_cut="final").status_code == 404


def test_a_subject_without_entries_gets_a_valid_pdf_that_says_so(book):
    enrolled = book.client.post("/api/v1/subjects", headers=book.as_("inv.es01"), json={
        "site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-08-30"})
    assert enrolled.status_code == 201
    response = book.pdf(enrolled.get_json()["number"], "crc.es01", include_audit=True)
    assert response.status_code == 200
    text = flat(text_of(response.get_data()))
    assert "This subject has no entries" in text and "Casebook signatures" in text
    assert_no_blank_page(response.get_data())


def test_values_in_every_script_are_printed_and_glyphs_the_font_lacks_are_named(book):
    number = first_subject(book)
    words = "Niño, età, μ ≥ 10⁹/L × 2 — تأخرت الجرعة"
    body = {"form": "dv", "complete": True, "data": {
        "DVDAT": "2026-08-20", "DVCAT": "DOSING", "DVTERM": f"{words}\nsecond line 中", "DVSEV": "MINOR",
        "DVACN": "Retrained staff", "DVECREP": "N"}}
    created = book.client.post(f"/api/v1/subjects/{number}/entries", headers=book.as_("inv.es01"), json=body)
    assert created.status_code == 201, created.get_json()
    refused = book.client.post(f"/api/v1/subjects/{number}/entries", headers=book.as_("inv.es01"),
                               json={**body, "data": {**body["data"], "DVACN": "bell\x07"}})
    assert refused.status_code == 422  # control characters never reach storage, nor a casebook
    text = flat(text_of(book.pdf(number, "inv.es01").get_data()))
    assert flat(words) in text and "second line [U+4E2D]" in text


def test_site_staff_monitors_data_managers_and_auditors_pass_the_permission_and_scope_checks(book):
    # The language is checked after the permission and the subject's scope: a 422 here means both passed (the
    # other tests fetch whole PDFs as investigator, coordinator, monitor and data manager).
    for username in ("inv.es01", "crc.es01", "mon.es01", "dm", "auditor"):
        assert book.pdf(first_subject(book), username, lang="xx").status_code == 422, username


def test_the_statistician_is_refused_and_another_sites_staff_find_no_subject(book):
    number = first_subject(book)
    refused = book.pdf(number, "stat")
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    hidden = book.pdf(number, "inv.it01")
    assert hidden.status_code == 404 and hidden.mimetype == "application/problem+json"
    assert book.pdf("ES01-9999", "dm").status_code == 404
    assert copies_audited(book) == []


def test_an_unknown_language_is_422_naming_the_parameter(book):
    response = book.pdf(first_subject(book), "dm", lang="xx")
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["pointer"] == "/query/lang" and "en" in response.get_json()["errors"][0]["detail"]
    assert copies_audited(book) == []


def test_the_command_line_writes_the_pdf_and_a_copy_made_again_has_the_audited_sha256(book, tmp_path):
    number = first_subject(book)
    outputs = []
    for name in ("one.pdf", "two.pdf"):
        result = invoke(book.app, "casebook", "pdf", number, "--lang", "es", "--include-audit",
                        "--generated-at", "2026-09-01T09:00:00", "--output", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name).read_bytes())
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
        assert hashlib.sha256(outputs[-1]).hexdigest() in result.output
    assert outputs[0] == outputs[1]
    recorded = {c["field"]: c["new"] for c in copies_audited(book)[0].changes}
    assert recorded["sha256"] == hashlib.sha256(outputs[0]).hexdigest() and recorded["options"]["lang"] == "es"
    unknown = invoke(book.app, "casebook", "pdf", number, "--lang", "fr", "--output", str(tmp_path / "x.pdf"))
    assert unknown.exit_code == 1 and "Unknown language" in unknown.output


def test_the_software_version_on_the_cover_is_the_projects():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert casebook_pdf.SOFTWARE_VERSION == project["project"]["version"]


def test_generation_times_are_printed_in_utc_and_the_sites_local_time():
    moment = datetime(2026, 7, 1, 22, 30, tzinfo=UTC)
    assert casebook_pdf.utc_text(moment) == "2026-07-01 22:30:00 UTC"
    from zoneinfo import ZoneInfo

    assert casebook_pdf.local_text(moment, ZoneInfo("Asia/Amman")) == "2026-07-02 01:30:00 +03:00 (Asia/Amman)"
    assert json.dumps(casebook_pdf.clean("a\tb\r\nc")) == '"a b\\nc"'
