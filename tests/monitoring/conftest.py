"""Fixtures for the monitoring workflow: the trial forms and sites (tests/trial) with every role the
workflow involves, at both sites. `monitoring.headers[name]` holds each account's bearer header;
every account's password is conftest.PASSWORD (signatures ask for it again)."""

from __future__ import annotations

import pytest

from conftest import bearer, login, make_site, make_user
from trial.conftest import TODAY, TRIAL_FORMS, Trial

MONITORING_ACCOUNTS = {
    "investigator_ES01": [("investigator", "ES01", True)],   # the principal investigator of ES01
    "subinvestigator_ES01": [("investigator", "ES01")],     # an investigator who is not the PI
    "investigator_IT01": [("investigator", "IT01", True)],
    "coordinator_ES01": [("coordinator", "ES01")],
    "coordinator_IT01": [("coordinator", "IT01")],
    "monitor_ES01": [("monitor", "ES01")],
    "monitor_IT01": [("monitor", "IT01")],
    "data_manager": [("data_manager", None)],
    "safety": [("safety", None)],
    "statistician": [("statistician", None)],
    "auditor": [("auditor", None)],
    "admin": [("admin", None)],
}


def username_of(account: str) -> str:
    return account.lower().replace("_", "-")


@pytest.fixture
def monitoring(app_factory, session, fake_clock) -> Trial:
    """The trial forms, sites ES01 and IT01, one logged-in account per monitoring role, clock fixed at TODAY."""
    fake_clock.now = TODAY
    app = app_factory(forms_dir=TRIAL_FORMS)
    make_site(session, "ES01")
    make_site(session, "IT01", time_zone="Europe/Rome")
    client = app.test_client()
    trial = Trial(client)
    for name, roles in MONITORING_ACCOUNTS.items():
        make_user(session, username_of(name), roles)
        trial.headers[name] = bearer(login(client, username_of(name)))
    return trial
