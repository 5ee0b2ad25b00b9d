"""Login, refresh, logout, password change, account setup and /me."""

from __future__ import annotations

from flask import g

from edc.api.common import client_address, current_actor
from edc.api.openapi import docs
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import LoginIn, MeOut, PasswordChangeIn, RefreshIn, SetupIn, TokenOut
from edc.extensions import db
from edc.security.permissions import AUTHENTICATED, public, requires
from edc.services import auth, users

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Authentication and the current user")


def _tokens(pair: auth.TokenPair) -> dict:
    return {
        "access_token": pair.access_token,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "refresh_expires_at": pair.refresh_expires_at,
        "password_change_required": pair.password_change_required,
    }


@blp.post("/auth/login")
@public
@blp.arguments(LoginIn)
@blp.response(200, TokenOut)
def login(data):
    """Exchange a username and password for an access token and a refresh token."""
    pair = auth.login(db.session, username=data["username"], password=data["password"],
                      client_address=client_address(), request_id=g.request_id)
    commit_with_answer()
    return _tokens(pair)


@blp.post("/auth/refresh")
@public
@blp.arguments(RefreshIn)
@blp.response(200, TokenOut)
def refresh(data):
    """Swap a refresh token for a new pair; each refresh token works once."""
    pair = auth.refresh(db.session, refresh_token=data["refresh_token"], client_address=client_address(), request_id=g.request_id)
    commit_with_answer()
    return _tokens(pair)


@blp.post("/auth/logout")
@requires(AUTHENTICATED)
@blp.response(204)
def logout():
    """End this session: its access and refresh tokens stop working."""
    auth.logout(db.session, current_actor())
    commit_with_answer()


@blp.post("/auth/password")
@blp.doc(**docs(errors=(429,)))
@requires(AUTHENTICATED)
@blp.arguments(PasswordChangeIn)
@blp.response(204)
def change_password(data):
    """Change your password; your other sessions end."""
    auth.change_password(db.session, current_actor(), **data)
    commit_with_answer()


@blp.post("/auth/setup")
@public
@blp.arguments(SetupIn)
@blp.response(204)
def redeem_setup_token(data):
    """Set your first password with the one-time setup token from an administrator."""
    auth.redeem_setup_token(db.session, token=data["token"], new_password=data["new_password"],
                            request_id=g.request_id, client_address=client_address())
    commit_with_answer()


@blp.get("/me")
@requires(AUTHENTICATED)
@blp.response(200, MeOut)
def get_me():
    """Who you are, with the roles and sites the database gives you now."""
    return users.me(current_actor())
