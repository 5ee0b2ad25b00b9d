"""The demo study's sites and accounts, for `make serve` and the docs. Refused in production."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.models.sites import Site
from edc.problems import Conflict
from edc.security.permissions import Actor
from edc.services import sites, users

# Written in the README: every demo account shares it and need not change it.
DEMO_PASSWORD = "ari0001-demo-only"

DEMO_SITES = (
    ("ES01", "Hospital Clínic Barcelona", "ES", "Europe/Madrid"),
    ("IT01", "Ospedale Pediatrico Bambino Gesù, Rome", "IT", "Europe/Rome"),
    ("LB01", "American University of Beirut Medical Center (AUBMC)", "LB", "Asia/Beirut"),
    ("JO01", "King Hussein Cancer Center (KHCC), Amman", "JO", "Asia/Amman"),
)

# username, printed name, [(role, site, principal investigator)]
DEMO_ACCOUNTS = (
    ("inv.es01", "Demo Investigator ES01", [("investigator", "ES01", True)]),
    ("inv.it01", "Demo Investigator IT01", [("investigator", "IT01", False)]),
    ("inv.lb01", "Demo Investigator LB01", [("investigator", "LB01", False)]),
    ("inv.jo01", "Demo Investigator JO01", [("investigator", "JO01", False)]),
    ("crc.es01", "Demo Coordinator ES01", [("coordinator", "ES01", False)]),
    ("mon.es01", "Demo Monitor ES01/IT01", [("monitor", "ES01", False), ("monitor", "IT01", False)]),
    ("dm", "Demo Data Manager", [("data_manager", None, False)]),
    ("safety", "Demo Safety Officer", [("safety", None, False)]),
    ("mfg", "Demo Manufacturing", [("manufacturing", None, False)]),
    ("stat", "Demo Statistician", [("statistician", None, False)]),
    ("auditor", "Demo Auditor", [("auditor", None, False)]),
    ("admin", "Demo Administrator", [("admin", None, False)]),
)


def is_seeded(session: Session) -> bool:
    return session.scalar(sa.select(sa.func.count()).select_from(Site)) > 0


def seed_demo(session: Session, actor: Actor) -> dict[str, int]:
    """Create the demo sites and accounts in an empty database."""
    if runtime.of(session).settings["env"] == "production":
        raise Conflict("Demo accounts are never created in production.")
    if is_seeded(session):
        raise Conflict("The database already holds sites; the demo seed only fills an empty one.")
    for code, name, country, tz in DEMO_SITES:
        sites.create_site(session, actor, code=code, name=name, country=country, time_zone=tz)
    for username, display_name, grants in DEMO_ACCOUNTS:
        users.create_user(session, actor, username=username, display_name=display_name, demo_password=DEMO_PASSWORD)
        for role, site, pi in grants:
            users.grant_role(session, actor, username, role=role, site=site, principal_investigator=pi)
    return {"sites": len(DEMO_SITES), "users": len(DEMO_ACCOUNTS)}
