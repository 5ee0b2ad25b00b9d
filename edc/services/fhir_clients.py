"""Registry clients of the FHIR API and their access tokens (SMART Backend Services).

An operator registers a client: its public JWK Set, and a new account it acts as, created here with the
registry role and no other (so its token reads FHIR and nothing else) and never a password, a setup token
or a refresh token; the registry role is granted to no other account. At run time the client posts a client
assertion, a JWT signed with its private key, to POST /fhir/auth/token (OAuth 2.0 client credentials,
RFC 7523 private_key_jwt) and gets a bearer token of at most five minutes from our usual token machinery:
a session of its own (naming the client and the granted scope) with no refresh token. Deactivating the
client ends its sessions at once.

Every refusal of the token endpoint is an OAuthError (RFC 6749 §5.2). A failed client authentication
counts toward the login throttle of that client id and of the caller's address, and is audited, after the
request's rollback, like a wrong password.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from edc import clock, runtime
from edc.exports.fhir import RESOURCE_TYPES
from edc.models.auth import AuthSession
from edc.models.fhir_clients import FhirClient, FhirClientAssertion
from edc.models.users import RoleAssignment, User
from edc.problems import Conflict, NotFound, OAuthError, UnprocessableContent, field_error
from edc.security import client_assertions, permissions, scopes, tokens
from edc.security.permissions import Actor, Grant, require
from edc.services import audit, throttle, users

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REGISTRY_ROLE = permissions.REGISTRY_ROLE
TOKEN_PARAMETERS = ("grant_type", "client_assertion_type", "client_assertion", "scope", "client_id")


@dataclass(frozen=True)
class ClientToken:
    """The token endpoint's answer (RFC 6749 §5.1 as SMART Backend Services profiles it)."""

    access_token: str
    expires_in: int
    scope: str

    def as_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "token_type": "bearer", "expires_in": self.expires_in,
                "scope": self.scope}


# ================================================================ registration (operators)


def register_client(session: Session, actor: Actor, *, username: str, name: str, jwks: Any) -> FhirClient:
    """Register a registry client with its public JWK Set and create the account `username` it acts as."""
    require(actor, "users:manage")
    if not name.strip():
        raise UnprocessableContent(errors=[field_error("/name", "Give the client a name.")])
    try:
        kids = client_assertions.check_jwks(jwks)
    except ValueError as exc:
        raise UnprocessableContent("The JWK Set is not acceptable.", errors=[field_error("/jwks", str(exc))]) from None
    user = users.create_registry_account(session, actor, username=username, display_name=name.strip())
    client = FhirClient(client_id=str(uuid.uuid4()), name=name.strip(), jwks=jwks, user_id=user.id, active=True,
                        created_at=clock.utcnow(), created_by=actor.username)
    session.add(client)
    session.flush()
    audit.record(session, actor, "fhir_client_registered", entity_type="fhir_client", entity_id=client.client_id,
                 changes=[audit.change("name", None, client.name), audit.change("username", None, user.username),
                          audit.change("kids", None, kids)])
    return client


def list_clients(session: Session, actor: Actor) -> list[FhirClient]:
    """Every registered client, active or not, oldest first."""
    require(actor, "users:read")
    return list(session.scalars(sa.select(FhirClient).options(selectinload(FhirClient.user))
                                .order_by(FhirClient.created_at, FhirClient.client_id)))


def _client(session: Session, client_id: str) -> FhirClient:
    client = session.get(FhirClient, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"No FHIR client {client_id}.")
    return client


def replace_keys(session: Session, actor: Actor, client_id: str, *, jwks: Any) -> FhirClient:
    """Replace a client's JWK Set (key rotation: register the next key beside the current one first)."""
    require(actor, "users:manage")
    client = _client(session, client_id)
    try:
        kids = client_assertions.check_jwks(jwks)
    except ValueError as exc:
        raise UnprocessableContent("The JWK Set is not acceptable.", errors=[field_error("/jwks", str(exc))]) from None
    old = [key.get("kid") for key in client.jwks.get("keys", [])]
    client.jwks = jwks
    audit.record(session, actor, "fhir_client_keys_replaced", entity_type="fhir_client", entity_id=client.client_id,
                 changes=[audit.change("kids", old, kids)])
    return client


