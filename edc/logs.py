"""JSON-lines logging: one object per line; control characters escaped by the JSON encoder."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

HANDLER_NAME = "edc-json"
REQUEST_FIELDS = "edc.request_log"  # WSGI environ key: the request's log fields, filled in by the app
request_log = logging.getLogger("edc.request")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure() -> None:
    """Send the edc loggers to stderr as JSON lines, once per process."""
    logger = logging.getLogger("edc")
    if any(h.get_name() == HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class RequestLog:
    """WSGI middleware that writes each request's log line with the status the server actually sends.

    The app fills in the fields (who, what, route) as it answers; a failure after that (a teardown that
    raises escapes the app, and the server then sends its own 500) would otherwise be logged with the
    status of the answer that was never sent."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        sent: dict[str, int] = {}

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            sent["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            _write_request_line(environ, started, 500)  # what the server answers for an error that escapes the app
            raise
        _write_request_line(environ, started, sent.get("status"))
        return body


def _write_request_line(environ: dict[str, Any], started: float, status: int | None) -> None:
    fields = dict(environ.get(REQUEST_FIELDS) or {"event": "request", "method": environ.get("REQUEST_METHOD"),
                                                  "route": None})
    answered = fields.pop("status", None)
    fields["status"] = status
    if answered is not None and answered != status:
        fields["answer_replaced"] = answered  # the app's answer, replaced by the server's after a late failure
    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    request_log.info("request", extra={"fields": fields})
