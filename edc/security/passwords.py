"""Password hashing (argon2id) and the password policy (length + common-password list, no composition rules)."""

from __future__ import annotations

import functools
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

# OWASP Password Storage Cheat Sheet minimum for argon2id: 19 MiB, 2 iterations, 1 lane. Settings below it are
# refused outside the test environment (edc.settings).
OWASP_TIME_COST, OWASP_MEMORY_KIB, OWASP_PARALLELISM = 2, 19456, 1


@functools.cache
def _common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line.strip() and not line.startswith("#"))


def policy_problems(password: str, *, username: str | None = None) -> list[str]:
    """Return why a new password is refused (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    lowered = password.casefold()
    if lowered in _common_passwords():
        problems.append("is too common")
    if username and username.casefold() in lowered:
        problems.append("must not contain the username")
    return problems


class Hasher:
    """argon2id with one set of parameters (the settings' argon2_*)."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._argon2 = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)

    def hash(self, password: str) -> str:
        return self._argon2.hash(password)

    @functools.cached_property
    def _dummy_hash(self) -> str:
        return self._argon2.hash("a password nobody has, for constant-time misses")

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password; a missing hash still costs one verification, so timing tells nothing."""
        if len(password) > MAX_LENGTH:
            password = password[:MAX_LENGTH]
        try:
            return self._argon2.verify(password_hash or self._dummy_hash, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)


@functools.cache
def hasher(time_cost: int = OWASP_TIME_COST, memory_kib: int = OWASP_MEMORY_KIB, parallelism: int = OWASP_PARALLELISM) -> Hasher:
    """The hasher for these parameters, built once per process."""
    return Hasher(time_cost, memory_kib, parallelism)


def hasher_for(settings) -> Hasher:
    """The hasher the settings configure (argon2_time_cost, _memory_kib, _parallelism)."""
    return hasher(settings["argon2_time_cost"], settings["argon2_memory_kib"], settings["argon2_parallelism"])
