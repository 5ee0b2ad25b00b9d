"""Files streamed from export storage to the client: the same response for every backend, with the
manifest's SHA-256 as ETag, conditional requests and byte ranges (storage streams are seekable)."""

from __future__ import annotations

from typing import BinaryIO

from flask import Response, request
from werkzeug.wsgi import wrap_file

CHUNK = 256 << 10  # bytes per write to the client: few Python iterations per megabyte, little memory


def handed_out(response: Response) -> bool:
    """Whether the answer carries file content (200, or 206 for a range), not a 304 or 416."""
    return response.status_code in (200, 206)


def stored_file(stream: BinaryIO, *, media_type: str, size: int, sha256: str, download_name: str | None = None) -> Response:
    """Stream `stream` (closed when the response is); `download_name` makes it an attachment."""
    response = Response(wrap_file(request.environ, stream, CHUNK), mimetype=media_type, direct_passthrough=True)
    response.content_length = size
    response.set_etag(sha256)
    if download_name:
        response.headers.set("Content-Disposition", "attachment", filename=download_name)
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=size)
