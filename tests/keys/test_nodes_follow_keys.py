"""Every node follows the key ring without a restart (two apps on one database and one key directory):
a signing key added or a data key rotated with `flask edc keys ...` on node A is used and accepted by node B;
a node rereads its keys at most once a second for key ids it does not hold; a node whose key directory lacks
the current data key refuses to write rather than encrypt under an older key; a rotation passes over the
stored values until none is left under the old key; a signature whose data key
cannot be loaded reads "cannot be verified", never "invalid"."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import count_rows, login, problem
from edc import runtime
from edc.models.entries import Entry
from edc.services import rotation
from monitoring.test_signatures import credentials, sign, signatures_of, vs_entry
from trial.test_treatment_forms import CM

PI, MONITOR = "investigator_ES01", "monitor_ES01"
ENCRYPTED = ("CMTRT", "CMINDC")  # free text the trial's medication form stores encrypted


def key_ids_of_entry(session, entry_id: str) -> set[int]:
    session.expire_all()
    data = session.get(Entry, uuid.UUID(entry_id)).data
    return {data[item]["sealed"]["kid"] for item in ENCRYPTED}


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def test_a_signing_key_added_on_one_node_signs_tokens_the_other_node_accepts(make_nodes, fake_clock):
    nodes = make_nodes()
    fake_clock.now = datetime.now(UTC)  # a key is named by its creation time: newer than the session's keys
    new_kid = re.search(r"new signing key (\S+);", nodes.keys("add-signing-key", "--development")).group(1)
    token = login(nodes.a.client, "monitor-es01")["access_token"]
    assert kid_of(token) == new_kid                                    # node A signs with the new key ...
    me = nodes.b.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.get_json()                       # ... and node B accepts it, not restarted
    assert new_kid in {key["kid"] for key in nodes.b.client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert kid_of(login(nodes.b.client, "monitor-es01")["access_token"]) == new_kid


def test_a_new_signing_key_signs_only_once_every_node_can_hold_it(make_nodes, fake_clock):
    nodes = make_nodes(shared=False, signing_key_activation_seconds=600)
    fake_clock.now = datetime.now(UTC) + timedelta(hours=1)           # the session's key is an hour old
    old_kid = kid_of(login(nodes.a.client, "monitor-es01")["access_token"])
    new_kid = re.search(r"new signing key (\S+);", nodes.keys("add-signing-key", "--development")).group(1)
    assert kid_of(login(nodes.a.client, "monitor-es01")["access_token"]) == old_kid   # not yet on node B
    nodes.publish()
    fake_clock.advance(seconds=601)
    token = login(nodes.a.client, "monitor-es01")["access_token"]
    assert kid_of(token) == new_kid
    assert nodes.b.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_after_rotation_the_other_node_encrypts_under_the_new_key_and_verifies_new_signatures(make_nodes, session):
    nodes = make_nodes()
    number = nodes.a.enrol()
    before = nodes.b.saved(number, "cm", {**CM, "CMTRT": "Before rotation"})
    assert key_ids_of_entry(session, before["id"]) == {1}
    output = nodes.keys("rotate")
    after = nodes.b.saved(number, "cm", {**CM, "CMTRT": "After rotation"})
    assert key_ids_of_entry(session, after["id"]) == {2}              # node B writes under the new key
    entry = vs_entry(nodes.a, number)
    signed = sign(nodes.a, entry["id"], credentials()).get_json()
    assert signed["key_id"] == 2
    [listed] = signatures_of(nodes.b, entry["id"])
    assert listed["digest_valid"] is True and listed["verification"] == "verified"
    read = nodes.b.client.get(f"/api/v1/entries/{after['id']}", headers=nodes.b.headers[PI]).get_json()
    assert read["data"]["CMTRT"] == "After rotation"
    assert key_ids_of_entry(session, before["id"]) == {2}             # re-encrypted by the rotation, which says so
    assert "checked: no value is left under an older key than 2" in output


def test_a_node_whose_key_directory_lacks_the_current_key_refuses_to_write_until_it_arrives(make_nodes, session):
    nodes = make_nodes(shared=False)                                   # B's copy of the keys is not updated yet
    number = nodes.a.enrol()
    entry = vs_entry(nodes.a, number)
    nodes.keys("rotate")
    signed = sign(nodes.a, entry["id"], credentials()).get_json()
    [listed] = signatures_of(nodes.b, entry["id"])
    assert listed["digest_valid"] is None and listed["verification"] == "cannot be verified: key 2 unavailable"
    entries = count_rows(session, "entries")
    refused = nodes.b.save(number, "cm", CM)
    body = problem(refused, 503)
    assert refused.headers["Retry-After"] == "1" and "key" in body["detail"]
    assert count_rows(session, "entries") == entries                   # nothing written under the old key

    nodes.publish()
    saved = nodes.b.saved(number, "cm", CM)
    assert key_ids_of_entry(session, saved["id"]) == {2}
    [listed] = signatures_of(nodes.b, entry["id"])
    assert (listed["id"], listed["digest_valid"], listed["verification"]) == (signed["id"], True, "verified")


def test_tokens_under_unknown_key_ids_reread_the_keys_at_most_once_a_second(make_nodes, monkeypatch):
    nodes = make_nodes()
    keys = runtime.for_app(nodes.b.client.application).keys
    now = [1000.0]
    monkeypatch.setattr(keys, "clock", lambda: now[0])
    claims = jwt.decode(nodes.b.headers[MONITOR]["Authorization"].split()[1], options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    reloads = keys.reloads

    def flood(count: int) -> None:
        for n in range(count):
            token = jwt.encode(claims, stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": f"made-up-{n}"})
            problem(nodes.b.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}), 401)

    flood(30)
    assert keys.reloads == reloads + 1                                 # one reread for thirty unknown key ids
    now[0] += 0.9
    flood(5)
    assert keys.reloads == reloads + 1
    now[0] += 0.2
    flood(5)
    assert keys.reloads == reloads + 2                                 # a second later, one more
    assert nodes.b.client.get("/api/v1/me", headers=nodes.b.headers[MONITOR]).status_code == 200


def test_a_staged_data_key_is_used_by_no_node_until_the_rotation_makes_it_current(make_nodes, session):
    nodes = make_nodes()
    number = nodes.a.enrol()
    assert "data key 2 added" in nodes.keys("add-data-key")
    staged = nodes.b.saved(number, "cm", CM)
    assert key_ids_of_entry(session, staged["id"]) == {1}             # every node holds key 2, none uses it yet
    output = nodes.keys("rotate", "--resume")
    assert "checked: no value is left under an older key than 2" in output
    assert key_ids_of_entry(session, staged["id"]) == {2}
    assert key_ids_of_entry(session, nodes.b.saved(number, "cm", CM)["id"]) == {2}


def rotation_with_late_writes(monkeypatch, entry_id: str, stored: dict, count: int) -> None:
    """After each pass's audit values, up to `count` times: the entry is written back as it was stored under
    the old key, as by a writer that read the old key before the rotation recorded the new one."""
    real = rotation.rotate_audit_values
    late = [count]

    def audit_values_then_a_late_write(db_session, report, commit):
        real(db_session, report, commit)
        if late[0]:
            late[0] -= 1
            db_session.execute(sa.update(Entry.__table__).where(Entry.__table__.c.id == uuid.UUID(entry_id))
                               .values(data=stored))
            commit()

    monkeypatch.setattr(rotation, "rotate_audit_values", audit_values_then_a_late_write)


def test_rotation_passes_again_until_no_value_is_left_under_the_old_key(make_nodes, session, monkeypatch):
    nodes = make_nodes()
    entry = nodes.b.saved(nodes.a.enrol(), "cm", CM)
    session.expire_all()
    stored = session.get(Entry, uuid.UUID(entry["id"])).data
    rotation_with_late_writes(monkeypatch, entry["id"], stored, count=1)
    output = nodes.keys("rotate")
    assert "in 3 passes" in output and "checked: no value is left under an older key than 2" in output
    assert key_ids_of_entry(session, entry["id"]) == {2}


def test_rotation_that_keeps_finding_old_values_says_it_did_not_finish(make_nodes, session, monkeypatch):
    nodes = make_nodes()
    entry = nodes.b.saved(nodes.a.enrol(), "cm", CM)
    session.expire_all()
    rotation_with_late_writes(monkeypatch, entry["id"], session.get(Entry, uuid.UUID(entry["id"])).data, count=99)
    result = nodes.a.client.application.test_cli_runner().invoke(args=["edc", "keys", "rotate"])
    assert result.exit_code == 1 and "still being written under an older key after 5 passes" in result.output
    assert "checked" not in result.output


def test_rotation_with_a_key_directory_older_than_the_database_is_refused(make_nodes, session):
    nodes = make_nodes(shared=False)
    nodes.keys("rotate")
    stale = nodes.b.client.application.test_cli_runner().invoke(args=["edc", "keys", "rotate", "--resume"])
    assert stale.exit_code == 1 and "names data key 2 as current but this key directory's newest is 1" in stale.output
    assert session.execute(sa.text("SELECT current_key_id FROM data_key_state")).scalar_one() == 2


def test_rotation_re_encrypts_the_answers_kept_for_idempotent_retries(make_nodes, session):
    nodes = make_nodes()
    number = nodes.a.enrol()
    body = {"form": "cm", "data": CM, "complete": True}
    headers = {**nodes.b.headers[PI], "Idempotency-Key": "cm-entry-1"}
    first = nodes.b.client.post(f"/api/v1/subjects/{number}/entries", json=body, headers=headers)
    assert first.status_code == 201, first.get_json()
    assert "1 stored answers" in nodes.keys("rotate")
    stored = session.execute(sa.text("SELECT response FROM idempotent_requests")).scalar_one()
    assert (json.loads(stored) if isinstance(stored, str) else stored)["kid"] == 2
    again = nodes.b.client.post(f"/api/v1/subjects/{number}/entries", json=body, headers=headers)
    assert (again.status_code, again.get_json()["id"]) == (201, first.get_json()["id"])
