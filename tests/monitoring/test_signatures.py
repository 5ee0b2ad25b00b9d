"""Investigator signatures through the API (21 CFR 11.50, 11.70, 11.200): only the site's principal investigator
signs, with username and password again (wrong ones count toward the login throttle); the signature links to
the data by a keyed digest that detects copies, edits invalidate it, and key rotation does not."""

from __future__ import annotations

import csv
import shutil
import uuid

import pytest
import sqlalchemy as sa

from lxml import etree

from conftest import PASSWORD, count_rows, problem
from edc import runtime
from edc.models.entries import Entry, FormStatus
from edc.exports import source
from edc.exports.csv_files import write_csv
from edc.exports.odm import write_odm
from edc.models.monitoring import Signature
from edc.services import form_registry
from monitoring.conftest import username_of
from trial.conftest import TODAY, TRIAL_FORMS
from trial.test_baseline_forms import VS
from trial.test_treatment_forms import CM

PI = "investigator_ES01"


def credentials(account=PI, password=PASSWORD, meaning="approval", **extra) -> dict:
    return {"username": username_of(account), "password": password, "meaning": meaning, **extra}


def vs_entry(monitoring, number=None, *, complete=True, site="ES01", **changes) -> dict:
    number = number or monitoring.enrol(site=site)
    return monitoring.saved(number, "vs", {**VS, **changes}, event="SCR", complete=complete, role=f"investigator_{site}")


def sign(monitoring, entry_id, body, role=PI, client=None):
    return (client or monitoring.client).post(f"/api/v1/entries/{entry_id}/signatures", json=body,
                                              headers=monitoring.headers[role])


def sign_casebook(monitoring, number, body, role=PI):
    return monitoring.client.post(f"/api/v1/subjects/{number}/signatures", json=body, headers=monitoring.headers[role])


def signatures_of(monitoring, entry_id, role="monitor_ES01", client=None) -> list[dict]:
    response = (client or monitoring.client).get(f"/api/v1/entries/{entry_id}/signatures", headers=monitoring.headers[role])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def audit_actions(monitoring, entry_id) -> list[str]:
    trail = monitoring.client.get(f"/api/v1/entries/{entry_id}/audit", headers=monitoring.headers["auditor"]).get_json()
    return [record["action"] for record in trail]


def cell(session, entry_id) -> FormStatus:
    session.expire_all()
    entry = session.get(Entry, uuid.UUID(entry_id))
    return session.get(FormStatus, (entry.subject_id, entry.event_key, entry.form_id))


# ------------------------------------------------------------------------------------ signing an entry


def test_pi_signs_an_entry_with_manifestation_and_valid_digest(monitoring, session):
    entry = vs_entry(monitoring)
    response = sign(monitoring, entry["id"], credentials(meaning="review"))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["printed_name"] == "Investigator-Es01" and body["signer"] == "investigator-es01"
    assert body["meaning"] == "review" and body["entry_version"] == 1 and body["entry"] == entry["id"]
    assert body["signed_at"].endswith("+00:00") and body["status"] == "valid" and body["digest_valid"] is True
    assert "password" not in response.get_data(as_text=True)
    listed = signatures_of(monitoring, entry["id"])
    assert [(s["id"], s["status"], s["digest_valid"]) for s in listed] == [(body["id"], "valid", True)]
    assert "entry_signed" in audit_actions(monitoring, entry["id"])
    assert cell(session, entry["id"]).signed is True


def test_wrong_password_is_401_and_counts_toward_the_login_throttle(monitoring, session):
    entry = vs_entry(monitoring)
    free = monitoring.client.application.config["EDC"]["throttle_account_free_attempts"]
    for _ in range(free + 1):
        problem(sign(monitoring, entry["id"], credentials(password="not-my-password-1")), 401)
    assert count_rows(session, "signatures") == 0
    failed = sa.text("SELECT count(*) FROM audit_records WHERE action = 'login_failed'")
    assert session.execute(failed).scalar_one() == free + 1
    # The account is now throttled: login and signing with the right password both wait.
    locked = monitoring.client.post("/api/v1/auth/login", json={"username": username_of(PI), "password": PASSWORD})
    assert problem(locked, 429) and int(locked.headers["Retry-After"]) >= 1
    problem(sign(monitoring, entry["id"], credentials()), 429)
    assert count_rows(session, "signatures") == 0


