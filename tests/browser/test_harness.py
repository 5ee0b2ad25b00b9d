"""The browser harness itself, on pages edc serves today: Chromium reaches the gunicorn under test and
nothing else, renders the API documentation (Swagger UI, whose scripts and styles edc serves itself),
takes screenshots into the artifacts directory, and the page-weight helper counts what a load transfers.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Error as PlaywrightError

from browser.conftest import page_weight
from edc.services import demo_subjects


def test_the_server_under_test_answers_in_the_browser_with_the_demo_study(web, page):
    response = page.goto("/healthz")
    assert response is not None and response.status == 200
    assert json.loads(page.inner_text("body"))["status"] == "ok"
    # The deployment holds the demo study of `make serve` (the seed's own summary names its subjects).
    numbers = [number for number, _, _ in demo_subjects.study_subjects(web.seeded_on)]
    assert len(numbers) == 12 and all(number in web.seed_output for number in numbers), web.seed_output


def test_no_host_but_the_server_under_test_resolves(page):
    for outside in ("http://example.com/", "https://cdn.jsdelivr.net/", "http://localhost/"):
        with pytest.raises(PlaywrightError, match="ERR_NAME_NOT_RESOLVED"):
            page.goto(outside, timeout=5_000)


def test_the_api_documentation_renders_and_is_weighed(page, artifacts_dir):
    # Swagger UI's scripts fetch /api/openapi.json and render one block per operation from it.
    weight = page_weight(page, "/api/docs/", ready=".swagger-ui .opblock")
    assert page.title() == "edc API"
    assert page.locator(".swagger-ui .opblock").count() > 20

    served = {t.url.split("?")[0].removeprefix(page.url.split("/api/docs")[0]): t for t in weight.transfers}
    assert "/api/openapi.json" in served, weight.describe()
    assert all(t.url.startswith("http://127.0.0.1:") for t in weight.transfers), weight.describe()
    assert weight.total == sum(t.bytes for t in weight.transfers) > 100_000, weight.describe()
    document = served["/api/openapi.json"]
    assert document.status == 200 and document.bytes > 10_000
    if document.from_header and not document.compressed:
        response = page.request.get("/api/openapi.json")
        assert len(response.body()) == document.bytes

    screenshot = artifacts_dir / "api-docs.png"
    page.screenshot(path=str(screenshot), full_page=False)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
