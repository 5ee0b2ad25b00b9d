"""Notifications: outbox records written with the events they report, GET /api/v1/outbox, and the mailer
delivering them end to end to a real SMTP server (aiosmtpd) started by the test, with retry and backoff.

Records and mails carry the kind, site, subject number, due time and a link path only: no clinical
value (the AE term, its narrative, its grade) and no identity of a person.
"""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from conftest import bearer, count_rows, login, problem
from monitoring.conftest import username_of
from trial.conftest import TRIAL_FORMS
from trial.test_safety_clocks import BASE, SAE_DUE, SAE_SUPPLEMENT, ae

ACCOUNTS_WITH_EMAIL = ("investigator_ES01", "investigator_IT01", "coordinator_ES01", "monitor_ES01", "safety",
                       "data_manager", "statistician")
CLINICAL_WORDS = (BASE["AETERM"], SAE_SUPPLEMENT["SAENARR"], "Neutropenic", "RELATED", "hospital", "Grade")


def outbox(monitoring, role="safety", **params):
    response = monitoring.client.get("/api/v1/outbox", query_string=params, headers=monitoring.headers[role])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def later(monitoring, fake_clock, **delta):
    fake_clock.advance(**delta)
    for name in monitoring.headers:
        monitoring.headers[name] = bearer(login(monitoring.client, username_of(name)))


def email_of(account: str) -> str:
    return f"{username_of(account)}@mail.example"


@pytest.fixture
def addressed(monitoring, session):
    """Give the accounts email addresses (what routing reads) and return the fixture."""
    from sqlalchemy import text

    for account in ACCOUNTS_WITH_EMAIL:
        session.execute(text("UPDATE users SET email = :email WHERE username = :username"),
                        {"email": email_of(account), "username": username_of(account)})
    session.commit()
    return monitoring


class Inbox:
    """An aiosmtpd handler that keeps every accepted mail, or refuses every one with a 451."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return "451 4.3.0 Mailbox temporarily unavailable"
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.original_content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    """Start a real SMTP server on a free local port; yields (inbox, port)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def mailer_app(app_factory, port, **overrides):
    settings = {"forms_dir": TRIAL_FORMS, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "edc@trial.example",
                "mail_link_base": "https://edc.trial.example", "mailer_backoff_seconds": 60,
                "mail_site_addresses": {"ES01": ["safety-desk@es01.example"]}, **overrides}
    return app_factory(**settings)


