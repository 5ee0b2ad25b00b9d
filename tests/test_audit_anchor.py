"""The audit anchor: every chain's last seq and hash, kept outside the database, and `audit verify --anchor`
finding what a writer with the database (and even the audit key) can hide from a plain verify: a chain cut
back with its head moved to match, a rewritten end, a whole chain deleted with its head. Plus the cross-check
that every subject has its chain and every subject chain its subject."""

from __future__ import annotations

import base64
import gc
import json
import pathlib
import uuid

import jwt
import pytest
import sqlalchemy as sa

from conftest import bearer, login
from edc.models import AuditChainHead, AuditRecord, Subject, SubjectSummary
from edc.security.permissions import Actor
from edc.services import audit

AUDIT = AuditRecord.__table__
HEADS = AuditChainHead.__table__
NEW_SUBJECT = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}


@pytest.fixture
def attacker(database_url):
    """Run statements as the database owner with the audit triggers (and, on PostgreSQL, foreign keys) out of the way.

    SQLite: the triggers are dropped in this test's own database copy (foreign keys are off on a plain connection).
    PostgreSQL: replica mode skips every trigger for that one transaction only.
    """
    engine = sa.create_engine(database_url)

    def run(*statements) -> None:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            else:
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_update")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_delete")
            for statement in statements:
                conn.execute(statement)

    yield run
    engine.dispose()


def verify(runner, *args):
    result = runner.invoke(args=["edc", "audit", "verify", *args])
    gc.collect()  # a cursor left open would warn now, and warnings are errors
    return result


def take_anchor(runner, folder, name="anchor.json") -> str:
    result = runner.invoke(args=["edc", "audit", "anchor"])
    assert result.exit_code == 0, result.output
    path = folder / name
    path.write_text(result.stdout)
    return str(path)


def enrol(client, staff) -> tuple[str, str]:
    """Enrol a subject at ES01 (its chain starts with the enrolment record). Returns (number, chain)."""
    inv = bearer(login(client, staff["investigator"]))
    number = client.post("/api/v1/subjects", json=NEW_SUBJECT, headers=inv).get_json()["number"]
    return number, chain_of(client, number)


def chain_of(client, number) -> str:
    from edc.extensions import db

    with client.application.app_context():
        subject_id = db.session.scalar(sa.select(Subject.id).where(Subject.number == number))
        db.session.rollback()
    return audit.subject_chain(subject_id)


def records(session, chain) -> list:
    rows = session.execute(sa.select(AUDIT.c.id, AUDIT.c.seq, AUDIT.c.hash).where(AUDIT.c.chain == chain)
                           .order_by(AUDIT.c.seq)).all()
    session.rollback()
    return rows


def append(session, chain, n=2):
    for i in range(n):
        audit.record(session, Actor.system("tests"), "probe", entity_type="probe", entity_id=None, chain=chain,
                     changes=[audit.change("n", None, i)])
    session.commit()


def cut_back(attacker, chain, rows, keep):
    """Delete the records after `keep` and move the chain head back to the last one kept."""
    last = rows[keep - 1]
    attacker(sa.delete(AUDIT).where(AUDIT.c.chain == chain, AUDIT.c.seq > keep),
             sa.update(HEADS).where(HEADS.c.chain == chain).values(seq=last.seq, hash=last.hash))


def delete_subject_rows(chain):
    """The subject row of a subject chain, and its summary row (the one other row enrolment writes)."""
    subject_id = uuid.UUID(chain.removeprefix(audit.SUBJECT_CHAIN_PREFIX))
    return [sa.delete(table).where(column == subject_id)
            for table, column in ((SubjectSummary.__table__, SubjectSummary.subject_id), (Subject.__table__, Subject.id))]


# --- the anchor document ---------------------------------------------------------------------------

def test_anchor_lists_every_chain_with_its_last_seq_and_hash(runner, client, session, staff, tmp_path, fake_clock):
    _number, chain = enrol(client, staff)
    first = take_anchor(runner, tmp_path, "first.json")
    second = take_anchor(runner, tmp_path, "second.json")
    text = pathlib.Path(first).read_text()
    assert text == pathlib.Path(second).read_text()  # deterministic: same heads, same time, same bytes
    doc = json.loads(text)
    heads = {c: {"seq": s, "hash": h} for c, s, h in session.execute(sa.select(HEADS.c.chain, HEADS.c.seq, HEADS.c.hash))}
    session.rollback()
    assert doc["format"] == "edc-audit-anchor/1"
    assert doc["generated_at"] == fake_clock.now.isoformat()
    assert doc["chain_count"] == len(heads) == 2 and doc["chains"] == heads
    assert list(doc["chains"]) == sorted(heads) and doc["chains"][chain]["seq"] == len(records(session, chain))
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"


