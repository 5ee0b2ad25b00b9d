"""Accounts and role assignments (admin work, on the security chain).

A setup token (new account, password reset) reaches only its user: it is mailed through the outbox,
sealed so that only the mailer reads it, and never returned to the administrator. The service hands it
back to its caller for the server's command line alone, which may show it to the operator.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from edc import clock, runtime
from edc.models.sites import Site
from edc.models.users import RoleAssignment, User
from edc.problems import Conflict, Forbidden, NotFound, UnprocessableContent, field_error
from edc.security import passwords, tokens, usernames
from edc.security.permissions import GLOBAL_ROLES, REGISTRY_ROLE, SITE_ROLES, Actor, require, role_conflict
from edc.services import audit, outbox
from edc.services.auth import revoke_user_sessions
from edc.services.pagination import Page, paginate


# One address, no display name or comments: something@domain.tld, no spaces or control characters.
EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")
EMAIL_MAX_LENGTH = 254


@dataclass(frozen=True)
class SetupToken:
    token: str
    expires_at: datetime
    mailed_to: str | None


def _load(session: Session, username: str, *, lock: bool = False) -> User | None:
    stmt = sa.select(User).where(User.username == usernames.normalize(username)).options(
        selectinload(User.roles).selectinload(RoleAssignment.site)
    )
    if lock:  # re-read under the row lock: the version this write replaces is the one just read
        stmt = stmt.with_for_update(of=User).execution_options(populate_existing=True)
    return session.scalars(stmt).one_or_none()


def get_user(session: Session, actor: Actor, username: str) -> User:
    require(actor, "users:read")
    user = _load(session, username)
    if user is None:
        raise NotFound(f"No user {username}.")
    return user


def me(actor: Actor) -> dict:
    """The caller and the role assignments read from the database for this very request."""
    return {
        "username": actor.username,
        "display_name": actor.display_name,
        "email": actor.email,
        "must_change_password": actor.must_change_password,
        "roles": [
            {"id": g.assignment_id, "role": g.role, "site": g.site_code, "principal_investigator": g.principal_investigator,
             "granted_at": g.granted_at, "granted_by": g.granted_by}
            for g in actor.grants
        ],
        "sites": sorted({g.site_code for g in actor.grants if g.site_code}),
        "all_sites": any(g.site_id is None for g in actor.grants),
    }


def list_users(session: Session, actor: Actor, *, status: str | None = None, page: int = 1, page_size: int = 50) -> Page[User]:
    require(actor, "users:read")
    stmt = sa.select(User).order_by(User.username).options(selectinload(User.roles).selectinload(RoleAssignment.site))
    if status:
        stmt = stmt.where(User.status == status)
    return paginate(session, stmt, page=page, page_size=page_size)


def _checked_email(email: str | None) -> str | None:
    if email is None:
        return None
    email = email.strip()
    if len(email) > EMAIL_MAX_LENGTH or not EMAIL.fullmatch(email):
        raise UnprocessableContent(errors=[field_error("/email", "Not a valid email address.")])
    return email


def _issue_setup_token(session: Session, user: User, mail_kind: str) -> SetupToken:
    """A new one-time setup token for the user, mailed to their address (the outbox seals it)."""
    token, token_hash = tokens.new_opaque_token()
    expires = clock.utcnow() + timedelta(seconds=runtime.of(session).settings["setup_token_seconds"])
    user.setup_token_hash, user.setup_token_expires_at = token_hash, expires
    if user.email:
        session.flush()  # the user's id, which the mail record names
        outbox.enqueue_account_mail(session, mail_kind, user_id=user.id, recipient=user.email, secret={
            "username": user.username, "token": token, "expires_at": expires.strftime("%Y-%m-%d %H:%M UTC")})
    return SetupToken(token, expires, user.email)


def create_user(
    session: Session, actor: Actor, *, username: str, display_name: str, email: str | None = None,
    temporary_password: str | None = None, demo_password: str | None = None,
) -> tuple[User, SetupToken | None]:
    """Create a person's account. It gets a one-time setup token, mailed to `email` (required then), unless
    the CLI gives a temporary password (which must be changed at first login) or the demo seed gives the
    shared demo password."""
    require(actor, "users:manage")
    given = demo_password or temporary_password
    email = _checked_email(email)
    if email is None and given is None:
        raise UnprocessableContent(errors=[field_error("/email", "Required: the setup link is mailed to this address.")])
    user = _new_account(session, username=username, display_name=display_name, email=email,
                        is_demo=demo_password is not None)
    setup = None
    if given is not None:
        problems = passwords.policy_problems(given, username=user.username)
        if problems:
            raise UnprocessableContent(errors=[field_error("/password", f"Password {p}.") for p in problems])
        user.password_hash = runtime.of(session).password_hasher.hash(given)
        user.password_changed_at = clock.utcnow()
    else:
        setup = _issue_setup_token(session, user, "account_setup")
    session.flush()
    audit.record(session, actor, "user_created", entity_type="user", entity_id=user.id,
                 changes=[audit.change("username", None, user.username), audit.change("display_name", None, display_name),
                          audit.change("email", None, email), audit.change("demo", None, user.is_demo)])
    return user, setup


def _new_account(session: Session, *, username: str, display_name: str, email: str | None, is_demo: bool = False) -> User:
    username = usernames.normalize(username)
    if not usernames.is_acceptable(username):
        raise UnprocessableContent(errors=[field_error("/username", usernames.RULE)])
    if session.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"The username {username} is taken (usernames are never reused).")
    user = User(username=username, display_name=display_name, email=email, status="active",
                must_change_password=True, is_demo=is_demo)
    session.add(user)
    return user


def create_registry_account(session: Session, actor: Actor, *, username: str, display_name: str) -> User:
    """The account a FHIR registry client acts as: the registry role alone, and never a password, a setup
    token or a refresh token (it signs in with its client's keys only)."""
    require(actor, "users:manage")
    user = _new_account(session, username=username, display_name=display_name, email=None)
    session.flush()
    audit.record(session, actor, "user_created", entity_type="user", entity_id=user.id,
                 changes=[audit.change("username", None, user.username), audit.change("display_name", None, display_name),
                          audit.change("demo", None, False)])
    _add_role(session, actor, user, REGISTRY_ROLE, None, principal_investigator=False)
    return user


def disable_user(session: Session, actor: Actor, username: str, *, reason: str) -> User:
    """Disable an account: its sessions end now; the row and name stay forever."""
    require(actor, "users:manage")
    user = _load(session, username, lock=True)
    if user is None:
        raise NotFound(f"No user {username}.")
    if actor.user_id == user.id:
        raise Forbidden("You cannot disable your own account.")
    if user.status == "disabled":
        raise Conflict(f"{user.username} is already disabled.")
    user.status, user.disabled_at = "disabled", clock.utcnow()
    user.setup_token_hash = user.setup_token_expires_at = None
    revoke_user_sessions(session, user.id, "user_disabled")
    session.flush()
    audit.record(session, actor, "user_disabled", entity_type="user", entity_id=user.id, reason=reason,
                 changes=[audit.change("status", "active", "disabled")])
    return user


def reset_user(session: Session, actor: Actor, username: str, *, reason: str) -> SetupToken:
    """Clear a password and mail the user a new setup token; the admin never learns or sets the password.

    An account without an email address is reset only at the server's command line (the operator hands
    the token over); a registry client's account has no password to reset."""
    require(actor, "users:manage")
    user = _load(session, username, lock=True)
    if user is None:
        raise NotFound(f"No user {username}.")
    if actor.user_id == user.id:
        raise Forbidden("Change your own password instead of resetting it.")
    if user.status != "active":
        raise Conflict(f"{user.username} is disabled.")
    if REGISTRY_ROLE in {r.role for r in user.active_roles}:
        raise Conflict(f"{user.username} is a registry client's account: it has no password and signs in with its keys.")
    if not user.email and not actor.is_system:
        raise Conflict(f"{user.username} has no email address for the setup link; reset it at the server's "
                       "command line (flask edc users reset), which shows the token to the operator.")
    user.password_hash = None
    user.must_change_password = True
    setup = _issue_setup_token(session, user, "password_reset")
    revoke_user_sessions(session, user.id, "password_reset")
    session.flush()
    audit.record(session, actor, "password_reset", entity_type="user", entity_id=user.id, reason=reason)
    return setup


def _site_by_code(session: Session, code: str | None) -> Site | None:
    if code is None:
        return None
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    if site is None:
        raise UnprocessableContent(errors=[field_error("/site", f"No site {code}.")])
    return site


def grant_role(session: Session, actor: Actor, username: str, *, role: str, site: str | None = None,
               principal_investigator: bool = False) -> RoleAssignment:
    require(actor, "users:manage")
    user = _load(session, username, lock=True)
    if user is None:
        raise NotFound(f"No user {username}.")
    if actor.user_id == user.id:
        raise Forbidden("Nobody grants roles to their own account.")
    if user.status != "active":
        raise Conflict(f"{user.username} is disabled.")
    if role == REGISTRY_ROLE:
        raise UnprocessableContent(errors=[field_error("/role", "The registry role is never granted: it belongs to the "
                                                                "account that registering a FHIR client creates.")])
    conflict = role_conflict({r.role for r in user.active_roles}, role)
    if conflict:
        raise Conflict(f"{user.username} cannot hold {role}: {conflict} (separation of duties).")
    errors = []
    if role in SITE_ROLES and site is None:
        errors.append(field_error("/site", f"The {role} role is held for one site; name it."))
    if role in GLOBAL_ROLES and site is not None:
        errors.append(field_error("/site", f"The {role} role covers all sites; give no site."))
    if principal_investigator and role != "investigator":
        errors.append(field_error("/principal_investigator", "Only an investigator can be principal investigator."))
    if errors:
        raise UnprocessableContent(errors=errors)
    site_row = _site_by_code(session, site)
    if site_row is not None and site_row.status != "active":
        raise Conflict(f"Site {site_row.code} is closed.")
    for held in user.active_roles:
        if held.role == role and held.site_id == (site_row.id if site_row else None):
            raise Conflict(f"{user.username} already holds {role}{' at ' + site_row.code if site_row else ''}.")
    if principal_investigator:
        other_pi = session.scalar(sa.select(RoleAssignment.id).where(
            RoleAssignment.site_id == site_row.id, RoleAssignment.principal_investigator, RoleAssignment.revoked_at.is_(None)))
        if other_pi is not None:
            raise Conflict(f"Site {site_row.code} already has a principal investigator.")
    return _add_role(session, actor, user, role, site_row, principal_investigator=principal_investigator)


def _add_role(session: Session, actor: Actor, user: User, role: str, site_row: Site | None, *,
              principal_investigator: bool) -> RoleAssignment:
    assignment = RoleAssignment(user=user, role=role, site=site_row, principal_investigator=principal_investigator,
                                granted_at=clock.utcnow(), granted_by=actor.username)
    session.add(assignment)
    session.flush()
    audit.record(session, actor, "role_granted", entity_type="user", entity_id=user.id,
                 site_code=site_row.code if site_row else None,
                 changes=[audit.change("role", None, role), audit.change("site", None, site_row.code if site_row else None),
                          audit.change("principal_investigator", None, principal_investigator)])
    return assignment


def revoke_role(session: Session, actor: Actor, username: str, assignment_id: uuid.UUID, *, reason: str | None = None) -> RoleAssignment:
    require(actor, "users:manage")
    user = _load(session, username, lock=True)
    if user is None:
        raise NotFound(f"No user {username}.")
    if actor.user_id == user.id:
        raise Forbidden("Nobody revokes roles on their own account.")
    assignment = next((r for r in user.roles if r.id == assignment_id), None)
    if assignment is None:
        raise NotFound("No such role assignment for this user.")
    if assignment.revoked_at is not None:
        raise Conflict("This role assignment is already revoked.")
    assignment.revoked_at, assignment.revoked_by = clock.utcnow(), actor.username
    session.flush()
    audit.record(session, actor, "role_revoked", entity_type="user", entity_id=user.id, reason=reason,
                 site_code=assignment.site.code if assignment.site else None,
                 changes=[audit.change("role", assignment.role, None),
                          audit.change("site", assignment.site.code if assignment.site else None, None)])
    return assignment


def find_assignment(user: User, role: str, site: str | None) -> RoleAssignment:
    """The active assignment of a role (at a site) for the CLI, which names roles rather than ids."""
    for held in user.active_roles:
        if held.role == role and (held.site.code if held.site else None) == (site.upper() if site else None):
            return held
    raise NotFound(f"{user.username} holds no active {role}{' at ' + site if site else ''}.")
