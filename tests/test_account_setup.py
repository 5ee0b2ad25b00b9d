"""A setup link reaches only its user (21 CFR 11.200(a)(3)): after an administrator creates an account or resets
a password, nothing the administrator (or anyone else) can read through the API, the audit trail, the outbox
or the logs lets them sign in as that user; the mail the mailer really sends (to a real SMTP server started
by the test) carries the token, and the user redeems it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid

import pytest
import sqlalchemy as sa

from account_mail import give_email
from conftest import bearer, login, problem
from edc.api.openapi import QUERY_PARAMETERS_KEY
from edc.models.monitoring import OutboxMessage
from edc.security import crypto
from edc.services import outbox
from monitoring.test_notifications import run_mailer, smtp_server  # noqa: F401  (the fixture)

LINK_BASE = "https://edc.trial.example"
TOKEN_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)
# A value for each path parameter of the API, to reach every GET route (most answer 403 or 404 to an admin).
PATH_VALUES = {"code": "ES01", "form_id": "vitals", "number": "ES01-0001", "subject_id": "ES01-0001",
               "job_id": str(uuid.uuid4()), "name": "manifest.json", "path": "index.html"}


@pytest.fixture
def mail(app, smtp_server):  # noqa: F811
    """The test's app sending mail to the test's SMTP server; yields its inbox."""
    inbox, port = smtp_server
    app.config["EDC"].update(smtp_host="127.0.0.1", smtp_port=port, smtp_from="edc@trial.example",
                             mail_link_base=LINK_BASE)
    return inbox


def delivered_token(app, inbox, address: str) -> str:
    """Run the mailer; the setup token of the one mail it sent to `address`."""
    run_mailer(app)
    [message] = [message for to, message in inbox.mails if to == [address]]
    body = message.get_payload(decode=True).decode()
    assert f"{LINK_BASE}/api/v1/auth/setup" in body
    return TOKEN_LINE.search(body).group(1)


def every_get(client, headers, username: str) -> list[str]:
    """What one caller can read: every GET route of the app, as status, headers and body."""
    adapter = client.application.url_map.bind("localhost")
    documented = client.application.extensions[QUERY_PARAMETERS_KEY]  # a parameter a route lacks would be a 422
    seen = []
    for rule in client.application.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        values = {name: PATH_VALUES.get(name, uuid.uuid4()) for name in rule.arguments}
        if "username" in values:
            values["username"] = username
        path = adapter.build(rule.endpoint, values)
        paged = "page_size" in documented.get((rule.endpoint, "GET"), ())
        response = client.get(path, query_string={"page_size": 100} if paged else None, headers=headers)
        seen.append(f"{path} {response.status_code} {dict(response.headers)} {response.get_data(as_text=True)}")
    return seen


def our_log_lines(caplog) -> str:
    """Every log line but the test SMTP server's own (aiosmtpd logs each mail it receives, on the user's side)."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith("mail.log"))


def raw_rows(session, table: str) -> str:
    return repr(session.execute(sa.text(f"SELECT * FROM {table}")).all())


def test_an_admin_learns_nothing_that_signs_in_as_a_reset_or_new_user(app, client, staff, session, mail, caplog,
                                                                       capsys):
    caplog.set_level(logging.DEBUG)
    admin = bearer(login(client, staff["admin"]))
    pi_address = give_email(session, staff["investigator"], "pi@es01.example")
    answers = [client.post(f"/api/v1/users/{staff['investigator']}/reset", json={"reason": "lost password"},
                           headers=admin),
               client.post("/api/v1/users", json={"username": "sub.pi", "display_name": "Sub PI",
                                                  "email": "sub.pi@es01.example"}, headers=admin)]
    assert [a.status_code for a in answers] == [200, 201]
    stored_before_sending = raw_rows(session, "outbox") + raw_rows(session, "users")

    tokens = [delivered_token(app, mail, pi_address), delivered_token(app, mail, "sub.pi@es01.example")]

    readers = {name: bearer(login(client, staff[name])) for name in ("data_manager", "auditor")}
    readable = [f"{a.headers} {a.get_data(as_text=True)}" for a in answers]
    readable += every_get(client, admin, staff["investigator"]) + every_get(client, admin, "sub.pi")
    for headers in readers.values():  # the outbox's and the audit trail's readers
        readable += every_get(client, headers, staff["investigator"])
    assert any("password_reset" in text and pi_address in text for text in readable)  # the outbox listing was read
    for token in tokens:
        secrets = (token, hashlib.sha256(token.encode()).hexdigest())
        assert not [text[:120] for text in readable if any(secret in text for secret in secrets)]
        assert token not in stored_before_sending and token not in raw_rows(session, "audit_records")
        assert token not in our_log_lines(caplog) and token not in "".join(capsys.readouterr())

    # The users, and only they, set their passwords with what the mail brought.
    for username, token in ((staff["investigator"], tokens[0]), ("sub.pi", tokens[1])):
        assert client.post("/api/v1/auth/setup", json={"token": token, "new_password": "only-i-know-this-1"}).status_code == 204
        assert login(client, username, "only-i-know-this-1")["password_change_required"] is False


