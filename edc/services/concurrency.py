"""Optimistic concurrency: strong ETags from record id + version, checked before every write."""

from __future__ import annotations

from typing import Any

from edc.problems import PreconditionFailed


def etag_of(record: Any) -> str:
    return f'"{record.id}.{record.version}"'


def check_etag(record: Any, expected_etag: str, label: str) -> None:
    """Refuse a write based on a stale read (412)."""
    if etag_of(record) != expected_etag:
        raise PreconditionFailed(f"{label} has changed since you read it; read it again and reapply your change.")
