"""Schedule anchors, form versions and releases, rechecks and key rotation."""

import shutil
import uuid

import pytest
import sqlalchemy as sa

from conftest import bearer, login, problem, project_root
from edc.models import AuditValue, Entry, FormVersion
from test_entries import VITALS, post_entry


@pytest.fixture
def inv(client, staff):
    return bearer(login(client, staff["investigator"]))


@pytest.fixture
def subject(client, inv):
    body = {"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F", "consent_date": "2026-11-02"}
    return client.post("/api/v1/subjects", json=body, headers=inv).get_json()["number"]


def test_infusion_date_sets_day0_and_the_casebook_due_dates(client, inv, subject):
    aph = post_entry(client, inv, subject, "apheresis", {"APHDAT": "2026-11-05", "PLANINFDAT": "2026-11-20",
                                                         "PRODUCT_ID": "ARI-000001"}, event="APH")
    assert aph.status_code == 201, aph.get_json()
    post_entry(client, inv, subject, "infusion", {"INFDAT": "2026-11-21", "PRODUCT_ID": "ARI-000001", "WEIGHT": 20.0,
                                                  "DOSE": 1.0}, event="D0")
    book = client.get(f"/api/v1/subjects/{subject}/casebook", headers=inv).get_json()
    assert book["anchors"]["day0"] == "2026-11-21" and book["anchors"]["planned_infusion"] == "2026-11-20"
    due = {e["event"]: e for e in book["events"]}
    assert due["D7"]["due"] == "2026-11-28" and due["D7"]["window"] == {"from": "2026-11-27", "to": "2026-11-29"}
    assert due["APH"]["due"] == "2026-10-23"
    history = client.get(f"/api/v1/subjects/{subject}/audit", headers=inv).get_json()
    assert any(r["action"] == "subject_anchor_changed" for r in history)


def test_daily_assessments_are_dated_entries_outside_events(client, inv, subject):
    response = post_entry(client, inv, subject, "daily", {"DADAT": "2026-11-21"}, complete=False)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["event"] is None


def test_old_entries_keep_their_form_version(client, inv, subject, session):
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR").get_json()
    session.execute(sa.update(Entry.__table__).where(Entry.__table__.c.id == uuid.UUID(created["id"])).values(form_version="1"))
    session.commit()
    old = client.get(f"/api/v1/entries/{created['id']}", headers=inv).get_json()
    assert old["form_version"] == "1"
    assert client.get("/api/v1/forms/vitals?version=1", headers=inv).get_json()["version"] == "1"


def test_saving_releases_the_version_and_a_changed_release_is_refused(client, inv, subject, session, app_factory):
    post_entry(client, inv, subject, "vitals", VITALS, event="SCR")
    released = session.get(FormVersion, ("vitals", "2"))
    assert released is not None
    # The definition on disk no longer matches what was released (as after editing the file and restarting).
    session.execute(sa.update(FormVersion).where(FormVersion.form_id == "vitals").values(content_hash="0" * 64))
    session.commit()
    restarted = app_factory().test_client()
    body = problem(post_entry(restarted, inv, subject, "vitals", VITALS, event="D7"), 409)
    assert "new version" in body["detail"]


def test_forms_check_cli_passes_on_the_study(runner):
    result = runner.invoke(args=["edc", "forms", "check"])
    assert result.exit_code == 0, result.output
    assert "definitions are valid" in result.output


def test_forms_check_cli_names_file_and_line(runner, tmp_path):
    broken = tmp_path / "forms"
    shutil.copytree(project_root() / "tests" / "demo_forms", broken)
    vitals = broken / "vitals" / "2.yaml"
    vitals.write_text(vitals.read_text().replace("    assert: SBP > DBP", "    assert: SBP > 'abc'"))
    result = runner.invoke(args=["edc", "forms", "check", "--dir", str(broken)])
    assert result.exit_code == 1
    assert f"{vitals}:" in result.output or "vitals/2.yaml:" in result.output