def test_a_lock_set_off_from_another_address_does_not_stop_the_pi_signing(monitoring, session):
    entry = vs_entry(monitoring)
    for _ in range(monitoring.client.application.config["EDC"]["throttle_account_free_attempts"] + 3):
        monitoring.client.post("/api/v1/auth/login", json={"username": username_of(PI), "password": "not-my-password-1"},
                               environ_base={"REMOTE_ADDR": "203.0.113.66"})
    assert sign(monitoring, entry["id"], credentials()).status_code == 201
    assert count_rows(session, "signatures") == 1


@pytest.mark.parametrize("body", [
    {"meaning": "approval"},
    {"username": "investigator-es01", "meaning": "approval"},
    {"password": PASSWORD, "meaning": "approval"},
    {"username": "investigator-es01", "password": "", "meaning": "approval"},
])
def test_bearer_token_alone_is_never_enough(monitoring, session, body):
    entry = vs_entry(monitoring)
    problem(sign(monitoring, entry["id"], body), 401)
    assert count_rows(session, "signatures") == 0 and count_rows(session, "login_throttles") == 0


def test_username_must_be_the_signers_own(monitoring, session):
    entry = vs_entry(monitoring)
    problem(sign(monitoring, entry["id"], credentials(account="investigator_IT01")), 401)
    assert count_rows(session, "signatures") == 0


@pytest.mark.parametrize("body, pointer", [
    ({"username": "investigator-es01", "password": PASSWORD}, "/meaning"),
    ({"username": "investigator-es01", "password": PASSWORD, "meaning": "because"}, "/meaning"),
    ({"username": "investigator-es01", "password": PASSWORD, "meaning": "approval", "signer": "x"}, "/signer"),
])
def test_meaning_is_required_from_the_enum(monitoring, session, body, pointer):
    entry = vs_entry(monitoring)
    errors = problem(sign(monitoring, entry["id"], body), 422)["errors"]
    assert any(e["pointer"] == pointer for e in errors), errors
    assert count_rows(session, "signatures") == 0


@pytest.mark.parametrize("role, status", [
    ("investigator_IT01", 404),       # the PI of another site: no existence oracle
    ("subinvestigator_ES01", 403),    # an investigator of the site who is not its PI
    ("monitor_ES01", 403), ("coordinator_ES01", 403), ("data_manager", 403), ("admin", 403),
])
def test_only_the_pi_of_the_subjects_site_signs(monitoring, session, role, status):
    entry = vs_entry(monitoring)
    problem(sign(monitoring, entry["id"], credentials(account=role), role=role), status)
    assert count_rows(session, "signatures") == 0


def test_draft_or_open_queries_refuse_signing(monitoring, session):
    draft = vs_entry(monitoring, complete=False)
    problem(sign(monitoring, draft["id"], credentials()), 409)
    queried = vs_entry(monitoring, VSDAT="2026-11-19")       # outside the screening window: an automatic query
    assert queried["queries_opened"]
    problem(sign(monitoring, queried["id"], credentials()), 409)
    assert count_rows(session, "signatures") == 0


# ------------------------------------------------------------------------------------ linking and invalidation


def test_edit_after_signing_invalidates_the_signature_audited(monitoring, session, fake_clock):
    entry = vs_entry(monitoring)
    signed = sign(monitoring, entry["id"], credentials()).get_json()
    response = monitoring.update(entry["id"], {**VS, "HR": 99}, reason="transcription error")
    assert response.status_code == 200, response.get_json()
    [listed] = signatures_of(monitoring, entry["id"])
    assert listed["id"] == signed["id"] and listed["status"] == "invalidated" and listed["digest_valid"] is False
    trail = monitoring.client.get(f"/api/v1/entries/{entry['id']}/audit", headers=monitoring.headers["auditor"]).get_json()
    change = next(r for r in trail if r["action"] == "entry_updated")
    assert listed["invalidated_by_change"] == change["id"]
    assert any(r["action"] == "signature_invalidated" and change["id"] in r["reason"] for r in trail)
    assert cell(session, entry["id"]).signed is False
    # Sign again: a new valid signature at version 2, the old one stays invalidated.
    fake_clock.advance(minutes=1)
    again = sign(monitoring, entry["id"], credentials()).get_json()
    assert again["entry_version"] == 2 and again["digest_valid"] is True
    assert [s["status"] for s in signatures_of(monitoring, entry["id"])] == ["invalidated", "valid"]


