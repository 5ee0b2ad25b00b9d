"""kill -9 under write load: clients save entries through gunicorn while a worker, then the master, is killed with
SIGKILL and the server restarted. Every save that was answered 201 is there exactly once with its audit record;
nothing is half-written; the audit chains verify; the form-status table and subject summaries match a recount.

The long version (more clients, more kills, minutes) is bench/fault_kill.py; its figures are in docs/reliability.md.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from conftest import bearer, login
from faults.conftest import audit_verify, half_written, http_call, recount_differences

CLIENTS = 8
PROGRESS = 10  # saves answered between two faults: the server is shown to take writes again each time
SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
AE = {"AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "POSSIBLE"}


@dataclass
class WriteLoad:
    """CLIENTS threads, each saving adverse events of its own subject over fresh connections until stopped."""

    port: int
    token: str
    subjects: list[str]
    saved: dict[str, str] = field(default_factory=dict)     # term -> entry id, for every 201
    unanswered: set[str] = field(default_factory=set)       # terms whose request got no answer
    statuses: Counter = field(default_factory=Counter)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(len(self.subjects))]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self, k: int) -> None:
        number, i = self.subjects[k], 0
        while not self.stopping.is_set():
            i += 1
            term = f"client {k} save {i}"
            try:
                status, _, body = http_call(self.port, "POST", f"/api/v1/subjects/{number}/entries",
                                            {"form": "ae", "data": {**AE, "AETERM": term}, "complete": True},
                                            {"Authorization": f"Bearer {self.token}"})
            except (OSError, http.client.HTTPException):  # killed mid-request: the answer is lost
                with self.lock:
                    self.unanswered.add(term)
                    self.statuses["no answer"] += 1
                time.sleep(0.1)
                continue
            with self.lock:
                self.statuses[status] += 1
                if status == 201:
                    self.saved[term] = body["id"]

    def wait_for_saves(self, more: int, timeout: float = 60) -> None:
        target = len(self.saved) + more
        deadline = time.monotonic() + timeout
        while len(self.saved) < target:
            assert time.monotonic() < deadline, f"only {len(self.saved)} saves of {target} within {timeout} s: {self.statuses}"
            time.sleep(0.05)


def stored_terms(client, headers, subjects: list[str]) -> Counter:
    """(term, entry id) of every adverse event stored, read back through the API."""
    found: Counter = Counter()
    for number in subjects:
        response = client.get(f"/api/v1/subjects/{number}/entries?form=ae", headers=headers)
        assert response.status_code == 200, response.get_json()
        found.update((e["data"]["AETERM"], e["id"]) for e in response.get_json())
    return found


@pytest.mark.postgresql_only
def test_saves_answered_201_survive_sigkill_of_worker_and_master(gunicorn, app, client, staff, database_url):
    headers = bearer(login(client, staff["investigator"]))
    subjects = [client.post("/api/v1/subjects", json=SUBJECT, headers=headers).get_json()["number"] for _ in range(CLIENTS)]
    gunicorn.start()
    load = WriteLoad(gunicorn.port, headers["Authorization"].removeprefix("Bearer "), subjects)
    load.start()
    try:
        load.wait_for_saves(PROGRESS)
        gunicorn.kill_worker()
        load.wait_for_saves(PROGRESS)
        gunicorn.kill_master()
        gunicorn.start()
        load.wait_for_saves(PROGRESS)
    finally:
        load.stop()

    assert not {s for s in load.statuses if isinstance(s, int) and s >= 500 and s != 503}, load.statuses
    stored = stored_terms(client, headers, subjects)
    assert all(n == 1 for n in stored.values()), [k for k, n in stored.items() if n > 1]
    by_term = Counter(term for term, _ in stored)
    assert {term: entry_id for term, entry_id in stored if term in load.saved} == load.saved  # each 201: once, same id
    assert all(by_term[term] == 1 for term in load.saved)
    assert set(by_term) - set(load.saved) <= load.unanswered  # anything else stored was a save whose answer was lost
    assert set(half_written(app).values()) == {0}, half_written(app)
    code, output = audit_verify(app)
    assert code == 0 and ", 0 broken" in output, output
    assert recount_differences(app) == {"form_status": [], "subject_summaries": []}
