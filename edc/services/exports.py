"""Export jobs: asking for an export, following it, cancelling it, and the worker that runs it.

A request is validated and stored as an `export_jobs` row (202 to the caller); the worker
(`flask edc worker`) claims queued jobs and runs the format's writer into a private work directory
under `export_dir`, which is published to export storage (edc/storage.py: the local directory, or
S3-compatible object storage) only once every file is written and hashed. A job whose worker stops
heartbeating (killed, machine lost) is taken up again, and failed once out of attempts; a failed or
cancelled job leaves no files behind, so nothing half-written can be mistaken for an export. Files
are read back through storage only (downloads stream through edc, so permissions apply); a file that
is no longer there (a database restored without its export storage) is 410 Gone, never an error.
Each request, completion, failure, cancellation and deletion is audited in the security chain.

Who may export (exports:create): statisticians and data managers any site, monitors and
investigators their own sites, the registry client FHIR only, admins nothing.

The site archive at study close (format "archive", edc/exports/archive.py) is a job of the same machinery:
asked for by a data manager once the study or the site is locked (archives:create), followed and downloaded
by the data managers and the site's principal investigator (archives:read), run, retried and published
like any export.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.database import READ_ONLY_SNAPSHOT, allow_long_statements
from edc.exports import archive, casebook_pdf, csv_files, fhir_ndjson, odm, source
from edc.exports.files import Cancelled, ExportFile, describe
from edc.models.exports import ACTIVE_STATES, ARCHIVE_FORMAT, EXPORT_FORMATS, ExportJob
from edc.models.monitoring import DataCut
from edc.models.sites import Site
from edc.models.subjects import SUBJECT_STATUSES, Subject
from edc.models.users import User
from edc.problems import (Conflict, Forbidden, Gone, NotFound, ServiceUnavailable, TooManyRequests, UnprocessableContent,
                          field_error)
from edc.security.permissions import MATRIX, Actor, require
from edc.services import audit, casebook, locking
from edc.storage import ObjectMissing, Storage, StorageError, failure_reason

log = logging.getLogger("edc.exports")

PERMISSION = "exports:create"
FHIR_ONLY_ROLES = frozenset({"registry"})
FINISHED_STATES = ("completed", "failed", "cancelled")
MANIFEST_NAME = "manifest.json"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry: fixed, so reruns give identical entries
HEARTBEAT_SECONDS = 2.0  # at most one progress write per this interval
FILES_GONE = ("The export's files are no longer in export storage (deleted there, or the database was restored "
              "from a backup without them); ask for the export again.")
STORAGE_RETRY_SECONDS = 30


@dataclass(frozen=True)
class ExportRequest:
    """What the caller asked for, before validation (names as in the API body)."""

    format: str
    sites: tuple[str, ...] | None = None
    forms: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    since: datetime | None = None
    include_audit: bool = False
    data_cut: str | None = None
    types: tuple[str, ...] | None = None  # FHIR resource types (_type)
    spreadsheet_safe: bool = False  # CSV: defuse cells a spreadsheet would run as formulas


# --- asking -----------------------------------------------------------------------------------

def request_export(session: Session, actor: Actor, wanted: ExportRequest, *, bulk: bool = False,
                   request_url: str | None = None) -> ExportJob:
    """Validate a request against the caller's rights and the study, and queue it (the caller commits).
    A Bulk Data kick-off also keeps its URL (`request_url`), which its manifest must repeat."""
    require(actor, PERMISSION)
    _check_format(actor, wanted.format)
    site_ids = _site_ids(session, actor, wanted.sites)
    parameters = _parameters(session, wanted)
    if request_url is not None:
        parameters["request"] = request_url
    _check_active_limit(session, actor)
    now = clock.utcnow()
    job = ExportJob(id=uuid.uuid4(), format=wanted.format, bulk=bulk, parameters=parameters,
                    site_ids=None if site_ids is None else sorted(str(i) for i in site_ids),
                    requested_by_id=actor.user_id, requested_by=actor.username,
                    requested_role=actor.primary_role or "", requested_at=now, state="queued")
    session.add(job)
    session.flush()
    audit.record(session, actor, "export_requested", entity_type="export", entity_id=job.id,
                 changes=[audit.change("format", None, job.format), audit.change("parameters", None, parameters),
                          audit.change("sites", None, job.site_ids)])
    return job


def _check_format(actor: Actor, fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise UnprocessableContent(errors=[field_error("/format", f"Unknown format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}.")])
    exporting_roles = {grant.role for grant in actor.grants if grant.role in MATRIX[PERMISSION]}
    if fmt != "fhir" and exporting_roles and exporting_roles <= FHIR_ONLY_ROLES:
        raise Forbidden("Registry clients export FHIR only.")


def _site_ids(session: Session, actor: Actor, codes: tuple[str, ...] | None) -> set[uuid.UUID] | None:
    """The sites the export covers: those asked for, each within the caller's scope (404 otherwise), or all of it."""
    scope = actor.site_scope(PERMISSION)
    if not codes:
        return scope
    found = dict(session.execute(sa.select(Site.code, Site.id).where(Site.code.in_([c.upper() for c in codes]))).all())
    for code in codes:
        site_id = found.get(code.upper())
        if site_id is None or (scope is not None and site_id not in scope):
            raise NotFound(f"No site {code} among your sites.")
    return set(found.values())


