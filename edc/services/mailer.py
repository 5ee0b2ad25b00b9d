"""The mailer: delivers pending outbox records by SMTP to the addresses routed per site and role.

A mail says what happened and where to look (kind, site, subject number, due time, link path);
never a clinical value or a person's identity. An account mail goes to its one recipient and carries
the setup token, which the mailer alone opens from its sealed record, just before sending; the secret is
erased once the record is sent or has failed for good. A failed delivery is retried with exponential
backoff and marked "failed" after mailer_max_attempts; a delivered one is marked "sent".

Unlike the request services, a delivery pass commits after each record: the mail has left the
building once the SMTP server accepted it, so its outcome must be durable at once (a crash then
re-sends at most the one record in flight). Records are claimed with SKIP LOCKED on PostgreSQL so
two workers never send the same record.
"""

from __future__ import annotations

import logging
import os
import smtplib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock
from edc.models.monitoring import ACCOUNT_MAIL_KINDS, OutboxMessage
from edc.models.sites import Site
from edc.models.users import RoleAssignment, User
from edc.security import crypto
from edc.security.permissions import GLOBAL_ROLES
from edc.services import notifications, outbox

log = logging.getLogger(__name__)

SUBJECTS = {
    "sae_new": "New serious adverse event",
    "critical_query": "Critical data query",
    "safety_clock_due": "Safety-reporting deadline approaching",
    "account_setup": "Set the password of your new account",
    "password_reset": "Your password was reset: set a new one",
}
SETUP_PATH = "/api/v1/auth/setup"
WEB_SETUP_PATH = "/setup"  # the web page with the same form (edc/web/pages/account.py)
LINKS = {
    "sae_new": "/api/v1/safety/clocks?subject={subject}",
    "critical_query": "/api/v1/queries?subject={subject}",
    "safety_clock_due": "/api/v1/safety/clocks?subject={subject}",
}
ERROR_LENGTH = 500
SMTP_PASSWORD_VARIABLE = "EDC_SMTP_PASSWORD"


@dataclass
class PassResult:
    enqueued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0


class DeliveryError(Exception):
    """A record could not be delivered this time (no recipients, SMTP refused or unreachable)."""


def cycle(session: Session, settings: dict[str, Any]) -> PassResult:
    """One worker cycle: enqueue clocks due soon, then deliver what is pending (commits)."""
    enqueued = notifications.enqueue_due_clocks(session, clock.utcnow())
    session.commit()
    result = deliver_pending(session, settings)
    result.enqueued = enqueued
    return result


def deliver_pending(session: Session, settings: dict[str, Any]) -> PassResult:
    """Deliver pending records whose next attempt is due, one at a time, committing each outcome."""
    result = PassResult()
    if not settings["smtp_host"]:
        waiting = _due_count(session)
        if waiting:
            log.warning("mailer: smtp_host is not set; %d record(s) stay pending", waiting)
        return result
    attempted: set[uuid.UUID] = set()
    for _ in range(settings["mailer_batch_size"]):
        record = _claim_next(session, attempted)
        if record is None:
            break
        attempted.add(record.id)
        now = clock.utcnow()
        record.attempts += 1
        record.updated_at = now
        try:
            send(settings, record, recipients(session, settings, record), _site_code(session, record),
                 _secret(session, record))
        except (DeliveryError, smtplib.SMTPException, OSError) as exc:
            record.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
            if record.attempts >= settings["mailer_max_attempts"]:
                record.status, record.sealed_secret = "failed", None
                result.failed += 1
                log.warning("mailer: %s record %s failed for good after %d attempts", record.kind, record.id, record.attempts)
            else:
                record.next_attempt_at = now + backoff(settings, record.attempts)
                result.retried += 1
        else:
            record.status, record.sent_at, record.last_error, record.sealed_secret = "sent", now, None, None
            result.sent += 1
        session.commit()
    return result


def backoff(settings: dict[str, Any], attempts: int) -> timedelta:
    """Delay before the next attempt after `attempts` failures: base * 2^(attempts-1), capped."""
    seconds = settings["mailer_backoff_seconds"] * 2 ** (attempts - 1)
    return timedelta(seconds=min(seconds, settings["mailer_backoff_max_seconds"]))


def _due_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count(OutboxMessage.id))
                          .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= clock.utcnow())) or 0


def _claim_next(session: Session, attempted: set[uuid.UUID]) -> OutboxMessage | None:
    stmt = (sa.select(OutboxMessage)
            .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= clock.utcnow())
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(1)
            .with_for_update(skip_locked=True))
    if attempted:
        stmt = stmt.where(OutboxMessage.id.not_in(attempted))
    return session.scalars(stmt).one_or_none()


def _site_code(session: Session, record: OutboxMessage) -> str | None:
    return session.scalar(sa.select(Site.code).where(Site.id == record.site_id)) if record.site_id else None


