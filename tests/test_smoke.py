from conftest import bearer, login


def test_health_is_public(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_login_then_me(client, staff):
    tokens = login(client, staff["admin"])
    me = client.get("/api/v1/me", headers=bearer(tokens)).get_json()
    assert me["username"] == "admin" and [r["role"] for r in me["roles"]] == ["admin"]
