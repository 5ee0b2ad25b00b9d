"""OpenAPI, the offline docs page, health, JWKS and the security headers."""

import re

from conftest import bearer, login


def test_openapi_is_3_1_and_lists_the_api(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert {"/api/v1/auth/login", "/api/v1/me", "/api/v1/sites", "/api/v1/users"} <= set(spec["paths"])
    assert "bearerAuth" in spec["components"]["securitySchemes"]


def test_docs_page_loads_only_local_assets(client):
    with client.get("/api/docs/") as page:
        html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "/api/openapi.json" in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    for asset in assets:
        with client.get(asset) as response:
            assert response.status_code == 200, asset


def test_healthz_and_readyz(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json()["status"] == "ready"


def test_jwks_publishes_public_keys_only(client):
    response = client.get("/.well-known/jwks.json")
    keys = response.get_json()["keys"]
    assert keys and all(k["kty"] == "EC" and k["alg"] == "ES256" and k["kid"] for k in keys)
    assert not [k for k in keys if "d" in k]


def test_authenticated_responses_are_not_cached_and_carry_security_headers(client, staff):
    response = client.get("/api/v1/me", headers=bearer(login(client, staff["auditor"])))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_errors_carry_security_headers_too(client):
    response = client.get("/api/v1/me")
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Content-Type-Options"] == "nosniff"
