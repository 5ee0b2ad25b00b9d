"""Settings: config/default.toml, then an environment file, then EDC_* variables, then
the argument given to create_app. Validated once; unsafe production settings refuse to start.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
ENV_PREFIX = "EDC_"
ENVIRONMENTS = ("development", "testing", "production")
MAX_ACCESS_TOKEN_SECONDS = 900
MAX_CLIENT_TOKEN_SECONDS = 300  # SMART Backend Services: expires_in SHOULD NOT exceed 300
DEVELOPMENT_BASE_URL = "http://127.0.0.1:8000"  # where `make serve` listens; production must name its own


class SettingsError(RuntimeError):
    """A setting is missing, malformed or unsafe; the message is one line for the operator."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def _coerce(name: str, raw: str, default: Any) -> Any:
    """Convert an environment string to the type of the default value."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
    if isinstance(default, dict):
        try:
            value = json.loads(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a JSON object, got {raw!r}") from None
        if not isinstance(value, dict):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a JSON object, got {raw!r}")
        return value
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be an integer, got {raw!r}") from None
    return raw


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return validated settings as a dict with lower-case keys."""
    environ = os.environ if environ is None else environ
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    settings = _read_toml(CONFIG_DIR / "default.toml")

    env_name = overrides.get("env") or environ.get(f"{ENV_PREFIX}ENV")
    config_file = overrides.pop("config_file", None) or environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file:
        settings.update(_read_toml(Path(config_file)))
    elif env_name and (CONFIG_DIR / f"{env_name}.toml").exists():
        settings.update(_read_toml(CONFIG_DIR / f"{env_name}.toml"))

    known = dict(settings)
    for name, default in known.items():
        raw = environ.get(f"{ENV_PREFIX}{name.upper()}")
        if raw is not None:
            settings[name] = _coerce(name, raw, default)
    unknown = set(overrides) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    settings.update(overrides)
    _resolve_paths(settings)
    _resolve_public_base_url(settings)
    validate(settings)
    return settings


def _resolve_paths(settings: dict[str, Any]) -> None:
    """Make relative file paths relative to the project root, not the working directory."""
    for name in ("keys_dir", "forms_dir", "export_dir", "meddra_dir"):
        if name in settings:
            path = Path(settings[name])
            settings[name] = str(path if path.is_absolute() else PROJECT_ROOT / path)
    url: str = settings["database_url"]
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
        settings["database_url"] = prefix + str(PROJECT_ROOT / url[len(prefix):])


def _resolve_public_base_url(settings: dict[str, Any]) -> None:
    """Outside production an unset public_base_url is the development address; mail links follow it unless
    mail_link_base names another address."""
    base = str(settings["public_base_url"] or "").strip().rstrip("/")
    if not base and settings["env"] != "production":
        base = DEVELOPMENT_BASE_URL
    settings["public_base_url"] = base
    if not settings["mail_link_base"]:
        settings["mail_link_base"] = base


def public_host(base_url: str) -> str:
    """The host name of public_base_url: the one Host a request may name."""
    return urlsplit(base_url).hostname or ""


def _validate_public_base_url(settings: Mapping[str, Any]) -> None:
    # Every absolute URL the service emits (FHIR metadata, SMART discovery, Bulk Data links) and the audience
    # of registry clients' assertions are built from this, never from a request's Host header.
    base = settings["public_base_url"]
    if base and _base_url_scheme(base) is None:
        raise SettingsError(f"public_base_url must be scheme://host[:port] with no path, e.g. https://edc.example.org; "
                            f"got {base!r}")


def _base_url_scheme(base: str) -> str | None:
    """The scheme of a well-formed http(s)://host[:port], else None."""
    try:
        parts = urlsplit(base)
        parts.port  # raises ValueError on a port that is not a number from 0 to 65535
    except ValueError:
        return None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None or parts.path
            or parts.query or parts.fragment):
        return None
    return parts.scheme


