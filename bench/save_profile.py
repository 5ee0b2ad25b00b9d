"""Profile an entry save: every SQL statement a `POST /api/v1/subjects/{number}/entries` of the entry benchmark's
form `bench30` issues (its time, and where in edc/ it comes from), the round trips to the server, the CPU of the app
and of the database server, and the time per step of the save.

    .venv/bin/python bench/save_profile.py [--subjects 24] [--prior 10] [--saves 200] [--json | --json-out PATH]

Set-up as bench/entry_bench.py (a fresh PostgreSQL database, development keys, a copy of forms/ with bench30, the
demo accounts; all removed at the end, on failure, Ctrl-C and SIGTERM), but no gunicorn: the saves go through the
app in this process with Flask's test client, the same WSGI stack without the socket, one at a time, to
`--subjects` subjects in turn, each given `--prior` entries first (the benchmark's subjects end with a few dozen;
the status cell of a subject log counts its entries, so the count matters). Then:

1. `--saves` saves timed as they are: wall time per save, CPU of this process (the app) and of the database's
   server process (from /proc) per save;
2. `--captures` saves with a SQLAlchemy `before_cursor_execute`/`after_cursor_execute` listener (and a timed
   COMMIT): each statement, its median time (sent to answered), its rows and the edc/ functions on the stack when
   it was sent (from the service the route calls down to the function that issued it); the first of these saves
   also with libpq's trace of its connection, which counts the round trips (BEGIN and COMMIT included);
3. `--saves` saves under cProfile: the call tree of edc/ functions below the request, each step's share scaled
   to the wall time of (1) (cProfile slows Python down, not the database, so the shares are indicative), split
   into the time of the statements sent under that step (from 2) and the rest; and the functions with the most
   own time;
4. the price of one statement alone: the study-lock read (a save used to send it alone), through the app's session, and a bare
   `SELECT 1` round trip, each repeated 10 x `--saves` times (wall, app CPU and server CPU).

Nothing here is a target or an assertion: it shows where a save spends its time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import re
import signal
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import entry_bench as eb  # noqa: E402
import http_bench as hb  # noqa: E402

PROJECT_ROOT = hb.PROJECT_ROOT
EDC_DIR = str(PROJECT_ROOT / "edc") + os.sep
ENTRY_PATH = "/api/v1/subjects/{number}/entries"


# ---------------------------------------------------------------------------------------------
# The app, in this process
# ---------------------------------------------------------------------------------------------

class InProcess:
    """The app built from the set-up's settings, a logged-in test client, and the subjects saved to in turn."""

    def __init__(self, setup: eb.EntrySetup, today, subjects: int):
        for key in [k for k in os.environ if k.startswith("EDC_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in setup.env.items() if k.startswith("EDC_")})
        os.environ["EDC_PUBLIC_BASE_URL"] = "http://localhost"  # the test client's address: other hosts get 400
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT))
        from edc import create_app
        from edc.extensions import db

        self.app = create_app()
        self.db = db
        # The request log is written as in gunicorn (its cost is part of a request), but to nowhere.
        self.devnull = open(os.devnull, "w")  # noqa: SIM115 (closed by close())
        for handler in logging.getLogger("edc").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self.devnull)
        self.client = self.app.test_client()
        self.login()
        consent = (today - timedelta(days=10)).isoformat()
        self.numbers = []
        for i in range(subjects):
            body = {"site": "ES01", "birth_year": today.year - 2 - i % 20, "birth_month": 1 + i % 12, "sex": "FMU"[i % 3],
                    "consent_date": consent}
            response = self.client.post("/api/v1/subjects", json=body, headers=self.headers)
            if response.status_code != 201:
                raise RuntimeError(f"enrolling answered {response.status_code}: {response.get_json()}")
            self.numbers.append(response.get_json()["number"])
        self.body = {"form": eb.FORM_ID, "data": eb.payload(today), "complete": True}
        self.saved = 0

    def login(self) -> None:
        response = self.client.post("/api/v1/auth/login", json={"username": hb.DEMO_USER, "password": hb.DEMO_PASSWORD})
        if response.status_code != 200:
            raise RuntimeError(f"login answered {response.status_code}: {response.get_json()}")
        self.headers = {"Authorization": f"Bearer {response.get_json()['access_token']}"}
        self.logged_in = time.monotonic()

    def save(self) -> None:
        if time.monotonic() - self.logged_in > hb.ACCESS_TOKEN_SECONDS - 120:
            self.login()
        number = self.numbers[self.saved % len(self.numbers)]
        response = self.client.post(ENTRY_PATH.format(number=number), json=self.body, headers=self.headers)
        if response.status_code != 201:
            raise RuntimeError(f"save answered {response.status_code}: {response.get_json()}")
        self.saved += 1
        doc = response.get_json()
        if doc.get("warnings") or doc.get("queries_opened"):
            raise RuntimeError(f"the benchmark entry raised warnings or queries: {doc.get('warnings')}")

    def entries_per_subject(self) -> float:
        return self.saved / len(self.numbers)

    @property
    def engine(self):
        with self.app.app_context():
            return self.db.engine

    def close(self) -> None:
        with self.app.app_context():
            self.db.session.remove()
            self.db.engine.dispose()
        self.devnull.close()


