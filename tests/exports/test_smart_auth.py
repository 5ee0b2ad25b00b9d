"""SMART Backend Services for registry clients, over HTTP: POST /fhir/auth/token with real RS384 and ES384 keys.

A client registered with `flask edc fhir-clients register` signs a client assertion; a good one buys a
short-lived token that reads FHIR (and nothing else); every bad one is an RFC 6749 error and issues nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from werkzeug.datastructures import MultiDict

from conftest import bearer, login, make_user, problem
from edc import clock, runtime
from edc.models import AuthSession, ExportJob, RefreshToken, User
from edc.models.audit import AuditRecord
from edc.security import tokens
from trial.conftest import trial  # noqa: F401  (the fixture)

TOKEN_URL = "http://localhost/fhir/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Keys:
    rsa: Any
    ec: Any
    stranger: Any  # an EC P-384 key nobody registered

    def jwks(self) -> dict:
        return {"keys": [{**RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": "rsa-1", "alg": "RS384",
                          "use": "sig"},
                         {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": "ec-1", "alg": "ES384"}]}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa.generate_private_key(public_exponent=65537, key_size=3072), ec.generate_private_key(ec.SECP384R1()),
                ec.generate_private_key(ec.SECP384R1()))


@dataclass
class Registry:
    """The trial app with a registered client, a subject to read, and a way to sign assertions."""

    trial: Any
    keys: Keys
    client_id: str
    number: str
    clock: Any

    @property
    def http(self):
        return self.trial.client

    def assertion(self, *, key=None, kid: str = "ec-1", alg: str = "ES384", headers: dict | None = None,
                  **claims: Any) -> str:
        """A client assertion; a claim given as None is left out."""
        now = int(self.clock.now.timestamp())
        body = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL, "exp": now + 240,
                "jti": uuid.uuid4().hex, "iat": now, **claims}
        body = {name: value for name, value in body.items() if value is not None}
        signing_key = key if key is not None else (self.keys.ec if alg.startswith("ES") else self.keys.rsa)
        return jwt.encode(body, signing_key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})

    def token_request(self, assertion: str | None = None, *, scope: str | None = "system/*.read",
                      grant_type: str = "client_credentials", assertion_type: str = ASSERTION_TYPE,
                      headers: dict | None = None):
        form = {"grant_type": grant_type, "client_assertion_type": assertion_type,
                "client_assertion": assertion if assertion is not None else self.assertion(), "scope": scope}
        return self.http.post("/fhir/auth/token", data={k: v for k, v in form.items() if v is not None},
                              headers=headers)

    def token(self, **kwargs) -> str:
        response = self.token_request(**kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["access_token"]

    def everything(self, token: str):
        return self.http.get(f"/fhir/Patient/{self.number}/$everything", headers=bearer(token))


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["edc", "fhir-clients", *args])


@pytest.fixture
def registry(trial, session, keys, fake_clock, tmp_path) -> Registry:  # noqa: F811
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    result = cli(trial.client.application, "register", "--username", "registry-svc", "--name", "Test registry",
                 "--jwks", str(path))
    assert result.exit_code == 0, result.output
    return Registry(trial, keys, result.output.strip(), trial.enrol(), fake_clock)


def issued_sessions(session) -> int:
    return session.scalar(sa.text("SELECT count(*) FROM auth_sessions WHERE client_id IS NOT NULL"))


def oauth_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == error and body["error_description"] and "access_token" not in body
    return body


# ================================================================ the good path


@pytest.mark.parametrize("alg, kid", [("RS384", "rsa-1"), ("ES384", "ec-1")])
def test_a_good_assertion_buys_a_token_that_reads_fhir(registry, session, alg, kid):
    response = registry.token_request(registry.assertion(alg=alg, kid=kid))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token
    assert body["token_type"] == "bearer" and 0 < body["expires_in"] <= 300 and body["scope"] == "system/*.read"
    header, claims = jwt.get_unverified_header(body["access_token"]), jwt.decode(body["access_token"],
                                                                                 options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and claims["client_id"] == registry.client_id and claims["scope"] == "system/*.read"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    bundle = registry.everything(body["access_token"])
    assert bundle.status_code == 200 and bundle.get_json(force=True)["resourceType"] == "Bundle"
    issued = session.execute(sa.select(AuditRecord.action, AuditRecord.actor_username, AuditRecord.actor_role,
                                       AuditRecord.entity_id)
                             .where(AuditRecord.action.in_(["fhir_token_issued", "fhir_exported"]))
                             .order_by(AuditRecord.seq)).all()
    assert [tuple(row) for row in issued][:1] == [("fhir_token_issued", "registry-svc", "registry", registry.client_id)]
    assert issued[-1].action == "fhir_exported" and issued[-1].actor_username == "registry-svc"


def test_the_token_reads_only_the_types_its_scope_names(registry):
    granted = registry.token_request(scope="system/Patient.read system/Consent.rs system/Patient.read").get_json()
    assert granted["scope"] == "system/Patient.read system/Consent.rs"
    bundle = registry.everything(granted["access_token"]).get_json(force=True)
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Consent"}
    observations_only = registry.everything(registry.token(scope="system/Observation.read"))
    assert observations_only.status_code == 403
    assert observations_only.get_json(force=True)["issue"][0]["code"] == "forbidden"


def test_a_bulk_export_with_a_scoped_token_covers_only_the_granted_types(registry, session):
    headers = {**bearer(registry.token(scope="system/Patient.read system/Observation.read")), "Prefer": "respond-async"}
    refused = registry.http.get("/fhir/$export", query_string={"_type": "AdverseEvent"}, headers=headers)
    assert refused.status_code == 400 and refused.get_json(force=True)["resourceType"] == "OperationOutcome"
    accepted = registry.http.get("/fhir/$export", headers=headers)
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    job = session.get(ExportJob, uuid.UUID(accepted.headers["Content-Location"].rsplit("/", 1)[1]))
    assert job.parameters["types"] == ["Observation", "Patient"] and job.requested_by == "registry-svc"


def test_the_token_is_for_fhir_only_and_cannot_be_refreshed(registry, session):
    token = registry.token()
    http = registry.http
    for method, path in (("GET", "/api/v1/subjects"), ("GET", "/api/v1/me"), ("POST", "/api/v1/auth/logout"),
                         ("GET", "/api/v1/sites")):
        response = http.open(path, method=method, headers=bearer(token))
        assert response.status_code == 403, (path, response.get_data(as_text=True))
    refused = http.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert refused.status_code in (401, 422) and "access_token" not in refused.get_json()
    assert session.scalar(sa.text("SELECT count(*) FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id "
                                  "WHERE s.client_id IS NOT NULL")) == 0
    assert registry.everything(token).status_code == 200  # still good for FHIR


def test_the_token_expires_with_its_five_minutes(registry):
    token = registry.token()
    registry.clock.advance(seconds=300 + 31)  # past exp and the 30 s leeway
    response = registry.everything(token)
    assert response.status_code == 401 and response.get_json(force=True)["issue"][0]["code"] == "login"


# ================================================================ refusals: an OAuth error, and nothing issued


def _refusals(r: Registry) -> dict[str, str]:
    now = int(r.clock.now.timestamp())
    stranger = str(uuid.uuid4())
    return {
        "signed with an unregistered key": r.assertion(key=r.keys.stranger),
        "rsa key named as the ec kid": r.assertion(alg="RS384", kid="ec-1"),
        "RS256 is not allowed": r.assertion(alg="RS256", kid="rsa-1"),
        "unknown kid": r.assertion(kid="ec-2"),
        "no kid": jwt.encode({"iss": r.client_id, "sub": r.client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "x"},
                             r.keys.ec, algorithm="ES384"),
        "expired": r.assertion(exp=now - 31),
        "exp more than five minutes ahead": r.assertion(exp=now + 331),
        "no exp": r.assertion(exp=None),
        "no jti": r.assertion(jti=None),
        "aud is another URL": r.assertion(aud="http://localhost/fhir/auth/token/"),
        "aud is a list": r.assertion(aud=[TOKEN_URL, "https://elsewhere.example"]),
        "iss differs from sub": r.assertion(sub=stranger),
        "unknown client": r.assertion(iss=stranger, sub=stranger),
        "jku header": r.assertion(headers={"jku": "https://attacker.example/jwks.json"}),
        "typ is at+jwt": r.assertion(headers={"typ": "at+jwt"}),
        "not a JWT": "not-a-jwt",
    }


def test_bad_assertions_are_invalid_client_and_issue_nothing(registry, session):
    for name, assertion in _refusals(registry).items():
        body = oauth_error(registry.token_request(assertion), 401, "invalid_client")
        assert body["error_description"], name
        session.execute(sa.text("DELETE FROM login_throttles"))  # each refusal on its own (the throttle: below)
    assert issued_sessions(session) == 0
    refused = session.scalar(sa.select(sa.func.count()).select_from(AuditRecord)
                             .where(AuditRecord.action == "fhir_token_refused"))
    assert refused == len(_refusals(registry))


def test_an_assertion_for_another_server_is_refused_whatever_host_it_is_sent_with(registry, session):
    """The audience is our token URL at public_base_url (http://localhost in the tests), not one made of the Host."""
    elsewhere = registry.assertion(aud="http://registry-hub.example/fhir/auth/token")
    sent_there = registry.token_request(elsewhere, headers={"Host": "registry-hub.example"})
    assert sent_there.status_code == 400 and "access_token" not in sent_there.get_data(as_text=True)
    oauth_error(registry.token_request(elsewhere), 401, "invalid_client")
    # A port in the Host is not compared, and does not change the audience either.
    oauth_error(registry.token_request(registry.assertion(aud="http://localhost:8443/fhir/auth/token"),
                                       headers={"Host": "localhost:8443"}), 401, "invalid_client")
    assert issued_sessions(session) == 0
    assert registry.token_request(headers={"Host": "localhost:8443"}).status_code == 200


@pytest.mark.parametrize("claims", [{"jti": "replay\x00"}, {"jti": "j\ud800"}, {"exp": float("nan")}])
def test_claims_no_column_can_hold_are_invalid_client_and_issue_nothing(registry, session, claims):
    oauth_error(registry.token_request(registry.assertion(**claims)), 401, "invalid_client")
    assert issued_sessions(session) == 0


def test_a_replayed_assertion_is_refused(registry, session):
    assertion = registry.assertion()
    assert registry.token_request(assertion).status_code == 200
    oauth_error(registry.token_request(assertion), 401, "invalid_client")
    assert issued_sessions(session) == 1


def test_a_deactivated_client_gets_nothing_and_its_tokens_stop(registry, session):
    token = registry.token()
    result = cli(registry.http.application, "deactivate", registry.client_id, "--reason", "contract ended")
    assert result.exit_code == 0, result.output
    response = registry.everything(token)
    assert response.status_code == 401 and response.mimetype == "application/fhir+json"
    oauth_error(registry.token_request(), 401, "invalid_client")
    assert cli(registry.http.application, "deactivate", registry.client_id, "--reason", "again").exit_code == 1
    listed = cli(registry.http.application, "list").output
    assert registry.client_id in listed and "inactive since" in listed


def test_a_disabled_account_gets_no_token(registry):
    app = registry.http.application
    result = app.test_cli_runner().invoke(args=["edc", "users", "disable", "registry-svc", "--reason", "left"])
    assert result.exit_code == 0, result.output
    oauth_error(registry.token_request(), 401, "invalid_client")


@pytest.mark.parametrize("scope", ["user/*.read", "patient/*.read", "system/*.write", "system/*.*", "system/Encounter.read",
                                   "system/Observation.rs?category=laboratory", "system/*.read openid"])
def test_a_bad_scope_is_invalid_scope_and_spends_no_assertion(registry, session, scope):
    assertion = registry.assertion()
    oauth_error(registry.token_request(assertion, scope=scope), 400, "invalid_scope")
    assert issued_sessions(session) == 0
    assert registry.token_request(assertion).status_code == 200  # the same assertion, now with a good scope


def test_malformed_requests(registry, session):
    oauth_error(registry.token_request(grant_type="password"), 400, "unsupported_grant_type")
    oauth_error(registry.token_request(grant_type="authorization_code"), 400, "unsupported_grant_type")
    oauth_error(registry.token_request(scope=None), 400, "invalid_request")
    oauth_error(registry.token_request(assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
                401, "invalid_client")
    as_json = registry.http.post("/fhir/auth/token", json={"grant_type": "client_credentials",
                                                           "client_assertion_type": ASSERTION_TYPE,
                                                           "client_assertion": registry.assertion(), "scope": "system/*.read"})
    oauth_error(as_json, 400, "invalid_request")
    twice = registry.http.post("/fhir/auth/token", data=MultiDict([("grant_type", "client_credentials"),
                                                                   ("grant_type", "client_credentials"),
                                                                   ("client_assertion_type", ASSERTION_TYPE),
                                                                   ("client_assertion", registry.assertion()),
                                                                   ("scope", "system/*.read")]))
    oauth_error(twice, 400, "invalid_request")
    assert issued_sessions(session) == 0


def test_failed_assertions_count_toward_the_login_throttle(registry, session):
    for _ in range(5):  # throttle_account_free_attempts
        oauth_error(registry.token_request(registry.assertion(key=registry.keys.stranger)), 401, "invalid_client")
    oauth_error(registry.token_request(registry.assertion(key=registry.keys.stranger)), 401, "invalid_client")
    locked = registry.token_request()  # even a good assertion waits now
    body = oauth_error(locked, 429, "temporarily_unavailable")
    assert int(locked.headers["Retry-After"]) >= 1 and "later" in body["error_description"]
    registry.clock.advance(seconds=int(locked.headers["Retry-After"]) + 1)
    assert registry.token_request().status_code == 200
    assert issued_sessions(session) == 1


def test_failed_assertions_from_another_address_do_not_lock_the_registry_out(registry, session):
    attacker = {"REMOTE_ADDR": "203.0.113.66"}
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "scope": "system/*.read"}
    for _ in range(8):
        registry.http.post("/fhir/auth/token", environ_base=attacker,
                           data={**form, "client_assertion": registry.assertion(key=registry.keys.stranger)})
    locked = registry.http.post("/fhir/auth/token", environ_base=attacker, data={**form, "client_assertion": registry.assertion()})
    oauth_error(locked, 429, "temporarily_unavailable")
    assert registry.token_request().status_code == 200  # the registry, from its own address
    assert issued_sessions(session) == 1


def test_unreadable_assertions_count_under_the_address_only(registry, session):
    for assertion in ("not-a-jwt", registry.assertion(iss="x" * 200, sub="x" * 200)):
        oauth_error(registry.token_request(assertion), 401, "invalid_client")
    keys = set(session.scalars(sa.text("SELECT key FROM login_throttles")))
    assert keys == {"addr:127.0.0.1"}


# ================================================================ registration


def test_registration_refuses_wrong_accounts_and_keys(registry, session, keys, tmp_path):
    app = registry.http.application
    good = tmp_path / "good.json"
    good.write_text(json.dumps(keys.jwks()))
    staff = cli(app, "register", "--username", "statistician", "--name", "x", "--jwks", str(good))
    assert staff.exit_code == 1 and "is taken" in staff.output  # registration creates the account: never an existing one
    assert cli(app, "register", "--username", "registry-svc", "--name", "x", "--jwks", str(good)).exit_code == 1
    private = {"keys": [{**ECAlgorithm.to_jwk(keys.ec, as_dict=True), "kid": "k"}]}
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    for name, jwks, message in (
            ("private", private, "private key"),
            ("small", {"keys": [{**RSAAlgorithm.to_jwk(small_rsa, as_dict=True), "kid": "k"}]}, "under 2048"),
            ("p256", {"keys": [{**ECAlgorithm.to_jwk(p256, as_dict=True), "kid": "k"}]}, "P-384"),
            ("nokid", {"keys": [RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)]}, "no kid"),
            ("empty", {"keys": []}, "non-empty"),
            ("twice", {"keys": keys.jwks()["keys"] + keys.jwks()["keys"][:1]}, "twice")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(jwks))
        result = cli(app, "register", "--username", "registry-new", "--name", "x", "--jwks", str(path))
        assert result.exit_code == 1 and message in result.output, (name, result.output)
    (tmp_path / "broken.json").write_text("{")
    assert cli(app, "register", "--username", "registry-new", "--name", "x", "--jwks", str(tmp_path / "broken.json")).exit_code == 1
    actions = session.scalars(sa.select(AuditRecord.action).where(AuditRecord.entity_type == "fhir_client")).all()
    assert actions == ["fhir_client_registered"]  # the fixture's, and no other
    assert session.scalar(sa.select(sa.func.count()).select_from(User).where(User.username == "registry-new")) == 0


