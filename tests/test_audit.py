"""The audit trail: what security events record, the hash chain and its verification, the
append-only protection, the signed anchor, and encrypted values inside audit records."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import uuid
import warnings
from datetime import datetime, timezone

import jwt
import pytest
import sqlalchemy as sa

from account_mail import mailed_setup_token
from conftest import PASSWORD, bearer, login, problem
from edc import runtime
from edc.models import AuditChainHead, AuditRecord, AuditValue
from edc.security import crypto
from edc.security.permissions import Actor
from edc.services import audit

AUDIT = AuditRecord.__table__
NEW_PASSWORD = "violet-harbour-lantern-73"


# --- helpers --------------------------------------------------------------------------------

def security_records(session) -> list[dict]:
    rows = audit.history(session, chain="security", limit=100_000)
    session.rollback()
    return rows


def record_of(session, response) -> dict:
    """The one security record written by the request that produced this response."""
    request_id = response.headers["X-Request-ID"]
    assert request_id
    matches = [r for r in security_records(session) if r["request_id"] == request_id]
    assert len(matches) == 1, matches
    return matches[0]


def claims_of(tokens: dict) -> dict:
    return jwt.decode(tokens["access_token"], options={"verify_signature": False})


def user_id(session, username: str) -> str:
    value = session.execute(sa.text("SELECT id FROM users WHERE username = :u"), {"u": username}).scalar_one()
    session.rollback()
    return str(uuid.UUID(str(value)))


def verify(runner):
    """Run `flask edc audit verify`."""
    result = runner.invoke(args=["edc", "audit", "verify"])
    gc.collect()  # a cursor left open would warn now, and warnings are errors
    return result


@pytest.fixture
def tamper(database_url):
    """Run one statement on audit_records past the append-only triggers, on its own connection.

    SQLite: the triggers are dropped in this test's own database copy. PostgreSQL: replica mode
    (superuser) skips them for this one transaction only.
    """
    engine = sa.create_engine(database_url)

    def run(statement) -> int:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            else:
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_update")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_delete")
            return conn.execute(statement).rowcount

    yield run
    engine.dispose()


def chain_rows(session, chain: str = "security") -> list:
    rows = session.execute(sa.select(AUDIT.c.id, AUDIT.c.seq, AUDIT.c.action, AUDIT.c.changes)
                           .where(AUDIT.c.chain == chain).order_by(AUDIT.c.seq)).all()
    session.rollback()
    return rows


# --- what security events record ------------------------------------------------------------

def test_login_is_audited_with_actor_role_and_request_id(client, session, staff):
    response = client.post("/api/v1/auth/login", json={"username": staff["monitor"], "password": PASSWORD})
    assert response.status_code == 200
    record = record_of(session, response)
    assert record["action"] == "login" and record["chain"] == "security"
    assert record["actor"] == "monitor" and record["role"] == "monitor"
    assert record["entity_type"] == "user" and record["entity_id"] == user_id(session, "monitor")


def test_failed_login_is_audited_and_counted_after_the_rollback(client, session, staff):
    response = client.post("/api/v1/auth/login", json={"username": staff["monitor"], "password": "wrong-password-1"})
    problem(response, 401)
    record = record_of(session, response)
    assert record["action"] == "login_failed"
    assert record["actor"] == "monitor" and record["role"] is None
    assert record["entity_id"] == user_id(session, "monitor")
    counters = dict(session.execute(sa.text("SELECT key, failures FROM login_throttles")).all())
    session.rollback()
    assert counters == {"user:monitor@127.0.0.1": 1, "user:monitor": 1, "addr:127.0.0.1": 1}
    assert not any(r["action"] == "login" and r["actor"] == "monitor" for r in security_records(session))


def test_failed_login_of_an_unknown_user_is_audited_without_echoing_the_name(client, session, staff):
    response = client.post("/api/v1/auth/login", json={"username": "nobody-here", "password": "wrong-password-1"})
    problem(response, 401)
    record = record_of(session, response)
    assert record["action"] == "login_failed"
    assert record["actor"] == "(unknown)" and record["entity_id"] is None
    counters = dict(session.execute(sa.text("SELECT key, failures FROM login_throttles")).all())
    session.rollback()
    assert counters == {"user:nobody-here@127.0.0.1": 1, "user:nobody-here": 1, "addr:127.0.0.1": 1}


def test_logout_is_audited(client, session, staff):
    tokens = login(client, staff["monitor"])
    response = client.post("/api/v1/auth/logout", headers=bearer(tokens))
    assert response.status_code == 204
    record = record_of(session, response)
    assert record["action"] == "logout" and record["actor"] == "monitor" and record["role"] == "monitor"
    assert record["entity_type"] == "auth_session" and record["entity_id"] == claims_of(tokens)["sid"]


def test_user_created_is_audited_with_the_new_values(client, session, staff):
    admin = login(client, staff["admin"])
    response = client.post("/api/v1/users", json={"username": "newcomer", "display_name": "New Comer",
                                                  "email": "newcomer@example.org"}, headers=bearer(admin))
    assert response.status_code == 201
    record = record_of(session, response)
    assert record["action"] == "user_created" and record["actor"] == "admin" and record["role"] == "admin"
    assert record["entity_type"] == "user" and record["entity_id"] == user_id(session, "newcomer")
    assert record["changes"] == [
        {"field": "username", "old": None, "new": "newcomer"},
        {"field": "display_name", "old": None, "new": "New Comer"},
        {"field": "email", "old": None, "new": "newcomer@example.org"},
        {"field": "demo", "old": None, "new": False},
    ]
    # The one-time setup token is never written to the audit trail.
    assert mailed_setup_token(session, "newcomer") not in _raw_audit_rows(session)


def test_user_disabled_is_audited_with_old_and_new_status_and_reason(client, session, staff):
    admin = login(client, staff["admin"])
    response = client.post(f"/api/v1/users/{staff['monitor']}/disable", json={"reason": "left the trial"}, headers=bearer(admin))
    assert response.status_code == 200
    record = record_of(session, response)
    assert record["action"] == "user_disabled" and record["actor"] == "admin" and record["role"] == "admin"
    assert record["entity_id"] == user_id(session, "monitor") and record["reason"] == "left the trial"
    assert record["changes"] == [{"field": "status", "old": "active", "new": "disabled"}]


def test_role_granted_is_audited_with_role_and_site(client, session, staff):
    admin = login(client, staff["admin"])
    response = client.post(f"/api/v1/users/{staff['monitor']}/roles", json={"role": "monitor", "site": "IT01"},
                           headers=bearer(admin))
    assert response.status_code == 201
    record = record_of(session, response)
    assert record["action"] == "role_granted" and record["actor"] == "admin" and record["role"] == "admin"
    assert record["entity_id"] == user_id(session, "monitor") and record["site"] == "IT01"
    assert record["changes"] == [
        {"field": "role", "old": None, "new": "monitor"},
        {"field": "site", "old": None, "new": "IT01"},
        {"field": "principal_investigator", "old": None, "new": False},
    ]


def test_role_revoked_is_audited_with_the_old_role_and_site(client, session, staff):
    admin = login(client, staff["admin"])
    roles = client.get(f"/api/v1/users/{staff['monitor']}", headers=bearer(admin)).get_json()["roles"]
    response = client.delete(f"/api/v1/users/{staff['monitor']}/roles/{roles[0]['id']}", headers=bearer(admin))
    assert response.status_code == 204
    record = record_of(session, response)
    assert record["action"] == "role_revoked" and record["actor"] == "admin" and record["role"] == "admin"
    assert record["entity_id"] == user_id(session, "monitor") and record["site"] == "ES01"
    assert record["changes"] == [{"field": "role", "old": "monitor", "new": None}, {"field": "site", "old": "ES01", "new": None}]


def test_password_change_is_audited_with_the_sessions_it_ended(client, session, staff):
    other = login(client, staff["monitor"])
    current = login(client, staff["monitor"])
    response = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                           headers=bearer(current))
    assert response.status_code == 204
    record = record_of(session, response)
    assert record["action"] == "password_changed" and record["actor"] == "monitor" and record["role"] == "monitor"
    assert record["entity_id"] == user_id(session, "monitor")
    assert record["changes"] == [{"field": "sessions_revoked", "old": None, "new": 1}]
    assert client.get("/api/v1/me", headers=bearer(other)).status_code == 401
    assert NEW_PASSWORD not in _raw_audit_rows(session) and PASSWORD not in _raw_audit_rows(session)


def test_auditor_reads_the_security_chain_over_http(client, session, staff):
    failed = client.post("/api/v1/auth/login", json={"username": staff["monitor"], "password": "wrong-password-1"})
    auditor = login(client, staff["auditor"])
    response = client.get("/api/v1/audit/security", query_string={"page_size": 200}, headers=bearer(auditor))
    assert response.status_code == 200
    records = response.get_json()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    [match] = [r for r in records if r["request_id"] == failed.headers["X-Request-ID"]]
    assert match["action"] == "login_failed" and match["actor"] == "monitor"
    problem(client.get("/api/v1/audit/security", headers=bearer(login(client, staff["admin"]))), 403)


# --- verification ---------------------------------------------------------------------------

def test_audit_verify_passes_on_a_fresh_trail(runner, client, session, staff):
    login(client, staff["admin"])
    count = len(chain_rows(session))
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert f"ok      security ({count} records)" in result.stdout
    assert "1 chains, 0 broken" in result.stdout


def _second_chain(session) -> str:
    chain = f"probe:{uuid.uuid4()}"  # not a subject chain: verify reports one whose subject does not exist
    for n in range(2):
        audit.record(session, Actor.system("tests"), "probe", entity_type="subject", entity_id=None, chain=chain,
                     changes=[audit.change("n", None, n)])
    session.commit()
    return chain


@pytest.mark.parametrize("column", ["action", "changes", "actor_username", "occurred_at"])
def test_audit_verify_names_a_modified_record(runner, client, session, staff, tamper, column):
    login(client, staff["admin"])
    other_chain = _second_chain(session)
    rows = chain_rows(session)
    victim = rows[len(rows) // 2]
    values = {
        "action": {"action": "harmless"},
        "changes": {"changes": [{**c, "new": "admin"} if c.get("new") is not None else c for c in victim.changes] or
                    [{"field": "role", "old": None, "new": "admin"}]},
        "actor_username": {"actor_username": "someone-else"},
        "occurred_at": {"occurred_at": datetime(2020, 1, 1, tzinfo=timezone.utc)},
    }[column]
    assert tamper(sa.update(AUDIT).where(AUDIT.c.id == victim.id).values(**values)) == 1

    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert f"BROKEN  security: first broken at record {victim.id}" in result.stdout
    assert "modified" in result.stdout
    assert f"ok      {other_chain} (2 records)" in result.stdout
    assert "2 chains, 1 broken" in result.stdout


def test_audit_verify_names_the_record_after_a_deleted_one(runner, client, session, staff, tamper):
    login(client, staff["admin"])
    rows = chain_rows(session)
    middle = len(rows) // 2
    assert tamper(sa.delete(AUDIT).where(AUDIT.c.id == rows[middle].id)) == 1

    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert f"first broken at record {rows[middle + 1].id}" in result.stdout
    assert "a record is missing" in result.stdout


def test_audit_verify_reports_the_chain_head_after_the_last_record_is_deleted(runner, client, session, staff, tamper):
    login(client, staff["admin"])
    rows = chain_rows(session)
    assert tamper(sa.delete(AUDIT).where(AUDIT.c.id == rows[-1].id)) == 1

    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert "BROKEN  security: first broken at chain head" in result.stdout
    assert f"chain head is at {rows[-1].seq} but records end at {rows[-2].seq}" in result.stdout


def test_audit_verify_of_a_broken_chain_leaves_no_cursor_open(runner, client, session, staff, tamper):
    """verify stops at the first broken record; the rows it was streaming must be closed then."""
    login(client, staff["admin"])
    _second_chain(session)
    rows = chain_rows(session)
    tamper(sa.update(AUDIT).where(AUDIT.c.id == rows[1].id).values(action="harmless"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(args=["edc", "audit", "verify"])
        gc.collect()
    assert result.exit_code == 1 and f"first broken at record {rows[1].id}" in result.stdout
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def _rehash(audit_key: bytes, row: AuditRecord, action: str) -> str:
    """The record hash as documented (SHA-256 over canonical JSON, values as HMAC-SHA256 digests)."""

    def digest(value):
        return hmac.new(audit_key, crypto.canonical_json(value), hashlib.sha256).hexdigest()

    doc = {
        "id": str(row.id), "chain": row.chain, "seq": row.seq, "prev_hash": row.prev_hash,
        "occurred_at": row.occurred_at.isoformat(), "actor_id": str(row.actor_id) if row.actor_id else None,
        "actor_username": row.actor_username, "actor_name": row.actor_name, "actor_role": row.actor_role,
        "site_code": row.site_code, "action": action, "entity_type": row.entity_type, "entity_id": row.entity_id,
        "reason": row.reason, "request_id": row.request_id, "client_address": row.client_address,
        "changes": [{"field": c["field"], "old": digest(c.get("old")), "new": digest(c.get("new"))} for c in row.changes],
    }
    return hashlib.sha256(crypto.canonical_json(doc)).hexdigest()


@pytest.mark.parametrize("knows_the_audit_key", [True, False])
def test_a_rewritten_record_verifies_only_if_rehashed_with_the_audit_key(runner, session, staff, tamper, knows_the_audit_key):
    """Hashes cover keyed digests: without the audit key nobody can rehash a rewritten record."""
    last = session.scalars(sa.select(AuditRecord).where(AuditRecord.chain == "security")
                           .order_by(AuditRecord.seq.desc()).limit(1)).one()
    assert last.changes, "the last record should carry changed values"
    real_key = runtime.of(session).keyring.audit_key
    key = real_key if knows_the_audit_key else bytes(b ^ 0x5A for b in real_key)
    forged, last_id = _rehash(key, last, "harmless"), last.id
    session.rollback()
    tamper(sa.update(AUDIT).where(AUDIT.c.id == last_id).values(action="harmless", hash=forged))
    tamper(sa.update(AuditChainHead.__table__).where(AuditChainHead.chain == "security").values(hash=forged))

    result = verify(runner)
    if knows_the_audit_key:  # the formula is right; only the key protects it (and anchors kept outside)
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1
        assert f"first broken at record {last_id}" in result.stdout and "modified" in result.stdout


# --- append-only protection -----------------------------------------------------------------

@pytest.mark.parametrize("statement", ["update", "delete", "orm_update", "orm_delete"])
def test_triggers_refuse_changes_to_audit_records_even_for_the_table_owner(session, staff, statement):
    target = session.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq).limit(1)).one()
    target_id, action = target.id, target.action
    with pytest.raises(sa.exc.DBAPIError) as refused:
        if statement == "update":
            session.execute(sa.update(AUDIT).where(AUDIT.c.id == target_id).values(action="harmless"))
        elif statement == "delete":
            session.execute(sa.delete(AUDIT).where(AUDIT.c.id == target_id))
        elif statement == "orm_update":
            target.action = "harmless"
            session.flush()
        else:
            session.delete(target)
            session.flush()
    assert "append-only" in str(refused.value)
    session.rollback()
    session.expire_all()
    assert session.scalars(sa.select(AuditRecord.action).where(AuditRecord.id == target_id)).one() == action
    session.rollback()


@pytest.mark.postgresql_only
def test_trigger_refuses_truncate_of_audit_records(session, staff):
    before = session.execute(sa.text("SELECT count(*) FROM audit_records")).scalar_one()
    with pytest.raises(sa.exc.DBAPIError) as refused:
        session.execute(sa.text("TRUNCATE audit_records CASCADE"))
    assert "append-only" in str(refused.value)
    session.rollback()
    assert session.execute(sa.text("SELECT count(*) FROM audit_records")).scalar_one() == before
    session.rollback()


@pytest.mark.postgresql_only
def test_application_role_may_only_insert_and_select_audit_records(database_url, session, staff):
    import psycopg.errors

    grants = session.execute(sa.text(
        "SELECT privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = 'edc_application' AND table_name = 'audit_records'")).scalars().all()
    session.rollback()
    assert sorted(grants) == ["INSERT", "SELECT"]

    role = f"edc_test_app_{uuid.uuid4().hex[:12]}"
    owner = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT edc_application TO "{role}"')
    service = sa.create_engine(sa.make_url(database_url).set(username=role))
    try:
        with service.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == role
            existing = conn.execute(sa.select(AUDIT.c.id).limit(1)).scalar_one()
            before = conn.execute(sa.select(sa.func.count()).select_from(AUDIT)).scalar_one()
            conn.execute(sa.insert(AUDIT).values(
                id=uuid.uuid4(), chain="probe", seq=1, occurred_at=datetime.now(timezone.utc), actor_username="probe",
                actor_name="Probe", action="probe", entity_type="probe", changes=[], prev_hash="0" * 64, hash="0" * 64))
            assert conn.execute(sa.select(sa.func.count()).select_from(AUDIT)).scalar_one() == before + 1
            conn.rollback()
            # The other tables are the service's to change.
            conn.execute(sa.text("UPDATE users SET display_name = display_name WHERE false"))
            conn.rollback()

            for refused_statement in (
                sa.update(AUDIT).where(AUDIT.c.id == existing).values(action="harmless"),
                sa.delete(AUDIT).where(AUDIT.c.id == existing),
                sa.text("TRUNCATE audit_records CASCADE"),
            ):
                with pytest.raises(sa.exc.DBAPIError) as refused:
                    conn.execute(refused_statement)
                assert isinstance(refused.value.orig, psycopg.errors.InsufficientPrivilege)
                # Refused by the grants, before the trigger would fire.
                assert "permission denied for table audit_records" in str(refused.value)
                conn.rollback()
            assert conn.execute(sa.select(sa.func.count()).select_from(AUDIT)).scalar_one() == before
    finally:
        service.dispose()
        with owner.connect() as conn:
            conn.exec_driver_sql(f'REVOKE edc_application FROM "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        owner.dispose()


# --- anchoring ------------------------------------------------------------------------------

def anchor(runner) -> dict:
    result = runner.invoke(args=["edc", "audit", "anchor"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_audit_anchor_holds_every_chain_head(runner, client, session, staff, app):
    doc = anchor(runner)
    heads = {chain: {"seq": seq, "hash": h} for chain, seq, h in
             session.execute(sa.select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.hash))}
    session.rollback()
    assert doc["chain_count"] == len(heads) == 1 and doc["chains"] == heads
    assert doc["issuer"] == app.config["EDC"]["jwt_issuer"]


def test_audit_anchor_changes_after_a_new_audit_event(runner, client, staff):
    first = anchor(runner)
    assert anchor(runner)["chains"] == first["chains"]
    login(client, staff["admin"])
    later = anchor(runner)["chains"]["security"]
    assert later["seq"] == first["chains"]["security"]["seq"] + 1 and later["hash"] != first["chains"]["security"]["hash"]


# --- encrypted values -----------------------------------------------------------------------

def _record_canary(session) -> tuple[uuid.UUID, str]:
    canary = f"CANARY-{uuid.uuid4().hex}"
    row = audit.record(session, Actor.system("tests"), "probe_changed", entity_type="probe", entity_id="p-1",
                       changes=[audit.change("x", "OLD-" + canary, canary), audit.change("plain", None, "visible-value")],
                       encrypted_fields=frozenset({"x"}))
    record_id = row.id
    session.commit()
    return record_id, canary


def _raw_audit_rows(session) -> str:
    rows = session.execute(sa.text("SELECT * FROM audit_records")).all()
    rows += session.execute(sa.text("SELECT * FROM audit_values")).all()
    session.rollback()
    return "\n".join(repr(tuple(r)) for r in rows)


def test_encrypted_audit_values_are_stored_encrypted_and_read_decrypted(runner, session, staff):
    record_id, canary = _record_canary(session)
    raw = _raw_audit_rows(session)
    assert "visible-value" in raw  # the dump does include the changes column
    assert canary not in raw

    [record] = [r for r in security_records(session) if r["id"] == str(record_id)]
    assert record["changes"] == [
        {"field": "x", "old": "OLD-" + canary, "new": canary},
        {"field": "plain", "old": None, "new": "visible-value"},
    ]
    result = verify(runner)
    assert result.exit_code == 0, result.output


def _sealed_new_value(session, record_id):
    value = session.scalars(sa.select(AuditValue).where(AuditValue.record_id == record_id, AuditValue.side == "new")).one()
    session.expunge(value)
    return value


def test_reencrypting_an_audit_value_keeps_the_chain_valid_but_changing_it_does_not(runner, session, staff):
    """Hashes cover keyed digests of plaintext, not ciphertext; audit_values may be re-encrypted."""
    record_id, canary = _record_canary(session)
    ring = runtime.of(session).keyring
    sealed = _sealed_new_value(session, record_id)

    def reseal(value):
        envelope = crypto.encrypt_value(ring, value, table="audit_values", record_id=str(sealed.id),
                                        field=f"{record_id}/x/new")
        assert envelope != sealed.envelope
        session.execute(sa.update(AuditValue).where(AuditValue.id == sealed.id).values(envelope=envelope))
        session.commit()

    reseal(canary)
    result = verify(runner)
    assert result.exit_code == 0, result.output

    reseal("CHANGED-" + canary)
    result = verify(runner)
    assert result.exit_code == 1
    assert f"first broken at record {record_id}" in result.stdout


def test_encrypted_audit_value_moved_to_another_record_cannot_be_opened(runner, session, staff):
    record_id, _ = _record_canary(session)
    other_id, _ = _record_canary(session)
    mine, theirs = _sealed_new_value(session, record_id), _sealed_new_value(session, other_id)
    session.execute(sa.update(AuditValue).where(AuditValue.id == theirs.id).values(envelope=mine.envelope))
    session.commit()
    result = verify(runner)
    assert result.exit_code == 1
    assert f"first broken at record {other_id}" in result.stdout
    assert "cannot be opened" in result.stdout


def test_audit_values_are_never_deleted(session, staff):
    record_id, _ = _record_canary(session)
    try:
        session.execute(sa.delete(AuditValue).where(AuditValue.record_id == record_id))
    except sa.exc.DBAPIError as exc:
        assert "never deleted" in str(exc)
    else:
        raise AssertionError("an audit value was deleted")
    finally:
        session.rollback()
