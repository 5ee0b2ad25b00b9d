"""Client assertions of SMART Backend Services: JWTs a registry signs with its own key to get an access token.

Checked as SMART's client-confidential-asymmetric profile and RFC 7523 §3 say: RS384 or ES384 only, the key
picked by `kid` among the client's registered public keys (with a `kty` that fits the algorithm), iss == sub
== the client id, aud exactly the token URL (a single string, as RFC 7523bis requires against audience
confusion), exp present and at most five minutes ahead, a jti (its single use is the caller's business:
it needs the database). Keys are never fetched: `jku`, `x5u`, `jwk` and `x5c` headers are refused, as is
any `crit`. Pure functions; the reason of a rejection is safe to tell the client.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import jwt

from edc.ecrf.inputs import text_problem

# JWA algorithm -> the JWK key type that verifies it (SMART: servers verify RS384 and/or ES384).
ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
EC_CURVE = "P-384"
MIN_RSA_BITS = 2048
MAX_LIFETIME_SECONDS = 300
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "jti"]
REFUSED_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_JTI_LENGTH = 255


class AssertionRejected(Exception):
    """The assertion is not acceptable; the message says why, in words fit for the client."""


def check_jwks(jwks: Any) -> list[str]:
    """Check a client's JWK Set at registration (public RS384/ES384 signing keys, unique kids); return the kids."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValueError('A JWK Set is a JSON object with a non-empty "keys" list.')
    kids: list[str] = []
    for index, key in enumerate(jwks["keys"]):
        where = f"key {index + 1}"
        if not isinstance(key, dict):
            raise ValueError(f"{where} is not a JSON object.")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid.strip():
            raise ValueError(f"{where} has no kid.")
        if kid in kids:
            raise ValueError(f"kid {kid!r} appears twice.")
        if PRIVATE_MEMBERS & set(key):
            raise ValueError(f"{where} ({kid}) holds private key material: register the public key only.")
        if key.get("kty") not in ALGORITHMS.values():
            raise ValueError(f"{where} ({kid}) must be an RSA or EC key.")
        if key.get("alg") is not None and ALGORITHMS.get(key["alg"]) != key["kty"]:
            raise ValueError(f"{where} ({kid}): alg must be RS384 (RSA) or ES384 (EC P-384).")
        if key.get("use") not in (None, "sig"):
            raise ValueError(f"{where} ({kid}) is not a signing key (use must be sig).")
        if key["kty"] == "EC" and key.get("crv") != EC_CURVE:
            raise ValueError(f"{where} ({kid}) must be on curve {EC_CURVE} (ES384).")
        try:
            public = jwt.PyJWK(key, algorithm="RS384" if key["kty"] == "RSA" else "ES384").key
        except jwt.PyJWTError as exc:
            raise ValueError(f"{where} ({kid}) is not a valid JWK: {exc}") from None
        if key["kty"] == "RSA" and public.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where} ({kid}) is an RSA key under {MIN_RSA_BITS} bits.")
        kids.append(kid)
    return kids


def assertion_issuer(token: str) -> str:
    """The (unverified) iss of an assertion: whose registered keys to verify it with."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, RecursionError):  # RecursionError: a payload nested thousands deep
        raise AssertionRejected("The client assertion is not a well-formed JWT.") from None
    _check_text(claims)
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise AssertionRejected("The client assertion has no iss (the client id).")
    return issuer


def _check_text(claims: dict[str, Any]) -> None:
    """Refuse claims that no column or log line can hold (iss, sub and jti are stored or compared as text)."""
    for name, value in claims.items():
        problem = text_problem(value) if isinstance(value, str) else None
        if problem or (isinstance(value, float) and not math.isfinite(value)):
            raise AssertionRejected(f"The client assertion's {str(name)[:32]!r} claim {problem or 'is not finite'}.")


def _key_for(header: dict[str, Any], jwks: dict[str, Any]):
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AssertionRejected("The client assertion must be signed with RS384 or ES384.")
    if any(name in header for name in REFUSED_HEADERS):
        raise AssertionRejected("Keys are taken from the registration only: jku, x5u, jwk, x5c and crit are refused.")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise AssertionRejected("The client assertion's typ must be JWT.")
    kid = header.get("kid")
    matches = [key for key in jwks.get("keys", []) if isinstance(kid, str) and key.get("kid") == kid
               and key.get("kty") == ALGORITHMS[alg] and key.get("alg", alg) == alg]
    if len(matches) != 1:
        raise AssertionRejected("No registered key of this client matches the assertion's kid and algorithm.")
    return jwt.PyJWK(matches[0], algorithm=alg).key, alg


def verify(token: str, jwks: dict[str, Any], *, client_id: str, audience: str, now: datetime,
           leeway: int) -> dict[str, Any]:
    """The claims of a valid assertion by this client for this token URL, else AssertionRejected."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AssertionRejected("The client assertion is not a well-formed JWT.") from None
    key, alg = _key_for(header, jwks)
    try:
        claims = jwt.decode(token, key, algorithms=[alg], audience=audience,
                            # Times are checked below against the service clock (the one tests can move).
                            options={"require": REQUIRED_CLAIMS, "strict_aud": True,
                                     "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidAudienceError:
        raise AssertionRejected("The client assertion's aud must be exactly the token URL.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AssertionRejected(f"The client assertion has no {exc.claim} claim.") from None
    except jwt.PyJWTError:
        raise AssertionRejected("The client assertion's signature does not verify with the registered key.") from None
    if claims["iss"] != client_id or claims["sub"] != client_id:
        raise AssertionRejected("The client assertion's iss and sub must both be the client id.")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise AssertionRejected(f"The client assertion's jti must be a string of 1 to {MAX_JTI_LENGTH} characters.")
    _check_times(claims, now.timestamp(), leeway)
    return claims


def _check_times(claims: dict[str, Any], now: float, leeway: int) -> None:
    times = {name: claims[name] for name in ("exp", "nbf", "iat") if name in claims}
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times.values()):
        raise AssertionRejected("The client assertion's exp, nbf and iat must be numbers (seconds since 1970).")
    if times["exp"] + leeway <= now:
        raise AssertionRejected("The client assertion has expired.")
    if times["exp"] - leeway > now + MAX_LIFETIME_SECONDS:
        raise AssertionRejected("The client assertion's exp is more than five minutes ahead.")
    if times.get("nbf", now) - leeway > now or times.get("iat", now) - leeway > now:
        raise AssertionRejected("The client assertion is not valid yet (nbf or iat in the future).")
