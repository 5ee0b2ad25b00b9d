"""Failure throttling of logins, password re-entry and client authentication: growing delays, temporary locks only.

Three counters per failure, each with its own free attempts before it locks:
- the account from this address ('user:mfg@192.0.2.7'): a guesser locks only themselves out, so a third party
  from another address cannot keep the account's owner from signing in (throttle_account_free_attempts);
- the address ('addr:192.0.2.7'): one address guessing many accounts (throttle_address_free_attempts);
- the account from anywhere ('user:mfg'): a ceiling against guessing spread over many addresses, set far
  higher (throttle_account_ceiling_attempts) so that locking a user out takes a botnet, not a script.
A name that breaks the username rules is never stored: it counts under the address only. Rows whose last
failure is older than throttle_forget_seconds (and whose lock has ended) are deleted at the next failure.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.auth import LoginThrottle
from edc.security import usernames

ADDRESS_CHARS = 48  # an IPv6 address in text is at most 45


def account(username: str) -> str | None:
    """The throttle's name for the account a typed username means; None for a name no account can have."""
    name = usernames.normalize(username)
    return f"user:{name}" if usernames.is_acceptable(name) else None


def keys_for(principal: str | None, client_address: str | None) -> list[tuple[str, str]]:
    """Throttle keys with the setting that gives each its free attempts."""
    address = client_address[:ADDRESS_CHARS] if client_address else None
    keys = []
    if principal:
        keys.append((f"{principal}@{address or '-'}", "throttle_account_free_attempts"))
        keys.append((principal, "throttle_account_ceiling_attempts"))
    if address:
        keys.append((f"addr:{address}", "throttle_address_free_attempts"))
    return keys


def seconds_locked(session: Session, principal: str | None, client_address: str | None) -> int:
    """How long the caller must still wait before trying again (0 when not locked)."""
    now = clock.utcnow()
    keys = [k for k, _ in keys_for(principal, client_address)]
    rows = session.scalars(sa.select(LoginThrottle).where(LoginThrottle.key.in_(keys))) if keys else []
    waits = [(row.locked_until - now).total_seconds() for row in rows if row.locked_until and row.locked_until > now]
    return int(max(waits, default=0) + 0.999)


def record_failure(session: Session, principal: str | None, client_address: str | None) -> None:
    """Count a failure; beyond the free attempts lock for base * 2^n seconds, capped."""
    settings = runtime.of(session).settings
    now = clock.utcnow()
    forget = timedelta(seconds=settings["throttle_forget_seconds"])
    _prune(session, now - forget, now)
    for key, free_setting in keys_for(principal, client_address):
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


def _prune(session: Session, forgotten_before: datetime, now: datetime) -> None:
    """Delete counters nobody needs any more: failures forgotten and lock over."""
    session.execute(sa.delete(LoginThrottle).where(
        LoginThrottle.last_failure_at < forgotten_before,
        sa.or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
    ).execution_options(synchronize_session="fetch"))


def clear(session: Session, principal: str | None, client_address: str | None) -> None:
    """Forget the account's failures from this address after a success there.

    The address keeps its count (it may be guessing other accounts), and so does the account-wide ceiling
    (guessing from elsewhere goes on whether or not the owner signs in)."""
    pair_key = keys_for(principal, client_address)[0][0] if principal else None
    row = session.get(LoginThrottle, pair_key) if pair_key else None
    if row is not None:
        session.delete(row)
