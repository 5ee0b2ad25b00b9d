"""Idempotency-Key on the POST routes that create things: a retry gets the first answer, never a second write,
including when the first answer was lost after its commit (the connection died right after it)."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa

from conftest import PASSWORD, bearer, count_rows, login, problem
from edc.models import User
from edc.services import idempotency
from monitoring.conftest import username_of
from trial.test_baseline_forms import VS

CREATED_TABLES = ("subjects", "entries", "queries", "signatures", "export_jobs", "audit_records")


def counts(session) -> dict[str, int]:
    return {table: count_rows(session, table) for table in CREATED_TABLES}


def post(m, path, body, account, key=None):
    headers = {**m.headers[account], **({"Idempotency-Key": key} if key is not None else {})}
    return m.client.post(path, json=body, headers=headers)


def lost_then_retried(m, breaker, session, path, body, account, status):
    """POST with a key while the connection dies right after the commit; the answer is dropped (lost on the
    way); the retry must be the original answer, and write nothing."""
    key = str(uuid.uuid4())
    with breaker.after_next_commit(skip=1):  # the claim of the key commits first, then the request's writes
        post(m, path, body, account, key)
        assert breaker.tripped
    written = counts(session)
    retry = post(m, path, body, account, key)
    assert retry.status_code == status, retry.get_data(as_text=True)
    assert retry.headers["Idempotent-Replayed"] == "true"
    again = post(m, path, body, account, key)
    assert again.get_data() == retry.get_data() and again.headers.get("Location") == retry.headers.get("Location")
    assert counts(session) == written
    return retry


def test_every_create_route_answers_a_retry_after_a_lost_answer_with_the_first_result(monitoring, commit_breaker, session):
    m, before = monitoring, counts(session)
    enrol = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    subject = lost_then_retried(m, commit_breaker, session, "/api/v1/subjects", enrol, "investigator_ES01", 201)
    number = subject.get_json()["number"]
    assert subject.headers["Location"].endswith(number) and subject.headers["ETag"]
    entry = lost_then_retried(m, commit_breaker, session, f"/api/v1/subjects/{number}/entries",
                              {"form": "vs", "event": "SCR", "data": VS, "complete": True}, "investigator_ES01", 201)
    entry_id = entry.get_json()["id"]
    assert entry.get_json()["data"]["HR"] == 96
    credentials = {"username": username_of("investigator_ES01"), "password": PASSWORD, "meaning": "approval"}
    lost_then_retried(m, commit_breaker, session, f"/api/v1/entries/{entry_id}/signatures", credentials,
                      "investigator_ES01", 201)
    lost_then_retried(m, commit_breaker, session, f"/api/v1/subjects/{number}/signatures", credentials,
                      "investigator_ES01", 201)
    lost_then_retried(m, commit_breaker, session, "/api/v1/exports", {"format": "csv"}, "statistician", 202)
    query = lost_then_retried(m, commit_breaker, session, "/api/v1/queries",
                              {"entry_id": entry_id, "item": "HR", "message": "Check HR."}, "monitor_ES01", 201)
    assert query.get_json()["state"] == "open"
    after = counts(session)
    assert {t: after[t] - before[t] for t in ("subjects", "entries", "queries", "signatures", "export_jobs")} == {
        "subjects": 1, "entries": 1, "queries": 1, "signatures": 2, "export_jobs": 1}
    stored = session.execute(sa.text("SELECT response FROM idempotent_requests")).scalars().all()
    envelopes = [json.loads(r) if isinstance(r, str) else r for r in stored]
    assert len(envelopes) == 6 and all(set(e) == {"kid", "ct"} for e in envelopes)  # encrypted: clinical values inside


def test_a_key_reused_for_another_body_is_refused_and_another_account_has_its_own_keys(monitoring, session):
    m, key = monitoring, "retry-0001"
    body = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    first = post(m, "/api/v1/subjects", body, "investigator_ES01", key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    written = counts(session)
    refused = problem(post(m, "/api/v1/subjects", {**body, "sex": "M"}, "investigator_ES01", key), 422)
    assert refused["errors"][0]["pointer"] == "/headers/Idempotency-Key"
    assert counts(session) == written
    other = post(m, "/api/v1/subjects", body, "coordinator_ES01", key)  # the same key, another account: a new request
    assert other.status_code == 201 and other.get_json()["number"] != first.get_json()["number"]
    for bad in ("", "x" * 256, "tab\there", "é"):
        assert problem(post(m, "/api/v1/subjects", body, "investigator_ES01", bad), 422)["errors"][0]["pointer"] == \
            "/headers/Idempotency-Key"


def test_a_duplicate_in_progress_gets_409_and_a_failed_request_frees_its_key(monitoring, session, fake_clock):
    m, key = monitoring, "in-flight-1"
    body = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    user_id = session.scalar(sa.select(User.id).where(User.username == username_of("investigator_ES01")))
    digest = idempotency.request_hash("POST", "/api/v1/subjects", b"", m.client.application.json.dumps(body).encode())
    # Another worker has claimed the key and is still running the request.
    assert isinstance(idempotency.claim(session, user_id, key, digest), idempotency.Claim)
    written = counts(session)
    busy = post(m, "/api/v1/subjects", body, "investigator_ES01", key)
    problem(busy, 409)
    assert busy.headers["Retry-After"] and counts(session) == written
    fake_clock.advance(seconds=121)  # that worker died: its claim is taken over
    assert post(m, "/api/v1/subjects", body, "investigator_ES01", key).status_code == 201

    refused = post(m, "/api/v1/subjects", {**body, "birth_month": 13}, "investigator_ES01", "fails-first")
    problem(refused, 422)
    assert post(m, "/api/v1/subjects", body, "investigator_ES01", "fails-first").status_code == 201

    fake_clock.advance(hours=25)  # kept 24 h: the next request with a key removes the old ones
    m.headers["investigator_ES01"] = bearer(login(m.client, username_of("investigator_ES01")))
    assert post(m, "/api/v1/subjects", body, "investigator_ES01", "a-day-later").status_code == 201
    assert session.execute(sa.text("SELECT key FROM idempotent_requests")).scalars().all() == ["a-day-later"]