def _parameters(session: Session, wanted: ExportRequest) -> dict[str, Any]:
    """The validated filters, as stored on the job and shown in the manifest."""
    study = runtime.of(session).study
    errors = []
    if wanted.forms:
        errors += [field_error("/forms", f"Unknown form {f!r}.") for f in wanted.forms if f not in study.all_forms]
    if wanted.statuses:
        errors += [field_error("/statuses", f"Unknown subject status {s!r}.") for s in wanted.statuses
                   if s not in SUBJECT_STATUSES]
    if wanted.since is not None and wanted.since.tzinfo is None:
        errors.append(field_error("/since", "Give a time zone (e.g. 2026-11-01T00:00:00Z)."))
    if wanted.types and wanted.format != "fhir":
        errors.append(field_error("/types", "Resource types apply to FHIR exports only."))
    elif wanted.types:
        try:
            fhir_ndjson.check_types(frozenset(wanted.types))
        except ValueError as exc:
            errors.append(field_error("/types", str(exc)))
    if wanted.include_audit and wanted.format == "fhir":
        errors.append(field_error("/include_audit", "The audit trail is exported with CSV and ODM only."))
    if wanted.spreadsheet_safe and wanted.format != "csv":
        errors.append(field_error("/spreadsheet_safe", "The spreadsheet-safe variant is a CSV export's only."))
    cut = None
    if wanted.data_cut is not None:
        cut = session.scalars(sa.select(DataCut).where(DataCut.name == wanted.data_cut)).one_or_none()
        if cut is None:
            raise NotFound(f"No data cut named {wanted.data_cut}.")
        if wanted.since is not None:
            errors.append(field_error("/since", "A data cut is exported whole; leave out since."))
    if errors:
        raise UnprocessableContent(errors=errors)
    return {
        "sites": sorted(c.upper() for c in wanted.sites) if wanted.sites else None,
        "forms": sorted(wanted.forms) if wanted.forms else None,
        "statuses": sorted(wanted.statuses) if wanted.statuses else None,
        "since": wanted.since.isoformat() if wanted.since else None,
        "include_audit": wanted.include_audit,
        "data_cut": {"id": str(cut.id), "name": cut.name, "cutoff_at": cut.cutoff_at.isoformat()} if cut else None,
        "types": sorted(wanted.types) if wanted.types else None,
        # Recorded for every CSV export, so its manifest says whether the files are raw or spreadsheet-safe.
        **({"spreadsheet_safe": wanted.spreadsheet_safe} if wanted.format == "csv" else {}),
    }


def _check_active_limit(session: Session, actor: Actor) -> None:
    """At most export_max_active_per_user queued or running jobs per user (429 beyond).

    The user row is locked first, so concurrent requests of one user count one after another."""
    limit = runtime.of(session).settings["export_max_active_per_user"]
    session.execute(sa.select(User.id).where(User.id == actor.user_id).with_for_update())
    active = session.scalar(sa.select(sa.func.count(ExportJob.id))
                            .where(ExportJob.requested_by_id == actor.user_id, ExportJob.state.in_(ACTIVE_STATES)))
    if active >= limit:
        raise TooManyRequests(f"You have {active} exports queued or running (at most {limit}); "
                              "wait for one to finish or cancel one.", retry_after=30)


