"""Signatures and key rotation over the trial's encrypted items: an entry and a casebook whose free text is
stored encrypted are signed by the principal investigator; `flask edc keys rotate` re-encrypts that text under a
new key and both signatures still verify, and the values read back unchanged."""

from __future__ import annotations

import shutil
import uuid

from edc.models.entries import Entry
from monitoring.test_signatures import PI, credentials, sign, sign_casebook
from trial.conftest import TRIAL_FORMS
from trial.test_treatment_forms import CM

CANARIES = {"CMTRT": "CANARY-CMTRT-7d0e41", "CMINDC": "CANARY-CMINDC-a93b02"}


def test_signatures_over_encrypted_trial_items_survive_key_rotation(monitoring, app_factory, keys_dir, tmp_path, session):
    # Rotate on a copy of the key material: the test session's keys are shared by every test.
    own_keys = shutil.copytree(keys_dir, tmp_path / "keys")
    app = app_factory(forms_dir=TRIAL_FORMS, keys_dir=str(own_keys))
    client = app.test_client()
    number = monitoring.enrol()
    medication = monitoring.saved(number, "cm", {**CM, **CANARIES})
    stored = session.get(Entry, uuid.UUID(medication["id"])).data
    assert all(set(stored[item]) == {"sealed"} for item in CANARIES)           # encrypted at rest on the trial form
    signed_entry = sign(monitoring, medication["id"], credentials(), client=client)
    signed_book = sign_casebook(monitoring, number, credentials(meaning="responsibility"))
    assert (signed_entry.status_code, signed_book.status_code) == (201, 201), signed_book.get_json()
    envelopes = {item: stored[item]["sealed"] for item in CANARIES}

    result = app.test_cli_runner().invoke(args=["edc", "keys", "rotate"])
    assert result.exit_code == 0, result.output
    session.expire_all()
    rotated = session.get(Entry, uuid.UUID(medication["id"])).data
    assert all(rotated[item]["sealed"] != envelopes[item] for item in CANARIES)   # re-encrypted under the new key
    listed = client.get(f"/api/v1/subjects/{number}/signatures", headers=monitoring.headers[PI]).get_json()
    assert {(s["id"], s["status"], s["digest_valid"]) for s in listed} == {
        (signed_entry.get_json()["id"], "valid", True), (signed_book.get_json()["id"], "valid", True)}
    read = client.get(f"/api/v1/entries/{medication['id']}", headers=monitoring.headers[PI]).get_json()
    assert {item: read["data"][item] for item in CANARIES} == CANARIES
