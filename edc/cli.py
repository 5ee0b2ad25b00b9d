"""`flask edc ...`: operator commands. Each calls the same services as the API."""

from __future__ import annotations

import json
import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from edc import runtime
from edc.database import migration_lock
from edc.extensions import db
from edc.problems import Problem
from edc.security import keyring
from edc.security.permissions import Actor
from edc.services import audit, demo, summaries, users

edc_cli = AppGroup("edc", help="edc operations.")
keys_cli = AppGroup("keys", help="Key material: key ring and token-signing keys.")
users_cli = AppGroup("users", help="Accounts.")
roles_cli = AppGroup("roles", help="Role assignments.")
audit_cli = AppGroup("audit", help="The audit trail.")
forms_cli = AppGroup("forms", help="eCRF definitions.")
fhir_clients_cli = AppGroup("fhir-clients", help="Registry clients of the FHIR API (SMART Backend Services).")


def _session():
    """The request-less session, bound to the app's runtime."""
    runtime.bind(db.session, runtime.for_app(current_app))
    return db.session


def _run(action):
    """Run a service call, commit, and turn a Problem into a one-line error and exit status 1."""
    try:
        result = action(_session())
        db.session.commit()
        return result
    except Problem as exc:
        db.session.rollback()
        details = "; ".join(f"{e['pointer']}: {e['detail']}" for e in exc.errors or [])
        raise click.ClickException(f"{exc.detail}{' ' + details if details else ''}") from None


@edc_cli.command("init")
def init_command():
    """Apply all migrations (creates the database if it is a new SQLite file).

    Any number of nodes may run it at once: they take turns under the database's migration lock."""
    from flask_migrate import upgrade

    with migration_lock(db.engine):
        upgrade()
        click.echo("database at migration head")
        written = _run(lambda s: summaries.refresh_outdated(s, commit=db.session.commit))
    click.echo(f"subject summaries: {written} recounted")


@edc_cli.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing (and succeed) when the database already holds sites.")
@click.option("--subjects", "subject_count", type=click.IntRange(min=1), default=None,
              help="Also create N synthetic subjects with complete casebooks through Day 28 "
                   "(added to the demo sites if they exist already).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the synthetic subjects: the same seed on the same day gives the same values.")
@click.option("--site", "sites", multiple=True,
              help="With --subjects: build only the subjects of the N who belong to this demo site (repeatable), "
                   "so that runs over disjoint sites can work in parallel.")
@click.option("--study", is_flag=True,
              help="Also create the demo study: a dozen subjects at the four sites at different stages, from "
                   "screening to Day 28, with a CRS episode, an SAE, open queries, SDV and a signed casebook "
                   "(what `make serve` shows a newcomer).")
def seed_demo_command(if_empty, subject_count, seed, sites, study):
    """Create the demo sites and accounts, and with --subjects synthetic subjects (refused in production)."""
    if study and subject_count:
        raise click.UsageError("--study and --subjects are separate demo data sets: give one of them.")
    if if_empty and demo.is_seeded(_session()):
        click.echo("demo seed skipped: the database is not empty")
        return
    if not ((subject_count or study) and demo.is_seeded(_session())):
        counts = _run(lambda s: demo.seed_demo(s, Actor.system("seed-demo")))
        click.echo(f"seeded {counts['sites']} sites and {counts['users']} demo accounts")
    if subject_count:
        _seed_subjects(subject_count, seed, tuple(code.upper() for code in sites) or None)
    if study:
        _seed_study(seed)


def _seed_study(seed: int) -> None:
    """The demo study of edc/services/demo_subjects.py (DEMO_STUDY), committed subject by subject."""
    from edc.services import demo_subjects

    started = time.perf_counter()
    report = _run(lambda s: demo_subjects.seed_study(s, seed=seed, commit=db.session.commit))
    seconds = time.perf_counter() - started
    click.echo(f"seeded the demo study in {seconds:.1f} s: {len(report.subjects)} subjects, "
               f"{sum(report.entries.values())} entries ({sum(report.drafts.values())} drafts)")
    click.echo("  stages: " + ", ".join(f"{number} {stage}" for number, stage in sorted(report.stages.items())))
    click.echo(f"  CRS {', '.join(report.crs_subjects) or 'none'}; SAE {report.sae_subject}; "
               f"casebook signed: {report.signed_subject} ({report.verified_entries} entries source-verified); "
               f"open queries: {report.open_queries} automatic, {len(report.manual_queries)} from the monitor")


