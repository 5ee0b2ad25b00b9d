"""What every export writer shares: the description of a written file, progress and cancellation.

A writer writes into the directory it is given (the job's private work directory, renamed into place
only when the whole export has succeeded), calls `progress(subjects_done)` after each casebook, and
returns one ExportFile per file. `progress` raises Cancelled when the job was cancelled: the writer
lets it propagate, and the runner removes the work directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[int], None]
CHUNK = 1 << 20
# One rule for every format that writes a multi-choice answer as text (CSV cells, ODM ItemData values): its
# codes in code-list order joined by ";" (a code never holds one: code lists are checked when forms load).
MULTI_SEPARATOR = ";"


class Cancelled(Exception):
    """The export job was cancelled while it ran."""


@dataclass(frozen=True)
class ExportFile:
    """One written file: its name in the export, SHA-256, size, and how many rows or resources it holds."""

    name: str
    sha256: str
    size: int
    records: int
    media_type: str
    description: str = ""

    def as_manifest(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.size, "records": self.records,
                "media_type": self.media_type, "description": self.description}


def describe(path: Path, *, records: int, media_type: str, description: str = "") -> ExportFile:
    """Hash a finished file (read back in chunks: memory stays flat whatever its size)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return ExportFile(path.name, digest.hexdigest(), path.stat().st_size, records, media_type, description)


def no_progress(_done: int) -> None:
    """For callers that neither report progress nor cancel (tests, the CLI)."""
