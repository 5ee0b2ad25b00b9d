"""Request and response schemas, written by hand: the API does not change when a column does."""

from __future__ import annotations

import json
import zoneinfo

from marshmallow import Schema, ValidationError, fields, validate

from edc import clock
from edc.api.parsing import multiline
from edc.models.sites import SITE_STATUSES
from edc.models.subjects import SEXES
from edc.models.users import ROLES, USER_STATUSES
from edc.security import passwords, usernames
from edc.services.identifying import WITHHELD

USERNAME = validate.Regexp(usernames.PATTERN, error=usernames.RULE)
SITE_CODE = validate.Regexp(r"^[A-Z]{2}[0-9]{2}$", error="A site code is two capital letters and two digits, e.g. ES01.")
COUNTRY = validate.Regexp(r"^[A-Z]{2}$", error="Use the ISO 3166-1 alpha-2 code, e.g. ES.")
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1_000_000
# Identifying items are shown only to the subject's site staff, data managers and the form's own writers.
WITHHELD_NOTE = (f"{json.dumps(WITHHELD)} in place of its value (identifying items are shown only to the subject's "
                 "site staff, data managers and the roles that enter the form; docs/security.md).")
REASON = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata=multiline())
# Multi-line text (edc.ecrf.inputs) with at least one character that is not white space; the pattern doubles as the
# OpenAPI document's, so it states the text rule too.
_LINE_CHAR = r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]"
NOT_BLANK = validate.Regexp(rf"^{_LINE_CHAR}*[^\s\u0000-\u001f\u007f]{_LINE_CHAR}*$", error="Must not be blank.")


def required_reason(description: str = "required, not blank") -> fields.String:
    """A reason the service refuses when missing or blank: the schema (and so the OpenAPI document) says so too."""
    return fields.String(required=True, validate=[validate.Length(min=1, max=2000), NOT_BLANK],
                         metadata=multiline(description=description))


class RecentYear(validate.Range):
    """A year from `years` years ago to this one, counted when it is checked (and when the document is built)."""

    def __init__(self, years: int) -> None:
        super().__init__()
        self.years = years

    @property
    def min(self):  # noqa: A003
        return clock.utcnow().year - self.years

    @min.setter
    def min(self, value) -> None:
        pass

    @property
    def max(self):  # noqa: A003
        return clock.utcnow().year

    @max.setter
    def max(self, value) -> None:
        pass


def _time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError("Not an IANA time zone, e.g. Europe/Madrid.") from None


class PageArgs(Schema):
    # Bounded so that no offset reaches the database's 64-bit limit (page 10**20 was a 500).
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
                               metadata={"description": "at most the configured maximum (page_size_max); more is a 422"})


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
    email = fields.Email(required=True, validate=validate.Length(max=254),
                         metadata={"description": "where the one-time setup link is mailed; the user alone receives it"})


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


class SetupMailedOut(Schema):
    """Where the setup link went; the link itself reaches only the user (by mail), never the administrator."""

    setup_link_sent_to = fields.String(metadata={"description": "the account's email address"})
    setup_link_expires_at = fields.DateTime()


class UserCreatedOut(SetupMailedOut):
    user = fields.Nested(UserOut)


# --- authentication --------------------------------------------------------

class LoginIn(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=256))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)


class RefreshIn(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=512), load_only=True)


def new_password() -> fields.String:
    """A new password: the policy's length is checked here, so the OpenAPI document states it (the service checks
    the rest of the policy: common passwords, the username)."""
    too_short = f"Password must be at least {passwords.MIN_LENGTH} characters."
    return fields.String(required=True, load_only=True, validate=[
        validate.Length(min=passwords.MIN_LENGTH, error=too_short), validate.Length(max=1024)])


class PasswordChangeIn(Schema):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=1024), load_only=True)
    new_password = new_password()


class SetupIn(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=512), load_only=True)
    new_password = new_password()


class TokenOut(Schema):
    access_token = fields.String()
    token_type = fields.Constant("Bearer")
    expires_in = fields.Integer()
    refresh_token = fields.String()
    refresh_expires_at = fields.DateTime()
    password_change_required = fields.Boolean()


class MyRoleOut(Schema):
    id = fields.UUID()
    role = fields.String()
    site = fields.String(allow_none=True)
    principal_investigator = fields.Boolean()
    granted_at = fields.DateTime()
    granted_by = fields.String()


class MeOut(Schema):
    username = fields.String()
    display_name = fields.String()
    email = fields.String(allow_none=True)
    must_change_password = fields.Boolean()
    roles = fields.List(fields.Nested(MyRoleOut))
    sites = fields.List(fields.String())
    all_sites = fields.Boolean()


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
    changes = fields.List(fields.Dict(), metadata={"description": (
        "Changed fields with their old and new values; an identifying item's value you may not see is "
        + WITHHELD_NOTE)})


# --- study and forms --------------------------------------------------------