# --- following --------------------------------------------------------------------------------

def get_job(session: Session, actor: Actor, job_id: uuid.UUID | str, *, bulk: bool | None = None) -> ExportJob:
    """One of the caller's own export jobs (404 for anyone else's, or once deleted)."""
    require(actor, PERMISSION)
    try:
        key = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound("No such export.") from None
    job = session.get(ExportJob, key)
    if job is None or job.deleted_at is not None or job.requested_by_id != actor.user_id or (
            bulk is not None and job.bulk != bulk):
        raise NotFound("No such export.")
    return job


def list_jobs(session: Session, actor: Actor, *, limit: int, offset: int) -> tuple[list[ExportJob], int]:
    """The caller's export jobs, newest first (deleted ones left out)."""
    require(actor, PERMISSION)
    mine = sa.and_(ExportJob.requested_by_id == actor.user_id, ExportJob.deleted_at.is_(None))
    total = session.scalar(sa.select(sa.func.count(ExportJob.id)).where(mine))
    rows = session.scalars(sa.select(ExportJob).where(mine).order_by(ExportJob.requested_at.desc(), ExportJob.id)
                           .limit(limit).offset(offset)).all()
    return list(rows), total


def progress_of(job: ExportJob) -> dict[str, Any]:
    total = job.subjects_total
    percent = 100.0 if job.state == "completed" else (
        round(100.0 * job.subjects_done / total, 1) if total else 0.0)
    return {"subjects_done": job.subjects_done, "subjects_total": total, "percent": percent}


def open_file(session: Session, actor: Actor, job_id: uuid.UUID | str, name: str, *,
              bulk: bool | None = None) -> tuple[BinaryIO, dict]:
    """A stream of a file of a completed export and its manifest entry: only names the manifest lists
    (no path from the caller reaches storage). 410 if storage no longer has it; the caller closes the stream."""
    job = get_job(session, actor, job_id, bulk=bulk)
    manifest_of(job)
    listed = {f["name"]: f for f in all_files(job.manifest)}
    if name not in listed:
        raise NotFound(f"The export has no file {name}.")
    with _storage_problems():
        return _storage(session).open(f"{job.id}/{name}"), listed[name]


def record_download(session: Session, actor: Actor, job_id: uuid.UUID | str, name: str, byte_range: str | None) -> None:
    """Audit a file handed out (whole, or the byte range of a resumed download): who took which export file.
    The caller commits with its answer."""
    audit.record(session, actor, "export_downloaded", entity_type="export", entity_id=uuid.UUID(str(job_id)),
                 changes=[audit.change("file", None, name), audit.change("range", None, byte_range)])


def files_missing(session: Session, job: ExportJob) -> bool:
    """Whether a completed export lacks any of its files in storage (one listing; False for other states)."""
    if job.state != "completed" or not job.manifest:
        return False
    with _storage_problems():
        present = _storage(session).names(str(job.id))
    return not {f["name"] for f in all_files(job.manifest)} <= present


def ensure_files_present(session: Session, job: ExportJob) -> None:
    """410 when a completed export's files are gone from storage."""
    if files_missing(session, job):
        raise Gone(FILES_GONE)


@contextmanager
def _storage_problems() -> Iterator[None]:
    """Storage failures as problems: a missing object is 410, unreachable storage 503 (the reason names no path)."""
    try:
        yield
    except ObjectMissing:
        raise Gone(FILES_GONE) from None
    except StorageError as exc:
        log.warning("export storage failed: %s", exc.reason, exc_info=exc)
        raise ServiceUnavailable(f"Export storage cannot be used now ({exc.reason}); try again later.",
                                 headers={"Retry-After": str(STORAGE_RETRY_SECONDS)}) from None


def all_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest.get("files", [])) + ([manifest["archive"]] if manifest.get("archive") else [])


