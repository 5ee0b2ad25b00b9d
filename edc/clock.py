"""The one source of the current time, so tests can move it."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)