def test_forms_check_cli_names_the_line_of_a_safety_item_of_the_wrong_type(runner, tmp_path):
    broken = tmp_path / "forms"
    shutil.copytree(project_root() / "tests" / "demo_forms", broken)
    study = broken / "study.yaml"
    study.write_text(study.read_text().replace("grade: AETOXGR", "grade: AESTDAT"))
    line = study.read_text().splitlines().index("  adverse_events: {form: ae, grade: AESTDAT, serious: AESER}") + 1
    result = runner.invoke(args=["edc", "forms", "check", "--dir", str(broken)])
    assert result.exit_code == 1
    assert (f"{study}:{line}: safety.adverse_events.grade: ae.AESTDAT is a date item; it must be a choice or integer item"
            in result.output), result.output


def test_service_refuses_to_start_with_invalid_definitions(tmp_path, keys_dir):
    from edc import create_app
    from edc.ecrf import DefinitionError

    broken = tmp_path / "forms"
    shutil.copytree(project_root() / "tests" / "demo_forms", broken)
    (broken / "study.yaml").write_text((broken / "study.yaml").read_text() + "\nunknown_key: 1\n")
    with pytest.raises(DefinitionError, match="unknown_key"):
        create_app({"env": "testing", "keys_dir": keys_dir, "forms_dir": str(broken)})


def test_recheck_opens_queries_without_changing_data(client, inv, subject, session, runner):
    created = post_entry(client, inv, subject, "vitals", VITALS, event="SCR").get_json()
    before = session.scalars(sa.select(Entry.data).where(Entry.id == uuid.UUID(created["id"]))).one()
    result = runner.invoke(args=["edc", "forms", "recheck"])
    assert result.exit_code == 0 and "0 queries opened" in result.output
    after = session.scalars(sa.select(Entry.data).where(Entry.id == uuid.UUID(created["id"]))).one()
    assert before == after


def test_key_rotation_reencrypts_everything_and_changes_no_hash(client, inv, subject, session, runner, app, tmp_path):
    keys = tmp_path / "keys"
    shutil.copytree(app.config["EDC"]["keys_dir"], keys)
    app.config["EDC"]["keys_dir"] = str(keys)
    created = post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": "first note"}, event="SCR")
    client.put(created.headers["Location"], json={"data": {**VITALS, "VSCOMM": "second note"}, "complete": True, "reason": "typo"},
               headers={**inv, "If-Match": created.headers["ETag"]})
    entry_id = uuid.UUID(created.get_json()["id"])
    etag_before = client.get(created.headers["Location"], headers=inv).headers["ETag"]
    hashes_before = session.execute(sa.text("SELECT id, hash FROM audit_records ORDER BY chain, seq")).all()

    result = runner.invoke(args=["edc", "keys", "rotate"])
    assert result.exit_code == 0, result.output
    stored = session.scalars(sa.select(Entry.data).where(Entry.id == entry_id)).one()
    assert stored["VSCOMM"]["sealed"]["kid"] == 2
    assert {v.key_id for v in session.scalars(sa.select(AuditValue))} == {2}
    hashes_after = dict(session.execute(sa.text("SELECT id, hash FROM audit_records")).all())
    assert {record_id: hashes_after[record_id] for record_id, _ in hashes_before} == dict(hashes_before)
    assert session.execute(sa.text("SELECT action FROM audit_records ORDER BY occurred_at DESC, seq DESC")).first()[0] == "keys_rotated"
    assert runner.invoke(args=["edc", "audit", "verify"]).exit_code == 0
    # New requests read with the new ring (a fresh app, as after a restart).
    from conftest import make_app

    fresh = make_app(app.config["SQLALCHEMY_DATABASE_URI"], str(keys))
    reread = fresh.test_client().get(created.headers["Location"], headers=inv)
    assert reread.get_json()["data"]["VSCOMM"] == "second note" and reread.headers["ETag"] == etag_before
    from edc.extensions import db

    with fresh.app_context():
        db.engine.dispose()