def manifest_of(job: ExportJob) -> dict[str, Any]:
    """The manifest of a completed export (409 otherwise, saying why)."""
    if job.state != "completed" or not job.manifest:
        detail = f"The export is {job.state}." + (f" {job.error}" if job.error else "")
        raise Conflict(detail + " Its manifest is available once it is completed.")
    return job.manifest


def cancel(session: Session, actor: Actor, job_id: uuid.UUID | str, *, bulk: bool | None = None) -> ExportJob:
    """Cancel a queued or running job (the worker stops at its next subject), or delete a finished one and
    its files. Either way the job is gone for its requester afterwards (a later GET is 404)."""
    job = get_job(session, actor, job_id, bulk=bulk)
    session.refresh(job, with_for_update=True)
    now = clock.utcnow()
    action = "export_cancelled" if job.state in ACTIVE_STATES else "export_deleted"
    if job.state in ACTIVE_STATES:
        job.state, job.finished_at = "cancelled", now
    job.deleted_at = now
    audit.record(session, actor, action, entity_type="export", entity_id=job.id,
                 changes=[audit.change("state", None, job.state)])
    with _storage_problems():  # before the commit: if storage refuses, the job stays, to be deleted again
        _storage(session).delete(str(job.id))  # a running worker's work directory goes when it stops
    return job


# --- files ------------------------------------------------------------------------------------

def _storage(session: Session) -> Storage:
    return runtime.of(session).storage


def export_root(session: Session) -> Path:
    """The local export directory: the files themselves with local storage, the workers' scratch space with S3."""
    return Path(runtime.of(session).settings["export_dir"])


def job_directory(session: Session, job_id: uuid.UUID) -> Path:
    """Where local storage keeps a job's files."""
    return export_root(session) / str(job_id)


def _work_directory(session: Session, job: ExportJob) -> Path:
    return export_root(session) / f".{job.id}.attempt-{job.attempts}"


def _remove_work_directories(session: Session, job_id: uuid.UUID) -> None:
    root = export_root(session)
    if root.is_dir():
        for stale in root.glob(f".{job_id}.attempt-*"):
            shutil.rmtree(stale, ignore_errors=True)


# --- the worker -------------------------------------------------------------------------------

SYSTEM = Actor.system("export-worker")


def run_pending(session: Session, *, stopping: Callable[[], bool] = lambda: False) -> list[ExportJob]:
    """Run queued jobs (and take up abandoned ones) until none is left; return the jobs handled."""
    handled = []
    while not stopping():
        job = claim_next(session)
        if job is None:
            break
        run_job(session, job)
        handled.append(job)
    return handled


def claim_next(session: Session) -> ExportJob | None:
    """Take the oldest queued job, or a running one whose worker stopped heartbeating (commits).

    An abandoned job out of attempts is marked failed here and the search goes on."""
    settings = runtime.of(session).settings
    while True:
        now = clock.utcnow()
        lease_now = lease_clock(session)
        stale = lease_now - timedelta(seconds=settings["export_lease_seconds"])
        job = session.scalars(
            sa.select(ExportJob)
            .where(ExportJob.deleted_at.is_(None),
                   sa.or_(ExportJob.state == "queued",
                          sa.and_(ExportJob.state == "running", ExportJob.heartbeat_at < stale)))
            .order_by(ExportJob.requested_at, ExportJob.id).limit(1).with_for_update(skip_locked=True)
        ).one_or_none()
        if job is None:
            session.commit()
            return None
        _remove_work_directories(session, job.id)
        if job.state == "running" and job.attempts >= settings["export_max_attempts"]:
            _finish_failed(session, job, f"The worker stopped during the export {job.attempts} times; giving up.")
            continue
        if job.state == "running":
            log.warning("export %s: worker stopped during attempt %d; running it again", job.id, job.attempts)
        job.state, job.attempts = "running", job.attempts + 1
        job.started_at, job.heartbeat_at = now, lease_now
        job.subjects_done, job.error = 0, None
        session.commit()
        return job