def _seed_subjects(count: int, seed: int, sites: tuple[str, ...] | None = None) -> None:
    """Synthetic subjects, committed one by one; a save the rules refuse stops the command (exit status 1)."""
    from edc.services import demo_subjects

    started = time.perf_counter()
    report = _run(lambda s: demo_subjects.seed_subjects(s, count, seed=seed, sites=sites, commit=db.session.commit))
    seconds = time.perf_counter() - started
    click.echo(f"seeded {len(report.subjects)} demo subjects (seed {seed}) in {seconds:.1f} s: "
               f"{sum(report.entries.values())} entries, {sum(report.updates.values())} later changes")
    click.echo("  entries per form: " + ", ".join(f"{form} {n}" for form, n in sorted(report.entries.items())))
    click.echo(f"  CRS {len(report.crs_subjects)} subjects, ICANS {len(report.icans_subjects)}, "
               f"SAE {report.sae_subject}, relapse {report.relapse_subject}")
    opened = sum(report.queries.values())
    by_check = ", ".join(f"{check} {n}" for check, n in sorted(report.queries.items()))
    click.echo(f"  automatic queries opened: {opened} ({report.open_queries} open)" + (f": {by_check}" if opened else ""))


@edc_cli.command("demo-logins")
def demo_logins_command():
    """Print how to sign in as each demo role."""
    for username, name, grants in demo.DEMO_ACCOUNTS:
        roles = ", ".join(f"{r}{'@' + s if s else ''}{' (PI)' if pi else ''}" for r, s, pi in grants)
        click.echo(f"  {username:<10} {roles}")
    click.echo(f"  password for every demo account: {demo.DEMO_PASSWORD}")


@keys_cli.command("init")
@click.option("--development", is_flag=True, help="Mark the keys as development keys (production refuses them).")
def keys_init_command(development):
    """Create the key ring and a token-signing key where missing."""
    created = keyring.ensure_keys(current_app.config["EDC"]["keys_dir"], development=development)
    click.echo("created: " + ", ".join(created) if created else "keys present; nothing created")


@keys_cli.command("add-signing-key")
@click.option("--development", is_flag=True)
def add_signing_key_command(development):
    """Add a token-signing key; it signs from now on, older keys still verify until retired."""
    kid = keyring.add_signing_key(current_app.config["EDC"]["keys_dir"], development=development)
    click.echo(f"new signing key {kid}; it signs on every node that reads this key directory, from its next "
               f"request (no restart)")


@keys_cli.command("retire-signing-key")
@click.argument("kid")
def retire_signing_key_command(kid):
    """Remove an old signing key (after the longest access-token lifetime has passed)."""
    try:
        keyring.retire_signing_key(current_app.config["EDC"]["keys_dir"], kid)
    except keyring.KeyError_ as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"retired {kid}; every node that reads this key directory stops accepting its tokens from its "
               f"next request (no restart)")


@keys_cli.command("add-data-key")
def add_data_key_command():
    """Add a data key to the ring without using it yet: publish the key directory to every node, then
    `keys rotate --resume` makes it current and re-encrypts (rotation with no node ever behind)."""
    from edc.services import keys

    session = _session()
    if keys.recorded_key_id(session) is None:  # pin today's key first, or the newest would be used at once
        keys.record_current_key(session, runtime.of(session).keyring.current_data_key_id)
        db.session.commit()
    try:
        key_id = keyring.add_data_key(current_app.config["EDC"]["keys_dir"])
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"key ring not changed: {type(exc).__name__}") from None
    click.echo(f"data key {key_id} added; nodes decrypt with it, none encrypts with it until `keys rotate --resume`")


@keys_cli.command("rotate")
@click.option("--resume", is_flag=True, help="Rotate to the newest key of the ring instead of adding another "
                                              "(finish an interrupted rotation, or use a key added by add-data-key).")
