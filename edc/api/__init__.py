"""HTTP API: one blueprint module per resource; marshmallow lives only here."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api


def register_blueprints(app: Flask, api: Api, *, benchmark: bool) -> None:
    from edc.api import (audit, auth, casebooks, entries, exports, fhir, fhir_bulk, health, locking, outbox, queries, reports, safety, sdv,
                         signatures, sites, smart, study, subjects, users)

    for module in (health, auth, sites, users, audit, study, subjects, entries, safety, queries, locking, sdv, signatures,
                   reports, outbox, exports, casebooks, fhir, fhir_bulk, smart):
        api.register_blueprint(module.blp)
    if benchmark:
        from edc.api import bench

        app.register_blueprint(bench.blp)
