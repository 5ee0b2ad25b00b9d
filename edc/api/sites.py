"""Sites: admins create, update and close them; every staff role can read them."""

from __future__ import annotations

from flask import url_for

from edc.api.common import current_actor, etag, if_match, page_args
from edc.api.openapi import etag_doc, if_match_doc
from edc.api.parsing import Blueprint
from edc.api.transaction import commit_with_answer
from edc.api.schemas import ReasonIn, SiteIn, SiteListArgs, SiteOut, SitePage, SitePatch
from edc.extensions import db
from edc.security.permissions import requires
from edc.services import sites

blp = Blueprint("sites", __name__, url_prefix="/api/v1/sites", description="Trial sites")


@blp.get("")
@requires("sites:read")
@blp.arguments(SiteListArgs, location="query")
@blp.response(200, SitePage)
def list_sites(args):
    """List sites, optionally by status."""
    return sites.list_sites(db.session, current_actor(), status=args.get("status"), **page_args(args))


@blp.post("")
@blp.doc(**etag_doc(create=True))
@requires("sites:manage")
@blp.arguments(SiteIn)
@blp.response(201, SiteOut)
def create_site(data):
    """Create a site."""
    site = sites.create_site(db.session, current_actor(), **data)
    commit_with_answer()
    return site, 201, {"Location": url_for(".get_site", code=site.code), "ETag": etag(site)}


@blp.get("/<code>")
@blp.doc(**etag_doc())
@requires("sites:read")
@blp.response(200, SiteOut)
def get_site(code):
    """Read one site."""
    site = sites.get_site(db.session, current_actor(), code)
    return site, 200, {"ETag": etag(site)}


@blp.patch("/<code>")
@blp.doc(**if_match_doc())
@requires("sites:manage")
@blp.arguments(SitePatch)
@blp.response(200, SiteOut)
def update_site(data, code):
    """Change a site's name, country or time zone (If-Match required)."""
    expected = if_match()
    site = sites.update_site(db.session, current_actor(), code, expected_etag=expected, changes=data)
    commit_with_answer()
    return site, 200, {"ETag": etag(site)}


@blp.post("/<code>/close")
@blp.doc(**if_match_doc())
@requires("sites:manage")
@blp.arguments(ReasonIn)
@blp.response(200, SiteOut)
def close_site(data, code):
    """Close a site (If-Match required); its records stay."""
    expected = if_match()
    site = sites.close_site(db.session, current_actor(), code, expected_etag=expected, reason=data["reason"])
    commit_with_answer()
    return site, 200, {"ETag": etag(site)}