def test_a_clean_trail_verifies_against_its_anchor_and_an_older_one(runner, client, session, staff, tmp_path):
    _number, chain = enrol(client, staff)
    older = take_anchor(runner, tmp_path, "older.json")
    result = verify(runner, "--anchor", older)
    assert result.exit_code == 0, result.output
    assert "0 broken against the anchor of" in result.stdout

    append(session, chain)  # records written after the anchor are fine
    enrol(client, staff)    # and so is a chain that did not exist then
    result = verify(runner, "--anchor", older)
    assert result.exit_code == 0, result.output
    assert f"ok      {chain} ({len(records(session, chain))} records)" in result.stdout
    result = verify(runner, "--anchor", take_anchor(runner, tmp_path, "newer.json"))
    assert result.exit_code == 0, result.output


# --- what only the anchor shows --------------------------------------------------------------------

@pytest.mark.parametrize("which", ["subject", "security"])
def test_verify_against_the_anchor_finds_a_chain_cut_back_with_its_head(runner, client, session, staff, tmp_path,
                                                                       attacker, which):
    _number, chain = enrol(client, staff)
    chain = chain if which == "subject" else "security"
    append(session, chain)
    anchor_file = take_anchor(runner, tmp_path)
    rows = records(session, chain)
    cut_back(attacker, chain, rows, keep=len(rows) - 2)

    assert verify(runner).exit_code == 0  # the head agrees with the records left: a plain verify cannot tell
    result = verify(runner, "--anchor", anchor_file)
    assert result.exit_code == 1, result.output
    assert (f"BROKEN  {chain}: first broken at anchored seq {rows[-1].seq}: records end at seq {rows[-3].seq} "
            f"but the anchor holds seq {rows[-1].seq}") in result.stdout
    assert "1 broken against the anchor" in result.stdout


def test_verify_against_the_anchor_finds_a_rewritten_end_of_chain(runner, client, session, staff, tmp_path, attacker):
    """Cut back, then written again through the service (so with the audit key): a valid chain, but not the anchored one."""
    _number, chain = enrol(client, staff)
    append(session, chain)
    anchor_file = take_anchor(runner, tmp_path)
    rows = records(session, chain)
    cut_back(attacker, chain, rows, keep=len(rows) - 1)
    append(session, chain, n=1)
    assert len(records(session, chain)) == len(rows)

    assert verify(runner).exit_code == 0
    result = verify(runner, "--anchor", anchor_file)
    assert result.exit_code == 1, result.output
    assert (f"BROKEN  {chain}: first broken at anchored seq {rows[-1].seq}: the record at seq {rows[-1].seq} "
            "is not the one anchored") in result.stdout


def test_verify_against_the_anchor_finds_a_subject_deleted_with_its_whole_chain(runner, client, session, staff, tmp_path,
                                                                                attacker):
    _number, chain = enrol(client, staff)
    _other, kept = enrol(client, staff)
    anchor_file = take_anchor(runner, tmp_path)
    seq = len(records(session, chain))
    attacker(sa.delete(AUDIT).where(AUDIT.c.chain == chain), sa.delete(HEADS).where(HEADS.c.chain == chain),
             *delete_subject_rows(chain))

    assert verify(runner).exit_code == 0  # nothing left that refers to it
    result = verify(runner, "--anchor", anchor_file)
    assert result.exit_code == 1, result.output
    assert (f"BROKEN  {chain}: first broken at anchored seq {seq}: anchored at seq {seq} but has no records and no "
            "chain head (the whole chain was deleted)") in result.stdout
    assert f"ok      {kept}" in result.stdout


def _edited(doc: dict, edit: str) -> str:
    doc = json.loads(json.dumps(doc))
    first = next(iter(doc["chains"]))
    if edit == "chain_count":
        doc["chain_count"] += 1
    elif edit == "seq_type":
        doc["chains"][first]["seq"] = str(doc["chains"][first]["seq"])
    elif edit == "no_signature":
        del doc["signature"]
    elif edit == "not_a_jws":
        doc["signature"] = "not-a-jws"
    elif edit == "seq_lowered":  # an anchor edited to hide a cut
        doc["chains"][first]["seq"] -= 1
    return json.dumps(doc)


