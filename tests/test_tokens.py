"""Forged and bad access tokens, revoked sessions, disabled users, revoked roles and key rotation.

Every forged token starts from a real logged-in user's token and is re-signed here with the
real development key, so exactly one property is wrong; a control test proves that the
re-signed template itself is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import uuid

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import bearer, count_rows, login, problem
from edc.models import AuthSession
from edc.security import keyring
from edc.services import audit

ME = "/api/v1/me"
WATCHED_TABLES = ("audit_records", "audit_chain_heads", "auth_sessions", "refresh_tokens", "users",
                  "role_assignments", "login_throttles")


# --- building tokens by hand ----------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(doc) -> str:
    return b64url(json.dumps(doc, separators=(",", ":")).encode())


def unb64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def split(token: str) -> tuple[dict, dict]:
    """Header and claims of a compact JWS, without verifying anything."""
    header, payload, _ = token.split(".")
    return unb64json(header), unb64json(payload)


def es_signature(private_key: ec.EllipticCurvePrivateKey, data: bytes, hash_algorithm=None) -> bytes:
    """A JWS ECDSA signature (fixed-length r || s, RFC 7518 section 3.4)."""
    der = private_key.sign(data, ec.ECDSA(hash_algorithm or hashes.SHA256()))
    r, s = decode_dss_signature(der)
    size = (private_key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def public_jwk(private_key: ec.EllipticCurvePrivateKey, kid: str) -> dict:
    numbers = private_key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")), "kid": kid, "use": "sig", "alg": "ES256"}


class Forger:
    """Re-signs a real user's access token with chosen changes; unchanged, it is a valid token."""

    def __init__(self, token: str, key: keyring.SigningKey, settings: dict) -> None:
        self.header, self.claims = split(token)
        self.key = key
        self.issuer, self.audience = settings["jwt_issuer"], settings["jwt_audience"]
        self.leeway = settings["jwt_leeway_seconds"]

    def parts(self, header=None, claims=None, drop_header=(), drop_claims=()) -> tuple[dict, dict]:
        h = {k: v for k, v in {**self.header, **(header or {})}.items() if k not in drop_header}
        c = {k: v for k, v in {**self.claims, **(claims or {})}.items() if k not in drop_claims}
        return h, c

    def sign(self, header=None, claims=None, *, drop_header=(), drop_claims=(), key=None, hash_algorithm=None) -> str:
        h, c = self.parts(header, claims, drop_header, drop_claims)
        signing_input = f"{b64json(h)}.{b64json(c)}".encode()
        signature = es_signature(key or self.key.private_key, signing_input, hash_algorithm)
        return f"{signing_input.decode()}.{b64url(signature)}"

    def unsigned(self, header=None, claims=None, signature: bytes = b"") -> str:
        h, c = self.parts(header, claims)
        return f"{b64json(h)}.{b64json(c)}.{b64url(signature)}"

    def hmac(self, secret: bytes, header=None) -> str:
        h, c = self.parts({"alg": "HS256", **(header or {})})
        signing_input = f"{b64json(h)}.{b64json(c)}".encode()
        return f"{signing_input.decode()}.{b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())}"

    def public_pem(self) -> bytes:
        return self.key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def signing_key(keys_dir) -> keyring.SigningKey:
    """The real development key that signs the app's tokens (the newest one)."""
    return keyring.load_signing_keys(keys_dir)[-1]


@pytest.fixture
def victim(client, staff) -> dict:
    """A real monitor (sites:read) signed in; its token is the template of every forgery."""
    return login(client, staff["monitor"])


@pytest.fixture
def forger(victim, signing_key, app) -> Forger:
    return Forger(victim["access_token"], signing_key, app.config["EDC"])


def snapshot(session) -> dict:
    """Row counts of the security tables and the state of sessions and chains."""
    state = {table: count_rows(session, table) for table in WATCHED_TABLES}
    state["revoked_sessions"] = session.execute(
        sa.text("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NOT NULL")).scalar_one()
    state["chain_heads"] = sorted(tuple(r) for r in session.execute(sa.text("SELECT chain, seq, hash FROM audit_chain_heads")))
    session.rollback()
    return state


