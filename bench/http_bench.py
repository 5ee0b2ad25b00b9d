"""HTTP benchmark: gunicorn on PostgreSQL, driven from a separate process by N concurrent clients.

Scenario "me": authenticated `GET /api/v1/me` (token check, user and roles read from the
database, marshmallow output) against its baseline `GET /bench/bare` (the cheapest JSON the
same stack can answer; registered only with EDC_BENCHMARK_ENDPOINTS=true), both measured in
the same run against the same server. Speed is only ever reported as a difference or ratio
against that baseline, never as an absolute pass/fail.

    .venv/bin/python bench/http_bench.py [--clients 1,16] [--seconds 10] [--workers 2 --threads 4]

Everything is set up and torn down here: a temporary keys directory, a fresh PostgreSQL
database (dropped and recreated, then dropped again at the end), migrations, the demo seed,
and a gunicorn process on a free loopback port. See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import array
import gc
import http.client
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # git-ignored

DEMO_USER = "inv.es01"
DEMO_PASSWORD = "ari0001-demo-only"  # every demo account's password (edc/services/demo.py)
ACCESS_TOKEN_SECONDS = 900
TARGET_P50_DELTA_MS = 2.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
SOCKET_TIMEOUT = 10.0
MAX_ERRORS_PER_CLIENT = 50  # a client that keeps failing stops early instead of spinning

BARE = "/bench/bare"
ME = "/api/v1/me"
SCENARIOS = (("bare", BARE, False), ("me", ME, True))


# ---------------------------------------------------------------------------------------------
# Load generator: runs in its own process (multiprocessing "spawn"), standard library only.
# One thread and one persistent http.client connection per simulated client.
# ---------------------------------------------------------------------------------------------

def _client_loop(host, port, path, headers, barrier, warmup_until, state, budget, out):
    """One client: warm up, wait for the others, then measure until the deadline or the budget."""
    latencies = array.array("d")
    statuses: dict[str, int] = {}
    errors = 0
    conn = None

    def request_once():
        nonlocal conn
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT)
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - t0
        if resp.will_close:
            conn.close()
            conn = None
        return resp.status, elapsed

    def one(measure: bool) -> bool:
        nonlocal conn, errors
        try:
            status, elapsed = request_once()
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
                conn = None
            if measure:
                errors += 1
                key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
            return errors < MAX_ERRORS_PER_CLIENT
        if measure:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                latencies.append(elapsed)
            else:
                errors += 1
        return errors < MAX_ERRORS_PER_CLIENT

    try:
        n = 0
        while time.perf_counter() < warmup_until and n < budget:
            n += 1
            if not one(False):
                break
        barrier.wait(timeout=SOCKET_TIMEOUT * 2)
        start = state["start"]
        deadline = state["deadline"]
        n = 0
        while n < budget and time.perf_counter() < deadline:
            n += 1
            if not one(True):
                break
        out.append((latencies, statuses, errors, time.perf_counter() - start))
    except threading.BrokenBarrierError:
        out.append((latencies, statuses, errors + 1, 0.0))
    finally:
        if conn is not None:
            conn.close()


def run_load(host, port, path, token, clients, warmup, seconds, max_requests) -> dict:
    """Drive `clients` concurrent clients against one path; return raw latencies and counts."""
    headers = {"Accept": "application/json", "Connection": "keep-alive"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    state: dict[str, float] = {}

    def mark_start():  # runs once, in the last thread to reach the barrier
        state["start"] = time.perf_counter()
        state["deadline"] = state["start"] + seconds
        state["cpu_start"] = time.process_time()

    barrier = threading.Barrier(clients, action=mark_start)
    budget = max(1, max_requests // clients)
    warmup_until = time.perf_counter() + warmup
    out: list = []
    gc.collect()
    gc.disable()  # no collector pauses inside the timed loop (the loop allocates little)
    threads = [
        threading.Thread(target=_client_loop, daemon=True,
                         args=(host, port, path, headers, barrier, warmup_until, state, budget, out))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup + seconds + SOCKET_TIMEOUT * 4)
    client_cpu = time.process_time() - state.get("cpu_start", time.process_time())
    gc.enable()
    lat = array.array("d")
    statuses: dict[str, int] = {}
    errors = 0
    for latencies, st, err, _ in out:
        lat.extend(latencies)
        errors += err
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    errors += clients - len(out)  # a client thread that never reported
    wall = max((elapsed for *_, elapsed in out), default=0.0)
    return {"latencies": lat.tobytes(), "statuses": statuses, "errors": errors, "wall": wall, "client_cpu": client_cpu}


def _load_process(conn, kwargs):
    """Entry point of the load-generator process: one measurement, result sent back over a pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    try:
        try:
            result = run_load(**kwargs)
        except Exception as exc:  # report rather than leave the parent waiting
            result = {"failure": f"{type(exc).__name__}: {exc}"}
        conn.send(result)
    except OSError:  # the parent is gone or gave up on us: nobody to report to
        pass
    finally:
        conn.close()


