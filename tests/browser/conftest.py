"""The real-browser harness: Debian's Chromium, driven by Playwright, against one gunicorn serving the demo
study on PostgreSQL (tests/README.md, "Browser tests").

- `web`: started once for the session, and only when a test asks for it: a database of its own next to the
  run's (created, migrated, seeded with the demo study of `make serve`, `flask edc seed-demo --study`,
  dropped at the end), the trial forms, development keys of its own, and one gunicorn on a free loopback
  port with the testing settings. The demo study is seeded while gunicorn builds its app.
- `browser`: one headless Chromium for the session (`/usr/bin/chromium`, or EDC_TEST_CHROMIUM), which
  resolves no name but 127.0.0.1: a request to any other host fails, so a page that needs the Internet
  (a CDN, a web font) fails its test instead of reaching out.
- `page` (a fresh browser context per test, so no cookie or cache is shared) and `new_page(locale=...)`
  for more pages, or another language; both have `web`'s address as base URL (`page.goto("/healthz")`).
- `artifacts_dir`: where screenshots go (EDC_TEST_ARTIFACTS, or a directory under pytest's basetemp);
  never committed. A test that fails leaves a screenshot of each of its pages there.
- `login(page, username)` signs in through the web login form; `page_weight(page, path)` loads a page and
  counts the bytes of every response, for the slow-link budgets.

PostgreSQL only: the whole directory is skipped on the SQLite pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from conftest import BACKEND, TRIAL_FORMS, make_app, upgrade
from edc import clock
from edc.extensions import db
from edc.security import keyring
from edc.services.demo import DEMO_PASSWORD
from servers import Gunicorn, database_next_to, drop_database, recreate_database

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("EDC_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless, as root in a container (no sandbox), no GPU, and nothing the browser would fetch on its own
# (updates, sync, field trials); every name but 127.0.0.1 fails to resolve.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEFAULT_LOCALE = "en-GB"
SKIP_REASON = ("browser tests run in the PostgreSQL pass only (a gunicorn on a PostgreSQL database of its own, "
               "seeded with the demo study)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.postgresql_only)
            if BACKEND != "postgresql":
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so `new_page` knows at teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


# ---------------------------------------------------------------- the server under test


@dataclass
class Web:
    """The deployment the browser talks to."""

    database_url: str
    server: Gunicorn
    seeded_on: datetime          # the moment the demo study was seeded (its stages are relative to that day)
    seed_output: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture(scope="session")
def web(test_database_url: str, tmp_path_factory) -> Iterator[Web]:
    """One gunicorn (1 process, 4 threads) on a database of its own, seeded with the demo study."""
    root = tmp_path_factory.mktemp("browser-web")
    database_url = database_next_to(test_database_url, "browser")
    keys_dir = root / "keys"
    keyring.ensure_keys(keys_dir, development=True)
    recreate_database(database_url)
    env = {"EDC_ENV": "testing", "EDC_DATABASE_URL": database_url, "EDC_KEYS_DIR": str(keys_dir),
           "EDC_FORMS_DIR": str(TRIAL_FORMS), "EDC_EXPORT_DIR": str(root / "exports"),
           "EDC_PUBLIC_BASE_URL": "http://127.0.0.1"}
    server = Gunicorn(env, root / "gunicorn.log", workers=1, threads=4)
    try:
        server.start()  # while it builds its app, the database is migrated and seeded: /readyz waits for it
        app = make_app(database_url, str(keys_dir), forms_dir=TRIAL_FORMS, export_dir=str(root / "exports"))
        upgrade(app)
        seeded_on = clock.utcnow()
        result = app.test_cli_runner().invoke(args=["edc", "seed-demo", "--study"])
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        assert result.exit_code == 0, (result.output, result.exception)
        server.wait_ready()
        yield Web(database_url, server, seeded_on, result.output)
    finally:
        server.stop()
        drop_database(database_url)


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the session (Debian's package: `playwright install` cannot download here)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does) "
                    "or point EDC_TEST_CHROMIUM at a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Screenshots and other files a browser test leaves for people to look at (never committed)."""
    wanted = os.environ.get("EDC_TEST_ARTIFACTS")
    directory = Path(wanted) if wanted else tmp_path_factory.mktemp("browser-artifacts", numbered=False)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def new_page(browser, web: Web, artifacts_dir: Path, request) -> Iterator[Callable[..., object]]:
    """new_page(locale="en-GB", **context options): a page in a browser context of its own, closed after the
    test (with a screenshot in artifacts_dir first when the test failed)."""
    contexts = []

    def open_page(locale: str = DEFAULT_LOCALE, **options):
        context = browser.new_context(base_url=web.base_url, locale=locale, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))
    for number, context in enumerate(contexts):
        if failed:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::")[-1])
            for page_number, page in enumerate(context.pages):
                page.screenshot(path=str(artifacts_dir / f"failed-{name}-{number}-{page_number}.png"), full_page=True)
        context.close()