class FormArgs(Schema):
    version = fields.String(validate=validate.Length(max=16))
    # A language tag (BCP 47 shape): the Questionnaire's `language` must be one, and an empty one was a 500.
    lang = fields.String(load_default="en", validate=[validate.Length(max=8), validate.Regexp(
        r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$", error="A language tag, e.g. en or es.")])


# --- subjects ----------------------------------------------------------------

SUBJECT_STATUSES = ("screening", "enrolled", "screen_failed", "withdrawn", "completed", "deceased")


class SubjectIn(Schema):
    site = fields.String(required=True, validate=SITE_CODE)
    birth_year = fields.Integer(required=True, strict=True, validate=RecentYear(30))
    birth_month = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=12))
    sex = fields.String(required=True, validate=validate.OneOf(SEXES))
    consent_date = fields.Date(required=True)
    hospital_number = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64), load_only=True,
                                    metadata={"description": "used only to detect duplicates; never stored"})


class SubjectListArgs(PageArgs):
    site = fields.String(validate=SITE_CODE)
    status = fields.String(validate=validate.OneOf(SUBJECT_STATUSES))


class SubjectOut(Schema):
    number = fields.String()
    site = fields.Function(lambda s: s.site.code)
    status = fields.String()
    status_reason = fields.String(allow_none=True)
    birth_year = fields.Integer()
    birth_month = fields.Integer()
    sex = fields.String()
    consent_date = fields.Date()
    registration_date = fields.Date()
    planned_infusion_date = fields.Date(allow_none=True)
    day0 = fields.Date(allow_none=True)
    version = fields.Integer()
    created_at = fields.DateTime()


class SubjectPage(PageOut):
    items = fields.List(fields.Nested(SubjectOut))


class SubjectStatusIn(Schema):
    status = fields.String(required=True, validate=validate.OneOf(SUBJECT_STATUSES))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000), metadata=multiline())


class QueryOut(Schema):
    id = fields.UUID()
    entry_id = fields.UUID()
    form = fields.String(attribute="form_id")
    item = fields.String(attribute="item_id", allow_none=True)
    origin = fields.String()
    check = fields.String(attribute="check_id", allow_none=True)
    kind = fields.String(attribute="rule_kind", allow_none=True)
    message = fields.String()
    critical = fields.Boolean()
    state = fields.String()
    opened_at = fields.DateTime()
    answered_at = fields.DateTime(allow_none=True)
    answered_by_change = fields.UUID(allow_none=True)


class CasebookFormOut(Schema):
    form = fields.String()
    state = fields.String()
    entries = fields.Integer()
    open_queries = fields.Integer()
    verified = fields.Boolean()
    signed = fields.Boolean()
    locked = fields.Boolean()


class CasebookEventOut(Schema):
    event = fields.String()
    instance = fields.Integer()
    label = fields.String(allow_none=True)
    anchor = fields.String(allow_none=True)
    optional = fields.Boolean()
    due = fields.Date(allow_none=True)
    window = fields.Dict(allow_none=True)
    overdue = fields.Boolean()
    forms = fields.List(fields.Nested(CasebookFormOut))


class CasebookOut(Schema):
    subject = fields.String()
    status = fields.String()
    anchors = fields.Dict()
    events = fields.List(fields.Nested(CasebookEventOut))
    logs = fields.List(fields.Nested(CasebookFormOut))
    queries = fields.List(fields.Nested(QueryOut))


# --- entries -------------------------------------------------------------------

class EntryIn(Schema):
    event = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    event_instance = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=999))
    form = fields.String(required=True, validate=validate.Length(min=1, max=64))
    data = fields.Dict(required=True, keys=fields.String(validate=validate.Length(max=64)))
    complete = fields.Boolean(load_default=False)


class EntryPutIn(Schema):
    data = fields.Dict(required=True, keys=fields.String(validate=validate.Length(max=64)))
    complete = fields.Boolean(load_default=False)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000), metadata=multiline())


class EntryListArgs(Schema):
    event = fields.String(validate=validate.Length(max=64))
    form = fields.String(validate=validate.Length(max=64))


class EntryOut(Schema):
    id = fields.UUID()
    subject = fields.String()
    event = fields.String(allow_none=True)
    event_instance = fields.Integer(allow_none=True)
    form = fields.String()
    form_version = fields.String()
    status = fields.String()
    data = fields.Dict(metadata={"description": "The item values, decrypted for you; an identifying item you may "
                                                "not see is " + WITHHELD_NOTE})
    version = fields.Integer()
    created_at = fields.DateTime()
    created_by = fields.String()
    updated_at = fields.DateTime()
    updated_by = fields.String()
    queries = fields.List(fields.Nested(QueryOut))
    warnings = fields.List(fields.Dict())
    queries_opened = fields.List(fields.Nested(QueryOut))
    queries_answered = fields.List(fields.Nested(QueryOut))


class AuditHistoryArgs(PageArgs):
    pass
