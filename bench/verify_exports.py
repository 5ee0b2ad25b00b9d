"""Export every format of a whole study through the export jobs and check each output completely:

- CSV: every file parses; one wide row per entry of each form; the long file has one row per stored item value;
- ODM: the document validates against the official ODM 1.3.2 XML schema (odmlib's ODM1-3-2.xsd) and holds one
  SubjectData per subject and one FormData per entry;
- FHIR: every NDJSON resource validates against the official FHIR R4 JSON schema (the pinned fhir.schema.json
  of tests/exports/conftest.py) and every AdverseEvent obeys the seriousness rule (serious <=> criteria).

It runs against the database the app's settings name (EDC_DATABASE_URL, EDC_KEYS_DIR, EDC_EXPORT_DIR, or the
storage_s3_* settings), reading the files back through export storage as a download does, e.g.
the 200-subject demo study made by `flask edc seed-demo --subjects 200`:

    EDC_DATABASE_URL=... EDC_KEYS_DIR=... EDC_EXPORT_DIR=... .venv/bin/python bench/verify_exports.py

Prints one line per check and exits 1 if any fails. Needs the test dependencies (lxml, odmlib, jsonschema).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")]  # the app, and the tests' schema helpers


def main() -> int:
    import sqlalchemy as sa

    from edc import create_app, runtime
    from edc.extensions import db
    from edc.models import Entry, Subject, User
    from edc.services import exports
    from edc.services.auth import actor_for  # the demo statistician, as a request would see them

    app = create_app()
    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="edc-verify-exports-"))
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        statistician = actor_for(session.scalars(sa.select(User).where(User.username == "stat")).one())
        subjects = session.scalar(sa.select(sa.func.count(Subject.id)))
        entries_per_form = dict(session.execute(sa.select(Entry.form_id, sa.func.count(Entry.id)).group_by(Entry.form_id)).all())
        print(f"study: {subjects} subjects, {sum(entries_per_form.values())} entries")
        directories = {}
        for fmt in ("csv", "odm", "fhir"):
            job = exports.request_export(session, statistician, exports.ExportRequest(format=fmt))
            session.commit()
            started = time.perf_counter()
            exports.run_pending(session)
            session.refresh(job)
            if job.state != "completed":
                failures.append(f"{fmt}: export ended {job.state}: {job.error}")
                continue
            print(f"{fmt}: exported {job.manifest['subjects']} subjects in {time.perf_counter() - started:.1f} s, "
                  f"{len(job.manifest['files'])} files")
            if job.manifest["subjects"] != subjects:
                failures.append(f"{fmt}: {job.manifest['subjects']} subjects exported of {subjects}")
            directories[fmt] = (fetch(runtime.of(session).storage, job, scratch / fmt), job.manifest)
    if "csv" in directories:
        failures += check_csv(*directories["csv"], entries_per_form)
    if "odm" in directories:
        failures += check_odm(directories["odm"][0] / "odm.xml", subjects, sum(entries_per_form.values()))
    if "fhir" in directories:
        failures += check_fhir(*directories["fhir"], subjects)
    shutil.rmtree(scratch, ignore_errors=True)
    for failure in failures:
        print(f"FAILED {failure}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def fetch(storage, job, directory: Path) -> Path:
    """The export's files, read from export storage (either backend) into `directory`."""
    directory.mkdir()
    for listed in job.manifest["files"]:
        with storage.open(f"{job.id}/{listed['name']}") as stream, (directory / listed["name"]).open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    return directory


def check_csv(directory: Path, manifest: dict, entries_per_form: dict[str, int]) -> list[str]:
    failures = []
    for listed in manifest["files"]:
        with (directory / listed["name"]).open(newline="", encoding="utf-8") as stream:
            rows = sum(1 for _ in csv.reader(stream)) - 1
        if rows != listed["records"]:
            failures.append(f"csv {listed['name']}: {rows} rows, manifest says {listed['records']}")
        form = listed["name"].removesuffix(".csv")
        if form in entries_per_form and rows != entries_per_form[form]:
            failures.append(f"csv {listed['name']}: {rows} rows for {entries_per_form[form]} entries")
    missing = set(entries_per_form) - {f["name"].removesuffix(".csv") for f in manifest["files"]}
    if missing:
        failures.append(f"csv: no file for forms {sorted(missing)}")
    values = next(f["records"] for f in manifest["files"] if f["name"] == "items_long.csv")
    print(f"csv: every file parses; one row per entry in {len(entries_per_form)} form files; {values:,} item values")
    return failures


def check_odm(path: Path, subjects: int, entries: int) -> list[str]:
    import odmlib
    from lxml import etree

    xsd = sorted(Path(odmlib.__file__).parent.rglob("ODM1-3-2.xsd"))[0]
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    document = etree.parse(str(path))
    failures = []
    if not schema.validate(document):
        failures += [f"odm: {error.line}: {error.message}" for error in list(schema.error_log)[:20]]
    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
    found_subjects = len(document.findall(".//odm:SubjectData", ns))
    found_forms = len(document.findall(".//odm:FormData", ns))
    if (found_subjects, found_forms) != (subjects, entries):
        failures.append(f"odm: {found_subjects} SubjectData, {found_forms} FormData for {subjects} subjects, {entries} entries")
    print(f"odm: {path.stat().st_size / 1e6:.1f} MB, valid against {xsd.name}: {not failures}; "
          f"{found_subjects} SubjectData, {found_forms} FormData")
    return failures


def check_fhir(directory: Path, manifest: dict, subjects: int) -> list[str]:
    from exports.conftest import SCHEMA_CACHE, R4Validator, load_schema
    from exports.test_fhir import seriousness_rule_holds  # the rule of fhir.md §4.5, as the tests check it

    validator = R4Validator(json.loads(load_schema(SCHEMA_CACHE)))
    failures, counts = [], Counter()
    for listed in manifest["files"]:
        with (directory / listed["name"]).open(encoding="utf-8") as stream:
            for line in stream:
                resource = json.loads(line)
                counts[resource["resourceType"]] += 1
                failures += [f"fhir {error}" for error in validator.errors(resource)][:5]
                if resource["resourceType"] == "AdverseEvent" and not seriousness_rule_holds(resource):
                    failures.append(f"fhir AdverseEvent/{resource['id']}: seriousness and its criteria disagree")
    if counts["Patient"] != subjects:
        failures.append(f"fhir: {counts['Patient']} Patients for {subjects} subjects")
    print(f"fhir: {sum(counts.values()):,} resources validated against the R4 JSON schema: "
          + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
    return failures[:50]


if __name__ == "__main__":
    sys.exit(main())
