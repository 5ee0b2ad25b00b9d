"""Request and response schemas, written by hand: the API does not change when a column does."""

from __future__ import annotations

import zoneinfo

from marshmallow import Schema, ValidationError, fields, validate

from edc.models.sites import SITE_STATUSES
from edc.models.users import ROLES, USER_STATUSES

USERNAME = validate.Regexp(r"^[a-z0-9][a-z0-9._-]{1,63}$", error="Use 2-64 lower-case letters, digits, '.', '_' or '-'.")
SITE_CODE = validate.Regexp(r"^[A-Z]{2}[0-9]{2}$", error="A site code is two capital letters and two digits, e.g. ES01.")
COUNTRY = validate.Regexp(r"^[A-Z]{2}$", error="Use the ISO 3166-1 alpha-2 code, e.g. ES.")
REASON = fields.String(required=True, validate=validate.Length(min=1, max=2000))


def _time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError("Not an IANA time zone, e.g. Europe/Madrid.") from None


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1), metadata={"description": "capped at the configured maximum"})


class PageOut(Schema):
    page = fields.Integer()
    page_size = fields.Integer()
    total = fields.Integer()


class ProblemOut(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    instance = fields.String()
    request_id = fields.String()
    errors = fields.List(fields.Dict())


# --- sites -----------------------------------------------------------------

class SiteIn(Schema):
    code = fields.String(required=True, validate=SITE_CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    country = fields.String(required=True, validate=COUNTRY)
    time_zone = fields.String(required=True, validate=_time_zone)


class SitePatch(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    country = fields.String(validate=COUNTRY)
    time_zone = fields.String(validate=_time_zone)


class SiteListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(SITE_STATUSES))


class SiteOut(Schema):
    code = fields.String()
    name = fields.String()
    country = fields.String()
    time_zone = fields.String()
    status = fields.String()
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class SitePage(PageOut):
    items = fields.List(fields.Nested(SiteOut))


class ReasonIn(Schema):
    reason = REASON


# --- users and roles -------------------------------------------------------

class RoleIn(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    site = fields.String(load_default=None, allow_none=True, validate=SITE_CODE)
    principal_investigator = fields.Boolean(load_default=False)


class RoleOut(Schema):
    id = fields.UUID()
    role = fields.String()
    site = fields.Function(lambda r: r.site.code if r.site else None)
    principal_investigator = fields.Boolean()
    granted_at = fields.DateTime()
    granted_by = fields.String()
    revoked_at = fields.DateTime(allow_none=True)
    revoked_by = fields.String(allow_none=True)


class UserIn(Schema):
    username = fields.String(required=True, validate=USERNAME)
    display_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))


class UserListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(USER_STATUSES))


class UserOut(Schema):
    username = fields.String()
    display_name = fields.String()
    email = fields.String(allow_none=True)
    status = fields.String()
    demo = fields.Boolean(attribute="is_demo")
    must_change_password = fields.Boolean()
    password_set = fields.Function(lambda u: u.password_hash is not None)
    created_at = fields.DateTime()
    disabled_at = fields.DateTime(allow_none=True)
    roles = fields.List(fields.Nested(RoleOut), attribute="active_roles")


class UserPage(PageOut):
    items = fields.List(fields.Nested(UserOut))


class SetupTokenOut(Schema):
    setup_token = fields.String(attribute="token", metadata={"description": "shown once; give it to the user by a separate channel"})
    setup_token_expires_at = fields.DateTime(attribute="expires_at")


class UserCreatedOut(Schema):
    user = fields.Nested(UserOut)
    setup_token = fields.String()
    setup_token_expires_at = fields.DateTime()


# --- authentication --------------------------------------------------------

class LoginIn(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=256))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class RefreshIn(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=512), load_only=True)


class PasswordChangeIn(Schema):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class SetupIn(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=512), load_only=True)
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class TokenOut(Schema):
    access_token = fields.String()
    token_type = fields.Constant("Bearer")
    expires_in = fields.Integer()
    refresh_token = fields.String()
    refresh_expires_at = fields.DateTime()
    password_change_required = fields.Boolean()


class MeOut(Schema):
    username = fields.String()
    display_name = fields.String()
    email = fields.String(allow_none=True)
    must_change_password = fields.Function(lambda u: u.must_change_password and not u.is_demo)
    roles = fields.List(fields.Nested(RoleOut), attribute="active_roles")
    sites = fields.Function(lambda u: sorted({r.site.code for r in u.active_roles if r.site}))
    all_sites = fields.Function(lambda u: any(r.site is None for r in u.active_roles))


# --- audit -----------------------------------------------------------------

class AuditArgs(PageArgs):
    entity_type = fields.String(validate=validate.Length(max=32))
    entity_id = fields.String(validate=validate.Length(max=64))


class AuditRecordOut(Schema):
    id = fields.String()
    chain = fields.String()
    seq = fields.Integer()
    occurred_at = fields.DateTime()
    actor = fields.String()
    actor_name = fields.String()
    role = fields.String(allow_none=True)
    site = fields.String(allow_none=True)
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    changes = fields.List(fields.Dict())
