"""Who may do what: the whole permission matrix, deny by default, and the site scope of an actor.

Every view declares exactly one permission with @requires(...) (or @public). A request to a
view that declares none is refused; a test walks app.url_map to keep it that way.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from edc.models.users import ROLES
from edc.problems import Forbidden

F = TypeVar("F", bound=Callable)

PUBLIC = "public"
# Any signed-in account, including one that has no role yet or must change its password first.
AUTHENTICATED = "authenticated"

SITE_ROLES = frozenset({"investigator", "coordinator", "monitor"})
GLOBAL_ROLES = frozenset(ROLES) - SITE_ROLES
ALL_ROLES = frozenset(ROLES)
STAFF_ROLES = ALL_ROLES - {"registry"}

CLINICAL_READERS = frozenset({"investigator", "coordinator", "monitor", "data_manager", "safety", "auditor", "manufacturing"})

MATRIX: dict[str, frozenset[str]] = {
    "sites:read": STAFF_ROLES,
    "forms:read": STAFF_ROLES,
    "subjects:read": CLINICAL_READERS,
    "subjects:enrol": frozenset({"investigator", "coordinator"}),
    "subjects:status": frozenset({"investigator", "coordinator", "data_manager"}),
    "entries:read": CLINICAL_READERS,
    # Manufacturing and safety write only the forms the study assigns to them (checked per form).
    "entries:write": frozenset({"investigator", "coordinator", "manufacturing", "safety"}),
    "clinical_audit:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "safety", "auditor"}),
    # Safety-reporting clocks: site staff and monitors for their sites; the sponsor's safety and data roles for all.
    "safety:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "safety", "auditor"}),
    # Monitoring: monitors and data managers raise and settle queries; site staff answer them.
    "queries:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "safety", "auditor"}),
    "queries:manage": frozenset({"monitor", "data_manager"}),
    "queries:answer": frozenset({"investigator", "coordinator"}),
    "queries:message": frozenset({"investigator", "coordinator", "monitor", "data_manager"}),
    "sdv:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "auditor"}),
    "sdv:write": frozenset({"monitor"}),
    "signatures:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "auditor"}),
    # Only a site's principal investigator signs (checked against the grant's principal_investigator flag).
    "signatures:sign": frozenset({"investigator"}),
    "locks:manage": frozenset({"data_manager"}),
    "cuts:read": frozenset({"data_manager", "statistician", "auditor"}),
    "reports:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "safety", "auditor"}),
    "outbox:read": frozenset({"data_manager", "safety"}),
    # Pseudonymised FHIR R4 output (per-subject $everything); the registry client reads nothing else.
    "fhir:read": frozenset({"data_manager", "statistician", "registry"}),
    # Export jobs (CSV, ODM, FHIR bulk): global roles any site, site roles their own; the registry FHIR only.
    "exports:create": frozenset({"statistician", "data_manager", "monitor", "investigator", "registry"}),
    "sites:manage": frozenset({"admin"}),
    "users:read": frozenset({"admin", "auditor"}),
    "users:manage": frozenset({"admin"}),
    "audit:read": frozenset({"auditor"}),
    # The PDF casebook shows free text and the audit trail: site staff and monitors of the subject's site, data
    # managers and auditors; never the statistician or a registry.
    "casebooks:read": frozenset({"investigator", "coordinator", "monitor", "data_manager", "auditor"}),
    # The site archive at study close: asked for by a data manager; downloaded by the data manager and the site's
    # principal investigator (the principal investigator flag is checked per site).
    "archives:create": frozenset({"data_manager"}),
    "archives:read": frozenset({"investigator", "data_manager"}),
}


# Permissions that reach no clinical data, signature or export: the catalogue of sites and forms, and the
# administration of sites and accounts.
ADMINISTRATION_PERMISSIONS = frozenset({"sites:read", "forms:read", "sites:manage", "users:read", "users:manage"})
REGISTRY_ROLE = "registry"  # a FHIR registry client's account: created with the client, never granted to a person
# Separation of duties (21 CFR 11.200(a)(3)): an administrator creates and resets accounts and grants roles, so no
# administrator also reads, enters, verifies, signs or exports clinical data. Clinical is every person's role that
# holds a permission beyond administration (as the matrix stands: every role but admin).
CLINICAL_ROLES = frozenset(
    role for permission, roles in MATRIX.items() if permission not in ADMINISTRATION_PERMISSIONS for role in roles
) - {REGISTRY_ROLE}


def role_conflict(held: set[str], role: str) -> str | None:
    """Why an account holding `held` may not also hold `role` (separation of duties), or None."""
    if REGISTRY_ROLE in held:
        return "it is a registry client's account, which holds the registry role and nothing else"
    if role == "admin" and held & CLINICAL_ROLES:
        return f"it holds the clinical role(s) {', '.join(sorted(held & CLINICAL_ROLES))}; an administrator holds none"
    if role in CLINICAL_ROLES and "admin" in held:
        return f"it holds admin, and an administrator holds no clinical role such as {role}"
    return None


@dataclass(frozen=True)
class Grant:
    role: str
    site_id: uuid.UUID | None = None
    site_code: str | None = None
    principal_investigator: bool = False
    assignment_id: uuid.UUID | None = None
    granted_at: datetime | None = None
    granted_by: str | None = None


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user with the role assignments read from the database this request, or the CLI."""

    username: str
    display_name: str
    user_id: uuid.UUID | None = None
    email: str | None = None
    grants: tuple[Grant, ...] = ()
    session_id: uuid.UUID | None = None
    must_change_password: bool = False
    request_id: str | None = None
    client_address: str | None = None
    is_system: bool = False
    client_id: str | None = None  # a registry client acting through this account (SMART Backend Services)
    scope: str | None = None  # the SMART scope that client's token was granted

    @classmethod
    def system(cls, name: str = "cli") -> Actor:
        """The operator at the command line, who holds every permission."""
        return cls(username=f"system:{name}", display_name=f"System ({name})", is_system=True)

    @property
    def roles(self) -> list[str]:
        return sorted({g.role for g in self.grants})

    @property
    def primary_role(self) -> str | None:
        return "system" if self.is_system else (self.roles[0] if self.roles else None)

    def can(self, permission: str) -> bool:
        if permission in (PUBLIC, AUTHENTICATED):
            return True
        if self.is_system:
            return True
        allowed = MATRIX.get(permission)
        if allowed is None:
            return False
        return any(g.role in allowed for g in self.grants)

    def site_scope(self, permission: str) -> set[uuid.UUID] | None:
        """Site ids this actor may reach with a permission; None means all sites."""
        if self.is_system:
            return None
        allowed = MATRIX.get(permission, frozenset())
        grants = [g for g in self.grants if g.role in allowed]
        if any(g.site_id is None for g in grants):
            return None
        return {g.site_id for g in grants if g.site_id is not None}