def test_signature_row_copied_onto_another_entry_is_detected(monitoring, session):
    number = monitoring.enrol()
    signed_entry = vs_entry(monitoring, number)
    other = monitoring.saved(number, "cm", CM)
    original = sign(monitoring, signed_entry["id"], credentials()).get_json()
    row = session.get(Signature, uuid.UUID(original["id"]))
    copy = Signature(**{column.key: getattr(row, column.key) for column in Signature.__table__.columns
                        if column.key != "id"})
    copy.entry_id = uuid.UUID(other["id"])
    session.add(copy)
    session.commit()
    [copied] = signatures_of(monitoring, other["id"])
    assert copied["status"] == "valid" and copied["digest_valid"] is False      # the row claims it; the digest says no
    assert signatures_of(monitoring, signed_entry["id"])[0]["digest_valid"] is True


def test_key_rotation_does_not_invalidate_a_signature(monitoring, app_factory, keys_dir, tmp_path):
    # Rotate on a copy of the key material: the test session's keys are shared by every test.
    own_keys = shutil.copytree(keys_dir, tmp_path / "keys")
    app = app_factory(forms_dir=TRIAL_FORMS, keys_dir=str(own_keys))
    # Every request goes to the app on the rotated keys: once the new key is current, an app whose key
    # directory lacks it refuses to encrypt (as a node whose copy is behind must).
    client = monitoring.client = app.test_client()
    entry = vs_entry(monitoring)
    before = sign(monitoring, entry["id"], credentials(), client=client).get_json()
    result = app.test_cli_runner().invoke(args=["edc", "keys", "rotate"])
    assert result.exit_code == 0, result.output
    [after] = signatures_of(monitoring, entry["id"], client=client)
    assert (after["status"], after["digest_valid"], after["key_id"]) == ("valid", True, before["key_id"])
    newer = sign(monitoring, vs_entry(monitoring)["id"], credentials(), client=client).get_json()
    assert newer["key_id"] == before["key_id"] + 1 and newer["digest_valid"] is True


# ------------------------------------------------------------------------------------ casebooks


def test_pi_signs_a_casebook_and_a_later_entry_invalidates_it(monitoring, session):
    number = monitoring.enrol()
    vital = vs_entry(monitoring, number)
    medication = monitoring.saved(number, "cm", CM)
    response = sign_casebook(monitoring, number, credentials(meaning="responsibility"))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["entry"] is None and body["subject"] == number and body["digest_valid"] is True
    assert cell(session, vital["id"]).signed and cell(session, medication["id"]).signed
    listed = monitoring.client.get(f"/api/v1/subjects/{number}/signatures", headers=monitoring.headers["auditor"]).get_json()
    assert [(s["id"], s["status"], s["digest_valid"]) for s in listed] == [(body["id"], "valid", True)]
    assert [s["id"] for s in signatures_of(monitoring, vital["id"])] == [body["id"]]
    # A new entry changes the casebook: the signature is invalidated, in every cell of the subject.
    monitoring.saved(number, "cm", {**CM, "CMTRT": "Paracetamol"})
    [after] = monitoring.client.get(f"/api/v1/subjects/{number}/signatures", headers=monitoring.headers[PI]).get_json()
    assert after["status"] == "invalidated" and after["digest_valid"] is False
    assert not cell(session, vital["id"]).signed


