"""A model-based test of the monitoring workflow: Hypothesis interleaves enter -> query -> answer ->
verify -> sign -> lock -> unlock across the site, monitor and data-manager accounts, through HTTP,
and after every step checks the service against a small model:

- the entry's audit trail replays to its current values and status;
- a signature stays valid exactly until the signed data change;
- locked data never change (every write is refused with 409);
- each query's state is the model's, and only legal transitions succeed;
- every audit chain still verifies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import PASSWORD
from edc import clock, runtime
from edc.models import FormStatus, SdvMark, Subject, SubjectSummary
from edc.services import audit, summaries
from monitoring.conftest import username_of
from trial.conftest import TODAY

VS = {"VSDAT": TODAY.date().isoformat(), "TEMP": 36.8, "HR": 96, "SYSBP": 105, "DIABP": 65, "RESP": 20, "OXYSAT": 98,
      "WEIGHT": 32.0, "HEIGHT": 140.0}
PI, MONITOR, DM = "investigator_ES01", "monitor_ES01", "data_manager"
# Query transitions the model allows: (from state, action) -> to state.
TRANSITIONS = {("open", "answer"): "answered", ("answered", "close"): "closed", ("answered", "reopen"): "open",
               ("closed", "reopen"): "open", ("open", "cancel"): "cancelled", ("answered", "cancel"): "cancelled"}
ACTOR_OF = {"answer": PI, "close": MONITOR, "reopen": MONITOR, "cancel": MONITOR}


@dataclass
class Model:
    values: dict[str, Any]             # as stored (derived items included)
    inputs: dict[str, Any]             # as entered (what a PUT sends)
    queries: dict[str, str] = field(default_factory=dict)  # id -> state
    verified: bool = False
    signature: str | None = None       # id of the latest signature
    signature_valid: bool = False
    locked: bool = False


def replay(history: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The values and status an entry's audit records add up to."""
    values: dict[str, Any] = {}
    status = None
    for record in history:
        if record["action"] not in ("entry_created", "entry_updated"):
            continue
        for change in record["changes"]:
            if change["field"] == "@status":
                status = change["new"]
            elif change["new"] is None:
                values.pop(change["field"], None)
            else:
                values[change["field"]] = change["new"]
    return values, status