def refused(response, *, invalid_token: bool = True) -> dict:
    """Assert a 401 problem+json with a Bearer challenge; return the body."""
    body = problem(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    if invalid_token:
        assert 'error="invalid_token"' in challenge, challenge
    return body


def assert_refused_and_nothing_changed(client, session, token: str) -> None:
    before = snapshot(session)
    body = refused(client.get(ME, headers=bearer(token)))
    assert body["detail"] == "The access token is missing, invalid or expired."
    assert snapshot(session) == before


# --- the control: forging itself works -----------------------------------------------------

def test_resigned_template_token_is_accepted(client, forger, staff):
    response = client.get(ME, headers=bearer(forger.sign()))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["username"] == staff["monitor"]


def test_forger_reproduces_the_real_token_header_and_claims(victim, forger, signing_key, app):
    header, claims = split(victim["access_token"])
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": signing_key.kid}
    assert claims["iss"] == app.config["EDC"]["jwt_issuer"] and claims["aud"] == app.config["EDC"]["jwt_audience"]
    assert forger.parts() == (header, claims)


# --- algorithm confusion --------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_alg_none_token_is_401(client, session, forger, alg):
    assert_refused_and_nothing_changed(client, session, forger.unsigned({"alg": alg}))


def test_alg_none_with_a_real_signature_is_401(client, session, forger):
    assert_refused_and_nothing_changed(client, session, forger.sign({"alg": "none"}))


@pytest.mark.parametrize("variant", ["pem", "pem_without_trailing_newline", "der"])
def test_hs256_signed_with_the_public_key_is_401(client, session, forger, variant):
    pem = forger.public_pem()
    secret = {
        "pem": pem,
        "pem_without_trailing_newline": pem.rstrip(b"\n"),
        "der": forger.key.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    }[variant]
    assert_refused_and_nothing_changed(client, session, forger.hmac(secret))


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384", "ES512", "HS256", "EdDSA", "ES256K"])
def test_other_alg_header_on_our_key_is_401(client, session, forger, alg):
    digest = {"ES384": hashes.SHA384(), "ES512": hashes.SHA512()}.get(alg)
    assert_refused_and_nothing_changed(client, session, forger.sign({"alg": alg}, hash_algorithm=digest))


# --- key selection --------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda kid: "unknown-kid",
    lambda kid: kid + "x",
    lambda kid: kid.upper(),
    lambda kid: kid + ".pem",
    lambda kid: f"../signing/{kid}",
    lambda kid: f"../../../../{kid}.pem",
    lambda kid: "../../../../etc/passwd",
    lambda kid: "/dev/null",
    lambda kid: "' OR '1'='1",
    lambda kid: "1; DROP TABLE users; --",
    lambda kid: kid + "\x00",
    lambda kid: "",
], ids=["unknown", "suffix", "upper_case", "file_name", "traversal_to_our_key", "traversal_pem", "etc_passwd",
        "dev_null", "sql_or", "sql_drop", "nul_byte", "empty"])
def test_unknown_or_hostile_kid_string_is_401(client, session, forger, make):
    assert_refused_and_nothing_changed(client, session, forger.sign({"kid": make(forger.key.kid)}))


@pytest.mark.parametrize("make", [
    lambda kid: None, lambda kid: 1, lambda kid: True, lambda kid: [kid], lambda kid: {"kid": kid},
], ids=["null", "number", "bool", "list", "object"])
def test_kid_that_is_not_a_string_is_401(client, session, forger, make):
    assert_refused_and_nothing_changed(client, session, forger.sign({"kid": make(forger.key.kid)}))


def test_missing_kid_is_401(client, session, forger):
    assert_refused_and_nothing_changed(client, session, forger.sign(drop_header=("kid",)))


def test_token_signed_by_another_key_with_our_kid_is_401(client, session, forger):
    attacker = ec.generate_private_key(ec.SECP256R1())
    assert_refused_and_nothing_changed(client, session, forger.sign(key=attacker))


@pytest.mark.parametrize("where", ["jku", "jku_with_our_kid", "jwk_with_our_kid", "jwk_without_kid", "x5u"])
def test_header_pointing_at_an_attacker_key_is_401(client, session, forger, where):
    attacker = ec.generate_private_key(ec.SECP256R1())
    header = {
        "jku": {"jku": "https://attacker.example/jwks.json", "kid": "attacker-1"},
        "jku_with_our_kid": {"jku": "https://attacker.example/jwks.json"},
        "jwk_with_our_kid": {"jwk": public_jwk(attacker, forger.key.kid)},
        "jwk_without_kid": {"jwk": public_jwk(attacker, "attacker-1")},
        "x5u": {"x5u": "https://attacker.example/cert.pem"},
    }[where]
    drop = ("kid",) if where == "jwk_without_kid" else ()
    assert_refused_and_nothing_changed(client, session, forger.sign(header, key=attacker, drop_header=drop))