# ---------------------------------------------------------------------------------------------
# Statements of one save
# ---------------------------------------------------------------------------------------------

def qualified(filename: str, function: str) -> str:
    """An edc/ function as `services.entries.create_entry`."""
    return ".".join((*Path(filename).relative_to(PROJECT_ROOT / "edc").with_suffix("").parts, function))


def edc_stack() -> dict:
    """Where a statement comes from: the edc/ functions on the stack (outermost first), the path shown (from the
    first service down, module.function) and the line that issued it."""
    frames = [f for f in traceback.extract_stack()[:-2] if f.filename.startswith(EDC_DIR)]
    start = next((i for i, f in enumerate(frames) if f"{os.sep}services{os.sep}" in f.filename), 0)
    return {"stack": [qualified(f.filename, f.name) for f in frames],
            "path": " > ".join(qualified(f.filename, f.name).removeprefix("services.") for f in frames[start:])
            or "(outside edc)",
            "issuer": f"{Path(frames[-1].filename).relative_to(PROJECT_ROOT)}:{frames[-1].lineno}" if frames else "?"}


def shorten(sql: str, width: int = 150) -> str:
    sql = re.sub(r"\s+", " ", sql).strip()
    sql = re.sub(r"\(%\(\w+\)s(?:::\w+(?:\[\])?)?(?:, %\(\w+\)s(?:::\w+(?:\[\])?)?)+\)", "(…)", sql)  # long parameter lists
    return sql if len(sql) <= width else sql[:width - 1] + "…"


