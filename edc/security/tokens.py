"""Access tokens: ES256 JWTs with typ at+jwt and kid (RFC 9068 / RFC 8725); opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from edc.security.keyring import SigningKey

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]


class TokenRejected(Exception):
    """The token is not acceptable; the reason is for logs, never for the client."""


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime
    jti: str


def issue_access_token(
    key: SigningKey, *, issuer: str, audience: str, subject: str, session_id: str,
    roles: list[str], now: datetime, lifetime: timedelta, extra_claims: dict[str, Any] | None = None,
) -> AccessToken:
    """Sign a short-lived access token; role claims are informational only.

    `extra_claims` adds RFC 9068's client_id and scope to a registry client's token (informational too:
    the session row is what counts)."""
    jti = uuid.uuid4().hex
    expires_at = now + lifetime
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": jti,
        "sid": session_id,
        "roles": sorted(set(roles)),
        **(extra_claims or {}),
    }
    token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE, "kid": key.kid})
    return AccessToken(token=token, expires_at=expires_at, jti=jti)


def verify_access_token(
    token: str, key_for: Callable[[str], SigningKey | None], *, issuer: str, audience: str, leeway: int, now: datetime,
    max_lifetime: int,
) -> dict[str, Any]:
    """Return the claims of a valid token, else raise TokenRejected. `key_for(kid)` finds the key that signed it.

    A token that was given longer than `max_lifetime` seconds (exp - iat, plus the leeway) is refused even
    though our key signed it: we never issue one, so it is a leaked key, a bug or an old setting."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"malformed: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRejected("algorithm not allowed")
    typ = header.get("typ")
    # RFC 9068 §4: "at+jwt", compared case-insensitively, optionally with the "application/" prefix.
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != TOKEN_TYPE:
        raise TokenRejected("typ is not at+jwt")
    if "crit" in header:
        raise TokenRejected("unknown critical header")
    kid = header.get("kid")
    key = key_for(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenRejected("unknown kid")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            # Times are checked below against the service clock (the one tests can move).
            options={"require": REQUIRED_CLAIMS, "strict_aud": True,
                     "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"invalid: {type(exc).__name__}") from None
    times = [claims[name] for name in ("exp", "nbf", "iat")]
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times):
        raise TokenRejected("time claims are not numbers")
    stamp = now.timestamp()
    if claims["exp"] + leeway <= stamp or claims["nbf"] - leeway > stamp or claims["iat"] - leeway > stamp:
        raise TokenRejected("outside its validity period")
    if claims["exp"] - claims["iat"] > max_lifetime + leeway:
        raise TokenRejected("lifetime longer than we issue")
    if not isinstance(claims.get("sid"), str):
        raise TokenRejected("no session")
    return claims


def new_opaque_token() -> tuple[str, str]:
    """Return a fresh opaque token and the SHA-256 under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, opaque_token_hash(token)


def opaque_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