# --- other header parameters ----------------------------------------------------------------

@pytest.mark.parametrize("crit", [{"crit": ["x"], "x": True}, {"crit": ["b64"], "b64": True}, {"crit": ["exp"]}])
def test_unknown_crit_header_is_401(client, session, forger, crit):
    assert_refused_and_nothing_changed(client, session, forger.sign(crit))


def test_missing_typ_is_401(client, session, forger):
    assert_refused_and_nothing_changed(client, session, forger.sign(drop_header=("typ",)))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt+x", "id_token+jwt", "", None])
def test_typ_other_than_at_jwt_is_401(client, session, forger, typ):
    assert_refused_and_nothing_changed(client, session, forger.sign({"typ": typ}))


# --- issuer and audience --------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda iss: "https://attacker.example",
    lambda iss: iss[:-1],  # a prefix of ours
    lambda iss: iss + "/",  # ours plus a suffix
    lambda iss: iss + ".attacker.example",
    lambda iss: iss.upper(),
    lambda iss: "",
    lambda iss: [iss],
    lambda iss: None,
], ids=["other", "prefix", "trailing_slash", "suffix_domain", "upper_case", "empty", "list", "null"])
def test_wrong_issuer_is_401(client, session, forger, make):
    assert_refused_and_nothing_changed(client, session, forger.sign(claims={"iss": make(forger.issuer)}))


@pytest.mark.parametrize("make", [
    lambda aud: "other-api",
    lambda aud: aud[:-1],
    lambda aud: aud + "-admin",
    lambda aud: "",
    lambda aud: None,
    lambda aud: [aud, "other-api"],  # strict_aud: only exactly our audience
    lambda aud: ["other-api"],
], ids=["other", "prefix", "suffix", "empty", "null", "ours_plus_another", "list_without_ours"])
def test_wrong_audience_is_401(client, session, forger, make):
    assert_refused_and_nothing_changed(client, session, forger.sign(claims={"aud": make(forger.audience)}))


# --- time claims ----------------------------------------------------------------------------

def _now(fake_clock) -> int:
    return int(fake_clock.now.timestamp())


def test_expired_token_beyond_the_leeway_is_401(client, session, forger, fake_clock):
    now = _now(fake_clock)
    token = forger.sign(claims={"iat": now - 500, "nbf": now - 500, "exp": now - forger.leeway - 1})
    assert_refused_and_nothing_changed(client, session, token)


def test_token_expired_within_the_leeway_is_still_accepted(client, forger, fake_clock):
    now = _now(fake_clock)
    token = forger.sign(claims={"iat": now - 500, "nbf": now - 500, "exp": now - forger.leeway + 2})
    assert client.get(ME, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("issued_ago, lasts", [(0, 1), (0, 3600), (300, 1), (86400, 86400 * 365)])
def test_token_living_longer_than_we_issue_is_401_though_signed_with_our_key(client, session, forger, fake_clock, app,
                                                                             issued_ago, lasts):
    now, longest = _now(fake_clock), app.config["EDC"]["access_token_seconds"] + forger.leeway
    token = forger.sign(claims={"iat": now - issued_ago, "nbf": now - issued_ago, "exp": now - issued_ago + longest + lasts})
    assert_refused_and_nothing_changed(client, session, token)


def test_token_living_as_long_as_we_issue_is_accepted(client, forger, fake_clock, app):
    now, longest = _now(fake_clock), app.config["EDC"]["access_token_seconds"] + forger.leeway
    token = forger.sign(claims={"iat": now - 10, "nbf": now - 10, "exp": now - 10 + longest})
    assert client.get(ME, headers=bearer(token)).status_code == 200


def test_real_token_expires_once_the_clock_passes_exp_and_leeway(client, victim, forger, fake_clock, app):
    lifetime = app.config["EDC"]["access_token_seconds"]
    fake_clock.advance(seconds=lifetime + forger.leeway - 5)
    assert client.get(ME, headers=bearer(victim)).status_code == 200
    fake_clock.advance(seconds=10)
    refused(client.get(ME, headers=bearer(victim)))


def test_nbf_in_the_future_beyond_the_leeway_is_401(client, session, forger, fake_clock):
    now = _now(fake_clock)
    assert_refused_and_nothing_changed(client, session, forger.sign(claims={"nbf": now + forger.leeway + 5}))


def test_nbf_in_the_future_within_the_leeway_is_accepted(client, forger, fake_clock):
    now = _now(fake_clock)
    assert client.get(ME, headers=bearer(forger.sign(claims={"nbf": now + forger.leeway - 5}))).status_code == 200


def test_iat_in_the_future_beyond_the_leeway_is_401(client, session, forger, fake_clock):
    now = _now(fake_clock)
    token = forger.sign(claims={"iat": now + forger.leeway + 60, "nbf": now})
    assert_refused_and_nothing_changed(client, session, token)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["9999999999", True, None, [1]], ids=["string", "bool", "null", "list"])