def capture_saves(proc: InProcess, count: int, trace_path: Path) -> dict:
    """Save `count` times with the statement listener on (the first save also with the libpq trace): each
    statement of a save with its median time over the saves, rows and origin; the round trips of the first."""
    import sqlalchemy as sa

    engine = proc.engine
    saves: list[list[dict]] = []
    pending: dict[int, tuple[float, dict]] = {}
    traced: list = []

    def before(conn, cursor, statement, parameters, context, executemany):
        origin = edc_stack()  # before the clock starts: extracting the stack takes a while
        pending[id(cursor)] = (time.perf_counter(), origin)

    def after(conn, cursor, statement, parameters, context, executemany):
        started, origin = pending.pop(id(cursor))
        saves[-1].append({"ms": (time.perf_counter() - started) * 1000, "sql": statement, "rows": cursor.rowcount,
                          **origin})

    dialect = engine.dialect
    plain_commit = dialect.do_commit

    def timed_commit(dbapi_connection):
        origin = edc_stack()
        started = time.perf_counter()
        plain_commit(dbapi_connection)
        saves[-1].append({"ms": (time.perf_counter() - started) * 1000, "sql": "COMMIT", "rows": -1, **origin})

    def trace_on(dbapi_connection, connection_record, connection_proxy):
        pgconn = dbapi_connection.pgconn
        stream = open(trace_path, "a")  # noqa: SIM115 (closed below)
        pgconn.trace(stream.fileno())
        traced.append((pgconn, stream))

    def trace_off() -> None:
        while traced:
            pgconn, stream = traced.pop()
            pgconn.untrace()
            stream.close()

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    sa.event.listen(engine, "checkout", trace_on)  # the connection the first save checks out
    dialect.do_commit = timed_commit
    walls = []
    try:
        for k in range(count):
            saves.append([])
            started = time.perf_counter()
            proc.save()
            walls.append((time.perf_counter() - started) * 1000)
            if k == 0:
                sa.event.remove(engine, "checkout", trace_on)
                trace_off()
    finally:
        dialect.do_commit = plain_commit
        if sa.event.contains(engine, "checkout", trace_on):
            sa.event.remove(engine, "checkout", trace_on)
        sa.event.remove(engine, "after_cursor_execute", after)
        sa.event.remove(engine, "before_cursor_execute", before)
        trace_off()
    shapes = {tuple((st["sql"], st["path"]) for st in save) for save in saves}
    if len(shapes) != 1:
        raise RuntimeError(f"the saves did not all issue the same statements ({len(shapes)} different sequences)")
    statements = [dict(st, ms=statistics.median(save[k]["ms"] for save in saves), first_ms=st["ms"])
                  for k, st in enumerate(saves[0])]
    trace = trace_path.read_text(errors="replace").splitlines() if trace_path.exists() else []
    # libpq's trace: one line per message, "<time>\t<F|B>\t<length>\t<message> ...". Each simple Query, and
    # each Sync closing an extended-protocol exchange (Parse/Bind/Describe/Execute), is one round trip.
    frontend = [line.split("\t") for line in trace if "\tF\t" in line]
    kinds = [parts[3].split(" ")[0] for parts in frontend if len(parts) > 3]
    simple = [re.sub(r"\s+", " ", parts[4] if len(parts) > 4 else parts[3]).strip(' "') for parts in frontend
              if len(parts) > 3 and parts[3].startswith("Query")]
    return {"saves": count, "wall_ms_median": statistics.median(walls), "statements": statements,
            "round_trips": kinds.count("Query") + kinds.count("Sync"), "simple_queries": simple}


# ---------------------------------------------------------------------------------------------
# Time per step: cProfile's call graph, edc/ functions only
# ---------------------------------------------------------------------------------------------

