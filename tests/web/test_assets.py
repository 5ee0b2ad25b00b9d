"""Static files: the vendored htmx is the pinned file, served compressed with a versioned, immutable URL;
pages carry a strict Content-Security-Policy and are compressed for slow links."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import edc.web

STATIC = Path(edc.web.__file__).parent / "static"


def test_every_vendored_file_matches_the_sha256_recorded_beside_it():
    recorded = dict(re.findall(r"\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|", (STATIC / "vendor" / "README.md").read_text()))
    assert "htmx-2.0.11.min.js" in recorded
    vendored = {p.name for p in (STATIC / "vendor").iterdir() if p.suffix == ".js"}
    assert vendored == set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    assert (STATIC / "vendor" / "htmx-LICENSE.txt").read_text().startswith("Zero-Clause BSD")


def test_static_files_are_compressed_versioned_and_cached_for_a_year(web):
    page = web.get("/login").get_data(as_text=True)
    url = re.search(r'src="(/static/vendor/htmx-2.0.11.min.js\?v=[0-9a-f]{12})"', page).group(1)
    response = web.client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert gzip.decompress(response.data) == (STATIC / "vendor" / "htmx-2.0.11.min.js").read_bytes()
    assert len(response.data) < 20_000
    again = web.client.get(url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    for bad in ("/static/../__init__.py", "/static/vendor/README.md", "/static/nothing.css", "/static/%2e%2e/browser.py"):
        assert web.client.get(bad).status_code == 404, bad


def test_pages_are_compressed_and_allow_no_inline_script_or_outside_source(web):
    response = web.client.get("/login", headers={"Accept-Encoding": "gzip, deflate"})
    assert response.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in response.headers["Vary"]
    html = gzip.decompress(response.data).decode()
    assert "<script>" not in html and " style=" not in html and "http://" not in html and "https://" not in html
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
