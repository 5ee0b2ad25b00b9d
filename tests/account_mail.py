"""Reading an account mail's setup token as the mailer does (outbox.open_secret), for tests that need the
user's side of a setup or reset without running an SMTP server (tests/test_account_setup.py runs one)."""

from __future__ import annotations

import sqlalchemy as sa

from edc.models import User
from edc.models.monitoring import OutboxMessage
from edc.services import outbox


def mailed_setup_token(session, username: str) -> str:
    """The token of the newest account mail to `username`'s address."""
    email = session.scalar(sa.select(User.email).where(User.username == username))
    record = session.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == email)
                             .order_by(OutboxMessage.created_at.desc()).limit(1)).one()
    return outbox.open_secret(session, record)["token"]


def give_email(session, username: str, email: str | None = None) -> str:
    """Give an account (made by make_user, without one) an email address."""
    email = email or f"{username}@mail.example"
    session.execute(sa.update(User).where(User.username == username).values(email=email))
    session.commit()
    return email