def test_key_rotation_resumes_after_being_killed(client, inv, subject, session, runner, app, tmp_path, monkeypatch):
    from edc.services import rotation

    keys = tmp_path / "keys"
    shutil.copytree(app.config["EDC"]["keys_dir"], keys)
    app.config["EDC"]["keys_dir"] = str(keys)
    for event in ("SCR", "D7", "D28"):
        post_entry(client, inv, subject, "vitals", {**VITALS, "VSCOMM": f"note {event}"}, event=event)
    monkeypatch.setattr(rotation, "BATCH", 1)
    real_rotate_audit = rotation.rotate_audit_values

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(rotation, "rotate_audit_values", killed)
    interrupted = runner.invoke(args=["edc", "keys", "rotate"])
    assert interrupted.exit_code != 0
    monkeypatch.setattr(rotation, "rotate_audit_values", real_rotate_audit)
    result = runner.invoke(args=["edc", "keys", "rotate", "--resume"])
    assert result.exit_code == 0, result.output
    kids = {e["VSCOMM"]["sealed"]["kid"] for e in session.scalars(sa.select(Entry.data))}
    assert kids == {2}
    assert {v.key_id for v in session.scalars(sa.select(AuditValue))} == {2}
    assert runner.invoke(args=["edc", "audit", "verify"]).exit_code == 0


def test_forms_release_records_the_hash_and_forms_check_then_guards_it(runner, tmp_path):
    folder = tmp_path / "forms"
    shutil.copytree(project_root() / "tests" / "demo_forms", folder)
    result = runner.invoke(args=["edc", "forms", "release", "ae", "1", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert "ae:" in (folder / "released.yaml").read_text()
    ae = folder / "ae" / "1.yaml"
    ae.write_text(ae.read_text().replace("Reported term", "Reported event term"))
    check = runner.invoke(args=["edc", "forms", "check", "--dir", str(folder)])
    assert check.exit_code == 1 and "ae" in check.output


def test_study_setting_can_require_a_reason_for_every_change_after_the_first_save(app_factory, staff, tmp_path):
    folder = tmp_path / "forms"
    shutil.copytree(project_root() / "tests" / "demo_forms", folder)
    study = folder / "study.yaml"
    study.write_text(study.read_text().replace("reason_required_after_first_save: false", "reason_required_after_first_save: true"))
    client = app_factory(forms_dir=str(folder)).test_client()
    inv = bearer(login(client, staff["investigator"]))
    number = client.post("/api/v1/subjects", json={"site": "ES01", "birth_year": 2016, "birth_month": 4, "sex": "F",
                                                   "consent_date": "2026-11-02"}, headers=inv).get_json()["number"]
    draft = post_entry(client, inv, number, "vitals", VITALS, event="SCR", complete=False)
    body = problem(client.put(draft.headers["Location"], json={"data": {**VITALS, "HR": 90}},
                              headers={**inv, "If-Match": draft.headers["ETag"]}), 422)
    assert body["errors"][0]["pointer"] == "/reason"


def test_a_changed_anchor_rechecks_the_rules_that_read_it(client, inv, subject):
    aph = post_entry(client, inv, subject, "apheresis", {"APHDAT": "2026-10-20", "PLANINFDAT": "2026-11-01",
                                                         "PRODUCT_ID": "ARI-000001"}, event="APH")
    inf = post_entry(client, inv, subject, "infusion", {"INFDAT": "2026-11-21", "PRODUCT_ID": "ARI-000001", "WEIGHT": 20.0,
                                                        "DOSE": 1.0}, event="D0")
    assert [q["check"] for q in inf.get_json()["queries_opened"]] == ["INFUSION_DELAY"]
    client.put(aph.headers["Location"], json={"data": {"APHDAT": "2026-10-20", "PLANINFDAT": "2026-11-15",
                                                       "PRODUCT_ID": "ARI-000001"}, "complete": True, "reason": "rescheduled"},
               headers={**inv, "If-Match": aph.headers["ETag"]})
    states = {q["check"]: q["state"] for q in client.get(inf.headers["Location"], headers=inv).get_json()["queries"]}
    assert states == {"INFUSION_DELAY": "answered"}