def test_time_claim_that_is_not_a_number_is_401(client, session, forger, claim, value):
    assert_refused_and_nothing_changed(client, session, forger.sign(claims={claim: value}))


# --- required claims ------------------------------------------------------------------------

@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid"])
def test_token_missing_a_required_claim_is_401(client, session, forger, claim):
    assert_refused_and_nothing_changed(client, session, forger.sign(drop_claims=(claim,)))


@pytest.mark.parametrize("claim, value", [
    ("sub", "not-a-uuid"), ("sub", str(uuid.UUID(int=0))), ("sid", "not-a-uuid"), ("sid", str(uuid.UUID(int=0))),
])
def test_sub_or_sid_that_names_no_user_or_session_is_401(client, session, forger, claim, value):
    before = snapshot(session)
    refused(client.get(ME, headers=bearer(forger.sign(claims={claim: value}))), invalid_token=False)
    assert snapshot(session) == before


def test_sid_of_another_users_session_is_401(client, session, forger, staff):
    other = login(client, staff["admin"])
    _, other_claims = split(other["access_token"])
    before = snapshot(session)
    refused(client.get(ME, headers=bearer(forger.sign(claims={"sid": other_claims["sid"]}))), invalid_token=False)
    assert snapshot(session) == before


# --- not a token at all ---------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "garbage", "a.b.c", "a.b", "...", "eyJhbGciOiJFUzI1NiJ9", "eyJ.eyJ.eyJ", "\u00e9t\u00e9.x.y", "x" * 4000,
])
def test_garbage_bearer_token_is_401(client, session, token):
    assert_refused_and_nothing_changed(client, session, token)


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer   ", "Basic YWRtaW46YWRtaW4=", "Token abc"])
def test_missing_or_non_bearer_authorization_is_401(client, staff, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    refused(client.get(ME, headers=headers), invalid_token=False)


def test_token_with_an_extra_segment_is_401(client, session, forger):
    assert_refused_and_nothing_changed(client, session, forger.sign() + ".extra")


def test_token_with_a_flipped_signature_bit_is_401(client, session, forger):
    header, payload, signature = forger.sign().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[-1] ^= 1
    assert_refused_and_nothing_changed(client, session, f"{header}.{payload}.{b64url(bytes(raw))}")


def test_claims_changed_after_signing_are_401(client, session, forger, staff):
    signed = forger.sign()
    header, _, signature = signed.split(".")
    admin_roles = {**forger.claims, "roles": ["admin"]}
    assert_refused_and_nothing_changed(client, session, f"{header}.{b64json(admin_roles)}.{signature}")


# --- revoked sessions, disabled users, revoked roles ----------------------------------------

def test_access_token_of_a_logged_out_session_is_401(client, victim):
    assert client.post("/api/v1/auth/logout", headers=bearer(victim)).status_code == 204
    refused(client.get(ME, headers=bearer(victim)), invalid_token=False)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}), 401)


def test_disabled_users_unexpired_token_is_401_on_the_next_request(client, staff, victim):
    admin = login(client, staff["admin"])
    assert client.get(ME, headers=bearer(victim)).status_code == 200
    response = client.post(f"/api/v1/users/{staff['monitor']}/disable", json={"reason": "left the trial"}, headers=bearer(admin))
    assert response.status_code == 200, response.get_json()
    refused(client.get(ME, headers=bearer(victim)), invalid_token=False)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}), 401)


@pytest.mark.parametrize("revoke", ["logout", "disable", "unknown_session"])
def test_revoked_token_challenge_says_invalid_token(client, staff, victim, forger, revoke):
    """RFC 6750 section 3.1: a revoked token is an invalid_token, like an expired or forged one."""
    token = victim["access_token"]
    if revoke == "logout":
        assert client.post("/api/v1/auth/logout", headers=bearer(victim)).status_code == 204
    elif revoke == "disable":
        admin = login(client, staff["admin"])
        client.post(f"/api/v1/users/{staff['monitor']}/disable", json={"reason": "left"}, headers=bearer(admin))
    else:
        token = forger.sign(claims={"sid": str(uuid.UUID(int=0))})
    refused(client.get(ME, headers=bearer(token)), invalid_token=True)


