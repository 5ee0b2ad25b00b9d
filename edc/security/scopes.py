"""SMART system scopes of registry clients: which resource types an access token may read.

Accepted: `system/<Type>.read` (SMART v1) and `system/<Type>.rs` or `.r` (v2), `<Type>` a resource type we
export or `*`. Nothing else (write scopes, user/ or patient/ scopes, v2 query filters): such a request is
refused as a whole (invalid_scope) rather than silently narrowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SCOPE = re.compile(r"system/(?P<type>\*|[A-Z][A-Za-z]{1,63})\.(?P<access>read|rs|r)")


class ScopeError(ValueError):
    """A requested scope is malformed, not a read scope, or names a type we do not export."""


def grant(requested: str, known_types: Iterable[str]) -> str:
    """The scope to grant for a request: each requested scope checked, duplicates dropped, order kept."""
    known = frozenset(known_types)
    granted: list[str] = []
    for scope in requested.split():
        match = _SCOPE.fullmatch(scope)
        if match is None:
            raise ScopeError(f"Unsupported scope {scope[:80]!r}: ask for system/*.read or system/<Type>.read.")
        if match["type"] != "*" and match["type"] not in known:
            raise ScopeError(f"No resource type {match['type']!r} is exported here.")
        if scope not in granted:
            granted.append(scope)
    if not granted:
        raise ScopeError("Ask for a scope, e.g. system/*.read.")
    return " ".join(granted)


def resource_types(scope: str, known_types: Iterable[str]) -> frozenset[str]:
    """The resource types a granted scope lets its token read."""
    known = frozenset(known_types)
    types: set[str] = set()
    for match in map(_SCOPE.fullmatch, scope.split()):
        if match is not None:
            types |= known if match["type"] == "*" else {match["type"]} & known
    return frozenset(types)
