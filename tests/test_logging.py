"""One JSON line per request, with who and what, and never a password or token."""

import json
import logging

from conftest import PASSWORD, bearer, login


def request_lines(caplog):
    return [r.fields for r in caplog.records if r.name == "edc.request" and hasattr(r, "fields")]


def test_each_request_logs_one_structured_line(client, staff, caplog):
    caplog.set_level(logging.INFO, logger="edc")
    tokens = login(client, staff["investigator"])
    caplog.clear()
    response = client.get("/api/v1/me", headers=bearer(tokens))
    (line,) = request_lines(caplog)
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["user"] == staff["investigator"] and line["role"] == ["investigator"] and line["site"] == ["ES01"]
    assert line["method"] == "GET" and line["route"] == "/api/v1/me" and line["status"] == 200
    assert isinstance(line["duration_ms"], float)


def test_logs_never_hold_passwords_or_tokens(client, staff, caplog, capsys):
    caplog.set_level(logging.INFO, logger="edc")
    tokens = login(client, staff["admin"])
    client.post("/api/v1/auth/login", json={"username": staff["admin"], "password": "canary-wrong-password"})
    client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    client.get("/api/v1/me", headers={"Authorization": "Bearer canary.forged.token"})
    logged = caplog.text + capsys.readouterr().err
    for secret in (PASSWORD, "canary-wrong-password", tokens["access_token"], tokens["refresh_token"], "canary.forged.token"):
        assert secret not in logged


def test_refused_tokens_are_logged_with_a_reason_for_operators(client, staff, caplog):
    caplog.set_level(logging.INFO, logger="edc")
    client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-jwt"})
    (line,) = request_lines(caplog)
    assert line["status"] == 401 and line["detail"].startswith("malformed")


def test_log_lines_are_single_line_json_even_with_newlines_in_input(client, caplog):
    from edc.logs import JsonFormatter

    caplog.set_level(logging.INFO, logger="edc")
    client.post("/api/v1/auth/login", json={"username": "bob\nINFO admin logged in", "password": "x"})
    for record in caplog.records:
        text = JsonFormatter().format(record)
        assert "\n" not in text and json.loads(text)
