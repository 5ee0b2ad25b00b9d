"""Creating, reading, updating and closing sites (admin work, on the security chain)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc.models.sites import Site
from edc.problems import Conflict, NotFound
from edc.security.permissions import Actor, require
from edc.services import audit
from edc.services.concurrency import check_etag
from edc.services.pagination import Page, paginate

EDITABLE = ("name", "country", "time_zone")


def get_site(session: Session, actor: Actor, code: str) -> Site:
    require(actor, "sites:read")
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    if site is None:
        raise NotFound(f"No site {code}.")
    return site


def list_sites(session: Session, actor: Actor, *, status: str | None = None, page: int = 1, page_size: int = 50) -> Page[Site]:
    require(actor, "sites:read")
    stmt = sa.select(Site).order_by(Site.code)
    if status:
        stmt = stmt.where(Site.status == status)
    return paginate(session, stmt, page=page, page_size=page_size)


def create_site(session: Session, actor: Actor, *, code: str, name: str, country: str, time_zone: str) -> Site:
    require(actor, "sites:manage")
    code = code.upper()
    if session.scalar(sa.select(Site.id).where(Site.code == code)) is not None:
        raise Conflict(f"Site {code} already exists.")
    site = Site(code=code, name=name, country=country.upper(), time_zone=time_zone, status="active")
    session.add(site)
    session.flush()
    audit.record(session, actor, "site_created", entity_type="site", entity_id=site.id, site_code=code,
                 changes=[audit.change(f, None, getattr(site, f)) for f in ("code", *EDITABLE, "status")])
    return site


def update_site(session: Session, actor: Actor, code: str, *, expected_etag: str, changes: dict[str, Any]) -> Site:
    require(actor, "sites:manage")
    site = get_site(session, actor, code)
    check_etag(session, site, expected_etag, f"Site {site.code}")
    if site.status == "closed":
        raise Conflict(f"Site {site.code} is closed.")
    diffs = []
    for name in EDITABLE:
        if name in changes:
            new = changes[name].upper() if name == "country" else changes[name]
            if new != getattr(site, name):
                diffs.append(audit.change(name, getattr(site, name), new))
                setattr(site, name, new)
    if diffs:
        session.flush()
        audit.record(session, actor, "site_updated", entity_type="site", entity_id=site.id, site_code=site.code, changes=diffs)
    return site


def close_site(session: Session, actor: Actor, code: str, *, expected_etag: str, reason: str) -> Site:
    require(actor, "sites:manage")
    site = get_site(session, actor, code)
    check_etag(session, site, expected_etag, f"Site {site.code}")
    if site.status == "closed":
        raise Conflict(f"Site {site.code} is already closed.")
    site.status = "closed"
    session.flush()
    audit.record(session, actor, "site_closed", entity_type="site", entity_id=site.id, site_code=site.code,
                 reason=reason, changes=[audit.change("status", "active", "closed")])
    return site
