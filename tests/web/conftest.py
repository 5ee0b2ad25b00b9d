"""Fixtures for the web pages through Flask's test client (real requests through the WSGI app, cookies kept).
The real-browser scenarios are in tests/browser/."""

from __future__ import annotations

import re

import pytest

from conftest import PASSWORD

CSRF_INPUT = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


class WebClient:
    """A browser's view of edc: pages as text, forms posted with the CSRF token of the page they came from."""

    def __init__(self, flask_client) -> None:
        self.client = flask_client
        self.csrf: str | None = None

    def get(self, path: str, **kwargs):
        response = self.client.get(path, **kwargs)
        found = CSRF_INPUT.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs):
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=body, **kwargs)

    def login(self, username: str, password: str = PASSWORD, next_path: str = "/"):
        self.get("/login")
        response = self.post("/login", {"username": username, "password": password, "next": next_path})
        assert response.status_code == 303, response.get_data(as_text=True)[:400]
        self.get(response.headers["Location"])
        return response

    def text(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:400])
        return response.get_data(as_text=True)


@pytest.fixture
def web(app):
    return WebClient(app.test_client())


@pytest.fixture
def other_web(app):
    """A second browser (its own cookies)."""
    return WebClient(app.test_client())