def measure_in_child(ctx, children, **kwargs) -> dict:
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_process, args=(child_end, kwargs), name="edc-bench-load")
    children.append(proc)
    proc.start()
    child_end.close()
    limit = kwargs["warmup"] + kwargs["seconds"] + SOCKET_TIMEOUT * 6 + 30
    try:
        if not parent_end.poll(limit):
            raise RuntimeError(f"load generator gave no result within {limit:.0f} s")
        result = parent_end.recv()
        proc.join(timeout=10)
    finally:  # on success the child has exited; on Ctrl-C or a failure, stop it now
        parent_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        children.remove(proc)
    if "failure" in result:
        raise RuntimeError(f"load generator failed: {result['failure']}")
    lat = array.array("d")
    lat.frombytes(result["latencies"])
    result["latencies"] = lat
    return result


# ---------------------------------------------------------------------------------------------
# Statistics and reporting
# ---------------------------------------------------------------------------------------------

def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(segments: list[dict]) -> dict:
    lat = sorted(x for seg in segments for x in seg["latencies"])
    ok = len(lat)
    errors = sum(seg["errors"] for seg in segments)
    wall = sum(seg["wall"] for seg in segments)
    statuses: dict[str, int] = {}
    for seg in segments:
        for k, v in seg["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "requests": ok + errors,
        "errors": errors,
        "statuses": statuses,
        "seconds": round(wall, 3),
        "throughput": (ok / wall) if wall else 0.0,
        "p50_ms": percentile(lat, 50) * 1000,
        "p95_ms": percentile(lat, 95) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "client_cpu_percent": (100 * sum(seg["client_cpu"] for seg in segments) / wall) if wall else 0.0,
        "round_p50_ms": [percentile(sorted(seg["latencies"]), 50) * 1000 for seg in segments],
        "round_throughput": [(len(seg["latencies"]) / seg["wall"]) if seg["wall"] else 0.0 for seg in segments],
    }


def _median(values):
    values = sorted(values)
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def derived(results: dict) -> dict:
    out = {}
    for clients, by in results.items():
        bare, me = by["bare"], by["me"]
        deltas = [m - b for m, b in zip(me["round_p50_ms"], bare["round_p50_ms"])]
        ratios = [m / b for m, b in zip(me["round_throughput"], bare["round_throughput"]) if b]
        out[clients] = {
            "p50_delta_ms": me["p50_ms"] - bare["p50_ms"],
            "p50_delta_ms_per_round": deltas,
            "p50_delta_ms_median_of_rounds": _median(deltas),
            "throughput_ratio": (me["throughput"] / bare["throughput"]) if bare["throughput"] else float("nan"),
            "throughput_ratio_per_round": ratios,
        }
    return out