def deactivate_client(session: Session, actor: Actor, client_id: str, *, reason: str) -> FhirClient:
    """Deactivate a client: no new token, and every session of its account (whatever opened it) ends now."""
    require(actor, "users:manage")
    client = _client(session, client_id)
    if not client.active:
        raise Conflict(f"FHIR client {client_id} is already inactive.")
    now = clock.utcnow()
    client.active, client.deactivated_at, client.deactivated_by = False, now, actor.username
    # Its own sessions, and any other of its account without a client (a password login from before registry
    # accounts lost their passwords); another client sharing an old account keeps its own.
    of_client = sa.or_(AuthSession.client_id == client.client_id,
                       sa.and_(AuthSession.user_id == client.user_id, AuthSession.client_id.is_(None)))
    ended = session.execute(sa.update(AuthSession).where(of_client, AuthSession.revoked_at.is_(None))
                            .values(revoked_at=now, revoked_reason="fhir_client_deactivated")).rowcount
    audit.record(session, actor, "fhir_client_deactivated", entity_type="fhir_client", entity_id=client.client_id,
                 reason=reason, changes=[audit.change("active", True, False), audit.change("sessions_revoked", None, ended)])
    return client


# ================================================================ the token endpoint


def smart_configuration(token_url: str) -> dict[str, Any]:
    """/.well-known/smart-configuration: how a backend service gets a token here (SMART App Launch 2 §Discovery)."""
    return {
        "token_endpoint": token_url,
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(client_assertions.ALGORITHMS),
        # Both scope syntaxes are granted (edc.security.scopes): SMART v1 `.read` and v2 `.rs`, so both are declared.
        "scopes_supported": ["system/*.read", "system/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


def _invalid_client(detail: str, *, client_key: str | None, client: FhirClient | None, client_address: str | None,
                    request_id: str | None, log_detail: str | None = None) -> OAuthError:
    """A failed client authentication: 401, counted and audited after the rollback."""

    def write(session: Session) -> None:
        throttle.record_failure(session, client_key, client_address)
        who = Actor(username=client_key or "(unknown client)", display_name="", user_id=client.user_id if client else None,
                    request_id=request_id, client_address=client_address)
        audit.record(session, who, "fhir_token_refused", entity_type="fhir_client",
                     entity_id=client.client_id if client else None)

    return OAuthError("invalid_client", detail, status=401, after_rollback=[write], log_detail=log_detail or detail)


def _throttle_key(client_id: str) -> str | None:
    """The throttle's name for a client id; None for one no client can have (counted under the address only)."""
    try:
        canonical = str(uuid.UUID(client_id)) == client_id
    except ValueError:
        canonical = False
    return f"fhir-client:{client_id}" if canonical else None


def issue_token(session: Session, *, params: Mapping[str, str], token_url: str, client_address: str | None,
                request_id: str | None) -> ClientToken:
    """Check a client-credentials request with its client assertion; issue a registry client's access token."""
    _check_request(params)
    assertion = params["client_assertion"]
    try:
        client_id = client_assertions.assertion_issuer(assertion)
    except client_assertions.AssertionRejected as exc:
        raise _invalid_client(str(exc), client_key=None, client=None,
                              client_address=client_address, request_id=request_id) from None
    key = _throttle_key(client_id)
    failed = dict(client_key=key, client_address=client_address, request_id=request_id)
    if params.get("client_id") not in (None, client_id):
        raise _invalid_client("client_id and the assertion's iss differ.", client=None, **failed)
    wait = throttle.seconds_locked(session, key, client_address)
    if wait:
        raise OAuthError("temporarily_unavailable", "Too many failed attempts; try again later.", status=429,
                         headers={"Retry-After": str(wait)})
    client = session.get(FhirClient, client_id) if len(client_id) <= 64 else None
    if client is None or not client.active:
        raise _invalid_client("Unknown or inactive client.", client=client, **failed)
    now = clock.utcnow()
    rt = runtime.of(session)
    try:
        claims = client_assertions.verify(assertion, client.jwks, client_id=client_id, audience=token_url, now=now,
                                          leeway=rt.settings["jwt_leeway_seconds"])
    except client_assertions.AssertionRejected as exc:
        raise _invalid_client(str(exc), client=client, **failed) from None
    if not _spend_jti(session, client_id, claims["jti"], expires_at=claims["exp"] + rt.settings["jwt_leeway_seconds"],
                      now=now):
        raise _invalid_client("This client assertion was used already (jti).", client=client, **failed)
    user = _acting_user(session, client)
    if user is None:
        raise _invalid_client("The client's account is disabled or no longer holds the registry role.", client=client,
                              **failed)
    try:
        granted = scopes.grant(params.get("scope", ""), RESOURCE_TYPES)
    except scopes.ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    throttle.clear(session, key, client_address)
    return _issue(session, client, user, granted, now, request_id=request_id, client_address=client_address)


def _check_request(params: Mapping[str, str]) -> None:
    missing = [name for name in ("grant_type", "scope") if not params.get(name)]
    if missing:
        raise OAuthError("invalid_request", f"Missing parameter(s): {', '.join(missing)}.")
    if params["grant_type"] != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"Only grant_type={GRANT_TYPE} is supported.")
    if params.get("client_assertion_type") != ASSERTION_TYPE or not params.get("client_assertion"):
        # RFC 6749 §5.2: no (or an unsupported) client authentication is invalid_client.
        raise OAuthError("invalid_client", f"Authenticate with client_assertion_type={ASSERTION_TYPE} and a "
                                           "client_assertion (SMART Backend Services).", status=401)


def _spend_jti(session: Session, client_id: str, jti: str, *, expires_at: float, now: datetime) -> bool:
    """Record an assertion's jti until it expires; False if this client already used it (a replay)."""
    session.execute(sa.delete(FhirClientAssertion).where(FhirClientAssertion.client_id == client_id,
                                                         FhirClientAssertion.expires_at < now))
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # ON CONFLICT: two requests racing with one assertion cannot both pass (the unique (client_id, jti) decides).
    table = FhirClientAssertion.__table__
    inserted = session.execute(insert(table).values(
        id=uuid.uuid4(), client_id=client_id, jti=jti, expires_at=datetime.fromtimestamp(expires_at, UTC))
        .on_conflict_do_nothing(index_elements=["client_id", "jti"]).returning(table.c.id)).first()
    return inserted is not None  # (RETURNING, not rowcount: psycopg reports -1 for this statement)


def _acting_user(session: Session, client: FhirClient) -> User | None:
    user = session.scalars(sa.select(User).where(User.id == client.user_id)
                           .options(selectinload(User.roles).selectinload(RoleAssignment.site))).one()
    if user.status != "active" or REGISTRY_ROLE not in {r.role for r in user.active_roles}:
        return None
    return user


def _issue(session: Session, client: FhirClient, user: User, scope: str, now: datetime, *, request_id: str | None,
           client_address: str | None) -> ClientToken:
    rt = runtime.of(session)
    lifetime = timedelta(seconds=rt.settings["fhir_client_token_seconds"])
    # Ended sessions of this client go: one per token would otherwise pile up (they never had a refresh token).
    session.execute(sa.delete(AuthSession).where(AuthSession.client_id == client.client_id, AuthSession.expires_at < now))
    auth_session = AuthSession(user_id=user.id, created_at=now, expires_at=now + lifetime, client_id=client.client_id,
                               scope=scope)
    session.add(auth_session)
    session.flush()
    access = tokens.issue_access_token(
        rt.current_signing_key, issuer=rt.settings["jwt_issuer"], audience=rt.settings["jwt_audience"],
        subject=str(user.id), session_id=str(auth_session.id), roles=[r.role for r in user.active_roles], now=now,
        lifetime=lifetime, extra_claims={"client_id": client.client_id, "scope": scope})
    grants = tuple(Grant(role=r.role, site_id=r.site_id, site_code=r.site.code if r.site else None)
                   for r in user.active_roles)
    actor = Actor(username=user.username, display_name=user.display_name, user_id=user.id, grants=grants,
                  session_id=auth_session.id, request_id=request_id, client_address=client_address,
                  client_id=client.client_id, scope=scope)
    audit.record(session, actor, "fhir_token_issued", entity_type="fhir_client", entity_id=client.client_id,
                 changes=[audit.change("scope", None, scope)])
    return ClientToken(access.token, int(lifetime.total_seconds()), scope)
