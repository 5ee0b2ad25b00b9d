"""Typed SQLAlchemy models, one module per aggregate. Models never query, commit or touch Flask."""

from edc.models.audit import AuditChainHead, AuditRecord
from edc.models.auth import AuthSession, LoginThrottle, RefreshToken
from edc.models.sites import Site
from edc.models.users import RoleAssignment, User

__all__ = [
    "AuditChainHead",
    "AuditRecord",
    "AuthSession",
    "LoginThrottle",
    "RefreshToken",
    "RoleAssignment",
    "Site",
    "User",
]