def step_tree(stats: pstats.Stats, saves: int, depth: int, threshold: float) -> tuple[list[dict], float]:
    """The edc/ call tree of the request (Flask's full_dispatch_request) down to `depth`, each node with its share
    of the request and its calls per save; and the request's profiled time per save in ms."""
    raw = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers{caller: (cc, nc, tt, ct)})
    callees: dict[tuple, dict[tuple, float]] = {}
    for func, (_, _, _, _, callers) in raw.items():
        for caller, (_, _, _, ct) in callers.items():
            callees.setdefault(caller, {})[func] = ct
    request = [f for f in raw if f[2] == "full_dispatch_request"]
    if not request:
        raise RuntimeError("Flask's full_dispatch_request is not in the profile")
    total = sum(raw[f][3] for f in request)

    def is_edc(func) -> bool:
        return func[0].startswith(EDC_DIR)

    def name(func) -> str:
        return f"{Path(func[0]).relative_to(PROJECT_ROOT / 'edc').with_suffix('')}.{func[2]}".replace(os.sep, ".")

    def edc_children(func, seen) -> dict[tuple, float]:
        """The edc/ functions func reaches, through any library frames in between, with their time from func."""
        found: dict[tuple, float] = {}
        for callee, ct in callees.get(func, {}).items():
            if callee in seen:
                continue
            if is_edc(callee):
                found[callee] = found.get(callee, 0.0) + ct
            elif ct >= threshold * total:
                for grand, gct in edc_children(callee, seen | {callee}).items():
                    found[grand] = found.get(grand, 0.0) + min(gct, ct)
        return found

    rows: list[dict] = []

    def walk(func, level, seen, path):
        for child, ct in sorted(edc_children(func, seen).items(), key=lambda kv: -kv[1]):
            if ct < threshold * total:
                continue
            key = (*path, name(child))
            rows.append({"level": level, "function": name(child), "path": key, "share": ct / total,
                         "calls": raw[child][1] / saves})
            if level < depth:
                walk(child, level + 1, seen | {child}, key)

    for root in request:
        rows.append({"level": 0, "function": "request (Flask full_dispatch_request)", "path": ("request",), "share": 1.0,
                     "calls": raw[root][1] / saves})
        walk(root, 1, {root}, ("request",))
    outside = 1.0 - sum(r["share"] for r in rows if r["level"] == 1)
    rows.append({"level": 1, "function": "(outside edc/: Flask, flask-smorest, marshmallow, JSON)",
                 "path": ("request", "outside"), "share": outside, "calls": 0.0})
    return rows, total / saves * 1000


def top_functions(stats: pstats.Stats, saves: int, count: int) -> list[dict]:
    """The functions with the most own time (any package), per save under cProfile."""
    rows = []
    for (file, line, func), (_, nc, tt, ct, _) in stats.stats.items():
        short = file
        for marker in ("site-packages" + os.sep, str(PROJECT_ROOT) + os.sep):
            if marker in file:
                short = file.split(marker, 1)[1]
        rows.append({"function": f"{short}:{line} {func}", "own_ms": tt / saves * 1000, "cum_ms": ct / saves * 1000,
                     "calls": nc / saves})
    return sorted(rows, key=lambda r: -r["own_ms"])[:count]


def backend_cpu_seconds(setup: eb.EntrySetup) -> float | None:
    """CPU time (user + system) of the database's server processes so far, from /proc; None where unreadable."""
    try:
        with setup._admin() as conn, conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (setup.args.db_name,))
            pids = [row[0] for row in cur.fetchall()]
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=24, help="subjects the saves go to, in turn (default 24)")
    p.add_argument("--prior", type=int, default=10,
                   help="entries each subject gets before anything is measured (default 10; the benchmark's subjects "
                        "end with a few dozen)")
    p.add_argument("--saves", type=int, default=200, help="saves per pass: timed, under cProfile (default 200)")
    p.add_argument("--captures", type=int, default=20, help="saves with the statement listener (default 20)")
    p.add_argument("--depth", type=int, default=3, help="levels of the step tree below the request (default 3)")
    p.add_argument("--threshold", type=float, default=0.005, help="smallest share of the request shown (default 0.005)")
    p.add_argument("--top", type=int, default=20, help="functions listed by own time (default 20)")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="maintenance connection to a loopback PostgreSQL (env EDC_BENCH_PG_URL)")
    p.add_argument("--db-name", default="edc_bench_save_profile", help="database to (re)create and drop")
    hb.add_output_arguments(p)
    args = p.parse_args(argv)
    if (not 1 <= args.subjects <= 200 or not 0 <= args.prior <= 200 or not 1 <= args.saves <= 5000
            or not 1 <= args.captures <= 1000 or not 1 <= args.depth <= 8):
        p.error("--subjects in [1, 200], --prior in [0, 200], --saves in [1, 5000], --captures in [1, 1000], --depth in [1, 8]")
    args.workers, args.threads, args.keep_log = 1, 1, False  # what the set-up reads of entry_bench's arguments
    return args


