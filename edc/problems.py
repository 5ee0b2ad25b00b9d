"""Problems (RFC 9457): the expected failures of a use case, raised by the domain and the services.

No Flask here: edc.errors is the one place that turns a Problem into an HTTP response (problem+json,
a FHIR OperationOutcome under /fhir/, or an RFC 6749 error for OAuthError).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


# problem+json `type`: one stable URI per kind of problem, listed in docs/api.md. They name the kind; they are
# not links. A status without a kind here answers RFC 9457's about:blank (its title is the status's name).
PROBLEM_TYPE_PREFIX = "urn:edc:problem:"
KIND_OF_STATUS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
                  405: "method-not-allowed", 409: "conflict", 410: "gone", 412: "stale-version", 413: "too-large",
                  415: "unsupported-media-type", 422: "invalid-fields", 428: "version-required",
                  429: "too-many-requests", 500: "internal-error", 503: "unavailable"}
INVALID_JSON, WRONG_HOST = "invalid-json", "wrong-host"  # two kinds of 400 a client fixes differently


def problem_type(status: int, kind: str | None = None) -> str:
    """The `type` URI of a problem: its own kind, else its status's, else about:blank."""
    name = kind or KIND_OF_STATUS.get(status)
    return PROBLEM_TYPE_PREFIX + name if name else "about:blank"


class Problem(Exception):
    """An expected failure of a use case; the handler renders it. Services raise these."""

    status = 500
    title = "Internal Server Error"
    kind: str | None = None  # a problem type of its own (problem_type); None: its status's

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Iterable[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        after_rollback: Iterable[Callable[[Any], None]] = (),
        log_detail: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        # Security events (failed login, spent refresh token) that must survive the
        # rollback of the failing request: run with the session in a fresh transaction.
        self.after_rollback = list(after_rollback)
        self.log_detail = log_detail  # for the server log only, never sent to the client
        self.extra = extra


class BadRequest(Problem):
    status, title = 400, "Bad Request"


class Unauthorized(Problem):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {}).setdefault("WWW-Authenticate", 'Bearer realm="edc"')
        super().__init__(detail, **kwargs)


class Forbidden(Problem):
    status, title = 403, "Forbidden"


class NotFound(Problem):
    status, title = 404, "Not Found"


class Conflict(Problem):
    status, title = 409, "Conflict"


class Gone(Problem):
    status, title = 410, "Gone"


class PreconditionFailed(Problem):
    status, title = 412, "Precondition Failed"


class UnsupportedMediaType(Problem):
    status, title = 415, "Unsupported Media Type"


class UnprocessableContent(Problem):
    status, title = 422, "Unprocessable Content"

    def __init__(self, detail: str | None = None, *, errors: Iterable[dict[str, str]] | None = None, **kwargs: Any):
        super().__init__(detail or "The request has invalid fields.", errors=errors or [], **kwargs)


class PreconditionRequired(Problem):
    status, title = 428, "Precondition Required"


class TooManyRequests(Problem):
    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {})["Retry-After"] = str(max(1, int(retry_after)))
        super().__init__(detail, **kwargs)


class ServiceUnavailable(Problem):
    status, title = 503, "Service Unavailable"


class OAuthError(Problem):
    """An error of the OAuth token endpoint, answered as RFC 6749 §5.2 says: {"error", "error_description"}.

    OAuth clients (the registries' SMART Backend Services libraries) parse that shape, not problem+json or
    an OperationOutcome, so this one endpoint under /fhir/ keeps it.
    """

    status, title = 400, "Bad Request"

    def __init__(self, error: str, detail: str, *, status: int = 400, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.error = error
        self.status = status


def field_error(pointer: str, detail: str) -> dict[str, str]:
    """One entry of a 422's errors list; pointer is a JSON Pointer into the request body."""
    return {"pointer": pointer, "detail": detail}
