"""No value bound to a SQL statement reaches a log line or an exception text: the engine hides parameters
(a clinical value, a name, a hash would otherwise be printed with every failing statement)."""

from __future__ import annotations

import logging
import traceback
import uuid

import pytest
import sqlalchemy as sa

from edc.extensions import db
from edc.models import User

CANARY = f"CANARY-{uuid.uuid4().hex}"


def test_a_failing_statement_logs_and_raises_without_its_values(app, staff, caplog):
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # statement logging on, as an operator might set it
    duplicate = {"id": uuid.uuid4(), "username": staff["monitor"], "display_name": CANARY, "email": f"{CANARY}@example.org",
                 "must_change_password": True, "is_demo": False, "status": "active", "version": 1,
                 "created_at": sa.func.now(), "updated_at": sa.func.now()}
    with app.app_context():
        with pytest.raises(sa.exc.IntegrityError) as failed:
            db.session.execute(sa.insert(User.__table__).values(**duplicate))
        db.session.rollback()
    text = "".join(traceback.format_exception(failed.value))
    assert "INSERT INTO users" in text and "parameters hidden" in text
    assert CANARY not in text
    assert "INSERT INTO users" in caplog.text and CANARY not in caplog.text