def validate(settings: Mapping[str, Any]) -> None:
    """Raise SettingsError on malformed settings, or unsafe ones in production."""
    if settings["env"] not in ENVIRONMENTS:
        raise SettingsError(f"env must be one of {', '.join(ENVIRONMENTS)}, got {settings['env']!r}")
    if not 0 < settings["access_token_seconds"] <= MAX_ACCESS_TOKEN_SECONDS:
        raise SettingsError(f"access_token_seconds must be between 1 and {MAX_ACCESS_TOKEN_SECONDS}")
    if not 0 < settings["fhir_client_token_seconds"] <= MAX_CLIENT_TOKEN_SECONDS:
        raise SettingsError(f"fhir_client_token_seconds must be between 1 and {MAX_CLIENT_TOKEN_SECONDS}")
    if settings["trusted_proxy_hops"] < 0:
        raise SettingsError("trusted_proxy_hops must not be negative")
    if settings["signing_key_activation_seconds"] < 0:
        raise SettingsError("signing_key_activation_seconds must not be negative")
    if not 0 < settings["page_size_default"] <= settings["page_size_max"]:
        raise SettingsError("page_size_default must be between 1 and page_size_max")
    _validate_public_base_url(settings)
    _validate_mail(settings)
    _validate_password_hashing(settings)
    _validate_database_limits(settings)
    for name in ("export_max_active_per_user", "export_lease_seconds", "export_max_attempts"):
        if settings[name] < 1:
            raise SettingsError(f"{name} must be at least 1")
    _validate_storage(settings)
    if settings["env"] == "production":
        _validate_production(settings)


def _validate_storage(settings: Mapping[str, Any]) -> None:
    from edc.storage import BACKENDS  # local import: settings must stay importable alone

    if settings["storage_backend"] not in BACKENDS:
        raise SettingsError(f"storage_backend must be one of {', '.join(BACKENDS)}, got {settings['storage_backend']!r}")
    if settings["storage_s3_addressing_style"] not in ("auto", "path", "virtual"):
        raise SettingsError("storage_s3_addressing_style must be auto, path or virtual")
    if settings["storage_s3_server_side_encryption"] not in ("", "AES256", "aws:kms"):
        raise SettingsError('storage_s3_server_side_encryption must be "", "AES256" or "aws:kms"')
    prefix = settings["storage_s3_prefix"]
    if prefix and (not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix):
        raise SettingsError('storage_s3_prefix must be empty or end in "/" (e.g. "edc/"), without a leading "/"')
    for name in ("storage_s3_timeout_seconds", "storage_s3_max_attempts"):
        if settings[name] < 1:
            raise SettingsError(f"{name} must be at least 1")
    if settings["storage_backend"] == "s3" and not settings["storage_s3_bucket"]:
        raise SettingsError("storage_backend s3 needs storage_s3_bucket")
    if settings["storage_s3_endpoint_url"] and _base_url_scheme(settings["storage_s3_endpoint_url"]) is None:
        raise SettingsError("storage_s3_endpoint_url must be scheme://host[:port], e.g. https://minio.internal:9000")


SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")


def _validate_database_limits(settings: Mapping[str, Any]) -> None:
    if str(settings["sqlite_synchronous"]).upper() not in SQLITE_SYNCHRONOUS:
        raise SettingsError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
    if settings["database_connect_timeout_seconds"] < 2:  # libpq treats 1 as 2, and 0 as "wait forever"
        raise SettingsError("database_connect_timeout_seconds must be at least 2")
    for name in ("database_pool_timeout_seconds", "database_lock_timeout_ms", "database_statement_timeout_ms",
                 "database_long_statement_timeout_ms"):
        if settings[name] < 1:  # 0 would mean "wait forever" to PostgreSQL and SQLite
            raise SettingsError(f"{name} must be at least 1")


