"""Accounts and role assignments (administrators)."""

from __future__ import annotations

import uuid

from flask import url_for

from edc.api.common import current_actor, page_args
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import ReasonIn, RoleIn, RoleOut, SetupMailedOut, UserCreatedOut, UserIn, UserListArgs, UserOut, UserPage
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import users

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Accounts and roles")


@blp.get("")
@requires("users:read")
@blp.arguments(UserListArgs, location="query")
@blp.response(200, UserPage)
def list_users(args):
    """List accounts, optionally by status."""
    return users.list_users(db.session, current_actor(), status=args.get("status"), **page_args(args))


@blp.post("")
@requires("users:manage")
@blp.arguments(UserIn)
@blp.response(201, UserCreatedOut)
def create_user(data):
    """Create an account; its one-time setup link is mailed to the user alone, never shown here."""
    user, setup = users.create_user(db.session, current_actor(), **data)
    commit_with_answer()
    body = {"user": user, "setup_link_sent_to": setup.mailed_to, "setup_link_expires_at": setup.expires_at}
    return body, 201, {"Location": url_for(".get_user", username=user.username)}


@blp.get("/<username>")
@requires("users:read")
@blp.response(200, UserOut)
def get_user(username):
    """Read one account with its active roles."""
    return users.get_user(db.session, current_actor(), username)


@blp.post("/<username>/disable")
@requires("users:manage")
@blp.arguments(ReasonIn)
@blp.response(200, UserOut)
def disable_user(data, username):
    """Disable an account; its sessions end at once. Accounts are never deleted."""
    user = users.disable_user(db.session, current_actor(), username, reason=data["reason"])
    commit_with_answer()
    return user


@blp.post("/<username>/reset")
@requires("users:manage")
@blp.arguments(ReasonIn)
@blp.response(200, SetupMailedOut)
def reset_user(data, username):
    """Clear an account's password and mail the user a new one-time setup link (never shown here)."""
    setup = users.reset_user(db.session, current_actor(), username, reason=data["reason"])
    commit_with_answer()
    return {"setup_link_sent_to": setup.mailed_to, "setup_link_expires_at": setup.expires_at}


@blp.post("/<username>/roles")
@requires("users:manage")
@blp.arguments(RoleIn)
@blp.response(201, RoleOut)
def grant_role(data, username):
    """Grant a role (site roles name their site)."""
    assignment = users.grant_role(db.session, current_actor(), username, **data)
    commit_with_answer()
    return assignment


@blp.delete("/<username>/roles/<uuid:assignment_id>")
@requires("users:manage")
@blp.response(204)
def revoke_role(username, assignment_id: uuid.UUID):
    """Revoke a role assignment; it stops working on the very next request."""
    users.revoke_role(db.session, current_actor(), username, assignment_id)
    commit_with_answer()