@pytest.mark.postgresql_only  # SQLite holds the write lock from BEGIN: nothing commits during another save
def test_a_casebook_signed_while_a_new_entry_is_saved_is_still_invalidated(monitoring, session, monkeypatch):
    """A save reads whether the casebook is signed with the subject, before it holds the subject's chain lock: a
    signature committed in between must still be found (the chain moved on, so the save reads the signatures)."""
    number = monitoring.enrol()
    vital = vs_entry(monitoring, number)
    release, signed = form_registry.ensure_released, []

    def sign_meanwhile(db_session, form):  # after the save read its subject, before it locked the subject's chain
        if not signed:
            signed.append(sign_casebook(monitoring, number, credentials()))
        return release(db_session, form)

    monkeypatch.setattr(form_registry, "ensure_released", sign_meanwhile)
    medication = monitoring.saved(number, "cm", CM)
    assert signed[0].status_code == 201, signed[0].get_json()
    [after] = monitoring.client.get(f"/api/v1/subjects/{number}/signatures", headers=monitoring.headers[PI]).get_json()
    assert after["id"] == signed[0].get_json()["id"] and after["status"] == "invalidated"
    trail = monitoring.client.get(f"/api/v1/subjects/{number}/audit", headers=monitoring.headers["auditor"]).get_json()
    assert [r["action"] for r in trail][-3:] == ["casebook_signed", "entry_created", "signature_invalidated"]
    assert not cell(session, vital["id"]).signed and not cell(session, medication["id"]).signed


def test_casebook_with_a_draft_or_open_query_or_nothing_is_refused(monitoring, session):
    empty = monitoring.enrol()
    problem(sign_casebook(monitoring, empty, credentials()), 409)
    number = monitoring.enrol()
    vs_entry(monitoring, number)
    monitoring.saved(number, "cm", CM, complete=False)
    problem(sign_casebook(monitoring, number, credentials()), 409)
    queried = monitoring.enrol()
    vs_entry(monitoring, queried, VSDAT="2026-11-19")
    problem(sign_casebook(monitoring, queried, credentials()), 409)
    assert count_rows(session, "signatures") == 0


@pytest.mark.parametrize("role, status", [
    ("investigator_IT01", 404), ("subinvestigator_ES01", 403), ("monitor_ES01", 403),
])
def test_casebook_signed_only_by_its_sites_pi(monitoring, session, role, status):
    number = monitoring.enrol()
    vs_entry(monitoring, number)
    problem(sign_casebook(monitoring, number, credentials(account=role), role=role), status)
    problem(sign_casebook(monitoring, number, {"meaning": "approval"}), 401)
    assert count_rows(session, "signatures") == 0


def test_other_sites_cannot_read_signatures(monitoring):
    entry = vs_entry(monitoring)
    sign(monitoring, entry["id"], credentials())
    problem(monitoring.client.get(f"/api/v1/entries/{entry['id']}/signatures", headers=monitoring.headers["monitor_IT01"]), 404)
    problem(monitoring.client.get(f"/api/v1/subjects/{entry['subject']}/signatures",
                                  headers=monitoring.headers["investigator_IT01"]), 404)
    problem(monitoring.client.get(f"/api/v1/entries/{entry['id']}/signatures", headers=monitoring.headers["statistician"]), 403)


# ------------------------------------------------------------------------------------ signatures in the exports


def exported_signatures(monitoring, session, directory, selection=None) -> list[dict[str, str]]:
    runtime.bind(session, runtime.for_app(monitoring.client.application))  # the trial forms, not the default app's
    directory.mkdir()
    files = {f.name: f for f in write_csv(session, selection or source.Selection(), directory, include_audit=True)}
    with (directory / "signatures.csv").open(encoding="utf-8", newline="") as stream:
        listed = list(csv.DictReader(stream))
    assert files["signatures.csv"].records == len(listed)
    return listed


def odm_signatures(monitoring, session, directory, selection=None) -> set[tuple[str, str, str]]:
    """(element signed, signature meaning, time) of each Signature in the ODM export with audit."""
    runtime.bind(session, runtime.for_app(monitoring.client.application))
    directory.mkdir()
    write_odm(session, selection or source.Selection(), directory, include_audit=True, file_oid="EDC.TEST",
              created_at=TODAY)
    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
    root = etree.parse(str(directory / "odm.xml")).getroot()
    return {(etree.QName(element.getparent()).localname, element.find("odm:SignatureRef", ns).get("SignatureOID"),
             element.find("odm:DateTimeStamp", ns).text) for element in root.iterfind(".//odm:Signature", ns)}