def _validate_mail(settings: Mapping[str, Any]) -> None:
    from edc.models.monitoring import NOTIFICATION_KINDS  # local imports: settings must stay importable alone
    from edc.models.users import ROLES

    if not 0 < settings["smtp_port"] < 65536:
        raise SettingsError("smtp_port must be between 1 and 65535")
    if settings["smtp_host"] and "@" not in settings["smtp_from"]:
        raise SettingsError("smtp_from must be an email address")
    for name in ("smtp_timeout_seconds", "mailer_interval_seconds", "mailer_max_attempts", "mailer_backoff_seconds",
                 "mailer_batch_size"):
        if settings[name] < 1:
            raise SettingsError(f"{name} must be at least 1")
    if settings["mailer_backoff_max_seconds"] < settings["mailer_backoff_seconds"]:
        raise SettingsError("mailer_backoff_max_seconds must not be below mailer_backoff_seconds")
    routes = settings["mail_routes"]
    if not isinstance(routes, Mapping):
        raise SettingsError("mail_routes must be a table of notification kind -> list of roles")
    for kind, roles in routes.items():
        if kind not in NOTIFICATION_KINDS:
            raise SettingsError(f"mail_routes: unknown notification kind {kind!r} (known: {', '.join(NOTIFICATION_KINDS)})")
        if not isinstance(roles, list) or any(role not in ROLES for role in roles):
            raise SettingsError(f"mail_routes.{kind} must be a list of roles among {', '.join(ROLES)}")
    addresses = settings["mail_site_addresses"]
    if not isinstance(addresses, Mapping):
        raise SettingsError("mail_site_addresses must be a table of site code -> list of addresses")
    for site, listed in addresses.items():
        if not isinstance(listed, list) or any(not isinstance(a, str) or "@" not in a for a in listed):
            raise SettingsError(f"mail_site_addresses.{site} must be a list of email addresses")


def _validate_password_hashing(settings: Mapping[str, Any]) -> None:
    from edc.security import passwords  # local import: settings must stay importable alone

    cost = (settings["argon2_time_cost"], settings["argon2_memory_kib"], settings["argon2_parallelism"])
    if cost[0] < 1 or cost[2] < 1 or cost[1] < 8 * cost[2]:
        raise SettingsError("password hashing needs time_cost >= 1, parallelism >= 1 and memory_kib >= 8 x parallelism")
    if settings["env"] != "testing" and (cost[0] < passwords.OWASP_TIME_COST or cost[1] < passwords.OWASP_MEMORY_KIB):
        raise SettingsError(f"password hashing below the OWASP minimum (argon2id {passwords.OWASP_MEMORY_KIB} KiB, "
                            f"{passwords.OWASP_TIME_COST} iterations) is allowed only in the test environment")


def _validate_production(settings: Mapping[str, Any]) -> None:
    from edc.security import keyring  # local import: settings must stay importable alone

    if settings["debug"]:
        raise SettingsError("refusing to start in production with debug on")
    if settings["benchmark_endpoints"]:
        raise SettingsError("refusing to start in production with benchmark endpoints")
    if str(settings["sqlite_synchronous"]).upper() == "NORMAL":
        raise SettingsError("refusing to start in production with sqlite_synchronous NORMAL (answered saves could be lost)")
    if settings["database_url"].startswith("sqlite") and not settings["allow_sqlite_in_production"]:
        raise SettingsError("refusing to start in production on SQLite (set allow_sqlite_in_production to accept it)")
    if not settings["public_base_url"]:
        raise SettingsError("refusing to start in production without public_base_url "
                            "(the https address clients reach, e.g. https://edc.example.org)")
    if _base_url_scheme(settings["public_base_url"]) != "https":
        raise SettingsError("refusing to start in production with a public_base_url that is not https")
    try:
        ring = keyring.load_keyring(settings["keys_dir"])
        signing = keyring.load_signing_keys(settings["keys_dir"])
    except keyring.KeyError_ as exc:
        raise SettingsError(f"refusing to start in production: {exc}") from None
    if ring.development or any(key.development for key in signing):
        raise SettingsError("refusing to start in production with development or demo keys")