def keys_rotate_command(resume):
    """Add a data key, make it the one every node encrypts under, and re-encrypt every value stored under an
    older key, in committed batches, until none is left."""
    from edc.services import rotation

    if not resume:
        keyring.add_data_key(current_app.config["EDC"]["keys_dir"])
    current_app.extensions.pop(runtime.APP_KEY, None)  # reload the ring with the newest key
    try:
        report = rotation.rotate(_session(), Actor.system("keys-rotate"), db.session.commit)
    except Problem as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from None
    click.echo(f"data key {report.key_id} is current: re-encrypted {report.entry_values} entry values, "
               f"{report.audit_values} audit values, {report.outbox_secrets} mail secrets and {report.stored_answers} "
               f"stored answers in {report.passes} passes")
    if not report.finished:
        raise click.ClickException(f"values are still being written under an older key after {report.passes} passes: "
                                   f"a long transaction or a node of an older release; run `keys rotate --resume` again")
    click.echo(f"checked: no value is left under an older key than {report.key_id}")


OPERATOR_COPY = ("setup token, shown here for the operator at the server only (hand it to the user in person; "
                 "never paste it into a ticket or a mail)")


def _echo_setup(setup) -> None:
    if setup.mailed_to:
        click.echo(f"setup link mailed to {setup.mailed_to} (sent by the mailer; valid until {setup.expires_at.isoformat()})")
    click.echo(f"{OPERATOR_COPY}: {setup.token}")


@users_cli.command("create")
@click.argument("username")
@click.option("--name", "display_name", required=True, help="Printed name (used in signatures).")
@click.option("--email", required=True, help="The user's own address: the setup link is mailed there.")
@click.option("--temporary-password", is_flag=True, help="Prompt for a temporary password instead of issuing a setup token.")
def users_create_command(username, display_name, email, temporary_password):
    """Create an account: its one-time setup link is mailed to the user, and the setup token is also printed
    here, for the operator at the server (e.g. a first deployment without mail)."""
    password = click.prompt("Temporary password", hide_input=True, confirmation_prompt=True) if temporary_password else None
    user, setup = _run(lambda s: users.create_user(s, Actor.system(), username=username, display_name=display_name,
                                                   email=email, temporary_password=password))
    click.echo(f"created {user.username}")
    if setup:
        _echo_setup(setup)
    else:
        click.echo("the temporary password must be changed at first login")


@users_cli.command("reset")
@click.argument("username")
@click.option("--reason", required=True)
def users_reset_command(username, reason):
    """Clear a password and end the user's sessions: a new setup link is mailed to the user (if the account has an
    address), and the setup token is also printed here, for the operator at the server."""
    setup = _run(lambda s: users.reset_user(s, Actor.system(), username, reason=reason))
    click.echo(f"reset {username}")
    _echo_setup(setup)


@users_cli.command("disable")
@click.argument("username")
@click.option("--reason", required=True)
def users_disable_command(username, reason):
    """Disable an account (it is never deleted)."""
    _run(lambda s: users.disable_user(s, Actor.system(), username, reason=reason))
    click.echo(f"disabled {username}")


@roles_cli.command("grant")
@click.argument("username")
@click.argument("role")
@click.option("--site", default=None, help="Site code for site roles (investigator, coordinator, monitor).")
@click.option("--pi", is_flag=True, help="Principal investigator of the site (investigators only).")
def roles_grant_command(username, role, site, pi):
    """Grant a role."""
    _run(lambda s: users.grant_role(s, Actor.system(), username, role=role, site=site, principal_investigator=pi))
    click.echo(f"granted {role}{' at ' + site.upper() if site else ''} to {username}")


@roles_cli.command("revoke")
@click.argument("username")
@click.argument("role")
@click.option("--site", default=None)
@click.option("--reason", default=None)
def roles_revoke_command(username, role, site, reason):
    """Revoke a role."""

    def revoke(session):
        user = users.get_user(session, Actor.system(), username)
        assignment = users.find_assignment(user, role, site)
        return users.revoke_role(session, Actor.system(), username, assignment.id, reason=reason)

    _run(revoke)
    click.echo(f"revoked {role}{' at ' + site.upper() if site else ''} from {username}")


def _read_jwks(path: str):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the JWK Set {path}: {exc}") from None