def test_the_exports_show_each_signature_as_it_stood(monitoring, session, fake_clock, tmp_path):
    number = monitoring.enrol()
    vital = vs_entry(monitoring, number)
    fake_clock.advance(minutes=1)
    first = sign(monitoring, vital["id"], credentials(meaning="review")).get_json()
    fake_clock.advance(minutes=1)
    signed_only = fake_clock.now  # the first signature stood; nothing after it
    fake_clock.advance(minutes=1)
    assert monitoring.update(vital["id"], {**VS, "HR": 99}, reason="transcription error").status_code == 200
    fake_clock.advance(minutes=1)
    second = sign(monitoring, vital["id"], credentials()).get_json()
    fake_clock.advance(minutes=1)
    casebook = sign_casebook(monitoring, number, credentials(meaning="responsibility")).get_json()
    [invalidated] = [s for s in signatures_of(monitoring, vital["id"]) if s["id"] == first["id"]]

    listed = exported_signatures(monitoring, session, tmp_path / "all")
    keys = {"SUBJID": number, "SITEID": "ES01", "USER": "investigator-es01", "PRINTED_NAME": "Investigator-Es01"}
    entry = {**keys, "SCOPE": "entry", "EVENT": "SCR", "EVENT_INSTANCE": "1", "FORM": "vs", "ENTRY_ID": vital["id"]}
    assert listed == [
        {**entry, "ENTRY_VERSION": "1", "MEANING": "review", "TIME": first["signed_at"], "STATUS": "invalidated",
         "INVALIDATED_AT": invalidated["invalidated_at"]},
        {**entry, "ENTRY_VERSION": "2", "MEANING": "approval", "TIME": second["signed_at"], "STATUS": "valid",
         "INVALIDATED_AT": ""},
        {**keys, "SCOPE": "casebook", "EVENT": "", "EVENT_INSTANCE": "", "FORM": "", "ENTRY_ID": "", "ENTRY_VERSION": "",
         "MEANING": "responsibility", "TIME": casebook["signed_at"], "STATUS": "valid", "INVALIDATED_AT": ""},
    ]
    assert all(row["TIME"].endswith("+00:00") for row in listed) and invalidated["invalidated_at"].endswith("+00:00")

    # Forms outside the selection take their entry signatures with them; the casebook's stays.
    other_forms = exported_signatures(monitoring, session, tmp_path / "cm", source.Selection(forms=frozenset({"cm"})))
    assert [row["SCOPE"] for row in other_forms] == ["casebook"]

    # A data cut shows the signatures as they stood at its cut-off: the first one, still valid.
    cut = monitoring.client.post("/api/v1/data-cuts", headers=monitoring.headers["data_manager"],
                                 json={"name": "interim", "cutoff_at": signed_only.isoformat(), "reason": "DSMB"})
    assert cut.status_code == 201, cut.get_json()
    [as_cut] = exported_signatures(monitoring, session, tmp_path / "cut", source.Selection(cut_id=uuid.UUID(cut.get_json()["id"])))
    assert (as_cut["TIME"], as_cut["ENTRY_VERSION"], as_cut["STATUS"], as_cut["INVALIDATED_AT"]) == (
        first["signed_at"], "1", "valid", "")

    # ODM carries the signatures that stand on what it exports: live, the second and the casebook's; in the
    # cut's snapshot (version 1), the first, invalidated only later.
    assert odm_signatures(monitoring, session, tmp_path / "odm") == {
        ("FormData", "SD.approval", second["signed_at"]), ("SubjectData", "SD.responsibility", casebook["signed_at"])}
    assert odm_signatures(monitoring, session, tmp_path / "odm-cut", source.Selection(cut_id=uuid.UUID(cut.get_json()["id"]))) == {
        ("FormData", "SD.review", first["signed_at"])}
