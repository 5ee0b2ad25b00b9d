"""Monitoring benchmark: the query listing and the monitoring reports on a synthetic study of N subjects
(default 2,000) on PostgreSQL, with 8 concurrent clients, against the bare endpoint in the same run.

Endpoints (each as the account a real user of it would be): `GET /bench/bare` (baseline), the query
listing (page 1; `state=open&site=ES01`), the six reports, `GET /api/v1/sdv/progress` and
`GET /api/v1/safety/clocks`. Per endpoint: requests, errors, throughput, p50/p95/p99, p95 minus
bare p95, and the issue's target (p95 under 300 ms) written down as met or missed, never asserted.

    .venv/bin/python bench/monitoring_bench.py [--subjects 2000] [--seed 0] [--clients 8] [--json]

The study is built once through the services: `flask edc seed-demo` (demo sites and accounts),
`flask edc seed-demo --subjects N --seed S` (complete casebooks to Day 28), then this script's
monitoring workload (manual queries opened by the monitor or the data manager on a deterministic
sample of entries, a share answered, closed or cancelled; SDV marks by the monitor), all through
edc/services. Each stage is cached as a `pg_dump -Fc` under bench/.cache/ (git-ignored) with the
development key directory its encrypted values need; a later run with the same key (subjects,
seed, workload version) restores the dump into a fresh database, then migrates it to the head. The
harness (set-up, gunicorn, load-generator process, percentiles) is the one of http_bench.py.
See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # http_bench, also in the spawned load process
import http_bench as hb  # noqa: E402

PROJECT_ROOT = hb.PROJECT_ROOT
CACHE_DIR = Path(__file__).resolve().parent / ".cache"  # git-ignored; --cache-dir
WORKLOAD_VERSION = 2  # bump when the workload below changes: the cached final dump is then rebuilt

TARGET_P95_MS = 300.0
MONITOR, DATA_MANAGER = "mon.es01", "dm"
MONITOR_SITES = ("ES01", "IT01")  # the demo monitor's sites (edc/services/demo.py)
# Seeding and the workload run as one process per group of sites (disjoint, so they never wait on each
# other's locks), each group with one of the monitor's sites, whose SDV marks are most of the workload.
SITE_GROUPS = (("ES01", "LB01"), ("IT01", "JO01"))

BARE = ("bare", "/bench/bare", None)
ENDPOINTS = (
    BARE,
    ("queries", "/api/v1/queries", DATA_MANAGER),
    ("queries open ES01", "/api/v1/queries?state=open&site=ES01", MONITOR),
    ("report enrolment", "/api/v1/reports/enrolment", DATA_MANAGER),
    ("report completeness", "/api/v1/reports/completeness", DATA_MANAGER),
    ("report queries", "/api/v1/reports/queries", DATA_MANAGER),
    ("report safety", "/api/v1/reports/safety", DATA_MANAGER),
    ("report safety-clocks", "/api/v1/reports/safety-clocks", DATA_MANAGER),
    ("sdv progress", "/api/v1/sdv/progress", MONITOR),
    ("safety clocks", "/api/v1/safety/clocks", DATA_MANAGER),
)

QUERY_MESSAGES = (
    "Please check this value against the source document.",
    "Value differs from the hospital record; please confirm.",
    "Date does not match the visit note.",
    "Please explain the missing value.",
    "Unit looks wrong; please verify.",
)
ANSWER_MESSAGES = ("Checked against source: value is correct.", "Corrected per source document.",
                   "Source confirms the entry.")


# ---------------------------------------------------------------------------------------------
# The monitoring workload: runs inside the app (a subprocess of this script with the app's env),
# through edc/services only.
# ---------------------------------------------------------------------------------------------

def run_workload(seed: int, queries_per_subject: float, site_codes: list[str] | None) -> None:
    sys.path.insert(0, str(PROJECT_ROOT))
    import sqlalchemy as sa

    from edc import clock, create_app, runtime
    from edc.extensions import db
    from edc.models.audit import AuditRecord
    from edc.models.entries import Entry
    from edc.models.subjects import Site, Subject
    from edc.models.users import User
    from edc.services import audit, queries, sdv
    from edc.services.auth import actor_for  # each demo account as a request would see it
    from edc.services.demo_subjects import SITE_INVESTIGATORS

    app = create_app()
    counts = {"opened": 0, "answered": 0, "closed": 0, "cancelled": 0, "reopened": 0, "verified": 0}
    started = time.perf_counter()
    real_clock = clock.utcnow
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        study = runtime.of(session).study
        users = {u.username: actor_for(u) for u in session.scalars(sa.select(User))}
        monitor, data_manager = users[MONITOR], users[DATA_MANAGER]
        sites = {s.id: s.code for s in session.scalars(sa.select(Site))}
        today = real_clock()
        wanted_sites = [sid for sid, code in sites.items() if site_codes is None or code in site_codes]
        subjects = session.scalars(sa.select(Subject).where(Subject.site_id.in_(wanted_sites))
                                   .order_by(Subject.number)).all()
        for subject in subjects:
            site = sites[subject.site_id]
            rng = random.Random(f"monitoring-workload-{seed}:{subject.number}")  # the same whatever the split
            opener = monitor if site in MONITOR_SITES else data_manager
            answerer = users[SITE_INVESTIGATORS[site]]
            entries = session.scalars(sa.select(Entry).where(Entry.subject_id == subject.id, Entry.status != "draft")
                                      .order_by(Entry.created_at, Entry.form_id, Entry.event_key)).all()
            if not entries:
                continue
            last = session.scalar(sa.select(sa.func.max(AuditRecord.occurred_at))
                                  .where(AuditRecord.chain == audit.subject_chain(subject.id)))
            span = max((today - last).total_seconds() - 3600, 60)

            def at(fraction: float, last=last, span=span) -> datetime:
                return last + timedelta(seconds=span * fraction)

            events = []  # (moment fraction, order, action, payload): replayed in time order
            n_queries = min(len(entries), max(0, round(rng.gauss(queries_per_subject, 1.2))))
            for k, entry in enumerate(rng.sample(entries, n_queries)):
                form = study.form(entry.form_id, entry.form_version)
                candidates = sorted(name for name, item in form.items.items()
                                    if item.group is None and item.show_if is None and not item.computed
                                    and entry.data.get(name) is not None)
                item = rng.choice(candidates) if candidates and rng.random() < 0.75 else None
                opened = rng.uniform(0.0, 0.9)
                fate = rng.random()
                events.append((opened, k, "open", (entry.id, item, rng.choice(QUERY_MESSAGES), rng.random() < 0.02)))
                if fate < 0.45:
                    continue  # stays open
                if fate < 0.55:
                    events.append((rng.uniform(opened, 0.99), k, "cancel", None))
                    continue
                answered = rng.uniform(opened, 0.95)
                events.append((answered, k, "answer", rng.choice(ANSWER_MESSAGES)))
                if fate < 0.75:
                    continue  # answered, waiting for the monitor
                closed = rng.uniform(answered, 0.99)
                events.append((closed, k, "close", None))
                if fate > 0.97:
                    events.append((rng.uniform(closed, 0.995), k, "reopen", "Source document disagrees; please re-check."))
            if site in MONITOR_SITES and rng.random() < 0.7:  # the monitor has visited and verified a share
                required = [e for e in entries if sdv.requirement_of(study, e.form_id) != "none"]
                share = rng.uniform(0.3, 1.0)
                for entry in required[:round(len(required) * share)]:
                    events.append((rng.uniform(0.0, 0.99), -1, "verify", entry.id))
            opened_ids = {}
            try:
                for fraction, k, action, payload in sorted(events, key=lambda e: (e[0], e[1])):
                    clock.utcnow = lambda moment=at(fraction): moment
                    if action == "open":
                        entry_id, item, message, critical = payload
                        query = queries.open_query(session, opener, entry_id=entry_id, item=item, message=message,
                                                   critical=critical)
                        opened_ids[k] = query.id
                        counts["opened"] += 1
                    elif action == "verify":
                        sdv.verify(session, monitor, payload, whole_entry=True)
                        counts["verified"] += 1
                    else:
                        actor = answerer if action == "answer" else opener
                        queries.transition(session, actor, opened_ids[k], action, message=payload)
                        counts[{"answer": "answered", "close": "closed", "cancel": "cancelled",
                                "reopen": "reopened"}[action]] += 1
            finally:
                clock.utcnow = real_clock
            session.commit()
    print(f"monitoring workload on {len(subjects)} subjects in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)


# ---------------------------------------------------------------------------------------------
# Set-up: seed or restore, with the caches
# ---------------------------------------------------------------------------------------------

def migration_head() -> str:
    """The Alembic head revision(s), read from the migration files: recorded with the results."""
    heads = []
    for path in (PROJECT_ROOT / "migrations" / "versions").glob("*.py"):
        text = path.read_text()
        found = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found:
            heads.append((found.group(1), down.group(1) if down else None))
    revisions = {r for r, _ in heads}
    pointed = {d for _, d in heads}
    tips = sorted(revisions - pointed)
    return "+".join(tips) or "none"


class MonitoringSetup(hb.Setup):
    """http_bench's Setup, with the study seeded through the services or restored from the cache."""

    def __init__(self, args):
        super().__init__(args)
        self.head = migration_head()
        # No migration head in the key: a dump made at an older head is restored, then migrated (`flask edc init`).
        base = f"monitoring-{args.subjects}-{args.seed}"
        self.cache_dir = Path(args.cache_dir)
        self.seeded_dump = self.cache_dir / f"{base}-subjects.dump"  # after the demo subjects only
        self.final_dump = self.cache_dir / f"{base}-w{WORKLOAD_VERSION}.dump"  # after the monitoring workload too
        self.keys_cache = self.cache_dir / f"{base}-keys"
        # Seeding and workload: one process per group of sites, or a single one (--jobs 1; fewer app loads for a
        # small study). The cache does not depend on it: the same seed builds the same study either way.
        self.groups = SITE_GROUPS if args.jobs > 1 else ()
        self.preparation: dict = {}

    def _pg_args(self) -> list[str]:
        url = urlsplit(self.admin_url)
        return ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]

    def _pg_env(self) -> dict:
        env = dict(self.env)
        password = urlsplit(self.admin_url).password
        if password:
            env["PGPASSWORD"] = password
        return env

    @staticmethod
    def _flask_cmd(*step: str) -> list[str]:
        return [sys.executable, "-m", "flask", "--app", "edc:create_app", "edc", *step]

    def _in_parallel(self, commands: list[list[str]]) -> list[str]:
        """Run the commands at once (hours at most); their outputs, or an error naming the first that failed."""
        with tempfile.TemporaryDirectory() as logs:
            running = []
            try:
                for k, cmd in enumerate(commands):
                    out, err = Path(logs, f"{k}.out"), Path(logs, f"{k}.err")
                    with out.open("w") as stdout, err.open("w") as stderr:
                        running.append((cmd, out, err, subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=self.env,
                                                                        stdout=stdout, stderr=stderr, text=True)))
                failed = [(cmd, out, err) for cmd, out, err, proc in running if proc.wait(timeout=6 * 3600) != 0]
            finally:  # on Ctrl-C, SIGTERM or a time-out, stop the others before the database is dropped
                for *_, proc in running:
                    if proc.poll() is None:
                        proc.terminate()
                        try:
                            proc.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
            if failed:
                cmd, out, err = failed[0]
                raise RuntimeError(f"`{' '.join(cmd[2:])}` failed:\n{out.read_text()}{err.read_text()[-4000:]}")
            return [out.read_text() for _, out, _, _ in running]

    def _flask(self, *step: str, timeout: float) -> str:
        cmd = self._flask_cmd(*step)
        proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"`flask edc {' '.join(step)}` failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def _dump(self, target: Path) -> None:
        t0 = time.perf_counter()
        partial = target.with_suffix(".partial")
        subprocess.run(["pg_dump", "-Fc", *self._pg_args(), "-d", self.args.db_name, "-f", str(partial)],
                       env=self._pg_env(), check=True, timeout=1800)
        partial.rename(target)
        print(f"  cached {hb.shown(target)} ({target.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    def _restore(self, source: Path) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", *self._pg_args(),
                               "-d", self.args.db_name, str(source)],
                              env=self._pg_env(), capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_restore of {source.name} failed:\n{proc.stderr}")
        subprocess.run(  # fresh planner statistics: a restore carries none
            ["psql", *self._pg_args(), "-d", self.args.db_name, "-qc", "ANALYZE"],
                       env=self._pg_env(), check=True, timeout=600, capture_output=True)
        return time.perf_counter() - t0

    def prepare_app(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edc-bench-"))
        keys = self.tmp / "keys"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
        env.update({
            "EDC_ENV": "development",
            "EDC_DATABASE_URL": self.app_url,
            "EDC_KEYS_DIR": str(keys),
            "EDC_BENCHMARK_ENDPOINTS": "true",
            "EDC_ACCESS_TOKEN_SECONDS": str(hb.ACCESS_TOKEN_SECONDS),
            "EDC_WORKERS": str(self.args.workers),
            "EDC_THREADS": str(self.args.threads),
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        have_keys = self.keys_cache.is_dir()
        if have_keys and not self.args.rebuild and self.final_dump.exists():
            shutil.copytree(self.keys_cache, keys)
            seconds = self._restore(self.final_dump)
            self._flask("init", timeout=1800)
            self.preparation = {"how": "restored", "dump": self.final_dump.name, "seconds": round(seconds, 1)}
            print(f"restored {self.final_dump.name} in {seconds:.1f} s (no seeding)", file=sys.stderr)
            return
        t_all = time.perf_counter()
        if have_keys and not self.args.rebuild and self.seeded_dump.exists():
            shutil.copytree(self.keys_cache, keys)
            seconds = self._restore(self.seeded_dump)
            self._flask("init", timeout=1800)
            self.preparation = {"how": "restored subjects, ran workload", "dump": self.seeded_dump.name,
                                "restore_seconds": round(seconds, 1)}
            print(f"restored {self.seeded_dump.name} in {seconds:.1f} s; running the monitoring workload",
                  file=sys.stderr)
        else:
            for stale in (self.seeded_dump, self.final_dump):
                stale.unlink(missing_ok=True)
            shutil.rmtree(self.keys_cache, ignore_errors=True)
            keys.mkdir()
            setup_steps = [["keys", "init", "--development"], ["init"], ["seed-demo"]]
            seed = ["seed-demo", "--subjects", str(self.args.subjects), "--seed", str(self.args.seed)]
            print(f"seeding {self.args.subjects} subjects through the services (seed {self.args.seed}), "
                  + (f"{len(SITE_GROUPS)} processes over disjoint sites" if self.groups else "in one process")
                  + "; about 1.3 s per subject on 2 cores ...", file=sys.stderr)
            t0 = time.perf_counter()
            if self.groups:
                hb.flask_steps(self.env, setup_steps, timeout=600)
                outs = self._in_parallel([self._flask_cmd(*seed, *(arg for code in group for arg in ("--site", code)))
                                          for group in self.groups])
            else:  # one process: the set-up and the seed load the app once
                outs = [hb.flask_steps(self.env, [*setup_steps, seed], timeout=6 * 3600)]
            seed_seconds = time.perf_counter() - t0
            shutil.copytree(keys, self.keys_cache)  # the dumps' encrypted values need this key ring
            self.keys_cache.chmod(0o700)
            for out in outs:
                print("  " + out.strip().replace("\n", "\n  "), file=sys.stderr)
            self._dump(self.seeded_dump)
            self.preparation = {"how": "seeded", "seed_seconds": round(seed_seconds, 1)}
        t0 = time.perf_counter()
        workload = [sys.executable, str(Path(__file__).resolve()), "--run-workload", "--seed", str(self.args.seed),
                    "--queries-per-subject", str(self.args.queries_per_subject)]
        outs = self._in_parallel([[*workload, "--workload-sites", ",".join(group)] for group in self.groups] or [workload])
        for out in outs:
            print("  " + out.strip(), file=sys.stderr)
        self.preparation["workload_seconds"] = round(time.perf_counter() - t0, 1)
        self.preparation["workload"] = [out.strip() for out in outs]
        subprocess.run(["psql", *self._pg_args(), "-d", self.args.db_name, "-qc", "ANALYZE"],
                       env=self._pg_env(), check=True, timeout=600, capture_output=True)
        self._dump(self.final_dump)
        self.preparation["total_seconds"] = round(time.perf_counter() - t_all, 1)

    def row_counts(self) -> dict:
        import psycopg

        url = urlsplit(self.admin_url)
        target = url._replace(path=f"/{self.args.db_name}").geturl()
        with psycopg.connect(target, connect_timeout=10) as conn, conn.cursor() as cur:
            out = {}
            for table in ("subjects", "subject_summaries", "entries", "form_status", "queries", "query_messages",
                          "sdv_marks", "audit_records", "safety_clocks"):
                try:
                    cur.execute(f"SELECT count(*) FROM {table}")
                    out[table] = cur.fetchone()[0]
                except psycopg.Error:
                    conn.rollback()
            cur.execute("SELECT state, count(*) FROM queries GROUP BY state ORDER BY state")
            out["queries_by_state"] = dict(cur.fetchall())
            cur.execute("SELECT origin, count(*) FROM queries GROUP BY origin ORDER BY origin")
            out["queries_by_origin"] = dict(cur.fetchall())
        return out


# ---------------------------------------------------------------------------------------------
# Measurement and report
# ---------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    bare_p95 = results["bare"]["p95_ms"]
    lines = [
        "| endpoint | as | requests | errors | req/s | p50 ms | p95 ms | p99 ms | p95 − bare p95 ms | p95 < 300 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name, path, user in ENDPOINTS:
        r = results[name]
        mark = "" if user is None else ("met" if r["p95_ms"] < TARGET_P95_MS else "**missed**")
        delta = "" if user is None else f"{r['p95_ms'] - bare_p95:.1f}"
        lines.append(f"| `{path}` | {user or '–'} | {r['requests']} | {r['errors']} | {r['throughput']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {delta} | {mark} |")
    return "\n".join(lines)


def add_cache_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, metavar="DIR",
                   help="where the study's dumps and key ring are cached (default bench/.cache, git-ignored)")


def add_jobs_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, choices=(1, len(SITE_GROUPS)), default=len(SITE_GROUPS),
                   help=f"processes that seed the study and run its workload (default {len(SITE_GROUPS)}, one per group "
                        "of demo sites; 1 for a small study: fewer app loads)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=2000, help="synthetic subjects (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the subjects and the workload (default 0)")
    p.add_argument("--queries-per-subject", type=float, default=3.0,
                   help="mean manual queries opened per subject by the workload (default 3)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured seconds per endpoint, split over --rounds (default 10)")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over the endpoints, alternately forwards and backwards, to cancel drift (default 2)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each segment (default 1)")
    p.add_argument("--max-requests", type=int, default=200_000, help="request cap per segment (default 200000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="maintenance connection to a loopback PostgreSQL (env EDC_BENCH_PG_URL)")
    p.add_argument("--db-name", default="edc_bench_monitoring", help="database to (re)create and drop")
    add_cache_argument(p)
    add_jobs_argument(p)
    p.add_argument("--rebuild", action="store_true", help="ignore the cache: seed again and replace the dumps")
    hb.add_output_arguments(p)
    p.add_argument("--keep-log", action="store_true", help="copy gunicorn's log to bench/results/gunicorn.log")
    p.add_argument("--run-workload", action="store_true", help=argparse.SUPPRESS)  # internal: inside the app
    p.add_argument("--workload-sites", default=None, help=argparse.SUPPRESS)  # internal: the sites of that run
    args = p.parse_args(argv)
    if not 1 <= args.subjects <= 20_000:
        p.error("--subjects must be between 1 and 20000")
    if not 1 <= args.clients <= 256:
        p.error("--clients must be between 1 and 256")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60 or not 1 <= args.rounds <= 50:
        p.error("--seconds must be in (0, 600], --warmup in [0, 60], --rounds in [1, 50]")
    if not 0 <= args.queries_per_subject <= 50:
        p.error("--queries-per-subject must be between 0 and 50")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_workload:
        run_workload(args.seed, args.queries_per_subject,
                     args.workload_sites.split(",") if args.workload_sites else None)
        return 0
    signal.signal(signal.SIGTERM, hb._on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctx = multiprocessing.get_context("spawn")
    children: list = []
    setup = MonitoringSetup(args)
    try:
        print(f"preparing database {args.db_name} ({args.subjects} subjects, seed {args.seed}, "
              f"migration head {setup.head}) ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        rows = setup.row_counts()
        print(f"rows: {rows}", file=sys.stderr)
        setup.start_server()
        facts = hb.machine_facts(setup, args)
        print(f"gunicorn on 127.0.0.1:{setup.port} with {args.workers} workers x {args.threads} threads; "
              f"{facts['cpus_visible']} CPUs visible; PostgreSQL {facts['postgresql']}", file=sys.stderr)

        tokens: dict[str, tuple[str, float]] = {}

        def token_for(user: str | None, needed_seconds: float) -> str | None:
            if user is None:
                return None
            have = tokens.get(user)
            if have is None or time.monotonic() - have[1] + needed_seconds > hb.ACCESS_TOKEN_SECONDS - 60:
                status, doc = hb.http_call(setup.port, "POST", "/api/v1/auth/login",
                                           {"username": user, "password": hb.DEMO_PASSWORD})
                if status != 200:
                    raise RuntimeError(f"login as {user} failed with {status}: {doc}")
                tokens[user] = (doc["access_token"], time.monotonic())
            return tokens[user][0]

        sizes = {}
        for name, path, user in ENDPOINTS:  # sanity: every endpoint answers 200 before anything is timed
            status, doc = hb.http_call(setup.port, "GET", path, token=token_for(user, 60))
            if status != 200:
                raise RuntimeError(f"GET {path} as {user} answered {status}: {doc}")
            if isinstance(doc, dict) and "total" in doc:
                sizes[name] = doc["total"]

        segment = args.seconds / args.rounds
        segments: dict[str, list] = {name: [] for name, _, _ in ENDPOINTS}
        for rnd in range(args.rounds):
            order = ENDPOINTS if rnd % 2 == 0 else ENDPOINTS[::-1]
            for name, path, user in order:
                seg = hb.measure_in_child(
                    ctx, children, host="127.0.0.1", port=setup.port, path=path,
                    token=token_for(user, args.warmup + segment), clients=args.clients, warmup=args.warmup,
                    seconds=segment, max_requests=args.max_requests,
                )
                segments[name].append(seg)
                print(f"  round {rnd + 1}/{args.rounds} {name:22s}: {len(seg['latencies'])} ok, "
                      f"{seg['errors']} errors in {seg['wall']:.2f} s", file=sys.stderr)
        results = {name: hb.summarise(segs) for name, segs in segments.items()}

        print()
        print(f"edc monitoring benchmark - {args.subjects} subjects (seed {args.seed}), {args.clients} clients, "
              f"{facts['cpus_visible']} CPUs, PostgreSQL {facts['postgresql']}, gunicorn {facts['gunicorn']} "
              f"gthread {args.workers}x{args.threads}, {args.seconds:g} s per endpoint in {args.rounds} rounds; "
              f"load average at start {facts['load_average_at_start'][0]:.2f}")
        print(f"study: {setup.preparation.get('how')}; rows: {rows}")
        if sizes:
            print("listing totals: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        print()
        print(markdown(results))
        missed = [name for name, _, user in ENDPOINTS if user and results[name]["p95_ms"] >= TARGET_P95_MS]
        print()
        print(f"Target p95 < {TARGET_P95_MS:.0f} ms at {args.subjects} subjects: "
              + (f"missed by {', '.join(missed)}." if missed else "met by every endpoint."))
        total_errors = sum(r["errors"] for r in results.values())
        if total_errors:
            print(f"\n{total_errors} requests failed; the figures above are not trustworthy.", file=sys.stderr)

        if args.json or args.json_out:
            doc = {
                "benchmark": "monitoring_bench", "when": hb.utc_stamp(), "facts": facts, "preparation": setup.preparation,
                "rows": rows, "listing_totals": sizes,
                "settings": {k: getattr(args, k) for k in ("subjects", "seed", "queries_per_subject", "clients",
                                                           "seconds", "rounds", "warmup", "max_requests")},
                "endpoints": {name: {"path": path, "as": user} for name, path, user in ENDPOINTS},
                "results": results,
                "p95_minus_bare_ms": {name: results[name]["p95_ms"] - results["bare"]["p95_ms"] for name in results},
                "target_p95_ms": TARGET_P95_MS,
            }
            hb.write_results(args, doc, stem=f"monitoring_bench-{args.subjects}")
        return 1 if total_errors else 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in list(children):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
