"""Deny by default: every route declares a permission; unauthenticated callers get 401 on all but public ones."""

import re

import pytest

from conftest import problem
from edc.api.hooks import permission_for
from edc.security.permissions import MATRIX, PUBLIC

PUBLIC_ROUTES = {
    "/healthz", "/readyz", "/.well-known/jwks.json", "/api/openapi.json", "/api/docs/", "/api/docs/<path:path>",
    "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/setup",
    # FHIR discovery and the registry clients' token endpoint (SMART Backend Services), as FHIR servers have them.
    "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/auth/token",
    # The web pages' sign-in, first password, language choice and static files (edc/web/).
    "/login", "/setup", "/language", "/static/<path:name>",
}


def routes(app):
    return [r for r in app.url_map.iter_rules()]


def test_every_route_declares_a_permission(app):
    with app.test_request_context():
        missing = [r.rule for r in routes(app) if permission_for(r.endpoint) is None]
    assert missing == []


def test_only_the_agreed_routes_are_public(app):
    with app.test_request_context():
        public = {r.rule for r in routes(app) if permission_for(r.endpoint) == PUBLIC}
    assert public == PUBLIC_ROUTES


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "00000000-0000-4000-8000-000000000000" if "id" in m.group(1) else "X", rule)


def test_unauthenticated_requests_are_401_everywhere_but_public_routes(app, client):
    checked = 0
    for rule in routes(app):
        if rule.rule in PUBLIC_ROUTES:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(_concrete(rule.rule), method=method, json={})
            if rule.endpoint.startswith("web."):  # a browser is sent to sign in; a write without its CSRF token is refused
                response = client.open(_concrete(rule.rule), method=method, data={})
                if method == "GET":
                    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
                else:
                    assert response.status_code == 403 and response.mimetype == "text/html"
            elif rule.rule.startswith("/fhir/"):  # FHIR clients get an OperationOutcome, not problem+json
                assert response.status_code == 401 and response.mimetype == "application/fhir+json"
                assert response.get_json(force=True)["resourceType"] == "OperationOutcome"
            else:
                problem(response, 401)
            checked += 1
    assert checked >= 10


def test_a_route_without_permission_is_refused(app_factory):
    app = app_factory(own=True)  # the route added must not reach any other test

    @app.get("/api/v1/undeclared")
    def undeclared():
        return {"leak": True}

    problem(app.test_client().get("/api/v1/undeclared"), 403)


def test_benchmark_routes_exist_only_in_benchmark_builds(app_factory):
    normal = app_factory()
    assert not [r for r in normal.url_map.iter_rules() if r.rule.startswith("/bench")]
    bench = app_factory(benchmark_endpoints=True)
    assert bench.test_client().get("/bench/bare").get_json() == {"ok": True}
    with bench.test_request_context():
        assert permission_for("bench.bare") == PUBLIC


def test_the_matrix_only_names_known_roles():
    from edc.models.users import ROLES

    assert all(set(roles) <= set(ROLES) for roles in MATRIX.values())
    assert "admin" not in MATRIX["audit:read"]


@pytest.mark.parametrize("role, allowed", [
    ("admin", {"sites:read", "sites:manage", "users:read", "users:manage", "forms:read"}),
    ("auditor", {"sites:read", "users:read", "audit:read", "forms:read", "subjects:read", "entries:read", "clinical_audit:read",
                 "safety:read", "queries:read", "sdv:read", "signatures:read", "cuts:read", "reports:read", "casebooks:read"}),
    ("investigator", {"sites:read", "forms:read", "subjects:read", "subjects:enrol", "subjects:status", "entries:read",
                      "entries:write", "clinical_audit:read", "safety:read", "queries:read", "queries:answer",
                      "queries:message", "sdv:read", "signatures:read", "signatures:sign", "reports:read", "exports:create",
                      "casebooks:read", "archives:read"}),
    ("monitor", {"sites:read", "forms:read", "subjects:read", "entries:read", "clinical_audit:read", "safety:read",
                 "queries:read", "queries:manage", "queries:message", "sdv:read", "sdv:write", "signatures:read",
                 "reports:read", "exports:create", "casebooks:read"}),
    ("statistician", {"sites:read", "forms:read", "cuts:read", "fhir:read", "exports:create"}),
    ("registry", {"fhir:read", "exports:create"}),
])
def test_permission_matrix_by_role(role, allowed):
    from edc.security.permissions import Actor, Grant

    actor = Actor(username="x", display_name="x", grants=(Grant(role=role),))
    assert {p for p in MATRIX if actor.can(p)} == allowed


def test_admin_holds_only_administration_and_every_other_persons_role_is_clinical():
    """Separation of duties: the roles an administrator may not combine with are those reaching clinical data,
    derived from the matrix; admin itself reaches none of it."""
    from edc.models.users import ROLES
    from edc.security.permissions import ADMINISTRATION_PERMISSIONS, CLINICAL_ROLES, role_conflict

    assert {p for p, roles in MATRIX.items() if "admin" in roles} <= ADMINISTRATION_PERMISSIONS
    assert CLINICAL_ROLES == set(ROLES) - {"admin", "registry"}
    assert {"investigator", "coordinator", "monitor", "data_manager", "safety", "manufacturing"} <= CLINICAL_ROLES
    for role in CLINICAL_ROLES:
        assert role_conflict({"admin"}, role) and role_conflict({role}, "admin")
        assert role_conflict({"registry"}, role)
    assert role_conflict({"monitor"}, "investigator") is None