def run_job(session: Session, job: ExportJob) -> None:
    """Write the export (reading one consistent snapshot), then publish it atomically (commits)."""
    work = _work_directory(session, job)
    attempt = job.attempts
    try:  # an export directory that cannot be made (no space, a path through a file) fails the job like any error
        work.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        work.mkdir(mode=0o700)
        with _snapshot(session) as reader:
            selection = selection_of(job)
            job.subjects_total = len(source.subject_ids(reader, selection))
            session.commit()
            files = _write(reader, job, selection, work, _progress(session, job, attempt))
            manifest = _manifest(reader, job, selection, files)
        _publish(session, job, work, manifest, attempt)
    except Cancelled:
        shutil.rmtree(work, ignore_errors=True)
        session.rollback()
        log.info("export %s cancelled", job.id)
    except Exception as exc:  # any failure: no files, the job failed with a message the requester can read
        shutil.rmtree(work, ignore_errors=True)
        session.rollback()
        log.exception("export %s failed", job.id)
        session.refresh(job)
        if job.state == "running" and job.attempts == attempt:
            _finish_failed(session, job, failure_message(exc))


def failure_message(exc: BaseException) -> str:
    """What the requester reads about a failed export: the storage reason when there is one (never a path)."""
    reason = failure_reason(exc)
    if reason is not None:
        return f"The export failed: {reason}. The error has been logged."
    return f"The export failed ({type(exc).__name__}); the error has been logged."


class _snapshot:
    """A session of its own reading one snapshot of the database for the whole export (REPEATABLE READ on
    PostgreSQL; one read transaction on SQLite), so an export never mixes data from before and after a save."""

    def __init__(self, session: Session) -> None:
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            bind = bind.execution_options(isolation_level="REPEATABLE READ")
        else:
            bind = bind.execution_options(**{READ_ONLY_SNAPSHOT: True})
        self.reader = Session(bind)
        runtime.bind(self.reader, runtime.of(session))
        allow_long_statements(self.reader, runtime.of(session).settings["database_long_statement_timeout_ms"])

    def __enter__(self) -> Session:
        return self.reader

    def __exit__(self, *exc) -> None:
        self.reader.rollback()
        self.reader.close()


def selection_of(job: ExportJob) -> source.Selection:
    p = job.parameters
    return source.Selection(
        site_ids=None if job.site_ids is None else frozenset(uuid.UUID(i) for i in job.site_ids),
        forms=frozenset(p["forms"]) if p.get("forms") else None,
        statuses=frozenset(p["statuses"]) if p.get("statuses") else None,
        since=datetime.fromisoformat(p["since"]) if p.get("since") else None,
        whole_casebooks=job.format == "fhir",
        cut_id=uuid.UUID(p["data_cut"]["id"]) if p.get("data_cut") else None,
    )


def _progress(session: Session, job: ExportJob, attempt: int) -> Callable[[int], None]:
    """Record progress and a heartbeat now and then, and stop when the job was cancelled or taken over."""
    last = [0.0]

    def report(done: int) -> None:
        now = clock.utcnow()
        if (now.timestamp() - last[0]) < HEARTBEAT_SECONDS and done != job.subjects_total:
            return
        last[0] = now.timestamp()
        session.refresh(job)
        if job.state != "running" or job.attempts != attempt:
            session.rollback()
            raise Cancelled()
        job.subjects_done, job.heartbeat_at = done, lease_clock(session)
        session.commit()

    return report


def _write(reader: Session, job: ExportJob, selection: source.Selection, work: Path, progress) -> list[ExportFile]:
    p = job.parameters
    if job.format == ARCHIVE_FORMAT:
        return _write_archive(reader, job, selection, work, progress)
    if job.format == "csv":
        return csv_files.write_csv(reader, selection, work, include_audit=p["include_audit"],
                                   spreadsheet_safe=p.get("spreadsheet_safe", False), progress=progress)
    if job.format == "odm":
        return odm.write_odm(reader, selection, work, include_audit=p["include_audit"], file_oid=f"EDC.EXPORT.{job.id}",
                         created_at=job.started_at, progress=progress)
    types = frozenset(p["types"]) if p.get("types") else None
    return fhir_ndjson.write_ndjson(reader, selection, work, types=types, progress=progress)


