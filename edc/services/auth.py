"""Login, token refresh, logout, password set/change, and turning a bearer token into an Actor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from edc import clock, runtime
from edc.models.auth import AuthSession, RefreshToken
from edc.models.sites import Site
from edc.models.users import RoleAssignment, User
from edc.problems import TooManyRequests, Unauthorized, UnprocessableContent, field_error
from edc.security import passwords, tokens, usernames
from edc.security.permissions import REGISTRY_ROLE, Actor, Grant
from edc.services import audit, throttle

INVALID_LOGIN = "Invalid username or password."
THROTTLED = "Too many failed logins; try again later."
INVALID_TOKEN = "The access token is missing, invalid or expired."
# RFC 6750 §3.1: clients learn from error="invalid_token" that they must sign in again.
INVALID_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edc", error="invalid_token"'}


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    password_change_required: bool

    @property
    def expires_in(self) -> int:
        return max(0, int((self.expires_at - clock.utcnow()).total_seconds()))


def actor_for(user: User, *, request_id: str | None = None, client_address: str | None = None,
              session_id: uuid.UUID | None = None) -> Actor:
    """The user as the permission checks see them: their active roles as grants."""
    grants = tuple(
        Grant(role=r.role, site_id=r.site_id, site_code=r.site.code if r.site else None, principal_investigator=r.principal_investigator,
              assignment_id=r.id, granted_at=r.granted_at, granted_by=r.granted_by)
        for r in user.active_roles
    )
    return Actor(
        username=user.username,
        display_name=user.display_name,
        user_id=user.id,
        email=user.email,
        grants=grants,
        session_id=session_id,
        must_change_password=user.must_change_password and not user.is_demo,
        request_id=request_id,
        client_address=client_address,
    )


def _user_by_name(session: Session, username: str) -> User | None:
    return session.scalars(
        sa.select(User).where(User.username == usernames.normalize(username)).options(selectinload(User.roles).selectinload(RoleAssignment.site))
    ).one_or_none()


def _is_registry_account(user: User) -> bool:
    return any(r.role == REGISTRY_ROLE for r in user.active_roles)


def failed_login_writes(username: str, client_address: str | None, user_id: uuid.UUID | None, request_id: str | None):
    """The write a failed password check leaves behind, run after the request's rollback: its audit record
    (the attempt was counted before the check: count_password_check)."""

    def write(session: Session) -> None:
        who = Actor(username=usernames.normalize(username)[:64] if user_id else "(unknown)", display_name="", user_id=user_id,
                    request_id=request_id, client_address=client_address)
        audit.record(session, who, "login_failed", entity_type="user", entity_id=user_id)

    return write


def _start_session(session: Session, user: User, now: datetime) -> tuple[AuthSession, str, RefreshToken]:
    settings = runtime.of(session).settings
    auth_session = AuthSession(user_id=user.id, created_at=now, expires_at=now + timedelta(seconds=settings["refresh_absolute_seconds"]))
    session.add(auth_session)
    session.flush()
    token, row = _new_refresh_token(session, auth_session, now)
    return auth_session, token, row


def _new_refresh_token(session: Session, auth_session: AuthSession, now: datetime) -> tuple[str, RefreshToken]:
    settings = runtime.of(session).settings
    token, token_hash = tokens.new_opaque_token()
    idle = now + timedelta(seconds=settings["refresh_idle_seconds"])
    row = RefreshToken(session_id=auth_session.id, token_hash=token_hash, issued_at=now, idle_expires_at=min(idle, auth_session.expires_at))
    session.add(row)
    return token, row


def _pair(session: Session, user: User, auth_session: AuthSession, refresh: str, refresh_row: RefreshToken, now: datetime) -> TokenPair:
    rt = runtime.of(session)
    access = tokens.issue_access_token(
        rt.current_signing_key,
        issuer=rt.settings["jwt_issuer"],
        audience=rt.settings["jwt_audience"],
        subject=str(user.id),
        session_id=str(auth_session.id),
        roles=[r.role for r in user.active_roles],
        now=now,
        lifetime=timedelta(seconds=rt.settings["access_token_seconds"]),
    )
    return TokenPair(access.token, access.expires_at, refresh, refresh_row.idle_expires_at,
                     user.must_change_password and not user.is_demo)


def login(session: Session, *, username: str, password: str, client_address: str | None, request_id: str | None) -> TokenPair:
    """Check a username and password; answer unknown users exactly like wrong passwords."""
    attempt = count_password_check(session, username, client_address)
    user = _user_by_name(session, username)
    hasher = runtime.of(session).password_hasher
    valid = hasher.verify(user.password_hash if user else None, password)
    # A registry client's account signs in with its keys only (fhir_clients), never here: refused like any failure.
    if not (valid and user is not None and user.status == "active" and not _is_registry_account(user)):
        raise Unauthorized(INVALID_LOGIN, after_rollback=[failed_login_writes(username, client_address, user.id if user else None, request_id)])
    now = clock.utcnow()
    throttle.succeeded(session, attempt)
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    auth_session, refresh, refresh_row = _start_session(session, user, now)
    actor = actor_for(user, request_id=request_id, client_address=client_address, session_id=auth_session.id)
    audit.record(session, actor, "login", entity_type="user", entity_id=user.id)
    return _pair(session, user, auth_session, refresh, refresh_row, now)


def check_throttle(session: Session, username: str, client_address: str | None) -> None:
    """Refuse (429) a password check for this account from this address while the throttle holds it."""
    wait = throttle.seconds_locked(session, throttle.account(username), client_address)
    if wait:
        raise TooManyRequests(THROTTLED, retry_after=wait)


def count_password_check(session: Session, username: str, client_address: str | None) -> throttle.Attempt:
    """Count a password check before making it, and commit the count on its own (the request has only read
    so far): simultaneous guesses see each other's count, so a burst gets no more passwords checked than a
    sequence. 429, counting nothing, while the throttle holds this account or address. A right password
    gives the count back (throttle.succeeded)."""
    attempt = throttle.count_attempt(session, throttle.account(username), client_address)
    if attempt is None:
        raise TooManyRequests(THROTTLED, retry_after=max(1, throttle.seconds_locked(
            session, throttle.account(username), client_address)))
    session.commit()
    return attempt


def password_check_passed(session: Session, attempt: throttle.Attempt) -> None:
    """Give a right password's count back and commit it on its own, for a request that may still be refused
    after the check (a signature of an entry with open queries): its count must not stay behind."""
    throttle.succeeded(session, attempt)
    session.commit()


def _revoke_family(session_id: uuid.UUID, reason: str, request_id: str | None, client_address: str | None):
    def write(session: Session) -> None:
        auth_session = session.get(AuthSession, session_id)
        if auth_session is None or auth_session.revoked_at is not None:
            return
        auth_session.revoked_at, auth_session.revoked_reason = clock.utcnow(), reason
        user = session.get(User, auth_session.user_id)
        who = Actor(username=user.username, display_name=user.display_name, user_id=user.id,
                    request_id=request_id, client_address=client_address)
        audit.record(session, who, "session_revoked", entity_type="auth_session", entity_id=session_id, reason=reason)

    return write


def refresh(session: Session, *, refresh_token: str, client_address: str | None, request_id: str | None) -> TokenPair:
    """Swap a refresh token for a new pair; a spent token revokes its whole family."""
    now = clock.utcnow()
    row = session.scalars(
        sa.select(RefreshToken).where(RefreshToken.token_hash == tokens.opaque_token_hash(refresh_token)).with_for_update()
    ).one_or_none()
    invalid = "The refresh token is invalid or expired."
    if row is None:
        raise Unauthorized(invalid)
    auth_session = session.get(AuthSession, row.session_id)
    if auth_session.revoked_at is not None or auth_session.expires_at <= now or auth_session.client_id is not None:
        raise Unauthorized(invalid)  # (a registry client's session never had a refresh token to begin with)
    if row.used_at is not None:
        raise Unauthorized(invalid, after_rollback=[_revoke_family(auth_session.id, "refresh_token_reuse", request_id, client_address)])
    if row.idle_expires_at <= now:
        raise Unauthorized(invalid)
    user = session.scalars(
        sa.select(User).where(User.id == auth_session.user_id).options(selectinload(User.roles).selectinload(RoleAssignment.site))
    ).one()
    if user.status != "active":
        raise Unauthorized(invalid)
    # Spend the token only if nobody else spent it concurrently.
    spent = session.execute(
        sa.update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None)).values(used_at=now)
    ).rowcount
    if spent != 1:
        raise Unauthorized(invalid, after_rollback=[_revoke_family(auth_session.id, "refresh_token_reuse", request_id, client_address)])
    new_token, new_row = _new_refresh_token(session, auth_session, now)
    return _pair(session, user, auth_session, new_token, new_row, now)


def authenticate(session: Session, bearer: str, *, request_id: str | None, client_address: str | None) -> Actor:
    """Turn a bearer token into an Actor, reading the user and roles from the database now."""
    rt = runtime.of(session)
    now = clock.utcnow()
    try:
        claims = tokens.verify_access_token(
            bearer, rt.signing_key, issuer=rt.settings["jwt_issuer"], audience=rt.settings["jwt_audience"],
            leeway=rt.settings["jwt_leeway_seconds"], now=now,
            max_lifetime=max(rt.settings["access_token_seconds"], rt.settings["fhir_client_token_seconds"]),
        )
        user_id, session_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
    except (tokens.TokenRejected, ValueError) as exc:
        raise Unauthorized(INVALID_TOKEN, headers=INVALID_TOKEN_CHALLENGE, log_detail=str(exc)) from None
    rows = session.execute(_ACTOR_QUERY, {"user_id": user_id, "session_id": session_id}).all()
    if not rows:
        raise Unauthorized(INVALID_TOKEN, headers=INVALID_TOKEN_CHALLENGE, log_detail="unknown user or session")
    first = rows[0]
    if first.status != "active" or first.revoked_at is not None or first.expires_at <= now:
        raise Unauthorized(INVALID_TOKEN, headers=INVALID_TOKEN_CHALLENGE, log_detail="user disabled or session ended")
    grants = tuple(
        Grant(role=r.role, site_id=r.site_id, site_code=r.site_code, principal_investigator=r.principal_investigator,
              assignment_id=r.assignment_id, granted_at=r.granted_at, granted_by=r.granted_by)
        for r in rows if r.role is not None
    )
    # A registry client signs in with its key, never with the account's password: no password to change.
    must_change = first.must_change_password and not first.is_demo and first.client_id is None
    return Actor(username=first.username, display_name=first.display_name, user_id=user_id, email=first.email,
                 grants=grants, session_id=session_id, must_change_password=must_change,
                 request_id=request_id, client_address=client_address, client_id=first.client_id, scope=first.scope)


def authenticate_browser(session: Session, cookie_token: str, *, request_id: str | None,
                         client_address: str | None) -> Actor | None:
    """The Actor of a browser session (edc/web), or None when the cookie names no live session.

    A browser session is a login like the API's: its cookie holds the session's refresh token, which the
    browser never spends; the same idle and absolute limits apply (refresh_idle_seconds, refresh_absolute_seconds).
    Each use moves the idle limit forward, committed at once, at most once a minute."""
    now = clock.utcnow()
    token = session.execute(
        sa.select(RefreshToken.id, RefreshToken.session_id, RefreshToken.idle_expires_at, RefreshToken.used_at,
                  AuthSession.user_id, AuthSession.expires_at)
        .join(AuthSession, AuthSession.id == RefreshToken.session_id)
        .where(RefreshToken.token_hash == tokens.opaque_token_hash(cookie_token))
    ).one_or_none()
    if token is None or token.used_at is not None or token.idle_expires_at <= now:
        return None
    rows = session.execute(_ACTOR_QUERY, {"user_id": token.user_id, "session_id": token.session_id}).all()
    first = rows[0] if rows else None
    if first is None or first.status != "active" or first.revoked_at is not None or first.expires_at <= now \
            or first.client_id is not None:
        return None
    idle = timedelta(seconds=runtime.of(session).settings["refresh_idle_seconds"])
    if token.idle_expires_at < min(now + idle, token.expires_at) - timedelta(seconds=60):
        session.execute(sa.update(RefreshToken).where(RefreshToken.id == token.id)
                        .values(idle_expires_at=min(now + idle, token.expires_at)))
        session.commit()
    grants = tuple(
        Grant(role=r.role, site_id=r.site_id, site_code=r.site_code, principal_investigator=r.principal_investigator,
              assignment_id=r.assignment_id, granted_at=r.granted_at, granted_by=r.granted_by)
        for r in rows if r.role is not None
    )
    return Actor(username=first.username, display_name=first.display_name, user_id=token.user_id, email=first.email,
                 grants=grants, session_id=token.session_id,
                 must_change_password=first.must_change_password and not first.is_demo,
                 request_id=request_id, client_address=client_address)


def _actor_query() -> sa.Select:
    """User, session and active role assignments with their sites, in one statement (runs on every request)."""
    users, sessions, roles = User.__table__, AuthSession.__table__, RoleAssignment.__table__
    sites = Site.__table__
    return (
        sa.select(
            users.c.username, users.c.display_name, users.c.email, users.c.status, users.c.must_change_password, users.c.is_demo,
            sessions.c.revoked_at, sessions.c.expires_at, sessions.c.client_id, sessions.c.scope,
            roles.c.id.label("assignment_id"), roles.c.role, roles.c.site_id, roles.c.principal_investigator,
            roles.c.granted_at, roles.c.granted_by, sites.c.code.label("site_code"),
        )
        .select_from(users)
        .join(sessions, sa.and_(sessions.c.user_id == users.c.id, sessions.c.id == sa.bindparam("session_id")))
        .outerjoin(roles, sa.and_(roles.c.user_id == users.c.id, roles.c.revoked_at.is_(None)))
        .outerjoin(sites, sites.c.id == roles.c.site_id)
        .where(users.c.id == sa.bindparam("user_id"))
        .order_by(roles.c.granted_at)
    )


_ACTOR_QUERY = _actor_query()


def logout(session: Session, actor: Actor) -> None:
    """End the actor's session: its refresh tokens and access tokens stop working."""
    auth_session = session.get(AuthSession, actor.session_id)
    if auth_session and auth_session.revoked_at is None:
        auth_session.revoked_at, auth_session.revoked_reason = clock.utcnow(), "logout"
    audit.record(session, actor, "logout", entity_type="auth_session", entity_id=actor.session_id)