@fhir_clients_cli.command("register")
@click.option("--username", required=True, help="A new account for the client to act as: created here with the registry "
              "role only, and never a password.")
@click.option("--name", required=True, help="Who the client is (e.g. the registry's name).")
@click.option("--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The client's public JWK Set (JSON): RS384 or ES384 signing keys, each with a kid.")
def fhir_clients_register_command(username, name, jwks_file):
    """Register a registry client, create its account, and print its client_id (give it to the registry)."""
    from edc.services import fhir_clients

    jwks = _read_jwks(jwks_file)
    client = _run(lambda s: fhir_clients.register_client(s, Actor.system(), username=username, name=name, jwks=jwks))
    click.echo(client.client_id)


@fhir_clients_cli.command("list")
def fhir_clients_list_command():
    """List the registered clients: client_id, state, account, key ids, name."""
    from edc.services import fhir_clients

    for client in _run(lambda s: fhir_clients.list_clients(s, Actor.system())):
        kids = ",".join(str(key.get("kid")) for key in client.jwks.get("keys", []))
        state = "active" if client.active else f"inactive since {client.deactivated_at.date().isoformat()}"
        click.echo(f"{client.client_id}  {state:<25} {client.user.username:<20} kids={kids}  {client.name}")


@fhir_clients_cli.command("set-jwks")
@click.argument("client_id")
@click.option("--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False))
def fhir_clients_set_jwks_command(client_id, jwks_file):
    """Replace a client's JWK Set (to rotate keys, register old and new together, later the new one alone)."""
    from edc.services import fhir_clients

    jwks = _read_jwks(jwks_file)
    _run(lambda s: fhir_clients.replace_keys(s, Actor.system(), client_id, jwks=jwks))
    click.echo(f"replaced the keys of {client_id}")


@fhir_clients_cli.command("deactivate")
@click.argument("client_id")
@click.option("--reason", required=True)
def fhir_clients_deactivate_command(client_id, reason):
    """Deactivate a client: it gets no new token and the ones it holds stop working."""
    from edc.services import fhir_clients

    _run(lambda s: fhir_clients.deactivate_client(s, Actor.system(), client_id, reason=reason))
    click.echo(f"deactivated {client_id}")


@audit_cli.command("verify")
@click.option("--anchor", "anchor_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="An anchor file from `audit anchor`: also fail on any chain shorter than anchored, changed at "
                   "the anchored record, or gone.")
def audit_verify_command(anchor_file):
    """Verify every chain and that every subject has one; name the first problem of each. Exit 1 if any is broken."""
    anchor = _read_anchor(anchor_file) if anchor_file else None
    reports = audit.verify_all(_session(), anchor)
    broken = 0
    for report in reports:
        if report.ok:
            click.echo(f"ok      {report.chain} ({report.records} records)")
        else:
            broken += 1
            where = f"record {report.first_broken_id}" if report.first_broken_id else report.where
            click.echo(f"BROKEN  {report.chain}: first broken at {where}: {report.problem}")
    db.session.rollback()
    against = f" against the anchor of {anchor['generated_at']}" if anchor else ""
    click.echo(f"{len(reports)} chains, {broken} broken{against}")
    if broken:
        sys.exit(1)


def _read_anchor(path: str) -> dict:
    """The anchor document of a file, its form and signature checked (a click error naming the file if not)."""
    try:
        with open(path, encoding="utf-8") as stream:
            doc = json.load(stream)
        audit.read_anchor(doc)
        click.echo(f"anchor of {doc['generated_at']}: {audit.check_anchor_signature(_session(), doc)}")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and AnchorError are ValueErrors
        raise click.ClickException(f"{path}: {exc}") from None
    return doc


@audit_cli.command("anchor")
def audit_anchor_command():
    """Print every chain's last seq and hash as JSON, to keep outside the database (see docs/operations.md)."""
    doc = audit.anchor(_session())
    db.session.rollback()
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


@forms_cli.command("check", with_appcontext=False)
@click.option("--dir", "forms_dir", default=None, help="Definitions folder (default: the forms_dir setting).")
def forms_check_command(forms_dir):
    """Load and check every form definition; print file:line: message for each problem."""
    from edc.ecrf import check_definitions
    from edc.settings import load_settings

    folder = forms_dir or load_settings()["forms_dir"]
    messages = check_definitions(folder)
    for message in messages:
        click.echo(message)
    if messages:
        click.echo(f"{len(messages)} problem(s) in {folder}", err=True)
        sys.exit(1)
    click.echo(f"{folder}: definitions are valid")


@forms_cli.command("release", with_appcontext=False)
@click.argument("form_id")
@click.argument("version", required=False)
@click.option("--dir", "forms_dir", default=None, help="Definitions folder (default: the forms_dir setting).")
def forms_release_command(form_id, version, forms_dir):
    """Record a form version's content hash in released.yaml: from now on it may not change."""
    from edc.ecrf import DefinitionError, release
    from edc.settings import load_settings

    try:
        digest = release(forms_dir or load_settings()["forms_dir"], form_id, version)
    except (DefinitionError, KeyError) as exc:
        raise click.ClickException(f"cannot release {form_id}: {exc}") from None
    click.echo(f"released {form_id}{' v' + version if version else ''}: {digest}")


@forms_cli.command("doc", with_appcontext=False)
@click.option("--dir", "forms_dir", default=None, help="Definitions folder (default: the forms_dir setting).")
@click.option("--output", default=None, help="File to write (default: docs/trial.md of the project).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the file is not what would be written.")
def forms_doc_command(forms_dir, output, check):
    """Write docs/trial.md, the trial's specification generated from the form definitions."""
    from pathlib import Path

    from edc.ecrf import DefinitionError, load_study
    from edc.ecrf.trialdoc import render_trial_doc
    from edc.settings import PROJECT_ROOT, load_settings

    try:
        text = render_trial_doc(load_study(forms_dir or load_settings()["forms_dir"]))
    except DefinitionError as exc:
        raise click.ClickException("\n".join(exc.messages)) from None
    path = Path(output) if output else PROJECT_ROOT / "docs" / "trial.md"
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if check:
        if current != text:
            click.echo(f"{path} is out of date: run `flask edc forms doc`", err=True)
            sys.exit(1)
        click.echo(f"{path} is up to date")
    elif current == text:
        click.echo(f"{path} unchanged")
    else:
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")


@forms_cli.command("recheck")
def forms_recheck_command():
    """Re-run the current warning checks over every entry; open or answer automatic queries, change no data."""
    from edc.services import entries

    opened, answered = _run(lambda s: entries.recheck_all(s, Actor.system("forms-recheck")))
    click.echo(f"recheck done: {opened} queries opened, {answered} answered")


meddra_cli = AppGroup("meddra", help="The licensed MedDRA dictionary (installed at deployment, never in git).")


@meddra_cli.command("load")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "meddra_version", default=None, help="MedDRA release of the files, e.g. 27.1 (recorded).")
def meddra_load_command(files, meddra_version):
    """Check licensed MedDRA ASCII files (llt.asc, mdhier.asc) and install them in the meddra_dir setting."""
    from pathlib import Path

    from edc.ecrf.reference import MeddraError, load_meddra_file

    target = Path(current_app.config["EDC"]["meddra_dir"])
    for name in files:
        try:
            entry = load_meddra_file(Path(name), target, meddra_version)
        except MeddraError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"installed {entry['file']}: {entry['records']} records, sha256 {entry['sha256'][:12]}… in {target}")