def _secret(session: Session, record: OutboxMessage) -> dict[str, Any] | None:
    """An account mail's sealed secret, opened for this one send; None for a notification."""
    if record.kind not in ACCOUNT_MAIL_KINDS:
        return None
    try:
        return outbox.open_secret(session, record)
    except crypto.DecryptionError as exc:
        raise DeliveryError(str(exc)) from None


def recipients(session: Session, settings: dict[str, Any], record: OutboxMessage) -> list[str]:
    """Addresses for a record: an account mail's own recipient; for a notification, active users holding
    a routed role at its site (or globally), plus the site's extras."""
    if record.kind in ACCOUNT_MAIL_KINDS:
        return [record.recipient] if record.recipient else []
    roles = settings["mail_routes"].get(record.kind, [])
    addresses: set[str] = set()
    if roles:
        at_site = RoleAssignment.site_id == record.site_id if record.site_id else sa.false()
        stmt = (sa.select(User.email).join(RoleAssignment, RoleAssignment.user_id == User.id)
                .where(User.status == "active", User.email.is_not(None), RoleAssignment.revoked_at.is_(None),
                       RoleAssignment.role.in_(roles),
                       sa.or_(RoleAssignment.site_id.is_(None) & RoleAssignment.role.in_(GLOBAL_ROLES), at_site)))
        addresses.update(email for email in session.scalars(stmt) if email)
    code = _site_code(session, record)
    if code:
        addresses.update(settings["mail_site_addresses"].get(code, []))
    return sorted(addresses)


def compose(settings: dict[str, Any], record: OutboxMessage, site_code: str | None,
            secret: dict[str, Any] | None = None) -> EmailMessage:
    """The plain-text mail for a record: kind, site, subject number, due time and a link path, nothing else
    (an account mail: the account's name and its setup token)."""
    if record.kind in ACCOUNT_MAIL_KINDS:
        return _compose_account_mail(settings, record, secret)
    subject_number = record.subject_number or "-"
    link = settings["mail_link_base"].rstrip("/") + LINKS[record.kind].format(subject=subject_number)
    lines = [
        f"Notification: {record.kind}",
        f"Site: {site_code or '-'}",
        f"Subject: {subject_number}",
        f"Due: {_utc(record.due_at)}",
        f"Open: {link}",
        "",
        "Sign in to edc to see the details. This message carries no clinical data.",
    ]
    return _message(settings, record, f"[edc] {SUBJECTS[record.kind]}: {site_code or '-'} {subject_number}", lines)


def _compose_account_mail(settings: dict[str, Any], record: OutboxMessage, secret: dict[str, Any] | None) -> EmailMessage:
    if secret is None:
        raise DeliveryError(f"outbox record {record.id} has no secret to send")
    setup_url = settings["mail_link_base"].rstrip("/") + SETUP_PATH
    web_setup_url = settings["mail_link_base"].rstrip("/") + WEB_SETUP_PATH
    lines = [
        f"Account: {secret['username']}",
        "",
        "An administrator created this account for you." if record.kind == "account_setup" else
        "An administrator reset the password of this account; your sessions have ended.",
        f"Set your password with this one-time setup token (valid until {secret['expires_at']}):",
        "",
        f"    {secret['token']}",
        "",
        f"In a browser, open {web_setup_url} and enter it there with the password you choose.",
        f"From a program, send it with the password to {setup_url}",
        '    (POST, JSON: {"token": "<the token above>", "new_password": "<your password>"})',
        "",
        "Nobody else has this token, and nobody will ever ask you for it or for your password.",
        "If you did not expect this mail, tell your study's data management.",
    ]
    return _message(settings, record, f"[edc] {SUBJECTS[record.kind]}", lines)


def _message(settings: dict[str, Any], record: OutboxMessage, subject: str, lines: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings["smtp_from"]
    message["Message-ID"] = f"<{record.id}@edc>"
    message.set_content("\n".join(lines) + "\n")
    return message


def send(settings: dict[str, Any], record: OutboxMessage, to: list[str], site_code: str | None,
         secret: dict[str, Any] | None = None) -> None:
    """Send one record's mail to its recipients; raise on any failure."""
    if not to:
        raise DeliveryError(f"no recipients for {record.kind} at site {site_code or '-'}")
    message = compose(settings, record, site_code, secret)
    message["To"] = ", ".join(to)
    with smtplib.SMTP(settings["smtp_host"], settings["smtp_port"], timeout=settings["smtp_timeout_seconds"]) as smtp:
        if settings["smtp_starttls"]:
            smtp.starttls()
        if settings["smtp_username"]:  # the password stays out of settings (and their dumps): environment only
            smtp.login(settings["smtp_username"], os.environ.get(SMTP_PASSWORD_VARIABLE, ""))
        refused = smtp.send_message(message)
    if refused:  # accepted for some recipients only: retrying would duplicate, so record it and count it sent
        log.warning("mailer: %s record %s refused for %d recipient(s)", record.kind, record.id, len(refused))


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "-"