def markdown(results: dict, figures: dict) -> str:
    lines = [
        "| clients | endpoint | requests | errors | req/s | p50 ms | p95 ms | p99 ms | load-generator CPU |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for clients, by in results.items():
        for name, path, _ in SCENARIOS:
            r = by[name]
            lines.append(f"| {clients} | `{path}` | {r['requests']} | {r['errors']} | {r['throughput']:.0f} | "
                         f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['client_cpu_percent']:.0f} % |")
    lines.append("")
    lines.append("| clients | /me p50 − bare p50 (ms) | median of per-round deltas (ms) | throughput me/bare |")
    lines.append("|--:|--:|--:|--:|")
    for clients, f in figures.items():
        lines.append(f"| {clients} | {f['p50_delta_ms']:.2f} | {f['p50_delta_ms_median_of_rounds']:.2f} | "
                     f"{f['throughput_ratio']:.2f} |")
    lines.append("")
    if 1 in figures:
        d = figures[1]["p50_delta_ms"]
        verdict = "met" if d <= TARGET_P50_DELTA_MS else "NOT met"
        lines.append(f"Target at 1 client: /me p50 at most {TARGET_P50_DELTA_MS:.0f} ms above bare p50 -> "
                     f"{d:.2f} ms: {verdict}.")
    if 16 in figures:
        lines.append(f"At 16 clients: /me throughput is {figures[16]['throughput_ratio']:.2f} x bare "
                     f"({results[16]['me']['throughput']:.0f} vs {results[16]['bare']['throughput']:.0f} req/s).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Set-up and tear-down: database, keys, gunicorn
# ---------------------------------------------------------------------------------------------

class Setup:
    """Owns everything the run creates, so `close()` can undo it from any point."""

    def __init__(self, args):
        self.args = args
        admin = urlsplit(args.pg)
        if admin.hostname not in LOOPBACK_HOSTS and not (admin.hostname or "").startswith("/"):
            raise SystemExit(f"refusing a non-loopback PostgreSQL host: {admin.hostname!r}")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*bench[a-z0-9_]*", args.db_name):
            raise SystemExit("--db-name must be a plain lower-case name containing 'bench' (it is dropped)")
        self.admin_url = args.pg
        netloc = admin.netloc
        self.app_url = f"postgresql+psycopg://{netloc}/{args.db_name}"
        self.tmp: Path | None = None
        self.db_created = False
        self.server: subprocess.Popen | None = None
        self.server_log = None
        self.port: int | None = None
        self.env: dict[str, str] = {}
        self.pg_version = "?"
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]

    # -- database --------------------------------------------------------------------------
    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def _drop_database(self, cur) -> None:
        name = self.args.db_name
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')

    def create_database(self) -> None:
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            self.pg_version = cur.fetchone()[0]
            self._drop_database(cur)
            self.db_created = True  # from here on, close() drops it
            cur.execute(f'CREATE DATABASE "{self.args.db_name}"')

    def drop_database(self) -> None:
        if not self.db_created:
            return
        with self._admin() as conn, conn.cursor() as cur:
            self._drop_database(cur)
        self.db_created = False

    # -- app ------------------------------------------------------------------------------
    def prepare_app(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edc-bench-"))
        keys = self.tmp / "keys"
        keys.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}  # no stray settings
        env.update({
            "EDC_ENV": "development",
            "EDC_DATABASE_URL": self.app_url,
            "EDC_KEYS_DIR": str(keys),
            "EDC_BENCHMARK_ENDPOINTS": "true",
            "EDC_ACCESS_TOKEN_SECONDS": str(ACCESS_TOKEN_SECONDS),
            "EDC_WORKERS": str(self.args.workers),
            "EDC_THREADS": str(self.args.threads),
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        flask_steps(env, [["keys", "init", "--development"], ["init"], ["seed-demo"]], timeout=300)

    def start_server(self) -> None:
        self.port = free_port()
        self.env["EDC_BIND"] = f"127.0.0.1:{self.port}"
        self.server_log = open(self.tmp / "gunicorn.log", "wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self.server_log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order, then drop the database
        )
        deadline = time.monotonic() + 60
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.server.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_call(self.port, "GET", "/readyz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready within 60 s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        if self.tmp is None or not (self.tmp / "gunicorn.log").exists():
            return ""
        text = (self.tmp / "gunicorn.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop_server(self) -> None:
        if self.server is None:
            return
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
            try:
                self.server.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)  # its own session: only gunicorn's processes
                self.server.wait(timeout=10)
        try:  # workers left behind by a killed master share its process group
            os.killpg(self.server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.server = None
        if self.server_log:
            self.server_log.close()
            self.server_log = None

    def close(self) -> None:
        errors = []
        for step in (self.stop_server, self.drop_database):
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                errors.append(f"{step.__name__}: {exc}")
        if self.tmp is not None:
            if self.args.keep_log and (self.tmp / "gunicorn.log").exists():
                RESULTS_DIR.mkdir(exist_ok=True)
                shutil.copy(self.tmp / "gunicorn.log", RESULTS_DIR / "gunicorn.log")
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for e in errors:
            print(f"clean-up problem: {e}", file=sys.stderr)


# `flask edc <step>` for several steps in one interpreter: the app (and its forms) is loaded once, not once per
# step, which is most of the cost of a step. The commands run through Flask's CLI runner, exactly as typed.
_FLASK_STEPS = """
import json, sys, traceback
from edc import create_app
runner = create_app().test_cli_runner()
for step in json.loads(sys.argv[1]):
    result = runner.invoke(args=["edc", *step])
    sys.stdout.write(result.output)
    if result.exit_code != 0:
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            traceback.print_exception(result.exception)
        sys.exit(f"`flask edc {' '.join(step)}` failed with exit status {result.exit_code}")
"""


def flask_steps(env: dict, steps: list[list[str]], timeout: float) -> str:
    """Run `flask edc <step>` for each step, in order, in one process with `env`; their output, or RuntimeError."""
    proc = subprocess.run([sys.executable, "-c", _FLASK_STEPS, json.dumps(steps)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(port, method, path, body=None, token=None, timeout=SOCKET_TIMEOUT):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def login(port) -> str:
    status, doc = http_call(port, "POST", "/api/v1/auth/login", {"username": DEMO_USER, "password": DEMO_PASSWORD})
    if status != 200:
        raise RuntimeError(f"login as {DEMO_USER} failed with {status}: {doc}")
    return doc["access_token"]


def machine_facts(setup: Setup, args) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    try:
        from importlib.metadata import version

        gunicorn_version = version("gunicorn")
    except Exception:
        gunicorn_version = "?"
    return {
        "cpus_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": setup.load_at_start,  # other work on the box skews the timings
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": setup.pg_version,
        "gunicorn": gunicorn_version,
        "workers": args.workers,
        "threads": args.threads,
        "commit": commit,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,16", help="comma-separated client counts (default 1,16)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured seconds per endpoint per client count, split over --rounds (default 10)")
    p.add_argument("--rounds", type=int, default=4,
                   help="alternating bare/me segments per client count, to cancel drift (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each segment (default 1)")
    p.add_argument("--max-requests", type=int, default=200_000,
                   help="request cap per segment, warm-up and measurement each (default 200000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="maintenance connection to a loopback PostgreSQL (env EDC_BENCH_PG_URL)")
    p.add_argument("--db-name", default="edc_bench", help="database to (re)create and drop (default edc_bench)")
    add_output_arguments(p)
    p.add_argument("--keep-log", action="store_true", help="copy gunicorn's log to bench/results/gunicorn.log")
    args = p.parse_args(argv)
    try:
        args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        p.error("--clients must be comma-separated integers")
    if not args.client_counts or any(c < 1 or c > 256 for c in args.client_counts):
        p.error("--clients must be between 1 and 256")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60 or not 1 <= args.rounds <= 50:
        p.error("--seconds must be in (0, 600], --warmup in [0, 60], --rounds in [1, 50]")
    if args.max_requests < 1:
        p.error("--max-requests must be positive")
    return args


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--json and --json-out, the same in every benchmark."""
    p.add_argument("--json", action="store_true",
                   help="also write the results to bench/results/<benchmark>-<UTC time>.json (git-ignored)")
    p.add_argument("--json-out", metavar="PATH", type=Path, default=None,
                   help="write the results to PATH instead of bench/results/ (the smoke tests do)")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def shown(path: Path) -> str:
    """A path as printed: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def write_results(args, doc: dict, stem: str | None = None) -> Path:
    """Write the results document to --json-out, or else to bench/results/<stem>-<when>.json; return the path."""
    if args.json_out is not None:
        path = Path(args.json_out)
    else:
        path = RESULTS_DIR / f"{stem or doc['benchmark']}-{doc['when']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwrote {shown(path)}", file=sys.stderr)
    return path


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    # Clean up on `kill` as on Ctrl-C; and make Ctrl-C work even when started from a shell
    # that ignores SIGINT for background jobs.
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctx = multiprocessing.get_context("spawn")
    children: list = []
    setup = Setup(args)
    try:
        print(f"preparing database {args.db_name} and keys ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        setup.start_server()
        facts = machine_facts(setup, args)
        print(f"gunicorn on 127.0.0.1:{setup.port} with {args.workers} workers x {args.threads} threads; "
              f"{facts['cpus_visible']} CPUs visible; PostgreSQL {facts['postgresql']}", file=sys.stderr)

        token, token_at = login(setup.port), time.monotonic()
        for name, path, auth in SCENARIOS:  # sanity: both answer 200 before anything is timed
            status, doc = http_call(setup.port, "GET", path, token=token if auth else None)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {doc}")

        segment = args.seconds / args.rounds
        results: dict[int, dict] = {}
        for clients in args.client_counts:
            segments: dict[str, list] = {"bare": [], "me": []}
            for rnd in range(args.rounds):
                order = SCENARIOS if rnd % 2 == 0 else SCENARIOS[::-1]  # ABBA: drift hits both alike
                for name, path, auth in order:
                    if time.monotonic() - token_at + args.warmup + segment > ACCESS_TOKEN_SECONDS - 60:
                        token, token_at = login(setup.port), time.monotonic()
                    seg = measure_in_child(
                        ctx, children, host="127.0.0.1", port=setup.port, path=path,
                        token=token if auth else None, clients=clients, warmup=args.warmup,
                        seconds=segment, max_requests=args.max_requests,
                    )
                    segments[name].append(seg)
                    print(f"  clients={clients} round={rnd + 1}/{args.rounds} {name:4s}: "
                          f"{len(seg['latencies'])} ok, {seg['errors']} errors in {seg['wall']:.2f} s", file=sys.stderr)
            results[clients] = {name: summarise(segs) for name, segs in segments.items()}

        figures = derived(results)
        print()
        print(f"edc HTTP benchmark - {facts['cpus_visible']} CPUs, PostgreSQL {facts['postgresql']}, "
              f"gunicorn {facts['gunicorn']} gthread {args.workers}x{args.threads}, "
              f"{args.seconds:g} s per endpoint per client count in {args.rounds} alternating rounds; "
              f"load average at start {facts['load_average_at_start'][0]:.2f}")
        print()
        print(markdown(results, figures))
        total_errors = sum(r[name]["errors"] for r in results.values() for name in ("bare", "me"))
        if total_errors:
            print(f"\n{total_errors} requests failed; the figures above are not trustworthy.", file=sys.stderr)

        if args.json or args.json_out:
            doc = {
                "benchmark": "http_bench", "when": utc_stamp(), "facts": facts,
                "settings": {k: getattr(args, k) for k in ("client_counts", "seconds", "rounds", "warmup", "max_requests")},
                "results": {str(c): {n: {k: v for k, v in r.items()} for n, r in by.items()} for c, by in results.items()},
                "derived": {str(c): f for c, f in figures.items()},
                "target_p50_delta_ms": TARGET_P50_DELTA_MS,
            }
            write_results(args, doc)
        return 1 if total_errors else 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        for proc in list(children):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