def test_keys_can_be_rotated(registry, keys, tmp_path):
    app = registry.http.application
    only_rsa = tmp_path / "rsa.json"
    only_rsa.write_text(json.dumps({"keys": keys.jwks()["keys"][:1]}))
    result = cli(app, "set-jwks", registry.client_id, "--jwks", str(only_rsa))
    assert result.exit_code == 0, result.output
    oauth_error(registry.token_request(registry.assertion(alg="ES384", kid="ec-1")), 401, "invalid_client")
    assert registry.token_request(registry.assertion(alg="RS384", kid="rsa-1")).status_code == 200


def test_discovery_names_the_token_endpoint(registry):
    config = registry.http.get("/fhir/.well-known/smart-configuration")
    assert config.status_code == 200 and config.mimetype == "application/json"
    body = config.get_json()
    assert body["token_endpoint"] == TOKEN_URL and "private_key_jwt" in body["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
    assert "client-confidential-asymmetric" in body["capabilities"]


# SMART App Launch 2: `.read` is the v1 scope syntax, `.rs` / `.r` the v2 one; a server lists the syntaxes it takes.
SCOPE_SYNTAX = {"read": "permission-v1", "rs": "permission-v2", "r": "permission-v2"}


def test_discovery_declares_the_permission_version_of_every_scope_it_lists(registry):
    body = registry.http.get("/fhir/.well-known/smart-configuration").get_json()
    for scope in body["scopes_supported"]:
        assert SCOPE_SYNTAX[scope.rsplit(".", 1)[1]] in body["capabilities"], scope
        granted = registry.token_request(scope=scope)  # and the token endpoint honours what is listed
        assert granted.status_code == 200 and granted.get_json()["scope"] == scope


def test_assertion_lifetime_is_checked_on_the_service_clock(registry):
    """The service clock decides: an assertion made for 'now' (exp in 240 s) fails 240 s + the 30 s leeway later."""
    assertion = registry.assertion()
    registry.clock.advance(seconds=240 + 31)
    oauth_error(registry.token_request(assertion), 401, "invalid_client")


@pytest.mark.postgresql_only
def test_the_service_role_may_use_the_client_tables(session):
    for table in ("fhir_clients", "fhir_client_assertions"):
        grants = session.execute(sa.text("SELECT privilege_type FROM information_schema.role_table_grants "
                                         "WHERE grantee = 'edc_application' AND table_name = :table"),
                                 {"table": table}).scalars().all()
        assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= set(grants), table


# ================================================================ the registry account: keys only, never a password


def registry_account(session) -> User:
    session.expire_all()
    return session.scalars(sa.select(User).where(User.username == "registry-svc")).one()


def test_registration_creates_an_account_with_the_registry_role_and_no_password(registry, session):
    account = registry_account(session)
    assert [r.role for r in account.active_roles] == ["registry"]
    assert account.password_hash is None and account.setup_token_hash is None and account.email is None
    created = session.scalars(sa.select(AuditRecord.action).where(AuditRecord.entity_id == str(account.id))
                              .order_by(AuditRecord.seq)).all()
    assert created == ["user_created", "role_granted"]


def test_a_registry_account_is_refused_at_login_like_any_failed_login(registry, session):
    """Even with a password (an account from before this rule), login answers as for an unknown user."""
    hasher = runtime.of(session).password_hasher
    session.execute(sa.update(User).where(User.username == "registry-svc")
                    .values(password_hash=hasher.hash("registry-old-passphrase")))
    session.commit()
    http = registry.http
    refused = problem(http.post("/api/v1/auth/login", json={"username": "registry-svc",
                                                            "password": "registry-old-passphrase"}), 401)
    unknown = problem(http.post("/api/v1/auth/login", json={"username": "nobody-at-all",
                                                            "password": "registry-old-passphrase"}), 401)
    assert {k: refused[k] for k in ("type", "title", "detail")} == {k: unknown[k] for k in ("type", "title", "detail")}
    assert session.scalar(sa.select(sa.func.count()).select_from(AuthSession)
                          .where(AuthSession.client_id.is_(None))) == len(registry.trial.headers)  # the staff's own
    assert session.scalar(sa.select(sa.func.count()).select_from(AuditRecord)
                          .where(AuditRecord.action == "login_failed", AuditRecord.actor_username == "registry-svc")) == 1


def test_a_registry_account_gets_no_setup_token_and_no_role_besides(registry, session):
    make_user(session, "admin", [("admin", None)])
    admin = bearer(login(registry.http, "admin"))
    session.execute(sa.update(User).where(User.username == "registry-svc").values(email="registry@example.org"))
    session.commit()
    problem(registry.http.post("/api/v1/users/registry-svc/reset", json={"reason": "x"}, headers=admin), 409)
    result = registry.http.application.test_cli_runner().invoke(args=["edc", "users", "reset", "registry-svc",
                                                                      "--reason", "x"])
    assert result.exit_code == 1 and "registry client's account" in result.output
    body = problem(registry.http.post("/api/v1/users/registry-svc/roles", json={"role": "data_manager"},
                                      headers=admin), 409)
    assert "registry" in body["detail"]
    account = registry_account(session)
    assert account.setup_token_hash is None and account.password_hash is None
    assert [r.role for r in account.active_roles] == ["registry"]
    assert session.scalar(sa.select(sa.func.count()).select_from(sa.table("outbox"))) == 0


def test_deactivating_a_client_ends_every_session_of_its_account_at_once(registry, session):
    """A password session of the account (as one could open before this rule) ends with the client's own."""
    fhir_token = registry.token()
    account = registry_account(session)
    now = clock.utcnow()
    password_session = AuthSession(user_id=account.id, created_at=now, expires_at=now + timedelta(hours=8))
    session.add(password_session)
    session.flush()
    session.add(RefreshToken(session_id=password_session.id, token_hash="0" * 64, issued_at=now,
                             idle_expires_at=now + timedelta(hours=1)))
    session.commit()
    rt = runtime.of(session)
    access = tokens.issue_access_token(rt.current_signing_key, issuer=rt.settings["jwt_issuer"],
                                       audience=rt.settings["jwt_audience"], subject=str(account.id),
                                       session_id=str(password_session.id), roles=["registry"], now=now,
                                       lifetime=timedelta(seconds=rt.settings["access_token_seconds"]))
    me = registry.http.get("/api/v1/me", headers=bearer(access.token))
    assert me.status_code == 200  # a password session is no FHIR client's: the FHIR-only rule never held it
    result = cli(registry.http.application, "deactivate", registry.client_id, "--reason", "contract ended")
    assert result.exit_code == 0, result.output
    assert registry.http.get("/api/v1/me", headers=bearer(access.token)).status_code == 401
    assert registry.everything(fhir_token).status_code == 401
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(AuthSession)
                          .where(AuthSession.user_id == account.id, AuthSession.revoked_at.is_(None))) == 0
