"""Liveness, readiness and the public key set."""

from __future__ import annotations

from flask import current_app

from edc import runtime
from edc.api.parsing import Blueprint
from edc.database import migration_heads
from edc.extensions import db
from edc.problems import ServiceUnavailable
from edc.security.permissions import public
from edc.services import readiness

blp = Blueprint("health", __name__, description="Health checks and public keys")


@blp.get("/healthz")
@public
@blp.response(200)
def healthz():
    """The process is alive."""
    return {"status": "ok"}


@blp.get("/readyz")
@public
@blp.response(200)
def readyz():
    """The database is reachable, at the migration head, and the audit trail is protected."""
    problems = readiness.problems(db.session, migration_heads())
    if problems:
        raise ServiceUnavailable("Not ready: " + "; ".join(problems), headers={"Retry-After": "5"})
    return {"status": "ready"}


@blp.get("/.well-known/jwks.json")
@public
@blp.response(200)
def jwks():
    """Public keys that verify access tokens, by kid."""
    keys = runtime.for_app(current_app).signing_keys
    return {"keys": [key.public_jwk() for key in keys]}, 200, {"Cache-Control": "public, max-age=300"}