def _manifest(reader: Session, job: ExportJob, selection: source.Selection, files: list[ExportFile]) -> dict[str, Any]:
    study = runtime.of(reader).study
    return {
        "export": str(job.id),
        "format": job.format,
        "study": study.id,
        "requested_by": job.requested_by,
        "requested_role": job.requested_role,
        "requested_at": job.requested_at.isoformat(),
        "transaction_time": job.started_at.isoformat(),
        "filters": job.parameters,
        "form_versions": source.form_versions(reader, selection),
        "subjects": job.subjects_total,
        "files": [f.as_manifest() for f in files],
    }


def _publish(session: Session, job: ExportJob, work: Path, manifest: dict[str, Any], attempt: int) -> None:
    """Write the manifest (and the CSV archive), rename the work directory into place, mark the job complete.

    Only the attempt that holds the lease publishes: one statement checks the attempt number and takes the
    job's row lock until the commit, so a worker that froze and was taken over finds no row and leaves the
    newer attempt alone, and no takeover can begin while this one publishes."""
    held = session.execute(
        sa.update(ExportJob).where(ExportJob.id == job.id, ExportJob.state == "running", ExportJob.attempts == attempt)
        .values(heartbeat_at=lease_clock(session)).execution_options(synchronize_session=False)
    ).rowcount
    if not held:
        raise Cancelled()
    session.refresh(job)
    (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    if job.format == "csv":
        manifest["archive"] = _zip(work, [f["name"] for f in manifest["files"]], f"{manifest['study']}-csv.zip")
    _restrict_to_owner(work)
    _storage(session).publish(str(job.id), work)
    job.state, job.finished_at, job.manifest = "completed", clock.utcnow(), manifest
    job.subjects_done = job.subjects_total or 0
    audit.record(session, SYSTEM, "export_completed", entity_type="export", entity_id=job.id,
                 changes=[audit.change("files", None, [[f["name"], f["sha256"]] for f in all_files(manifest)])])
    session.commit()


def lease_clock(session: Session) -> datetime:
    """The clock leases are written and judged by: the database's (PostgreSQL's now()), one clock for every
    worker whatever the skew between their hosts. SQLite serves one host, whose clock it is."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(sa.select(sa.func.now()))
    return clock.utcnow()


def _restrict_to_owner(work: Path) -> None:
    """Export files are pseudonymised clinical data: readable by the service's account only, whatever the umask."""
    work.chmod(0o700)
    for path in work.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def _zip(work: Path, names: list[str], archive_name: str) -> dict[str, Any]:
    """The CSV files and the manifest in one zip whose entries carry a fixed time, in name order."""
    archive = work / archive_name
    # Level 1: a third of the default level's time for CSV, which compresses well at any level.
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
        for name in sorted(names) + [MANIFEST_NAME]:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info._compresslevel = 1  # ZipFile.open(info) takes the level from the entry, not the archive
            info.external_attr = 0o644 << 16
            with (work / name).open("rb") as data, bundle.open(info, "w") as entry:
                shutil.copyfileobj(data, entry, 1 << 20)
    return describe(archive, records=len(names) + 1, media_type="application/zip",
                    description="the CSV files and manifest.json").as_manifest()


def _finish_failed(session: Session, job: ExportJob, message: str) -> None:
    job.state, job.finished_at, job.error = "failed", clock.utcnow(), message
    audit.record(session, SYSTEM, "export_failed", entity_type="export", entity_id=job.id,
                 changes=[audit.change("error", None, message)])
    session.commit()


# --- the site archive -------------------------------------------------------------------------

ARCHIVE_CREATE, ARCHIVE_READ = "archives:create", "archives:read"
ARCHIVE_LANGUAGE = "en"


def request_archive(session: Session, actor: Actor, code: str) -> ExportJob:
    """Queue the archive of a site (the caller commits): 404 for an unknown site, 409 unless the study is
    locked or every subject of the site is."""
    require(actor, ARCHIVE_CREATE)
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    if site is None:
        raise NotFound(f"No site {code}.")
    if locking.study_lock(session) is None:
        counts = session.execute(sa.select(sa.func.count(Subject.id), sa.func.count(Subject.locked_at))
                                 .where(Subject.site_id == site.id)).one()
        if counts[0] == 0 or counts[0] != counts[1]:
            raise Conflict(f"Site {site.code} can be archived once the study is locked, or every subject of the site "
                           f"is ({counts[1]} of {counts[0]} locked).")
    _check_active_limit(session, actor)
    parameters = {"site": site.code, "include_audit": True, "lang": ARCHIVE_LANGUAGE}
    job = ExportJob(id=uuid.uuid4(), format=ARCHIVE_FORMAT, bulk=False, parameters=parameters, site_ids=[str(site.id)],
                    requested_by_id=actor.user_id, requested_by=actor.username,
                    requested_role=actor.primary_role or "", requested_at=clock.utcnow(), state="queued")
    session.add(job)
    session.flush()
    audit.record(session, actor, "export_requested", entity_type="export", entity_id=job.id, site_code=site.code,
                 changes=[audit.change("format", None, job.format), audit.change("parameters", None, parameters),
                          audit.change("sites", None, job.site_ids)])
    return job


def _reads_archives_of(actor: Actor, site_id: uuid.UUID) -> bool:
    """Data managers, and the principal investigator of the site."""
    if actor.is_system:
        return True
    return any(g.role == "data_manager" or (g.role == "investigator" and g.principal_investigator and g.site_id == site_id)
               for g in actor.grants)


def list_archives(session: Session, actor: Actor, code: str, *, limit: int, offset: int) -> tuple[list[ExportJob], int]:
    """A site's archives, newest first (data managers and the site's principal investigator; 404 for anyone else)."""
    require(actor, ARCHIVE_READ)
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    if site is None or not _reads_archives_of(actor, site.id):
        raise NotFound(f"No site {code} among your sites.")
    rows = [job for job in session.scalars(
        sa.select(ExportJob).where(ExportJob.format == ARCHIVE_FORMAT, ExportJob.deleted_at.is_(None))
        .order_by(ExportJob.requested_at.desc(), ExportJob.id)) if job.site_ids == [str(site.id)]]
    return rows[offset:offset + limit], len(rows)


def get_archive(session: Session, actor: Actor, code: str, job_id: uuid.UUID | str) -> ExportJob:
    """An archive job of a site (404 for anyone but the data managers and the site's principal investigator)."""
    require(actor, ARCHIVE_READ)
    site = session.scalars(sa.select(Site).where(Site.code == code.upper())).one_or_none()
    try:
        key = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound("No such archive.") from None
    job = session.get(ExportJob, key)
    if (site is None or job is None or job.deleted_at is not None or job.format != ARCHIVE_FORMAT
            or job.site_ids != [str(site.id)] or not _reads_archives_of(actor, site.id)):
        raise NotFound("No such archive.")
    return job


def open_archive_file(session: Session, actor: Actor, code: str, job_id: uuid.UUID | str,
                      name: str) -> tuple[BinaryIO, dict]:
    """A stream of a completed archive's file and its manifest entry (the caller closes it)."""
    job = get_archive(session, actor, code, job_id)
    manifest_of(job)
    listed = {f["name"]: f for f in all_files(job.manifest)}
    if name not in listed:
        raise NotFound(f"The archive has no file {name}.")
    with _storage_problems():
        return _storage(session).open(f"{job.id}/{name}"), listed[name]


def _write_archive(reader: Session, job: ExportJob, selection: source.Selection, work: Path, progress) -> list[ExportFile]:
    study = runtime.of(reader).study
    p = job.parameters
    by = f"{job.requested_by} (site archive)"

    def render(subject: Subject) -> bytes:
        return casebook.render_pdf(reader, SYSTEM, subject, lang=p["lang"], include_audit=p["include_audit"],
                                   generated_at=job.started_at.replace(microsecond=0), generated_by=by)

    about = {"study": study.id, "site": p["site"], "export": str(job.id), "requested_by": job.requested_by,
             "generated_at": job.started_at.isoformat(), "software": f"edc {casebook_pdf.SOFTWARE_VERSION}"}
    return archive.write_archive(reader, selection, work, name=f"{study.id}-{p['site']}-archive.zip", about=about,
                                 render=render, file_oid=f"EDC.ARCHIVE.{job.id}", created_at=job.started_at,
                                 progress=progress)