def test_the_outbox_lists_an_account_mail_by_recipient_and_never_its_secret(app, client, staff, session, mail):
    admin = bearer(login(client, staff["admin"]))
    address = give_email(session, staff["monitor"])
    assert client.post(f"/api/v1/users/{staff['monitor']}/reset", json={"reason": "x"}, headers=admin).status_code == 200
    data_manager = bearer(login(client, staff["data_manager"]))
    [record] = client.get("/api/v1/outbox", headers=data_manager).get_json()["items"]
    assert record["kind"] == "password_reset" and record["recipient"] == address and record["status"] == "pending"
    assert set(record) == {"id", "kind", "recipient", "site", "subject", "due_at", "status", "attempts", "next_attempt_at",
                           "sent_at", "last_error", "created_at"}
    delivered_token(app, mail, address)
    [sent] = client.get("/api/v1/outbox", headers=data_manager).get_json()["items"]
    assert sent["status"] == "sent"
    session.expire_all()
    assert session.scalars(sa.select(OutboxMessage.sealed_secret)).one() is None  # erased once delivered


def test_a_sealed_setup_link_opens_only_on_its_own_record(client, staff, session):
    admin = bearer(login(client, staff["admin"]))
    for name in ("monitor", "statistician"):
        give_email(session, staff[name])
        client.post(f"/api/v1/users/{staff[name]}/reset", json={"reason": "x"}, headers=admin)
    first, second = session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.recipient)).all()
    assert outbox.open_secret(session, first)["username"] == staff["monitor"]
    session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == second.id).values(sealed_secret=first.sealed_secret))
    session.commit()
    session.expire_all()
    with pytest.raises(crypto.DecryptionError):
        outbox.open_secret(session, session.get(OutboxMessage, second.id))


def test_the_mailer_never_sends_a_moved_setup_link(app, client, staff, session, mail):
    admin = bearer(login(client, staff["admin"]))
    for name in ("monitor", "statistician"):
        give_email(session, staff[name])
        client.post(f"/api/v1/users/{staff[name]}/reset", json={"reason": "x"}, headers=admin)
    first, second = session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.recipient)).all()
    session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == second.id).values(sealed_secret=first.sealed_secret))
    session.commit()
    run_mailer(app)
    assert [to for to, _ in mail.mails] == [[first.recipient]]
    session.expire_all()
    assert session.get(OutboxMessage, second.id).status == "pending"
    assert "cannot be decrypted" in session.get(OutboxMessage, second.id).last_error


def test_the_reset_answer_says_where_the_link_went(client, staff, session):
    admin = bearer(login(client, staff["admin"]))
    give_email(session, staff["monitor"], "mon@it01.example")
    body = client.post(f"/api/v1/users/{staff['monitor']}/reset", json={"reason": "x"}, headers=admin).get_json()
    assert body["setup_link_sent_to"] == "mon@it01.example" and body["setup_link_expires_at"]
    problem(client.post("/api/v1/users/nobody/reset", json={"reason": "x"}, headers=admin), 404)


def test_the_openapi_document_has_no_setup_token_in_any_response(client):
    spec = client.get("/api/openapi.json").get_json()
    for name in ("UserCreatedOut", "SetupMailedOut"):
        properties = spec["components"]["schemas"][name]["properties"]
        assert "setup_token" not in properties and "setup_link_sent_to" in properties
    assert "SetupTokenOut" not in spec["components"]["schemas"]
    assert "email" in spec["components"]["schemas"]["UserIn"]["required"]