@pytest.mark.parametrize("edit, message", [
    ("not_json", "Expecting value"),
    ("not_an_anchor", "not an audit anchor"),
    ("chain_count", "the anchor's chains do not match its chain_count"),
    ("seq_type", "chain 'security': expected {\"seq\": <int>"),
    ("no_signature", "the anchor is not signed"),
    ("not_a_jws", "the anchor's signature is not a JWS"),
    ("seq_lowered", "the anchor was altered after it was signed"),
])
def test_verify_refuses_a_file_that_is_not_an_anchor_this_server_signed(runner, client, staff, tmp_path, edit, message):
    login(client, staff["admin"])
    doc = json.loads(pathlib.Path(take_anchor(runner, tmp_path)).read_text())
    content = {"not_json": "not json", "not_an_anchor": '{"chains": {}}'}.get(edit) or _edited(doc, edit)
    path = tmp_path / "edited.json"
    path.write_text(content)
    result = verify(runner, "--anchor", str(path))
    assert result.exit_code == 1 and f"edited.json: {message}" in result.output, result.output


def test_the_anchor_signature_is_an_es256_jws_of_the_rest_checked_with_the_published_keys(runner, client, staff, tmp_path):
    doc = json.loads(pathlib.Path(take_anchor(runner, tmp_path)).read_text())
    header = jwt.get_unverified_header(doc["signature"])
    assert header["alg"] == "ES256" and header["typ"] == "edc-audit-anchor+jws"
    [jwk] = [k for k in client.get("/.well-known/jwks.json").get_json()["keys"] if k["kid"] == header["kid"]]
    payload = jwt.PyJWS().decode(doc["signature"], jwt.PyJWK(jwk).key, algorithms=["ES256"])
    assert json.loads(payload) == {name: value for name, value in doc.items() if name != "signature"}
    result = verify(runner, "--anchor", str(tmp_path / "anchor.json"))
    assert result.exit_code == 0 and f"signature by key {header['kid']} verified" in result.stdout


def test_an_anchor_signed_with_a_key_no_longer_held_is_checked_for_its_chains_only(runner, client, session, staff, tmp_path,
                                                                                 attacker):
    """After `keys retire-signing-key` the signature can be checked only with the JWKS kept from then; the chains still are."""
    doc = json.loads(pathlib.Path(take_anchor(runner, tmp_path)).read_text())
    header, rest = doc["signature"].split(".", 1)
    claimed = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    retired = base64.urlsafe_b64encode(json.dumps({**claimed, "kid": "retired-1"}).encode()).rstrip(b"=").decode()
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**doc, "signature": f"{retired}.{rest}"}))
    result = verify(runner, "--anchor", str(path))
    assert result.exit_code == 0, result.output
    assert "signature not checked: key retired-1 is no longer held here" in result.stdout

    rows = records(session, "security")
    cut_back(attacker, "security", rows, keep=len(rows) - 1)
    result = verify(runner, "--anchor", str(path))
    assert result.exit_code == 1 and "BROKEN  security: first broken at anchored seq" in result.stdout


# --- every subject has its chain -------------------------------------------------------------------

def test_verify_finds_a_subject_whose_chain_was_deleted_with_its_head(runner, client, session, staff, attacker):
    number, chain = enrol(client, staff)
    attacker(sa.delete(AUDIT).where(AUDIT.c.chain == chain), sa.delete(HEADS).where(HEADS.c.chain == chain))
    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert (f"BROKEN  {chain}: first broken at subjects table: subject {number} has no audit records "
            "(its chain was deleted)") in result.stdout


def test_verify_finds_a_subject_whose_chain_was_emptied_with_its_head_moved_to_the_start(runner, client, session, staff,
                                                                                        attacker):
    number, chain = enrol(client, staff)
    attacker(sa.delete(AUDIT).where(AUDIT.c.chain == chain),
             sa.update(HEADS).where(HEADS.c.chain == chain).values(seq=0, hash=audit.GENESIS))
    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert f"BROKEN  {chain}: first broken at subjects table: subject {number} has no audit records" in result.stdout


def test_verify_finds_a_subject_chain_whose_subject_was_deleted(runner, client, session, staff, attacker):
    _number, chain = enrol(client, staff)
    attacker(*delete_subject_rows(chain))
    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert f"BROKEN  {chain}: first broken at subjects table: no subject row has this id (the subject was deleted)" in result.stdout
    assert "ok      security" in result.stdout
