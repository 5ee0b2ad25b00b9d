"""edc: electronic data capture for the ARI-0001 paediatric ALL CAR-T trial."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edc.settings import PROJECT_ROOT, load_settings, public_host

if TYPE_CHECKING:  # Flask is imported by create_app only: the models, eCRF engine and services import without it
    from flask import Flask

API_DOCS_PATH = "/api/docs"


# Files this process creates are its account's alone: the SQLite database and its WAL, export files.
OWNER_ONLY_UMASK = 0o077


def create_app(config: dict[str, Any] | None = None, *, study: Any = None) -> Flask:
    """Build the application: settings, extensions, errors, blueprints, CLI. No side effects but one:
    the process umask becomes owner-only (gunicorn's workers, `flask edc worker` and every command
    start here, so this is the one place that covers them all).

    `study` is the edc.ecrf.Study of settings["forms_dir"] when the caller has already loaded and
    checked it (the test suite loads each forms folder once); otherwise it is loaded here.
    """
    from flask import Flask

    os.umask(OWNER_ONLY_UMASK)
    settings = load_settings(config)
    app = Flask(__name__, static_folder=None, instance_path=str(PROJECT_ROOT / "instance"))
    _configure(app, settings)
    _wire(app, settings, study)
    return app


def _configure(app: Flask, settings: dict[str, Any]) -> None:
    app.config.update(
        EDC=settings,
        DEBUG=settings["debug"],
        TESTING=settings["env"] == "testing",
        PROPAGATE_EXCEPTIONS=False,  # every error, 500 included, is answered as problem+json
        MAX_CONTENT_LENGTH=settings["max_content_length"],
        # A request naming another Host is answered 400 before any view runs (werkzeug's trusted-host check;
        # the port is not compared). No URL is built from the Host header: public_base_url is the address.
        TRUSTED_HOSTS=[public_host(settings["public_base_url"])],
        SQLALCHEMY_DATABASE_URI=settings["database_url"],
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings),
        JSON_SORT_KEYS=False,
        API_TITLE="edc — ARI-0001 paediatric ALL CAR-T trial EDC",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
            "info": {"description": f"Interactive documentation: {API_DOCS_PATH}. Errors are application/problem+json (RFC 9457)."},
        },
    )


def _engine_options(settings: dict[str, Any]) -> dict[str, Any]:
    # A failing statement's exception text and SQLAlchemy's statement log would otherwise carry every
    # bound value (clinical values, names, hashes) into the logs.
    # Every wait on the database is bounded (connect, pool, lock, statement): past it the request gets a 503.
    common = {"hide_parameters": True, "pool_timeout": settings["database_pool_timeout_seconds"]}
    if settings["database_url"].startswith("sqlite"):
        # timeout: how long a connection waits for SQLite's write lock (busy_timeout, set again by the pragmas)
        lock_wait = settings["database_lock_timeout_ms"] / 1000
        return {**common, "connect_args": {"timeout": lock_wait, "check_same_thread": False}}
    # No pre-ping: it costs a round trip per request. A connection lost to a database restart
    # fails that one request with a 503 (errors.py) and SQLAlchemy then discards the stale pool.
    limits = (f"-c statement_timeout={settings['database_statement_timeout_ms']} "
              f"-c lock_timeout={settings['database_lock_timeout_ms']}")
    # connect_args replaces the URL's own `options` (e.g. -csearch_path=...): keep those, limits after them.
    from sqlalchemy.engine import make_url

    own = make_url(settings["database_url"]).query.get("options")
    own = " ".join(own) if isinstance(own, tuple) else own
    limits = f"{own} {limits}" if own else limits
    return {**common, "pool_recycle": 3600,
            "connect_args": {"connect_timeout": settings["database_connect_timeout_seconds"], "options": limits}}


def _wire(app: Flask, settings: dict[str, Any], study: Any) -> None:
    from flask_swagger_ui import get_swaggerui_blueprint
    from werkzeug.middleware.proxy_fix import ProxyFix

    from edc import cli, errors, logs, runtime
    from edc.ecrf import load_study
    from edc.api import register_blueprints
    from edc.api.parsing import RequestJSONProvider, SafeStringConverter
    from edc.api.hooks import register as register_hooks
    from edc.api.openapi import DocumentPlugin
    from edc.database import install_sqlite_pragmas
    from edc.extensions import api, db, migrate
    from edc.web.wiring import register as register_web

    logs.configure()
    # Invalid form definitions stop the service here, before it answers anything.
    app.extensions[runtime.STUDY_KEY] = study if study is not None else load_study(settings["forms_dir"])
    if settings["trusted_proxy_hops"]:
        hops = settings["trusted_proxy_hops"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_prefix=0)  # type: ignore[method-assign]
    db.init_app(app)
    with app.app_context():
        install_sqlite_pragmas(db.engine, busy_timeout_ms=settings["database_lock_timeout_ms"],
                               synchronous=settings["sqlite_synchronous"])
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    app.json = RequestJSONProvider(app)
    app.url_map.converters["default"] = app.url_map.converters["string"] = SafeStringConverter
    api.init_app(app, spec_kwargs={"extra_plugins": [DocumentPlugin(app)]})
    register_blueprints(app, api, benchmark=settings["benchmark_endpoints"])
    app.register_blueprint(get_swaggerui_blueprint(API_DOCS_PATH, "/api/openapi.json", config={"app_name": "edc API"}))
    register_web(app)
    register_hooks(app)
    errors.register(app)  # after flask-smorest, so ours replace its handlers
    cli.register(app)
    app.wsgi_app = logs.RequestLog(app.wsgi_app)  # type: ignore[method-assign]  # outermost: sees what is sent