def run_mailer(app, *args):
    result = app.test_cli_runner().invoke(args=["edc", "mailer", "--once", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# --- the SAE record, in the AE save's transaction ---------------------------------------------

def test_a_new_sae_writes_one_outbox_record_with_kind_site_subject_and_due_time(monitoring):
    number = monitoring.enrol()
    entry = monitoring.saved(number, "ae", ae(), complete=False)
    [record] = outbox(monitoring)["items"]
    assert record["kind"] == "sae_new" and record["site"] == "ES01" and record["subject"] == number
    assert record["due_at"].startswith(SAE_DUE[:19]) and record["status"] == "pending" and record["attempts"] == 0
    assert record["recipient"] is None  # (an account mail's addressee)
    assert set(record) == {"id", "kind", "recipient", "site", "subject", "due_at", "status", "attempts", "next_attempt_at", "sent_at",
                           "last_error", "created_at"}
    # Saving the same SAE again (complete now) is no new SAE.
    assert monitoring.update(entry["id"], ae()).status_code == 200
    assert outbox(monitoring)["total"] == 1


def test_a_non_serious_ae_writes_no_outbox_record(monitoring):
    monitoring.saved(monitoring.enrol(), "ae", ae(AESHOSP="N"))
    assert outbox(monitoring, "data_manager")["total"] == 0


def test_a_rejected_sae_save_writes_no_outbox_record(monitoring, session):
    number = monitoring.enrol()
    response = monitoring.save(number, "ae", ae(AEONGO="N", AEENDAT="2026-11-01"))      # ends before it starts
    problem(response, 422)
    assert count_rows(session, "outbox") == 0 and count_rows(session, "safety_clocks") == 0
    problem(monitoring.save(number, "ae", ae(), role="monitor_ES01"), 403)              # monitors do not enter data
    assert count_rows(session, "outbox") == 0


# --- GET /api/v1/outbox -----------------------------------------------------------------------

def test_outbox_is_for_data_managers_and_safety_only_and_filters_by_status_and_kind(monitoring):
    monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)
    monitoring.saved(monitoring.enrol(site="IT01"), "ae", ae(), complete=False, role="investigator_IT01")
    for role in ("investigator_ES01", "coordinator_ES01", "monitor_ES01", "statistician", "auditor", "admin"):
        problem(monitoring.client.get("/api/v1/outbox", headers=monitoring.headers[role]), 403)
    problem(monitoring.client.get("/api/v1/outbox"), 401)
    assert outbox(monitoring, "data_manager")["total"] == 2
    assert outbox(monitoring, kind="sae_new", status="pending")["total"] == 2
    assert outbox(monitoring, kind="safety_clock_due")["total"] == 0
    assert outbox(monitoring, status="sent")["total"] == 0
    page = outbox(monitoring, page_size=1, page=2)
    assert page["total"] == 2 and len(page["items"]) == 1
    for bad in ({"status": "lost"}, {"kind": "sms"}, {"page": 0}):
        problem(monitoring.client.get("/api/v1/outbox", query_string=bad, headers=monitoring.headers["safety"]), 422)


# --- safety clocks due within 6 hours ----------------------------------------------------------

def test_a_clock_within_six_hours_of_its_due_time_gets_one_record_per_due_time(monitoring, app_factory, fake_clock):
    app = app_factory(forms_dir=TRIAL_FORMS)                      # no smtp_host: records are made, not mailed
    number = monitoring.enrol()
    monitoring.saved(number, "ae", ae(), complete=False)          # due 2026-11-21 07:30 UTC
    run_mailer(app)
    assert outbox(monitoring, kind="safety_clock_due")["total"] == 0
    later(monitoring, fake_clock, hours=16, minutes=31)           # 01:31: 5 h 59 min left
    run_mailer(app)
    run_mailer(app)
    [record] = outbox(monitoring, kind="safety_clock_due")["items"]
    assert record["subject"] == number and record["site"] == "ES01" and record["due_at"].startswith(SAE_DUE[:19])
    assert record["status"] == "pending"                          # mail is off: it waits


def test_a_stopped_clock_gets_no_due_record(monitoring, app_factory, fake_clock):
    app = app_factory(forms_dir=TRIAL_FORMS)
    entry = monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)
    assert monitoring.update(entry["id"], ae()).status_code == 200       # complete: the clock stops
    later(monitoring, fake_clock, hours=20)
    run_mailer(app)
    assert outbox(monitoring, kind="safety_clock_due")["total"] == 0


# --- the mailer, end to end -------------------------------------------------------------------

def test_mailer_delivers_to_routed_site_and_global_addresses_without_clinical_values(
        addressed, app_factory, smtp_server, fake_clock):
    monitoring, (inbox, port) = addressed, smtp_server
    number = monitoring.enrol()
    monitoring.saved(number, "ae", ae(), complete=False)
    output = run_mailer(mailer_app(app_factory, port))
    assert "1 sent" in output
    [(recipients, mail)] = inbox.mails
    # sae_new -> investigators of the site, safety, data managers; plus the site's extra address.
    assert sorted(recipients) == sorted([email_of("investigator_ES01"), email_of("safety"), email_of("data_manager"),
                                         "safety-desk@es01.example"])
    body = mail.get_payload(decode=True).decode()
    assert mail["From"] == "edc@trial.example" and mail.get_content_type() == "text/plain"
    assert "sae_new" in body and "ES01" in body and number in body and "2026-11-21 07:30 UTC" in body
    assert f"https://edc.trial.example/api/v1/safety/clocks?subject={number}" in body
    whole = mail.as_string()
    for word in CLINICAL_WORDS:
        assert word.lower() not in body.lower(), word
    assert "@" not in body and "Investigator-Es01" not in whole                # no person named in the text
    assert BASE["AETERM"] not in whole and SAE_SUPPLEMENT["SAENARR"] not in whole
    [record] = outbox(monitoring)["items"]
    assert record["status"] == "sent" and record["attempts"] == 1 and record["sent_at"].startswith("2026-11-20T09:00")
    run_mailer(mailer_app(app_factory, port))
    assert len(inbox.mails) == 1                                          # sent once only