# Items a form marks `identifying` never leave the site: besides the roles that enter the form, only the site's
# own staff and the data managers see their values.
IDENTIFYING_READERS = frozenset({"investigator", "coordinator", "data_manager"})


def sees_identifying(actor: Actor, site_id: uuid.UUID, form_writers: Collection[str]) -> bool:
    """Whether `actor` is shown the identifying items of an entry of a subject of `site_id`: site staff of that
    site, data managers, and the roles the study assigns to enter the form (`form_writers`: they enter it anyway).
    Everyone else (monitor, safety, auditor, ...) reads entries with those items withheld."""
    if actor.is_system:
        return True
    readers = IDENTIFYING_READERS | (frozenset(form_writers) & MATRIX["entries:write"])
    return any(g.role in readers and g.site_id in (None, site_id) for g in actor.grants)


def require(actor: Actor, permission: str) -> None:
    """Raise 403 unless the actor holds the permission."""
    if not actor.can(permission):
        raise Forbidden("Your role does not allow this action.")


def requires(permission: str) -> Callable[[F], F]:
    """Declare the permission a view needs; checked before the view runs."""
    if permission not in MATRIX and permission not in (PUBLIC, AUTHENTICATED):
        raise ValueError(f"unknown permission {permission}")

    def mark(view: F) -> F:
        view.edc_permission = permission  # type: ignore[attr-defined]
        return view

    return mark


public = requires(PUBLIC)


def declared_permission(view: Callable | None) -> str | None:
    return getattr(view, "edc_permission", None)
