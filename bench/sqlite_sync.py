"""What SQLite's synchronous=FULL costs an entry save, against NORMAL: the save of bench/save_profile.py
(a `POST /api/v1/subjects/{number}/entries` of the entry benchmark's form `bench30`, through the app in this
process with Flask's test client), on two copies of one SQLite database, one per setting.

    .venv/bin/python bench/sqlite_sync.py [--subjects 8] [--prior 5] [--saves 200] [--rounds 4] [--json | --json-out PATH]

Each database gets its own app (`sqlite_synchronous` NORMAL or FULL; WAL in both), `--subjects` subjects and
`--prior` entries per subject; then `--rounds` alternating rounds of `--saves` saves per setting are timed
(alternating, so a change of the machine's load hits both alike). Reported: median and 90th percentile per
save, and FULL's extra time per save (difference of the medians). The databases live in a temporary directory
on the same file system as the system's temporary files (its fsync cost is what FULL adds: run it on the disk
the service uses); each round also times bare commits (one INSERT per transaction, no app) in each setting, the
floor of what FULL adds. Nothing here is a target or an assertion. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy as copy_module
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import entry_bench as eb  # noqa: E402
import http_bench as hb  # noqa: E402
import save_profile as sp  # noqa: E402

SETTINGS = ("NORMAL", "FULL")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=8, help="subjects the saves go to, in turn (default 8)")
    p.add_argument("--prior", type=int, default=5, help="entries per subject before the timing (default 5)")
    p.add_argument("--saves", type=int, default=200, help="timed saves per setting and round (default 200)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    p.add_argument("--json", action="store_true", help="also write bench/results/sqlite_sync.json")
    p.add_argument("--json-out", help="write the JSON figures to this path")
    args = p.parse_args(argv)
    # What the entry benchmark's set-up reads; no PostgreSQL database is made (app_url is a SQLite file).
    args.pg, args.db_name, args.workers, args.threads, args.keep_log = "postgresql://127.0.0.1/postgres", "sqlite_bench", 1, 1, False
    return args


def prepare(args, directory: Path) -> eb.EntrySetup:
    """The entry benchmark's set-up (keys, forms copy with bench30, migrated and seeded database) once, on SQLite."""
    setup = eb.EntrySetup(args)
    setup.app_url = f"sqlite:///{directory / 'edc-prepared.sqlite3'}"
    setup.prepare_app()
    return setup


def app_on_copy(setup: eb.EntrySetup, setting: str, directory: Path, args, today) -> sp.InProcess:
    """An app on a copy of the prepared database, running `synchronous=setting`, with its subjects and prior entries."""
    target = directory / f"edc-{setting.lower()}.sqlite3"
    with sqlite3.connect(setup.app_url.removeprefix("sqlite:///")) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    own = copy_module.copy(setup)
    own.env = {**setup.env, "EDC_DATABASE_URL": f"sqlite:///{target}", "EDC_SQLITE_SYNCHRONOUS": setting}
    proc = sp.InProcess(own, today, args.subjects)
    with proc.app.app_context():
        level = proc.db.session.execute(proc.db.text("PRAGMA synchronous")).scalar()
        proc.db.session.remove()
    if level != {"NORMAL": 1, "FULL": 2}[setting]:
        raise RuntimeError(f"the app runs synchronous={level}, not {setting}")
    for _ in range(args.prior * args.subjects):
        proc.save()
    return proc


def timed(proc: sp.InProcess, saves: int) -> list[float]:
    times = []
    for _ in range(saves):
        started = time.perf_counter()
        proc.save()
        times.append((time.perf_counter() - started) * 1000)
    return times


def bare_commits(directory: Path, setting: str, count: int) -> list[float]:
    """The floor: one small INSERT committed per transaction, with the app's pragmas and nothing else (what a
    commit's fsync costs on this disk)."""
    connection = sqlite3.connect(directory / f"bare-{setting.lower()}.sqlite3", isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={setting}"):
        connection.execute(f"PRAGMA {pragma}")
    connection.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    times = []
    for i in range(count):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        connection.execute("COMMIT")
        times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times


def main(argv=None) -> int:
    args = parse_args(argv)
    today = datetime.now(timezone.utc).date()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    setup, procs = None, {}
    with tempfile.TemporaryDirectory(prefix="edc-sqlite-sync-") as tmp:
        try:
            print("preparing the database ...", file=sys.stderr)
            setup = prepare(args, Path(tmp))
            for setting in SETTINGS:
                procs[setting] = app_on_copy(setup, setting, Path(tmp), args, today)
            times: dict[str, list[float]] = {s: [] for s in SETTINGS}
            bare: dict[str, list[float]] = {s: [] for s in SETTINGS}
            for round_ in range(args.rounds):
                for setting in SETTINGS if round_ % 2 == 0 else reversed(SETTINGS):
                    times[setting] += timed(procs[setting], args.saves)
                    bare[setting] += bare_commits(Path(tmp), setting, args.saves)
        finally:
            for proc in procs.values():
                proc.close()
            if setup is not None:
                setup.close()
    figures = {s: {"median_ms": statistics.median(t), "p90_ms": statistics.quantiles(t, n=10)[-1], "saves": len(t),
                   "bare_commit_median_ms": statistics.median(bare[s])}
               for s, t in times.items()}
    extra = figures["FULL"]["median_ms"] - figures["NORMAL"]["median_ms"]
    result = {"settings": figures, "full_extra_ms": extra, "full_ratio": figures["FULL"]["median_ms"] / figures["NORMAL"]["median_ms"],
              "subjects": args.subjects, "prior": args.prior, "rounds": args.rounds, "load_at_start": load_at_start,
              "load_at_end": [round(x, 2) for x in os.getloadavg()]}
    for setting, f in figures.items():
        print(f"synchronous={setting:6}  median {f['median_ms']:.2f} ms  p90 {f['p90_ms']:.2f} ms  ({f['saves']} saves); "
              f"bare commit median {f['bare_commit_median_ms']:.2f} ms")
    print(f"FULL costs {extra:+.2f} ms per save at the median (x{result['full_ratio']:.2f})")
    if args.json or args.json_out:
        out = Path(args.json_out) if args.json_out else hb.RESULTS_DIR / "sqlite_sync.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