def test_mailer_retries_with_backoff_then_marks_the_record_failed(monitoring, app_factory, smtp_server, fake_clock):
    inbox, port = smtp_server
    inbox.refuse = True
    monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)
    app = mailer_app(app_factory, port, mailer_max_attempts=3)
    assert "1 to retry" in run_mailer(app)
    [record] = outbox(monitoring)["items"]
    assert record["status"] == "pending" and record["attempts"] == 1 and "451" in record["last_error"]
    assert record["next_attempt_at"].startswith("2026-11-20T09:01:00")   # 60 s
    assert "0 to retry" in run_mailer(app)                               # not yet due: untouched
    assert outbox(monitoring)["items"][0]["attempts"] == 1
    fake_clock.advance(seconds=60)
    run_mailer(app)
    assert outbox(monitoring)["items"][0]["next_attempt_at"].startswith("2026-11-20T09:03:00")   # then 120 s
    fake_clock.advance(seconds=120)
    assert "1 failed" in run_mailer(app)
    [record] = outbox(monitoring, "data_manager", status="failed")["items"]
    assert record["attempts"] == 3 and record["sent_at"] is None
    later(monitoring, fake_clock, days=1)
    run_mailer(app)
    assert outbox(monitoring, status="failed")["items"][0]["attempts"] == 3 and inbox.mails == []


def test_an_unreachable_server_and_a_record_without_recipients_are_retried(monitoring, app_factory, fake_clock):
    monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)     # nobody has an email address
    app = mailer_app(app_factory, free_port(), mail_site_addresses={}, mailer_max_attempts=2)
    run_mailer(app)
    assert "no recipients" in outbox(monitoring)["items"][0]["last_error"]
    unreachable = mailer_app(app_factory, free_port(), mailer_max_attempts=2)   # nothing listens there
    fake_clock.advance(minutes=2)
    run_mailer(unreachable)
    [record] = outbox(monitoring)["items"]
    assert record["status"] == "failed" and record["attempts"] == 2 and "Connection" in record["last_error"]


def test_worker_runs_the_mailer(addressed, app_factory, smtp_server):
    monitoring, (inbox, port) = addressed, smtp_server
    monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)
    result = mailer_app(app_factory, port).test_cli_runner().invoke(args=["edc", "worker", "--once"], catch_exceptions=False)
    assert result.exit_code == 0 and "1 sent" in result.output
    assert len(inbox.mails) == 1


# The test server takes AUTH over plain text on the loopback; production sets smtp_starttls.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")  # aiosmtpd's own
def test_mailer_logs_in_with_the_username_setting_and_the_password_from_the_environment(
        addressed, app_factory, monkeypatch, fake_clock):
    from aiosmtpd.smtp import AuthResult

    monitoring, inbox, port = addressed, Inbox(), free_port()

    def authenticate(server, session, envelope, mechanism, auth_data):
        given = [v.decode() if isinstance(v, bytes) else v for v in (auth_data.login, auth_data.password)]
        return AuthResult(success=given == ["edc-mailer", "s3cret-from-env"], handled=False)  # 535 when refused

    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_required=True,
                            auth_require_tls=False)
    controller.start()
    try:
        monitoring.saved(monitoring.enrol(), "ae", ae(), complete=False)
        app = mailer_app(app_factory, port, smtp_username="edc-mailer")
        monkeypatch.setenv("EDC_SMTP_PASSWORD", "wrong")
        run_mailer(app)
        assert inbox.mails == [] and "Authentication" in outbox(monitoring)["items"][0]["last_error"]
        monkeypatch.setenv("EDC_SMTP_PASSWORD", "s3cret-from-env")
        later(monitoring, fake_clock, minutes=2)
        run_mailer(app)
        assert len(inbox.mails) == 1 and outbox(monitoring)["items"][0]["status"] == "sent"
    finally:
        controller.stop()


# --- settings ---------------------------------------------------------------------------------

def test_mail_settings_are_validated_and_routes_can_come_from_the_environment():
    from edc.settings import SettingsError, load_settings

    routes = load_settings(environ={"EDC_MAIL_ROUTES": '{"sae_new": ["safety"]}'})["mail_routes"]
    assert routes == {"sae_new": ["safety"]}
    for overrides, message in [
        ({"mail_routes": {"sms": ["safety"]}}, "unknown notification kind"),
        ({"mail_routes": {"sae_new": ["pharmacist"]}}, "list of roles"),
        ({"mail_site_addresses": {"ES01": ["not-an-address"]}}, "email addresses"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"mailer_max_attempts": 0}, "mailer_max_attempts"),
        ({"smtp_host": "mail.example", "smtp_from": "edc"}, "smtp_from"),
    ]:
        with pytest.raises(SettingsError, match=message):
            load_settings(overrides, environ={})
    with pytest.raises(SettingsError, match="JSON object"):
        load_settings(environ={"EDC_MAIL_ROUTES": "sae_new=safety"})