def statement_price(proc: InProcess, setup: eb.EntrySetup, count: int) -> dict:
    """What one more statement costs, without the save around it: the save's cheapest kind of statement (an indexed
    ORM select through the app's session, here the study-lock read a save used to send alone) and a bare psycopg round trip."""
    import sqlalchemy as sa

    from edc.models.monitoring import StudyLock

    out = {}
    with proc.app.app_context():
        session = proc.db.session
        stmt = (sa.select(StudyLock).where(StudyLock.unlocked_at.is_(None)).order_by(StudyLock.locked_at.desc()).limit(1))
        cursor = session.connection().connection.dbapi_connection.cursor()
        for label, run in (("orm_select", lambda: session.scalars(stmt).first()),
                           ("bare_round_trip", lambda: cursor.execute("SELECT 1").fetchall())):
            for _ in range(20):
                run()
            server_before, cpu_before, wall_before = backend_cpu_seconds(setup), time.process_time(), time.perf_counter()
            for _ in range(count):
                run()
            wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
            server_after = backend_cpu_seconds(setup)
            out[label] = {"wall_ms": wall / count * 1000, "app_cpu_ms": cpu / count * 1000,
                          "server_cpu_ms": ((server_after - server_before) / count * 1000
                                            if server_before is not None and server_after is not None else None)}
        cursor.close()
        session.rollback()
        session.remove()
    return out


