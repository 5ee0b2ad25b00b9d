"""Fixtures of the casebook tests: the demo study with two synthetic subjects (complete through Day 28), shared
with tests/exports/test_jobs.py through the same seed_once keys, and an export directory of the test's own."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from conftest import bearer, login
from edc.services.demo import DEMO_PASSWORD
from exports.conftest import seed_demo_study, seed_demo_subjects
from test_demo_subjects import TRIAL_FORMS, invoke

START = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
SUBJECTS = 2
ARTIFACTS = Path(__file__).resolve().parents[1] / ".cache" / "casebook"  # rendered pages for a reviewer (not committed)


class Book:
    """The seeded demo study, logged-in clients by username, and helpers to read PDFs back."""

    def __init__(self, app, session, export_dir: Path, clock) -> None:
        self.app, self.session, self.export_dir, self.clock = app, session, export_dir, clock
        self.client = app.test_client()
        self.headers: dict[str, dict[str, str]] = {}

    def as_(self, username: str) -> dict[str, str]:
        if username not in self.headers:
            self.headers[username] = bearer(login(self.client, username, DEMO_PASSWORD))
        return self.headers[username]

    def pdf(self, number: str, username: str = "mon.es01", **params):
        query = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
        return self.client.get(f"/api/v1/subjects/{number}/casebook.pdf" + (f"?{query}" if query else ""),
                               headers=self.as_(username))

    def work(self) -> None:
        result = invoke(self.app, "worker", "--once")
        assert result.exit_code == 0, result.output


def text_of(content: bytes) -> str:
    """Every page's extracted text, joined (pypdf)."""
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.fixture
def book(app_factory, session, fake_clock, tmp_path, seed_once):
    fake_clock.now = START
    export_dir = tmp_path / "exports"
    app = app_factory(forms_dir=TRIAL_FORMS, export_dir=str(export_dir), export_lease_seconds=60, export_max_attempts=2)
    seed_once("demo study, no subjects, at START", lambda: seed_demo_study(app, 0, 0))
    seed_once(f"demo study, {SUBJECTS} subjects, seed 2, at START", lambda: seed_demo_subjects(app, SUBJECTS, 2))
    return Book(app, session, export_dir, fake_clock)
