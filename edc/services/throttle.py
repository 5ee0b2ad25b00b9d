"""Login throttling per account name and per client address: growing delays, temporary locks only."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.auth import LoginThrottle


def keys_for(username: str, client_address: str | None) -> list[tuple[str, str]]:
    """Throttle keys with the setting that gives each its free attempts."""
    keys = [(f"user:{username.casefold()[:120]}", "throttle_account_free_attempts")]
    if client_address:
        keys.append((f"addr:{client_address[:120]}", "throttle_address_free_attempts"))
    return keys


def seconds_locked(session: Session, username: str, client_address: str | None) -> int:
    """How long the caller must still wait before trying again (0 when not locked)."""
    now = clock.utcnow()
    rows = session.scalars(sa.select(LoginThrottle).where(LoginThrottle.key.in_([k for k, _ in keys_for(username, client_address)])))
    waits = [(row.locked_until - now).total_seconds() for row in rows if row.locked_until and row.locked_until > now]
    return int(max(waits, default=0) + 0.999)


def record_failure(session: Session, username: str, client_address: str | None) -> None:
    """Count a failure; beyond the free attempts lock for base * 2^n seconds, capped."""
    settings = runtime.of(session).settings
    now = clock.utcnow()
    forget = timedelta(seconds=settings["throttle_forget_seconds"])
    for key, free_setting in keys_for(username, client_address):
        row = session.get(LoginThrottle, key, with_for_update=True)
        if row is None:
            row = LoginThrottle(key=key, failures=0)
            session.add(row)
        if row.last_failure_at and now - row.last_failure_at > forget:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        excess = row.failures - settings[free_setting]
        if excess > 0:
            delay = min(settings["throttle_base_seconds"] * 2 ** (excess - 1), settings["throttle_max_seconds"])
            row.locked_until = now + timedelta(seconds=delay)
    session.flush()


def clear_account(session: Session, username: str) -> None:
    """Forget an account's failures after a successful login."""
    row = session.get(LoginThrottle, keys_for(username, None)[0][0])
    if row is not None:
        session.delete(row)