def profiled(proc: InProcess, saves: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(saves):
        proc.save()
    profiler.disable()
    return pstats.Stats(profiler)


def in_step(path: tuple, stack: list[str]) -> bool:
    """Whether a statement sent with these edc/ functions on the stack belongs to the step at `path`."""
    wanted = iter(stack)
    return all(any(name == frame for frame in wanted) for name in path[1:])  # path[0] is the request itself


def report(args, setup, proc, plain: dict, captured: dict, rows, profiled_ms, top, load, price) -> str:
    statements = captured["statements"]
    lines = [
        f"edc save profile - POST {ENTRY_PATH} of {eb.FORM_ID} in-process (Flask test client), PostgreSQL "
        f"{setup.pg_version}; {args.subjects} subjects in turn, {args.prior} entries each at the start and about "
        f"{proc.entries_per_subject():.0f} at the end; load average {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)",
        "",
        f"Per save, {args.saves} saves: wall median {plain['median_ms']:.1f} ms (p90 {plain['p90_ms']:.1f} ms; "
        f"{profiled_ms:.1f} ms under cProfile); CPU of the app {plain['app_cpu_ms']:.1f} ms, of the PostgreSQL server "
        "process " + (f"{plain['server_cpu_ms']:.1f} ms" if plain["server_cpu_ms"] is not None else "(not readable)")
        + "; the rest is waiting on round trips and on the scheduler.",
        f"Statements per save: {len(statements) - 1} + COMMIT, {captured['round_trips']} round trips in the libpq trace "
        f"(simple queries {', '.join(captured['simple_queries'])}). Times: median over {captured['saves']} saves with "
        f"the listener, {sum(st['ms'] for st in statements):.1f} ms in all (those saves' median "
        f"{captured['wall_ms_median']:.1f} ms).",
        "The price of one statement alone (mean of many): " + "; ".join(
            f"{label.replace('_', ' ')} {p['wall_ms']:.2f} ms wall, {p['app_cpu_ms']:.2f} ms app CPU"
            + (f", {p['server_cpu_ms']:.2f} ms server CPU" if p["server_cpu_ms"] is not None else "")
            for label, p in price.items()) + ".",
        "",
        "| # | ms (median) | rows | from (outermost first) | issued at | statement |",
        "|--:|--:|--:|---|---|---|",
    ]
    for k, st in enumerate(statements, 1):
        lines.append(f"| {k} | {st['ms']:.2f} | {st['rows']} | {st['path']} | {st['issuer']} | `{shorten(st['sql'])}` |")
    lines += ["", "Time per step: the edc/ functions under the request, each with its share of the request under "
              "cProfile scaled to the unprofiled median (indicative: cProfile slows Python down, not the database), "
              "the statements sent under it and their median time (\"DB\"), and the rest (\"Python\").", "",
              "| step | share | ≈ ms | statements | DB ms | ≈ Python ms | calls |", "|---|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        mine = [st for st in statements if in_step(row["path"], st["stack"])] if row["path"][-1] != "outside" else []
        db_ms = sum(st["ms"] for st in mine)
        ms = row["share"] * plain["median_ms"]
        lines.append(f"| {'&nbsp;&nbsp;' * row['level']}{row['function']} | {row['share']:.1%} | {ms:.1f} | {len(mine)} | "
                     f"{db_ms:.1f} | {max(ms - db_ms, 0):.1f} | {row['calls']:.0f} |")
    lines += ["", f"Own time per save under cProfile, top {args.top} functions (any package; psycopg's own time is "
              "mostly waiting for the server):", "",
              "| function | own ms | cumulative ms | calls |", "|---|--:|--:|--:|"]
    for row in top:
        lines.append(f"| {row['function']} | {row['own_ms']:.2f} | {row['cum_ms']:.2f} | {row['calls']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, hb._on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup = eb.EntrySetup(args)
    today = datetime.now(timezone.utc).date()
    proc = None
    try:
        print(f"preparing database {args.db_name}, keys and the forms copy with {eb.FORM_ID} ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        proc = InProcess(setup, today, args.subjects)
        print(f"{args.prior} entries for each of {args.subjects} subjects ...", file=sys.stderr)
        for _ in range(args.prior * args.subjects):
            proc.save()

        print(f"{args.saves} saves timed as they are ...", file=sys.stderr)
        times = []
        server_before, cpu_before = backend_cpu_seconds(setup), time.process_time()
        for _ in range(args.saves):
            t0 = time.perf_counter()
            proc.save()
            times.append((time.perf_counter() - t0) * 1000)
        app_cpu_ms = (time.process_time() - cpu_before) / args.saves * 1000
        server_after = backend_cpu_seconds(setup)
        plain = {"median_ms": statistics.median(times), "p90_ms": statistics.quantiles(times, n=10)[-1],
                 "app_cpu_ms": app_cpu_ms,
                 "server_cpu_ms": ((server_after - server_before) / args.saves * 1000
                                   if server_before is not None and server_after is not None else None)}

        print(f"{args.captures} saves with the statement listener (the first with the libpq trace) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="edc-save-profile-") as tmp:
            captured = capture_saves(proc, args.captures, Path(tmp) / "libpq.trace")

        print("the price of one statement ...", file=sys.stderr)
        price = statement_price(proc, setup, 10 * args.saves)

        print(f"{args.saves} saves under cProfile ...", file=sys.stderr)
        stats = profiled(proc, args.saves)
        rows, profiled_ms = step_tree(stats, args.saves, args.depth, args.threshold)
        top = top_functions(stats, args.saves, args.top)

        load = [round(x, 2) for x in os.getloadavg()]
        print()
        print(report(args, setup, proc, plain, captured, rows, profiled_ms, top, load, price))
        if args.json or args.json_out:
            hb.write_results(args, {
                "benchmark": "save_profile", "when": hb.utc_stamp(), "load_average": load, "postgresql": setup.pg_version,
                "settings": {k: getattr(args, k) for k in ("subjects", "prior", "saves", "captures", "depth", "threshold")},
                "per_save": plain, "wall_ms": times, "captured": captured, "profiled_ms": profiled_ms,
                "steps": rows, "top_functions": top, "statement_price": price,
            })
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"profile failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None:
            proc.close()  # the app's connections, before the database is dropped
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