def revoke_user_sessions(session: Session, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None) -> int:
    """Revoke every open session of a user (but keep one, e.g. the caller's own)."""
    stmt = (
        sa.update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=clock.utcnow(), revoked_reason=reason)
    )
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    return session.execute(stmt).rowcount


def _check_policy(new_password: str, username: str, pointer: str = "/new_password") -> None:
    problems = passwords.policy_problems(new_password, username=username)
    if problems:
        raise UnprocessableContent("The new password is not acceptable.",
                                   errors=[field_error(pointer, f"Password {p}.") for p in problems])


def change_password(session: Session, actor: Actor, *, current_password: str, new_password: str) -> None:
    """Change one's own password; every other session of the user is revoked.

    The current password is a password guess like a login: throttled first, counted before it is checked, and every
    check that does not need it runs before it, so no answer tells a right current password from a wrong one."""
    check_throttle(session, actor.username, actor.client_address)
    _check_policy(new_password, actor.username)
    if new_password == current_password:
        raise UnprocessableContent(errors=[field_error("/new_password", "Must differ from the current password.")])
    attempt = count_password_check(session, actor.username, actor.client_address)
    user = session.get(User, actor.user_id, with_for_update=True)
    hasher = runtime.of(session).password_hasher
    if not hasher.verify(user.password_hash, current_password):
        raise UnprocessableContent(
            "The current password is wrong.",
            errors=[field_error("/current_password", "Does not match the current password.")],
            after_rollback=[failed_login_writes(user.username, actor.client_address, user.id, actor.request_id)],
        )
    throttle.succeeded(session, attempt)
    user.password_hash = hasher.hash(new_password)
    user.password_changed_at = clock.utcnow()
    user.must_change_password = False
    revoked = revoke_user_sessions(session, user.id, "password_changed", keep=actor.session_id)
    audit.record(session, actor, "password_changed", entity_type="user", entity_id=user.id,
                 changes=[audit.change("sessions_revoked", None, revoked)])


def redeem_setup_token(session: Session, *, token: str, new_password: str, request_id: str | None,
                       client_address: str | None) -> User:
    """Set one's first password with the one-time token an admin issued."""
    user = session.scalars(
        sa.select(User).where(User.setup_token_hash == tokens.opaque_token_hash(token)).with_for_update()
    ).one_or_none()
    if user is None or user.status != "active" or user.setup_token_expires_at is None or user.setup_token_expires_at <= clock.utcnow():
        raise Unauthorized("The setup token is invalid or expired.")
    _check_policy(new_password, user.username)
    user.password_hash = runtime.of(session).password_hasher.hash(new_password)
    user.password_changed_at = clock.utcnow()
    user.must_change_password = False
    user.setup_token_hash = user.setup_token_expires_at = None
    actor = Actor(username=user.username, display_name=user.display_name, user_id=user.id,
                  request_id=request_id, client_address=client_address)
    audit.record(session, actor, "password_set", entity_type="user", entity_id=user.id)
    return user
