"""Fixtures for tests of the trial's own forms (forms/): an app on them, the trial's roles, and helpers
that enrol subjects and save entries through the HTTP API like a site would."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import bearer, login, make_site, make_user, project_root

TRIAL_FORMS = str(project_root() / "forms")
# The trial tests run on a fixed day so that windows, ages and "not in the future" rules are stable.
TODAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Trial:
    """A client on the trial forms with one logged-in account per role (headers by role name)."""

    client: Any
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def enrol(self, *, site: str = "ES01", birth_year: int = 2016, birth_month: int = 4, sex: str = "F",
              consent_date: str = "2026-11-02", role: str | None = None) -> str:
        """Enrol a subject and return its study number."""
        body = {"site": site, "birth_year": birth_year, "birth_month": birth_month, "sex": sex, "consent_date": consent_date}
        response = self.client.post("/api/v1/subjects", json=body, headers=self.headers[role or f"investigator_{site}"])
        assert response.status_code == 201, response.get_json()
        return response.get_json()["number"]

    def save(self, number: str, form: str, data: dict[str, Any], *, event: str | None = None, instance: int = 1,
             complete: bool = True, role: str = "investigator_ES01"):
        """POST a new entry; returns the response (201 with data, warnings and queries, or a problem)."""
        body: dict[str, Any] = {"form": form, "data": data, "complete": complete}
        if event:
            body["event"], body["event_instance"] = event, instance
        return self.client.post(f"/api/v1/subjects/{number}/entries", json=body, headers=self.headers[role])

    def saved(self, number: str, form: str, data: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Save an entry that must be accepted; return its body."""
        response = self.save(number, form, data, **kwargs)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def update(self, entry_id: str, data: dict[str, Any], *, complete: bool = True, reason: str | None = "correction",
               role: str = "investigator_ES01"):
        """PUT a new item set for an entry (reads its ETag first)."""
        current = self.client.get(f"/api/v1/entries/{entry_id}", headers=self.headers[role])
        body = {"data": data, "complete": complete, "reason": reason}
        return self.client.put(f"/api/v1/entries/{entry_id}", json=body,
                               headers={**self.headers[role], "If-Match": current.headers["ETag"]})

    def entry(self, entry_id: str, role: str = "investigator_ES01") -> dict[str, Any]:
        return self.client.get(f"/api/v1/entries/{entry_id}", headers=self.headers[role]).get_json()

    def queries(self, number: str, role: str = "investigator_ES01") -> list[dict[str, Any]]:
        """Every query of the subject (from its casebook)."""
        response = self.client.get(f"/api/v1/subjects/{number}/casebook", headers=self.headers[role])
        assert response.status_code == 200, response.get_json()
        return response.get_json()["queries"]

    def open_queries(self, number: str, check: str | None = None) -> list[dict[str, Any]]:
        return [q for q in self.queries(number) if q["state"] == "open" and (check is None or q["check"] == check)]


TRIAL_ACCOUNTS = {
    "investigator_ES01": [("investigator", "ES01", True)],
    "investigator_IT01": [("investigator", "IT01", True)],
    "coordinator_ES01": [("coordinator", "ES01")],
    "monitor_ES01": [("monitor", "ES01")],
    "data_manager": [("data_manager", None)],
    "safety": [("safety", None)],
    "manufacturing": [("manufacturing", None)],
    "statistician": [("statistician", None)],
}


@pytest.fixture
def trial(app_factory, session, fake_clock) -> Trial:
    """The trial forms, sites ES01 and IT01, one account per role, and the clock fixed at TODAY."""
    fake_clock.now = TODAY
    app = app_factory(forms_dir=TRIAL_FORMS)
    make_site(session, "ES01")
    make_site(session, "IT01", time_zone="Europe/Rome")
    client = app.test_client()
    trial = Trial(client)
    for name, roles in TRIAL_ACCOUNTS.items():
        username = name.lower().replace("_", "-")
        make_user(session, username, roles)
        trial.headers[name] = bearer(login(client, username))
    return trial
