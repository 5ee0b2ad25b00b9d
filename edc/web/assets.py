"""Static files and the page budget for slow links.

Static files are read once per process, compressed once, and served with a version in their URL
(`static_url`: `?v=` + the first hex digits of their SHA-256) and a year-long immutable cache lifetime, so a
browser downloads the stylesheet and htmx once. Pages (HTML) are gzip-compressed when the browser accepts it;
a reverse proxy may compress again, which changes nothing. docs/web.md holds the budget and its measurement.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Response, abort, request

from edc.security.permissions import public
from edc.web.blueprint import blp

STATIC_DIR = Path(__file__).parent / "static"
COMPRESSIBLE = ("text/html", "text/css", "application/javascript", "text/javascript", "image/svg+xml")
SMALLEST_WORTH_COMPRESSING = 512
# Scripts only from this server, no inline script or style, no framing, forms post only here.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    mimetype: str
    digest: str


@cache
def _static_file(name: str) -> StaticFile | None:
    path = (STATIC_DIR / name).resolve()
    if STATIC_DIR.resolve() not in path.parents or not path.is_file() or path.suffix in (".md", ".txt"):
        return None
    body = path.read_bytes()
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    gzipped = gzip.compress(body, 9, mtime=0) if mimetype in COMPRESSIBLE else None
    return StaticFile(body, gzipped, mimetype, hashlib.sha256(body).hexdigest())


def static_url(name: str) -> str:
    found = _static_file(name)
    if found is None:
        raise LookupError(f"no static file {name}")
    return f"/static/{name}?v={found.digest[:12]}"


def _accepts_gzip() -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


@blp.get("/static/<path:name>")
@public
def static(name: str):
    found = _static_file(name)
    if found is None:
        abort(404)
    etag = found.digest[:32]
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": "public, max-age=31536000, immutable"})
    compressed = found.gzipped is not None and _accepts_gzip()
    response = Response(found.gzipped if compressed else found.body, mimetype=found.mimetype)
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


def finish_page(response: Response) -> Response:
    """Every web answer: its security policy, and HTML compressed for the slow links."""
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    if (response.mimetype == "text/html" and not response.direct_passthrough and _accepts_gzip()
            and "Content-Encoding" not in response.headers):
        body = response.get_data()
        if len(body) >= SMALLEST_WORTH_COMPRESSING:
            response.set_data(gzip.compress(body, 6, mtime=0))
            response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding, Cookie"
    return response
