"""The site archive at study close: one zip holding every subject's casebook PDF (with its audit trail), the
site's CSV and ODM exports (with audit trail and signatures) and manifest.json, the SHA-256 of every file.

It streams: the zip is written to the job's work directory entry by entry, one subject's PDF at a time (the
reading session forgets each subject before the next), and the CSV and ODM files are written to a scratch
folder, copied into the zip in chunks and removed. Memory stays flat whatever the number of subjects.
The zip's entries carry a fixed time, in a fixed order, so the same data give the same archive.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from edc.models.subjects import Subject

from . import casebook_pdf, csv_files, odm, source
from .files import CHUNK, ExportFile, Progress, describe

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
INNER_MANIFEST = "manifest.json"
RenderPdf = Callable[[Subject], bytes]


class _Archive:
    """A zip being written, and the manifest line of every file put into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bundle = zipfile.ZipFile(path, "w", allowZip64=True)
        self.files: list[dict[str, Any]] = []

    def add_bytes(self, name: str, content: bytes, media_type: str, *, compress: bool) -> None:
        info = self._info(name, compress)
        self.bundle.writestr(info, content)
        self.files.append({"name": name, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content),
                           "media_type": media_type})

    def add_file(self, name: str, path: Path, described: ExportFile) -> None:
        with path.open("rb") as data, self.bundle.open(self._info(name, True), "w") as entry:
            shutil.copyfileobj(data, entry, CHUNK)
        self.files.append({"name": name, "sha256": described.sha256, "bytes": described.size,
                           "media_type": described.media_type, "records": described.records})

    @staticmethod
    def _info(name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        if compress:
            info._compresslevel = 1  # ZipFile.open(info) takes the level from the entry
        info.external_attr = 0o644 << 16
        return info

    def close(self) -> None:
        self.bundle.close()


def write_archive(session: Session, selection: source.Selection, work: Path, *, name: str, about: dict[str, Any],
                  render: RenderPdf, file_oid: str, created_at: datetime, progress: Progress) -> list[ExportFile]:
    """Write `name` (a zip) into `work`: CSV and ODM exports of the selection, then one casebook PDF per subject
    in study-number order, then manifest.json (`about` and every file's SHA-256). Return the zip's ExportFile."""
    path = work / name
    archive = _Archive(path)
    try:
        scratch = work / ".scratch"
        # The exports report no subject progress of their own (the PDFs do, below); they still heartbeat.
        for folder, write in (("csv", lambda d: csv_files.write_csv(session, selection, d, include_audit=True,
                                                                    progress=lambda _: progress(0))),
                              ("odm", lambda d: odm.write_odm(session, selection, d, include_audit=True, file_oid=file_oid,
                                                              created_at=created_at, progress=lambda _: progress(0)))):
            scratch.mkdir(mode=0o700)
            for described in write(scratch):
                archive.add_file(f"{folder}/{described.name}", scratch / described.name, described)
            shutil.rmtree(scratch)
        for done, subject_id in enumerate(source.subject_ids(session, selection), start=1):
            subject = session.scalars(sa.select(Subject).options(joinedload(Subject.site))
                                      .where(Subject.id == subject_id)).one()
            archive.add_bytes(f"casebooks/casebook-{subject.number}.pdf", render(subject), casebook_pdf.MEDIA_TYPE,
                              compress=False)  # fpdf2 compresses the PDF's streams already
            session.expunge_all()  # one subject in memory at a time
            progress(done)
        manifest = {**about, "files": archive.files}
        archive.add_bytes(INNER_MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
                          .encode(), "application/json", compress=True)
    finally:
        archive.close()
    return [describe(path, records=len(archive.files), media_type="application/zip",
                     description="the site archive: casebook PDFs, CSV and ODM exports, manifest.json")]
