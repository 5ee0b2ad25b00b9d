import shutil

import pytest

from edc.security import keyring
from edc.settings import SettingsError, load_settings

PG_URL = "postgresql+psycopg://edc@db.example/edc"


@pytest.fixture
def production_keys(tmp_path):
    keys = tmp_path / "prod-keys"
    keyring.create_keyring(keys, development=False)
    keyring.add_signing_key(keys, development=False)
    return keys


PUBLIC_BASE_URL = "https://edc.example.org"


def production(keys, **overrides):
    return load_settings({"env": "production", "database_url": PG_URL, "keys_dir": str(keys),
                          "public_base_url": PUBLIC_BASE_URL, **overrides}, environ={})


def test_defaults_load_without_secrets():
    settings = load_settings(environ={})
    assert settings["env"] == "development"
    assert settings["access_token_seconds"] <= 900
    assert not any("secret" in key or "password" in key for key in settings)


def test_environment_overrides_config_with_types():
    settings = load_settings(environ={"EDC_ACCESS_TOKEN_SECONDS": "300", "EDC_DEBUG": "true", "EDC_JWT_ISSUER": "https://x"})
    assert settings["access_token_seconds"] == 300 and settings["debug"] is True and settings["jwt_issuer"] == "https://x"


def test_argument_overrides_environment():
    settings = load_settings({"jwt_audience": "from-arg"}, environ={"EDC_JWT_AUDIENCE": "from-env"})
    assert settings["jwt_audience"] == "from-arg"


def test_testing_file_is_applied_for_testing_env():
    assert load_settings(environ={"EDC_ENV": "testing"})["database_url"] == "sqlite://"


@pytest.mark.parametrize("environ, message", [
    ({"EDC_DEBUG": "maybe"}, "true or false"),
    ({"EDC_ACCESS_TOKEN_SECONDS": "ten"}, "integer"),
    ({"EDC_ACCESS_TOKEN_SECONDS": "3600"}, "access_token_seconds"),
    ({"EDC_ENV": "staging"}, "env must be one of"),
])
def test_malformed_settings_are_refused_with_one_line(environ, message):
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(environ=environ)
    assert "\n" not in str(info.value)


def test_unknown_setting_is_refused():
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({"audit_enabled": False}, environ={})


def test_no_setting_turns_auditing_off():
    assert not [key for key in load_settings(environ={}) if "audit" in key]


def test_production_starts_with_production_keys_and_postgresql(production_keys):
    assert production(production_keys)["env"] == "production"


@pytest.mark.parametrize("overrides, message", [
    ({"argon2_memory_kib": 19455}, "OWASP minimum"),
    ({"argon2_time_cost": 1}, "OWASP minimum"),
    ({"debug": True}, "debug"),
    ({"database_url": "sqlite:///x.sqlite3"}, "SQLite"),
    ({"benchmark_endpoints": True}, "benchmark"),
    ({"public_base_url": ""}, "without public_base_url"),
    ({"public_base_url": "http://edc.example.org"}, "public_base_url that is not https"),
])
def test_production_refuses_unsafe_settings(production_keys, overrides, message):
    with pytest.raises(SettingsError, match=message):
        production(production_keys, **overrides)


@pytest.mark.parametrize("env", ["development", "production"])
def test_cheap_password_hashing_is_refused_outside_the_test_suite(env, production_keys):
    cheap = {"env": env, "database_url": PG_URL, "keys_dir": str(production_keys), "argon2_time_cost": 1, "argon2_memory_kib": 64}
    with pytest.raises(SettingsError, match="OWASP minimum"):
        load_settings(cheap, environ={})
    assert load_settings({**cheap, "env": "testing"}, environ={})["argon2_memory_kib"] == 64


def test_impossible_password_hashing_parameters_are_refused():
    with pytest.raises(SettingsError, match="password hashing needs"):
        load_settings({"env": "testing", "argon2_memory_kib": 4}, environ={})


def test_production_accepts_sqlite_only_when_explicitly_allowed(production_keys):
    settings = production(production_keys, database_url="sqlite:///x.sqlite3", allow_sqlite_in_production=True)
    assert settings["database_url"].startswith("sqlite")


def test_production_refuses_development_keys(keys_dir):
    with pytest.raises(SettingsError, match="development or demo keys"):
        production(keys_dir)


def test_production_refuses_missing_key_ring(production_keys):
    (production_keys / "keyring.json").unlink()
    with pytest.raises(SettingsError, match="key ring missing"):
        production(production_keys)


def test_production_refuses_missing_signing_key(production_keys):
    shutil.rmtree(production_keys / "signing")
    with pytest.raises(SettingsError, match="signing key missing"):
        production(production_keys)


def test_production_refuses_unreadable_signing_key(production_keys):
    pem = next((production_keys / "signing").glob("*.pem"))
    pem.write_text("not a key")
    with pytest.raises(SettingsError, match="unreadable") as info:
        production(production_keys)
    assert "not a key" not in str(info.value)


def test_production_refuses_a_development_signing_key_beside_production_ones(production_keys):
    keyring.add_signing_key(production_keys, development=True)
    with pytest.raises(SettingsError, match="development"):
        production(production_keys)


def test_create_app_refuses_unsafe_production(production_keys):
    from edc import create_app

    with pytest.raises(SettingsError, match="debug"):
        create_app({"env": "production", "database_url": PG_URL, "keys_dir": str(production_keys), "debug": True})


def test_create_app_refuses_production_without_public_base_url(production_keys):
    from edc import create_app

    with pytest.raises(SettingsError, match="without public_base_url"):
        create_app({"env": "production", "database_url": PG_URL, "keys_dir": str(production_keys)})


@pytest.mark.parametrize("base", ["https://edc.example.org/edc", "ftp://edc.example.org", "https://user@edc.example.org",
                                  "https://edc.example.org?x=1", "https://edc.example.org:99999", "edc.example.org"])
def test_public_base_url_is_scheme_host_and_port_only(base):
    with pytest.raises(SettingsError, match=r"scheme://host\[:port\] with no path"):
        load_settings({"public_base_url": base}, environ={})


def test_public_base_url_outside_production_defaults_to_the_development_address():
    assert load_settings(environ={})["public_base_url"] == "http://127.0.0.1:8000"
    assert load_settings(environ={"EDC_ENV": "testing"})["public_base_url"] == "http://localhost"
    assert load_settings({"public_base_url": "https://edc.example.org/"}, environ={})["public_base_url"] == PUBLIC_BASE_URL


def test_mail_links_follow_public_base_url_unless_mail_link_base_names_another_address():
    assert load_settings({"public_base_url": PUBLIC_BASE_URL}, environ={})["mail_link_base"] == PUBLIC_BASE_URL
    other = {"public_base_url": PUBLIC_BASE_URL, "mail_link_base": "https://mail-links.example.org"}
    assert load_settings(other, environ={})["mail_link_base"] == "https://mail-links.example.org"