@meddra_cli.command("lookup")
@click.argument("term")
@click.option("--limit", default=20, show_default=True, help="Most lowest level terms to print.")
def meddra_lookup_command(term, limit):
    """Print the lowest level terms whose name contains TERM, with their PT and primary SOC."""
    from pathlib import Path

    from edc.ecrf.reference import MeddraError, meddra_lookup

    try:
        found = meddra_lookup(Path(current_app.config["EDC"]["meddra_dir"]), term, limit)
    except MeddraError as exc:
        raise click.ClickException(str(exc)) from None
    for row in found:
        hierarchy = f"  PT {row['pt_code']} {row['pt_name'] or ''}".rstrip()
        if row["soc_name"]:
            hierarchy += f"  SOC {row['soc_code']} {row['soc_name']}"
        click.echo(f"LLT {row['llt_code']} {row['llt_name']}{'' if row['current'] else ' (non-current)'}{hierarchy}")
    click.echo(f"{len(found)} term(s)")


def _mailer_cycle() -> str:
    from edc.services import mailer

    result = mailer.cycle(_session(), current_app.config["EDC"])
    return (f"mailer: {result.enqueued} enqueued, {result.sent} sent, {result.retried} to retry, "
            f"{result.failed} failed")


def _exports_cycle(stopping=lambda: False) -> str:
    from edc.services import exports

    handled = exports.run_pending(_session(), stopping=stopping)
    return "exports: " + (", ".join(f"{job.id} {job.state}" for job in handled) or "none waiting")


