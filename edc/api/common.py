"""Small helpers every resource module uses: the current actor, If-Match, page size, ETags."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from werkzeug.sansio.utils import get_current_url

from edc.problems import PreconditionRequired
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
    limit = current_app.config["EDC"]["page_size_max"]
    return {"page": args["page"], "page_size": min(args["page_size"], limit)}