def test_revoked_role_is_refused_on_the_next_request_with_the_same_token(client, staff, victim):
    admin = login(client, staff["admin"])
    assert client.get("/api/v1/sites", headers=bearer(victim)).status_code == 200
    roles = client.get(f"/api/v1/users/{staff['monitor']}", headers=bearer(admin)).get_json()["roles"]
    assert [(r["role"], r["site"]) for r in roles] == [("monitor", "ES01")]
    response = client.delete(f"/api/v1/users/{staff['monitor']}/roles/{roles[0]['id']}", headers=bearer(admin))
    assert response.status_code == 204

    problem(client.get("/api/v1/sites", headers=bearer(victim)), 403)
    me = client.get(ME, headers=bearer(victim))
    assert me.status_code == 200
    assert me.get_json()["roles"] == [] and me.get_json()["sites"] == []
    # The token still claims the role: the claim is informational only.
    assert split(victim["access_token"])[1]["roles"] == ["monitor"]


# --- refresh token replay -------------------------------------------------------------------

def test_replayed_refresh_token_revokes_the_whole_family_durably(client, session, victim):
    sid = uuid.UUID(split(victim["access_token"])[1]["sid"])
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]})
    assert rotated.status_code == 200
    newer = rotated.get_json()
    assert client.get(ME, headers=bearer(newer)).status_code == 200

    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]})
    problem(replay, 401)
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": newer["refresh_token"]}), 401)
    refused(client.get(ME, headers=bearer(newer)), invalid_token=False)

    # The revocation was committed although the replayed request itself was rolled back.
    session.expire_all()
    row = session.get(AuthSession, sid)
    assert row.revoked_at is not None and row.revoked_reason == "refresh_token_reuse"
    records = [r for r in audit.history(session, chain="security", limit=10_000) if r["action"] == "session_revoked"]
    session.rollback()
    assert len(records) == 1
    assert records[0]["entity_id"] == str(sid)
    assert records[0]["reason"] == "refresh_token_reuse"
    assert records[0]["request_id"] == replay.headers["X-Request-ID"]


def test_replay_of_a_refresh_token_revokes_only_its_own_family(client, staff, victim):
    other = login(client, staff["monitor"])
    client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]})
    problem(client.post("/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}), 401)
    assert client.get(ME, headers=bearer(other)).status_code == 200
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


# --- key rotation ---------------------------------------------------------------------------

def test_signing_key_rotation_keeps_old_tokens_until_the_old_key_is_retired(app_factory, staff, keys_dir, tmp_path):
    rotated_dir = tmp_path / "rotated-keys"  # a copy: the session's keys_dir is shared by every test
    shutil.copytree(keys_dir, rotated_dir)
    old_kid = keyring.load_signing_keys(rotated_dir)[-1].kid

    before = app_factory(keys_dir=str(rotated_dir)).test_client()
    old_token = login(before, staff["monitor"])
    assert split(old_token["access_token"])[0]["kid"] == old_kid

    new_kid = keyring.add_signing_key(rotated_dir, development=True)
    assert new_kid != old_kid
    during = app_factory(keys_dir=str(rotated_dir)).test_client()
    assert during.get(ME, headers=bearer(old_token)).status_code == 200
    new_token = login(during, staff["monitor"])
    assert split(new_token["access_token"])[0]["kid"] == new_kid
    jwks = during.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert sorted(k["kid"] for k in jwks.get_json()["keys"]) == sorted([old_kid, new_kid])
    assert all(k["alg"] == "ES256" and k["kty"] == "EC" and "d" not in k for k in jwks.get_json()["keys"])

    keyring.retire_signing_key(rotated_dir, old_kid)
    after = app_factory(keys_dir=str(rotated_dir)).test_client()
    refused(after.get(ME, headers=bearer(old_token)))
    assert after.get(ME, headers=bearer(new_token)).status_code == 200
    assert [k["kid"] for k in after.get("/.well-known/jwks.json").get_json()["keys"]] == [new_kid]
    # The shared keys_dir was not touched.
    assert [k.kid for k in keyring.load_signing_keys(keys_dir)] == [old_kid]
