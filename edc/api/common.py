"""Small helpers every resource module uses: the current actor, If-Match, page size and links, ETags."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, g, request
from werkzeug.sansio.utils import get_current_url

from edc.problems import PreconditionRequired, UnprocessableContent, field_error
from edc.security.permissions import Actor
from edc.services.concurrency import etag_of


def current_actor() -> Actor:
    return g.actor


def client_address() -> str | None:
    # ProxyFix (trusted_proxy_hops) has already replaced remote_addr with the client's address.
    return request.remote_addr


def public_url(path: str) -> str:
    """An absolute URL of ours: public_base_url + path, whatever Host the request named."""
    return current_app.config["EDC"]["public_base_url"] + path


def public_request_url() -> str:
    """The URL of the current request as reached at public_base_url (request.url without the Host header)."""
    scheme, _, host = current_app.config["EDC"]["public_base_url"].partition("://")
    return get_current_url(scheme, host, request.root_path, request.path, request.query_string)


def if_match() -> str:
    """The If-Match header a write must carry (428 without)."""
    value = request.headers.get("If-Match")
    if not value:
        raise PreconditionRequired("Send If-Match with the ETag you read; this protects others' changes.")
    return value.strip()


def etag(obj: Any) -> str:
    """A strong ETag: record id and version."""
    return etag_of(obj)


def page_args(args: dict[str, Any]) -> dict[str, int]:
    """The page asked for; a page_size over the configured maximum is refused (422), never silently cut, so a
    client never takes a short page for the end of the list. The answer then carries its Link headers."""
    limit = current_app.config["EDC"]["page_size_max"]
    if args["page_size"] > limit:
        raise UnprocessableContent(errors=[field_error("/query/page_size", f"Must be at most {limit} (page_size_max).")])
    g.paging = {"page": args["page"], "page_size": args["page_size"]}
    return dict(g.paging)


def add_page_links(response: Response) -> None:
    """Link (first, prev, next, last; RFC 8288) and X-Total-Count on a page of a list, from its body's total."""
    paging = g.get("paging")
    if paging is None or response.status_code != 200 or not response.is_json:
        return
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("total"), int):
        return
    page, size, total = paging["page"], paging["page_size"], body["total"]
    last = max(1, math.ceil(total / size))
    pages = {"first": 1, "prev": page - 1 if page > 1 else None, "next": page + 1 if page < last else None, "last": last}
    response.headers["Link"] = ", ".join(f'<{_page_url(number)}>; rel="{rel}"' for rel, number in pages.items() if number)
    response.headers["X-Total-Count"] = str(total)


def _page_url(number: int) -> str:
    query = [(name, value) for name, value in request.args.items(multi=True) if name != "page"] + [("page", str(number))]
    return public_url(request.path) + "?" + urlencode(query)
