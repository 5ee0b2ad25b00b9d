"""edc.exports.odm: the selected casebooks as one CDISC ODM 1.3.2 snapshot, checked against the official XSD
(the copy odmlib ships) and against the database: counts, pseudonymisation, missing-data codes, partial dates,
form versions, determinism and cancellation."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import odmlib
import pytest
import sqlalchemy as sa
from lxml import etree

from conftest import login
from edc import runtime
from edc.exports import odm, source
from edc.exports.files import Cancelled
from edc.extensions import db
from edc.models import Entry, Query, Subject, User
from edc.security.permissions import Actor
from edc.services import locking
from edc.services.demo import DEMO_PASSWORD
from test_demo_subjects import TRIAL_FORMS

CREATED = datetime(2026, 9, 2, 10, 30, tzinfo=UTC)
FILE_OID = "ODM.MILENARI-P1.TEST-1"
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
# Attributes that name another element by OID, and the element they must name.
REFERENCES = {"StudyEventOID": "StudyEventDef", "FormOID": "FormDef", "ItemGroupOID": "ItemGroupDef", "ItemOID": "ItemDef",
              "CodeListOID": "CodeList", "MeasurementUnitOID": "MeasurementUnit", "LocationOID": "Location",
              "UserOID": "User", "SignatureOID": "SignatureDef", "MetaDataVersionOID": "MetaDataVersion",
              "StudyOID": "Study"}
IDENTIFYING_CANARY = "Canary Reporter-Name 7731"


@pytest.fixture(scope="session")
def odm_schema() -> etree.XMLSchema:
    """The official ODM 1.3.2 schema as odmlib ships it (its includes resolve beside it)."""
    found = sorted(Path(odmlib.__file__).parent.rglob("ODM1-3-2.xsd"))
    assert found, "odmlib no longer ships ODM1-3-2.xsd"
    return etree.XMLSchema(etree.parse(str(found[0])))


@pytest.fixture
def amended(demo, app_factory, tmp_path):
    """The demo data, then an amendment: AE version 2 (longer AETERM, a new identifying item), and one AE
    entered on version 2 with the identifying item filled in."""
    forms = tmp_path / "forms"
    shutil.copytree(TRIAL_FORMS, forms)
    text = (forms / "ae" / "1.yaml").read_text()
    anchor = "      - id: AETERM\n        type: text\n        required: true\n        max_length: 200\n"
    assert anchor in text and "\nversion: 1\n" in text
    text = text.replace("\nversion: 1\n", "\nversion: 2\n").replace(anchor, (
        "      - id: AEREPNAM\n        type: text\n        max_length: 100\n        identifying: true\n"
        "        label: {en: Name of the person who reported the event}\n"
        + anchor.replace("max_length: 200", "max_length: 300")))
    (forms / "ae" / "2.yaml").write_text(text)
    study_file = (forms / "study.yaml").read_text()   # the amended study releases the verbatim term to its exports
    (forms / "study.yaml").write_text(study_file.replace("  encrypted_items: {}\n", "  encrypted_items: {ae: [AETERM]}\n"))
    app = app_factory(forms_dir=str(forms))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {login(client, 'inv.es01', DEMO_PASSWORD)['access_token']}"}
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        study = runtime.of(session).study
        number, values = _first_ae(session)
        data = {key: value for key, value in values.items() if not study.form("ae", "1").items[key].computed}
        data.update(AEREPNAM=IDENTIFYING_CANARY, AETERM="Fever after the second fraction")
        response = client.post(f"/api/v1/subjects/{number}/entries", json={"form": "ae", "data": data, "complete": True},
                               headers=headers)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["form_version"] == "2"
        session.rollback()
        yield app
        session.rollback()


def _first_ae(session) -> tuple[str, dict]:
    for book in source.casebooks(session, source.Selection(forms=frozenset({"ae"}))):
        if book.subject.site.code == "ES01":
            return book.subject.number, book.entries[0].values
    raise AssertionError("the demo has no AE at ES01")


def export(directory: Path, selection: source.Selection | None = None, **options) -> tuple[bytes, etree._Element]:
    directory.mkdir(parents=True, exist_ok=True)
    files = odm.write_odm(db.session, selection or source.Selection(), directory, file_oid=options.pop("file_oid", FILE_OID),
                          created_at=options.pop("created_at", CREATED), **options)
    assert [f.name for f in files] == ["odm.xml"] and files[0].media_type == "application/xml"
    content = (directory / "odm.xml").read_bytes()
    assert files[0].size == len(content)
    return content, etree.fromstring(content)


def assert_valid(schema: etree.XMLSchema, root: etree._Element) -> None:
    if not schema.validate(etree.ElementTree(root)):
        errors = "\n".join(f"{e.line}: {e.message}" for e in list(schema.error_log)[:20])
        raise AssertionError(f"not valid ODM 1.3.2:\n{errors}")


def assert_references_resolve(root: etree._Element) -> None:
    """The XSD has no keyrefs: check that every OID reference names an element that is in the file."""
    defined: dict[str, set[str]] = {}
    for element in root.iter():
        if isinstance(element.tag, str) and element.get("OID"):
            defined.setdefault(etree.QName(element).localname, set()).add(element.get("OID"))
    dangling = set()
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        for attribute, target in REFERENCES.items():
            value = element.get(attribute)
            if value is not None and value not in defined.get(target, set()):
                dangling.add((etree.QName(element).localname, attribute, value))
    assert not dangling, sorted(dangling)[:10]


def expected_item_data(study, entries) -> int:
    """ItemData per the documented rules: one per answered item (withheld items none: identifying, or encrypted
    and not released), two per missing-data code (the item, IsNull, and its <ITEM>_MISSING companion), one per
    coded group."""
    def count(withheld, item, value) -> int:
        if item.id in withheld or value is None or value == "" or value == []:
            return 0
        return 2 if isinstance(value, dict) else 1

    total = 0
    for entry in entries:
        form = study.form(entry.form_id, entry.form_version)
        withheld = study.withheld_items(form.id)
        for key, value in entry.values.items():
            if key not in form.groups:
                total += count(withheld, form.items[key], value)
            elif isinstance(value, dict):
                total += 1
            else:
                total += sum(count(withheld, form.items[item_id], v) for row in value for item_id, v in row.items())
    return total


def all_entries(session):
    return [entry for book in source.casebooks(session, source.Selection()) for entry in book.entries]


# ------------------------------------------------------------------------------------------------ validity


def test_the_document_is_valid_odm_1_3_2_and_every_reference_resolves(demo, tmp_path, odm_schema):
    _, root = export(tmp_path / "odm")
    assert_valid(odm_schema, root)
    assert_references_resolve(root)
    assert (root.get("ODMVersion"), root.get("FileType"), root.get("Granularity")) == ("1.3.2", "Snapshot", "All")
    assert root.get("FileOID") == FILE_OID and root.get("CreationDateTime") == "2026-09-02T10:30:00+00:00"
    versions = root.findall("odm:Study/odm:MetaDataVersion", NS)
    assert len(versions) == 1
    assert {c.get("MetaDataVersionOID") for c in root.findall("odm:ClinicalData", NS)} == {versions[0].get("OID")}
    # Without audit: sites only, no users, no audit records, no signatures.
    assert root.findall("odm:AdminData/odm:Location", NS) and not root.findall("odm:AdminData/odm:User", NS)
    assert not root.findall(".//odm:AuditRecord", NS) and not root.findall(".//odm:Signature", NS)


def test_with_audit_records_and_a_signature_the_document_is_still_valid_and_names_no_person(demo, tmp_path, odm_schema):
    session = db.session
    signed = sign_an_entry(demo, session)
    _, root = export(tmp_path / "odm", include_audit=True)
    assert_valid(odm_schema, root)
    assert_references_resolve(root)
    form_data = [f for f in root.iter(f"{{{NS['odm']}}}FormData") if f.find("odm:Signature", NS) is not None]
    assert len(form_data) == 1
    signature = form_data[0].find("odm:Signature", NS)
    assert signature.find("odm:UserRef", NS).get("UserOID") == "USR.inv.es01"
    assert signature.find("odm:SignatureRef", NS).get("SignatureOID") == "SD.approval"
    assert signature.find("odm:LocationRef", NS).get("LocationOID") == "LOC.ES01"
    assert form_data[0].get("FormOID") == f"F.{signed.form_id.upper()}.V{signed.form_version}"
    records = root.findall(".//odm:AuditRecord", NS)
    assert len(root.findall(".//odm:FormData/odm:AuditRecord", NS)) == len(root.findall(".//odm:FormData", NS))
    assert len(root.findall(".//odm:ItemData/odm:AuditRecord", NS)) > len(records) / 2
    assert all(r.find("odm:SourceID", NS).text.startswith("audit:") for r in records)
    # Pseudonymised users: login names and roles, never display names or e-mail addresses.
    users = session.scalars(sa.select(User)).all()
    text = etree.tostring(root, encoding="unicode")
    assert not any(u.display_name in text for u in users) and not any(u.email and u.email in text for u in users)
    inv = root.find("odm:AdminData/odm:User[@OID='USR.inv.es01']", NS)
    assert inv.find("odm:DisplayName", NS).text == "principal investigator ES01"
    assert inv.get("UserType") == "Investigator"


def sign_an_entry(app, session) -> Entry:
    """The ES01 principal investigator signs a complete entry without unresolved queries, through the API."""
    unresolved = sa.select(Query.entry_id).where(Query.state.in_(("open", "answered")))
    entry = session.scalars(sa.select(Entry).join(Subject, Subject.id == Entry.subject_id)
                            .where(Subject.number.like("ES01-%"), Entry.status == "complete", Entry.id.not_in(unresolved))
                            .order_by(Entry.created_at, Entry.id).limit(1)).one()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {login(client, 'inv.es01', DEMO_PASSWORD)['access_token']}"}
    body = {"username": "inv.es01", "password": DEMO_PASSWORD, "meaning": "approval"}
    response = client.post(f"/api/v1/entries/{entry.id}/signatures", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    session.rollback()
    return entry


# ------------------------------------------------------------------------------------------------ content


def test_subjects_forms_and_items_match_the_database(demo, tmp_path):
    session = db.session
    study = runtime.of(session).study
    _, root = export(tmp_path / "odm")
    subjects = root.findall("odm:ClinicalData/odm:SubjectData", NS)
    assert [s.get("SubjectKey") for s in subjects] == list(session.scalars(sa.select(Subject.number).order_by(Subject.number)))
    for subject in subjects:
        site = subject.get("SubjectKey").split("-")[0]
        assert subject.find("odm:SiteRef", NS).get("LocationOID") == f"LOC.{site}"
    assert len(root.findall(".//odm:FormData", NS)) == session.scalar(sa.select(sa.func.count(Entry.id)))
    assert len(root.findall(".//odm:ItemData", NS)) == expected_item_data(study, all_entries(session))
    statuses = [flag.text for flag in root.findall(".//odm:FormData/odm:Annotation/odm:Flag/odm:FlagValue", NS)]
    assert sorted(statuses) == sorted(session.scalars(sa.select(Entry.status)))
    # Repeating groups: one ItemGroupData per row, keyed 1..n.
    mh = root.findall(".//odm:ItemGroupData[@ItemGroupOID='IG.MH.V1.MH']", NS)
    assert mh and {g.get("ItemGroupRepeatKey") for g in mh} >= {"1"}


def test_one_site_is_a_single_site_file(demo, tmp_path, odm_schema):
    session = db.session
    site_id, number = session.execute(sa.select(Subject.site_id, Subject.number).order_by(Subject.number).limit(1)).one()
    _, root = export(tmp_path / "odm", source.Selection(site_ids=frozenset({site_id})))
    assert_valid(odm_schema, root)
    assert root.get("Granularity") == "SingleSite"
    assert [s.get("SubjectKey") for s in root.findall(".//odm:SubjectData", NS)] == [number]


def test_a_missing_data_code_is_kept_beside_a_null_value(demo, tmp_path):
    _, root = export(tmp_path / "odm")
    coded = root.findall(".//odm:ItemData[@ItemOID='I.RESP.RSORRES.MISSING']", NS)
    assert coded and {c.get("Value") for c in coded} == {"NA"}
    for companion in coded:
        group = companion.getparent()
        assert group.find("odm:ItemData[@ItemOID='I.RESP.RSORRES']", NS).get("IsNull") == "Yes"
    missing = root.find(".//odm:CodeList[@OID='CL.MISSING']", NS)
    assert [i.get("CodedValue") for i in missing.findall("odm:CodeListItem", NS)] == ["ND", "UNK", "NA", "NE"]
    companion_def = root.find(".//odm:ItemDef[@OID='I.RESP.RSORRES.MISSING']", NS)
    assert companion_def.get("Name") == "RSORRES_MISSING"
    assert companion_def.find("odm:CodeListRef", NS).get("CodeListOID") == "CL.MISSING"


def test_a_partial_date_stays_partial(demo, tmp_path):
    session = db.session
    stored = sorted(e.values["DXDAT"] for e in all_entries(session) if e.form_id == "dh")
    assert any(len(value) == 7 for value in stored)            # YYYY-MM, as the demo collected it
    _, root = export(tmp_path / "odm")
    assert root.find(".//odm:ItemDef[@OID='I.DH.DXDAT']", NS).get("DataType") == "partialDate"
    assert sorted(i.get("Value") for i in root.findall(".//odm:ItemData[@ItemOID='I.DH.DXDAT']", NS)) == stored
    assert root.find(".//odm:ItemDef[@OID='I.AE.AESTDAT']", NS).get("DataType") == "date"


def test_identifying_items_never_appear(amended, tmp_path, odm_schema):
    content, root = export(tmp_path / "odm", include_audit=True)
    assert_valid(odm_schema, root)
    assert IDENTIFYING_CANARY.encode() not in content
    assert b"AEREPNAM" not in content


def test_each_form_version_has_its_own_form_def_and_unchanged_items_keep_their_item_def(amended, tmp_path, odm_schema):
    session = db.session
    assert source.form_versions(session, source.Selection())["ae"] == ["1", "2"]
    _, root = export(tmp_path / "odm")
    assert_valid(odm_schema, root)
    assert_references_resolve(root)
    forms = {f.get("OID") for f in root.findall(".//odm:FormDef", NS)}
    assert {"F.AE.V1", "F.AE.V2", "F.DM.V1"} <= forms and all(".V" in oid for oid in forms)
    assert {g.get("OID") for g in root.findall(".//odm:ItemGroupDef", NS)} >= {"IG.AE.V1", "IG.AE.V2"}
    assert len(root.findall(".//odm:FormData[@FormOID='F.AE.V2']", NS)) == 1

    def refs(group_oid):
        return [r.get("ItemOID") for r in root.findall(f".//odm:ItemGroupDef[@OID='{group_oid}']/odm:ItemRef", NS)]

    v1, v2 = refs("IG.AE.V1"), refs("IG.AE.V2")
    assert "I.AE.AETERM" in v1 and "I.AE.AETERM.V2" in v2          # changed definition: its own ItemDef
    assert "I.AE.AESTDAT" in v1 and "I.AE.AESTDAT" in v2            # unchanged: shared, so the data pool
    assert root.find(".//odm:ItemDef[@OID='I.AE.AETERM.V2']", NS).get("Length") == "300"
    v2_term = root.find(".//odm:FormData[@FormOID='F.AE.V2']//odm:ItemData[@ItemOID='I.AE.AETERM.V2']", NS)
    assert v2_term.get("Value") == "Fever after the second fraction"
    # The log form sits in the COMMON event, with its entry id as the repeat key.
    ae = root.find(".//odm:FormData[@FormOID='F.AE.V2']", NS)
    assert ae.getparent().get("StudyEventOID") == "SE.COMMON" and len(ae.get("FormRepeatKey")) == 36


def test_a_data_cut_exports_its_snapshot_as_of_the_cut_off(demo, tmp_path, odm_schema):
    session = db.session
    cutoff = datetime(2026, 7, 1, tzinfo=UTC)
    cut = locking.create_cut(session, Actor.system("tests"), name="interim", cutoff_at=cutoff, reason="interim analysis")
    session.commit()
    _, root = export(tmp_path / "odm", source.Selection(cut_id=cut.id), include_audit=True)
    assert_valid(odm_schema, root)
    assert_references_resolve(root)
    assert root.get("AsOfDateTime") == "2026-07-01T00:00:00+00:00"
    assert 0 < len(root.findall(".//odm:FormData", NS)) == cut.entry_count < session.scalar(sa.select(sa.func.count(Entry.id)))
    stamps = [datetime.fromisoformat(s.text) for s in root.findall(".//odm:AuditRecord/odm:DateTimeStamp", NS)]
    assert stamps and max(stamps) <= cutoff


def test_two_runs_are_byte_identical(demo, tmp_path):
    first, _ = export(tmp_path / "one", include_audit=True)
    second, _ = export(tmp_path / "two", include_audit=True)
    assert first == second
    other, _ = export(tmp_path / "three", include_audit=True, file_oid="ODM.OTHER",
                      created_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert other != first
    assert other.replace(b"ODM.OTHER", FILE_OID.encode()).replace(b"2027-01-01T00:00:00+00:00",
                                                                  b"2026-09-02T10:30:00+00:00") == first


def test_progress_is_reported_per_subject_and_cancellation_propagates(demo, tmp_path):
    seen: list[int] = []
    export(tmp_path / "odm", progress=seen.append)
    assert seen == [1, 2, 3]

    def cancel_after_two(done: int) -> None:
        if done == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        export(tmp_path / "cancelled", progress=cancel_after_two)