SUMMARIES_PER_CYCLE = 200


def _summaries_cycle() -> str:
    """Recount the subject summaries that ran out (a visit window opened or closed since)."""
    from edc.services import summaries

    written = summaries.refresh_outdated(_session(), limit=SUMMARIES_PER_CYCLE, commit=db.session.commit)
    return f"subject summaries: {written} recounted"


# What the worker runs, each in its own loop: a long export never delays a safety notification.
WORKER_JOBS = [_mailer_cycle, _summaries_cycle, _exports_cycle]


def _loop(jobs, once: bool, interval: int | None, *, stopping: list[bool] | None = None,
          main_thread: bool = True) -> None:
    """Run the jobs once, or every `interval` seconds until SIGTERM or Ctrl-C (or until `stopping` is set).
    Only the main thread installs the SIGTERM handler; it sets `stopping` for every loop sharing it."""
    import signal

    stopping = [] if stopping is None else stopping
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True)) if main_thread else None
    pause = interval or current_app.config["EDC"]["mailer_interval_seconds"]
    try:
        while not stopping:
            for job in jobs:
                try:
                    click.echo(job())
                except Exception:  # one failed cycle (e.g. the database restarting) must not stop the worker
                    db.session.rollback()
                    if once:
                        raise
                    current_app.logger.exception("worker job %s failed", getattr(job, "__name__", job))
                finally:
                    db.session.remove()
            if once:
                return
            for _ in range(pause):
                if stopping:
                    break
                time.sleep(1)
    except KeyboardInterrupt:
        stopping.append(True)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


@edc_cli.command("mailer")
@click.option("--once", is_flag=True, help="Deliver once and exit (default: loop).")
@click.option("--interval", type=click.IntRange(min=1), default=None,
              help="Seconds between passes (default: the mailer_interval_seconds setting).")
def mailer_command(once, interval):
    """Deliver pending notifications by SMTP (and enqueue reminders of safety clocks nearly due)."""
    _loop([_mailer_cycle], once, interval)


EXPORT_POLL_SECONDS = 5


@edc_cli.command("worker")
@click.option("--once", is_flag=True, help="Run every job once and exit.")
@click.option("--interval", type=click.IntRange(min=1), default=None,
              help="Seconds between mailer cycles (default: the mailer_interval_seconds setting).")
def worker_command(once, interval):
    """Run the background jobs: the mailer, and the export jobs in a thread of their own (a long export
    never delays a safety notification). `make serve` starts it next to gunicorn."""
    if once:
        _loop(WORKER_JOBS, once=True, interval=interval)
        return
    import threading

    app = current_app._get_current_object()
    stopping: list[bool] = []

    def exports_cycle() -> str:
        return _exports_cycle(lambda: bool(stopping))

    def run_exports() -> None:
        with app.app_context():
            _loop([exports_cycle], once=False, interval=EXPORT_POLL_SECONDS, stopping=stopping, main_thread=False)

    exporter = threading.Thread(target=run_exports, name="exports", daemon=True)
    exporter.start()
    try:
        _loop([_mailer_cycle, _summaries_cycle], once=False, interval=interval, stopping=stopping)
    finally:
        stopping.append(True)
        exporter.join(timeout=60)


def register(app: Flask) -> None:
    for group in (keys_cli, users_cli, roles_cli, audit_cli, forms_cli, meddra_cli, fhir_clients_cli):
        edc_cli.add_command(group)
    app.cli.add_command(edc_cli)
