"""Failure throttling of logins, password re-entry and client authentication: growing delays, temporary locks only.

Three counters per failure, each with its own free attempts before it locks:
- the account from this address ('user:mfg@192.0.2.7'): a guesser locks only themselves out, so a third party
  from another address cannot keep the account's owner from signing in (throttle_account_free_attempts);
- the address ('addr:192.0.2.7'): one address guessing many accounts (throttle_address_free_attempts);
- the account from anywhere ('user:mfg'): a ceiling against guessing spread over many addresses, set far
  higher (throttle_account_ceiling_attempts) so that locking a user out takes a botnet, not a script.
A name that breaks the username rules is never stored: it counts under the address only. Rows whose last
failure is older than throttle_forget_seconds (and whose lock has ended) are deleted at the next count.

A password check is counted before it is made (count_attempt): one upsert per counter that returns the new
count (INSERT ... ON CONFLICT DO UPDATE ... RETURNING, on PostgreSQL and SQLite alike), committed by the
caller before the check. Simultaneous guesses therefore see each other's count: a burst gets no more
passwords checked than a sequence, no two first failures collide on a counter's key, and a failure leaves
nothing to write after the request's rollback but its audit record. A check that succeeds gives its count
back (succeeded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.models.auth import LoginThrottle
from edc.security import usernames

ADDRESS_CHARS = 48  # an IPv6 address in text is at most 45
THROTTLES = LoginThrottle.__table__


def account(username: str) -> str | None:
    """The throttle's name for the account a typed username means; None for a name no account can have."""
    name = usernames.normalize(username)
    return f"user:{name}" if usernames.is_acceptable(name) else None


def keys_for(principal: str | None, client_address: str | None) -> list[tuple[str, str]]:
    """Throttle keys with the setting that gives each its free attempts (always in this order: see succeeded)."""
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


@dataclass(frozen=True)
class Attempt:
    """A password check counted before it is made, and the locks its count set: what a success gives back."""

    keys: tuple[str, ...]
    pair_key: str | None  # the account from this address: forgotten on success
    locks: dict[str, tuple[datetime, datetime | None]] = field(default_factory=dict)  # key: (lock set, lock before)


def count_attempt(session: Session, principal: str | None, client_address: str | None) -> Attempt | None:
    """Count a password check on every counter before it is made; None while a counter holds a lock.

    None leaves this attempt's counts in the session's transaction: the caller refuses (429) and rolls back,
    so a refused attempt counts nowhere. Otherwise the caller commits before checking the password."""
    now = clock.utcnow()
    keys = keys_for(principal, client_address)
    attempt = Attempt(tuple(key for key, _ in keys), keys[0][0] if principal else None)
    _prune(session, now)
    for key, free_setting in keys:
        counted = _count(session, key, free_setting, now, unless_locked=True)
        if counted is None:
            return None
        if counted[0] is not None:
            attempt.locks[key] = counted
    return attempt


def succeeded(session: Session, attempt: Attempt) -> None:
    """The password was right: forget the account's failures from this address, and give back the attempt's
    count on the address and the account-wide ceiling, with the lock that count set, if no later count
    has replaced it.

    The address keeps its other failures (it may be guessing other accounts), and so does the ceiling
    (guessing from elsewhere goes on whether or not the owner signs in)."""
    now = clock.utcnow()
    for key in attempt.keys:  # in count_attempt's order: two transactions never wait for each other's rows
        unlocked = sa.or_(THROTTLES.c.locked_until.is_(None), THROTTLES.c.locked_until <= now)
        only_ours = sa.and_(THROTTLES.c.failures <= 1, unlocked)  # a counter that held nothing but this attempt
        session.execute(sa.delete(THROTTLES).where(THROTTLES.c.key == key, sa.true() if key == attempt.pair_key else only_ours))
        if key == attempt.pair_key:
            continue
        values = {"failures": sa.case((THROTTLES.c.failures > 0, THROTTLES.c.failures - 1), else_=0)}
        if key in attempt.locks:
            ours, before = attempt.locks[key]
            restored = sa.null() if before is None else sa.bindparam(None, before, type_=THROTTLES.c.locked_until.type)
            values["locked_until"] = sa.case((THROTTLES.c.locked_until == ours, restored), else_=THROTTLES.c.locked_until)
        session.execute(sa.update(THROTTLES).where(THROTTLES.c.key == key).values(**values))


def record_failure(session: Session, principal: str | None, client_address: str | None) -> None:
    """Count a failure found without a password check (a registry client's assertion), after the fact."""
    now = clock.utcnow()
    _prune(session, now)
    for key, free_setting in keys_for(principal, client_address):
        _count(session, key, free_setting, now, unless_locked=False)


def _count(session: Session, key: str, free_setting: str, now: datetime, *, unless_locked: bool):
    """Add one to a counter (forgotten failures start again from one); beyond its free attempts lock it for
    base * 2^n seconds, capped. Returns (lock set, lock before), (None, None) when it sets none, and None,
    counting nothing, when unless_locked and the counter is locked.

    On PostgreSQL the upsert holds the counter's row lock to the end of the transaction, so the lock this
    count sets is in place before the next count of that counter reads it; SQLite writers are serialised."""
    settings = runtime.of(session).settings
    forgotten_before = now - timedelta(seconds=settings["throttle_forget_seconds"])
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(THROTTLES).values(key=key, failures=1, last_failure_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[THROTTLES.c.key],
        set_={"failures": sa.case((THROTTLES.c.last_failure_at < forgotten_before, 1), else_=THROTTLES.c.failures + 1),
              "last_failure_at": stmt.excluded.last_failure_at},
        where=sa.or_(THROTTLES.c.locked_until.is_(None), THROTTLES.c.locked_until <= now) if unless_locked else None,
    ).returning(THROTTLES.c.failures, THROTTLES.c.locked_until)
    row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    excess = row.failures - settings[free_setting]
    if excess <= 0:
        return None, None
    delay = min(settings["throttle_base_seconds"] * 2 ** (excess - 1), settings["throttle_max_seconds"])
    lock = now + timedelta(seconds=delay)
    session.execute(sa.update(THROTTLES).where(THROTTLES.c.key == key).values(locked_until=lock))
    return lock, row.locked_until


def _prune(session: Session, now: datetime) -> None:
    """Delete counters nobody needs any more: failures forgotten and lock over."""
    forgotten_before = now - timedelta(seconds=runtime.of(session).settings["throttle_forget_seconds"])
    session.execute(sa.delete(LoginThrottle).where(
        LoginThrottle.last_failure_at < forgotten_before,
        sa.or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
    ).execution_options(synchronize_session="fetch"))


def clear(session: Session, principal: str | None, client_address: str | None) -> None:
    """Forget the account's failures from this address after a success there (a registry client, whose
    failures are counted after the fact: record_failure).

    The address keeps its count (it may be guessing other accounts), and so does the account-wide ceiling
    (guessing from elsewhere goes on whether or not the owner signs in)."""
    pair_key = keys_for(principal, client_address)[0][0] if principal else None
    row = session.get(LoginThrottle, pair_key) if pair_key else None
    if row is not None:
        session.delete(row)