class MonitoringWorkflow(RuleBasedStateMachine):
    def __init__(self, trial, session):
        super().__init__()
        self.trial, self.session = trial, session
        self.client = trial.client

    def call(self, method: str, path: str, account: str, **kwargs):
        return self.client.open(path, method=method, headers={**self.trial.headers[account], **kwargs.pop("headers", {})},
                                **kwargs)

    @initialize()
    def enter(self):
        self.number = self.trial.enrol()
        body = self.trial.saved(self.number, "vs", VS, event="SCR")
        self.entry_id = body["id"]
        self.model = Model(values=dict(body["data"]), inputs=dict(VS))

    # --- site staff ---------------------------------------------------------------------------

    @rule(temp=st.sampled_from([36.4, 36.8, 37.9, 38.6]), hr=st.sampled_from([88, 96, 120]))
    def edit(self, temp, hr):
        data = {**self.model.inputs, "TEMP": temp, "HR": hr}
        response = self.trial.update(self.entry_id, data, reason="correction after source review")
        if self.model.locked:
            assert response.status_code == 409, response.get_json()
            return
        assert response.status_code == 200, response.get_json()
        changed = response.get_json()["data"] != self.model.values
        self.model.values, self.model.inputs = response.get_json()["data"], data
        if changed:
            self.model.verified = False
            self.model.signature_valid = False

    # --- queries ------------------------------------------------------------------------------

    @precondition(lambda self: not self.model.locked)
    @rule(item=st.sampled_from(["TEMP", "HR", None]))
    def open_query(self, item):
        body = {"entry_id": self.entry_id, "item": item, "message": "Please check against the source."}
        response = self.call("POST", "/api/v1/queries", MONITOR, json=body)
        assert response.status_code == 201, response.get_json()
        self.model.queries[response.get_json()["id"]] = "open"

    def _in(self, *states: str) -> list[str]:
        return sorted(q for q, state in self.model.queries.items() if state in states)

    def _transition(self, query_id: str, action: str) -> None:
        state = self.model.queries[query_id]
        response = self.call("POST", f"/api/v1/queries/{query_id}/{action}", ACTOR_OF[action],
                             json={"message": f"{action} in the model test"})
        target = TRANSITIONS.get((state, action))
        if target is None:
            assert response.status_code == 409, (state, action, response.get_json())
        else:
            assert response.status_code == 200, (state, action, response.get_json())
            self.model.queries[query_id] = target

    # One rule per legal transition (so Hypothesis reaches every state often), and one that tries any.
    @precondition(lambda self: bool(self._in("open")))
    @rule(data=st.data())
    def answer(self, data):
        self._transition(data.draw(st.sampled_from(self._in("open"))), "answer")

    @precondition(lambda self: bool(self._in("answered")))
    @rule(data=st.data())
    def close(self, data):
        self._transition(data.draw(st.sampled_from(self._in("answered"))), "close")

    @precondition(lambda self: bool(self._in("answered", "closed")))
    @rule(data=st.data())
    def reopen(self, data):
        self._transition(data.draw(st.sampled_from(self._in("answered", "closed"))), "reopen")

    @precondition(lambda self: bool(self.model.queries))
    @rule(data=st.data(), action=st.sampled_from(["answer", "close", "reopen", "cancel"]))
    def any_transition(self, data, action):
        self._transition(data.draw(st.sampled_from(sorted(self.model.queries))), action)

    # --- verification, signature, lock -------------------------------------------------------

    @precondition(lambda self: not self.model.locked)
    @rule()
    def verify(self):
        response = self.call("POST", f"/api/v1/entries/{self.entry_id}/sdv", MONITOR, json={"entry": True})
        assert response.status_code in (200, 201), response.get_json()
        self.model.verified = True

    @rule()
    def sign(self):
        body = {"username": username_of(PI), "password": PASSWORD, "meaning": "approval"}
        response = self.call("POST", f"/api/v1/entries/{self.entry_id}/signatures", PI, json=body)
        if any(state in ("open", "answered") for state in self.model.queries.values()):  # not yet closed
            assert response.status_code == 409, response.get_json()
            return
        assert response.status_code == 201, response.get_json()
        self.model.signature, self.model.signature_valid = response.get_json()["id"], True

    @rule()
    def lock(self):
        response = self.call("POST", f"/api/v1/entries/{self.entry_id}/lock", DM, json={"reason": "ready for analysis"})
        if self.model.locked:
            assert response.status_code in (200, 409), response.get_json()
        else:
            assert response.status_code == 200, response.get_json()
        self.model.locked = True

    @precondition(lambda self: self.model.locked)
    @rule()
    def unlock(self):
        response = self.call("POST", f"/api/v1/entries/{self.entry_id}/unlock", DM, json={"reason": "late correction"})
        assert response.status_code == 200, response.get_json()
        self.model.locked = False

    # --- what must hold after every step -----------------------------------------------------

    @invariant()
    def audit_replays_to_the_current_entry(self):
        entry = self.trial.entry(self.entry_id)
        assert entry["data"] == self.model.values
        history = self.call("GET", f"/api/v1/entries/{self.entry_id}/audit", PI).get_json()
        values, status = replay(history)
        assert values == entry["data"]
        assert status == entry["status"]

    @invariant()
    def queries_are_in_the_model_state(self):
        for query_id, state in self.model.queries.items():
            assert self.call("GET", f"/api/v1/queries/{query_id}", MONITOR).get_json()["state"] == state

    @invariant()
    def signature_is_valid_until_the_data_change(self):
        if self.model.signature is None:
            return
        signatures = self.call("GET", f"/api/v1/entries/{self.entry_id}/signatures", PI).get_json()
        latest = next(s for s in signatures if s["id"] == self.model.signature)
        assert latest["status"] == ("valid" if self.model.signature_valid else "invalidated"), latest
        assert latest["digest_valid"] is self.model.signature_valid, latest

    @invariant()
    def verification_is_cleared_by_changes(self):
        sdv = self.call("GET", f"/api/v1/entries/{self.entry_id}/sdv", MONITOR).get_json()
        assert sdv["verified"] is self.model.verified

    @invariant()
    def counts_kept_on_write_agree_with_a_fresh_count(self):
        """The form-status cell's SDV counts and the subject's summary row, against a recount."""
        with Session(self.session.get_bind()) as session:
            runtime.bind(session, runtime.for_app(self.client.application))
            self._check_counts(session)

    def _check_counts(self, session: Session) -> None:
        subject = session.scalars(sa.select(Subject).where(Subject.number == self.number)).one()
        cell = session.get(FormStatus, (subject.id, "SCR/1", "vs"))
        marks = session.execute(sa.select(sa.func.count().filter(SdvMark.item_id.is_(None)),
                                          sa.func.count().filter(SdvMark.item_id.is_not(None)))
                                .where(SdvMark.entry_id == uuid.UUID(self.entry_id), SdvMark.cleared_at.is_(None))).one()
        assert (cell.entries_verified, cell.items_verified) == tuple(marks)
        row = session.get(SubjectSummary, subject.id)
        counts, _ = summaries.completeness_of(session, [subject], clock.utcnow().date())[subject.id]
        assert {name: getattr(row, name) for name in counts} == counts
        fresh = summaries.safety_of(session, [subject.id])[subject.id]
        assert {name: getattr(row, name) for name in fresh} == fresh

    @invariant()
    def audit_chains_verify(self):
        # In a transaction of its own: the test session runs in autocommit, and the chain walk reads with a
        # server-side cursor on PostgreSQL, which needs one.
        bind = self.session.get_bind()
        if bind.dialect.name == "postgresql":
            bind = bind.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind) as reader:
            runtime.bind(reader, runtime.for_app(self.client.application))
            reports = audit.verify_all(reader)
        assert reports and all(report.ok for report in reports), [r for r in reports if not r.ok]


def test_monitoring_workflow_model(monitoring, session):
    run_state_machine_as_test(
        lambda: MonitoringWorkflow(monitoring, session),
        settings=settings(max_examples=15, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
    )
