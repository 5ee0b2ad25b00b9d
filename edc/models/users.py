"""Accounts and their role assignments. Users are disabled, never deleted; names are never reused."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edc.models.base import Base, IdMixin, TimestampMixin
from edc.models.sites import Site

USER_STATUSES = ("active", "disabled")
ROLES = (
    "investigator",
    "coordinator",
    "monitor",
    "data_manager",
    "safety",
    "manufacturing",
    "statistician",
    "auditor",
    "registry",
    "admin",
)


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint(f"status IN {USER_STATUSES!r}", name="status"),)

    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(200))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    password_hash: Mapped[str | None] = mapped_column(sa.String(200))
    password_changed_at: Mapped[datetime | None]
    must_change_password: Mapped[bool] = mapped_column(default=True)
    is_demo: Mapped[bool] = mapped_column(default=False)
    setup_token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    setup_token_expires_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    disabled_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)

    roles: Mapped[list[RoleAssignment]] = relationship(
        back_populates="user", foreign_keys="RoleAssignment.user_id", order_by="RoleAssignment.granted_at"
    )

    __mapper_args__ = {"version_id_col": version}

    @property
    def active_roles(self) -> list[RoleAssignment]:
        return [r for r in self.roles if r.revoked_at is None]


class RoleAssignment(IdMixin, Base):
    """A role held by a user, for one site (site roles) or for all sites (site_id NULL)."""

    __tablename__ = "role_assignments"
    __table_args__ = (
        sa.CheckConstraint(f"role IN {ROLES!r}", name="role"),
        sa.CheckConstraint("NOT principal_investigator OR role = 'investigator'", name="pi_is_investigator"),
        sa.Index("ix_role_assignments_user_active", "user_id", "revoked_at"),
        # At most one active principal investigator per site.
        sa.Index(
            "uq_role_assignments_active_pi",
            "site_id",
            unique=True,
            sqlite_where=sa.text("principal_investigator AND revoked_at IS NULL"),
            postgresql_where=sa.text("principal_investigator AND revoked_at IS NULL"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"))
    role: Mapped[str] = mapped_column(sa.String(32))
    site_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("sites.id"))
    principal_investigator: Mapped[bool] = mapped_column(default=False)
    granted_at: Mapped[datetime]
    granted_by: Mapped[str] = mapped_column(sa.String(64))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(sa.String(64))

    user: Mapped[User] = relationship(back_populates="roles", foreign_keys=[user_id])
    site: Mapped[Site | None] = relationship()