@pytest.fixture
def page(new_page):
    """A page in a fresh browser context (English), with the server's address as base URL."""
    return new_page()


# ---------------------------------------------------------------- helpers for the tests


def login(page, username: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the web login form (`/login`: fields `username` and `password`, a submit button) and
    wait for the page it leads to; fails clearly when the form is not there or refuses the account."""
    response = page.goto("/login")
    assert response is not None and response.status == 200, \
        f"GET /login answered {response.status if response else 'nothing'}: no web login page to sign in with"
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert not page.url.rstrip("/").endswith("/login"), f"{username} was not signed in: still on {page.url}"


@dataclass
class Transfer:
    """One response of a page load: its size as sent (Content-Length, or the body's length when the header
    is absent), and whether it came compressed."""

    url: str
    status: int
    resource_type: str
    bytes: int
    encoding: str | None          # Content-Encoding as sent (gzip, br...), None when not compressed
    from_header: bool             # bytes read from Content-Length (else the length of the body as received)
    cached: bool = False          # taken from the browser's cache: nothing crossed the network (0 bytes)

    @property
    def compressed(self) -> bool:
        return self.encoding not in (None, "", "identity")


@dataclass
class PageWeight:
    url: str
    transfers: list[Transfer] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(t.bytes for t in self.transfers)

    def describe(self) -> str:
        lines = [f"{self.url}: {self.total} bytes in {len(self.transfers)} responses"]
        lines += [f"  {t.bytes:>8} {t.status} {t.resource_type:<10} {t.encoding or '-':<8} {t.url}{' (cached)' if t.cached else ''}"
                  for t in self.transfers]
        return "\n".join(lines)


def _transfer(response) -> Transfer:
    headers = response.headers  # lower-case names
    length = headers.get("content-length")
    # Chromium reports a response from its HTTP cache too, with the stored headers (Content-Length included);
    # it sent no request for it, so its timing has no request start.
    if response.request.timing.get("requestStart", 0) < 0:
        return Transfer(response.url, response.status, response.request.resource_type, 0,
                        headers.get("content-encoding"), False, cached=True)
    if length is not None:
        size, from_header = int(length), True
    elif 300 <= response.status < 400 or response.status in (204, 304):
        size, from_header = 0, False
    else:
        # Without Content-Length (chunked), the body as received: decoded, so a compressed one counts its
        # uncompressed size (an upper bound of what crossed the wire; `encoding` says so).
        size, from_header = len(response.body()), False
    return Transfer(response.url, response.status, response.request.resource_type, size,
                    headers.get("content-encoding"), from_header)


def page_weight(page, path: str, *, ready: str | None = None, wait_until: str = "networkidle") -> PageWeight:
    """Load `path` in `page` and count every response of the load: the document, its scripts, styles, images,
    and what they fetch until the network is idle and, with `ready` (a selector), until that element shows
    (on a busy machine, a script may fetch after the network looked idle). Resources the browser takes from
    its cache count nothing (`cached`), as on a second visit over a slow link."""
    responses = []

    def record(response) -> None:
        responses.append(response)

    page.on("response", record)
    try:
        answer = page.goto(path, wait_until=wait_until)
        if ready is not None:
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
    finally:
        page.remove_listener("response", record)
    assert answer is not None, f"{path}: no response"
    weight = PageWeight(answer.url)
    weight.transfers = [_transfer(response) for response in responses]
    return weight
