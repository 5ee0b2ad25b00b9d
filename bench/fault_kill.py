"""kill -9 under write load, the long version of tests/faults/test_kill.py: gunicorn on PostgreSQL, N clients saving
entries, and rounds of SIGKILL of a worker then of the master (and a restart). Afterwards every save answered 201 must
be stored exactly once with its audit record, nothing half-written, `flask edc audit verify` clean, and the form-status
table and subject summaries equal to a recount.

    .venv/bin/python bench/fault_kill.py [--clients 16] [--rounds 3] [--seconds 5] [--workers 2 --threads 4] [--json]

Each client saves the benchmark form of entry_bench.py (a subject log: any number of entries) for a subject of its own,
on a fresh connection per request, its COMMENT naming the save. Database (`edc_bench_faults`), keys, forms copy and
gunicorn are created here and removed at the end, on failure, on Ctrl-C and on SIGTERM (the set-up is entry_bench.py's).
Exit status 1 when anything was lost or half-written. Figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import entry_bench as eb  # noqa: E402
import http_bench as hb  # noqa: E402

sys.path.insert(1, str(hb.PROJECT_ROOT))
from bench.integrity import audit_verify, half_written, recount_differences  # noqa: E402


class Load:
    """Clients saving entries over fresh connections until stopped; the server's port may change (restarts)."""

    def __init__(self, setup: eb.EntrySetup, token: str, subjects: list[str], today: date) -> None:
        self.setup, self.token, self.subjects, self.data = setup, token, subjects, eb.payload(today)
        self.saved: dict[str, str] = {}
        self.unanswered: set[str] = set()
        self.statuses: Counter = Counter()
        self.last_saved_at = 0.0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(len(subjects))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self, k: int) -> None:
        path, i = f"/api/v1/subjects/{self.subjects[k]}/entries", 0
        while not self.stopping.is_set():
            i += 1
            note = f"client {k} save {i}"
            body = {"form": eb.FORM_ID, "data": {**self.data, "COMMENT": note}, "complete": True}
            try:
                status, doc = hb.http_call(self.setup.port, "POST", path, body, token=self.token)
            except (OSError, http.client.HTTPException) as exc:  # killed mid-request, restarting, or too slow
                with self.lock:
                    self.unanswered.add(note)
                    self.statuses[f"no answer: {type(exc).__name__}"] += 1
                time.sleep(0.1)
                continue
            with self.lock:
                self.statuses[str(status)] += 1
                if status == 201:
                    self.saved[note] = doc["id"]
                    self.last_saved_at = time.monotonic()

    def recovery_after(self, fault_at: float, timeout: float = 120) -> float:
        """Seconds from a fault to the first save answered after it."""
        deadline = fault_at + timeout
        while self.last_saved_at <= fault_at:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no save answered within {timeout} s of a fault: {dict(self.statuses)}")
            time.sleep(0.02)
        return self.last_saved_at - fault_at


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def kill_master(setup: eb.EntrySetup) -> None:
    """SIGKILL the master, then the workers it leaves (as a machine crash would), so the port is free again."""
    os.kill(setup.server.pid, signal.SIGKILL)
    setup.server.wait(timeout=10)
    try:
        os.killpg(setup.server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    setup.server = None
    if setup.server_log:  # start_server opens the log afresh
        setup.server_log.close()
        setup.server_log = None


def run_faults(setup: eb.EntrySetup, load: Load, args) -> list[dict]:
    faults = []
    for _ in range(args.rounds):
        time.sleep(args.seconds)
        victim, at = worker_pids(setup.server.pid)[0], time.monotonic()
        os.kill(victim, signal.SIGKILL)
        faults.append({"fault": "SIGKILL worker", "recovered_s": round(load.recovery_after(at), 2)})
        time.sleep(args.seconds)
        at = time.monotonic()
        kill_master(setup)
        setup.start_server()  # a new free port: the clients follow setup.port
        faults.append({"fault": "SIGKILL master, restart", "recovered_s": round(load.recovery_after(at), 2)})
    time.sleep(args.seconds)
    return faults


def stored_notes(port: int, token: str, subjects: list[str]) -> Counter:
    found: Counter = Counter()
    for number in subjects:
        status, doc = hb.http_call(port, "GET", f"/api/v1/subjects/{number}/entries?form={eb.FORM_ID}", token=token)
        if status != 200:
            raise RuntimeError(f"reading back {number} answered {status}")
        found.update((e["data"]["COMMENT"], e["id"]) for e in doc)
    return found


def verdict(setup: eb.EntrySetup, load: Load, token: str) -> dict:
    from edc import create_app

    stored = stored_notes(setup.port, token, load.subjects)
    by_note = Counter(note for note, _ in stored)
    app = create_app({"env": "development", "database_url": setup.app_url, "keys_dir": str(setup.tmp / "keys"),
                      "forms_dir": str(setup.forms_dir)})
    code, output = audit_verify(app)
    return {
        "answered_201": len(load.saved),
        "answered_201_missing": sum(1 for note in load.saved if by_note[note] == 0),
        "answered_201_other_id": sum(1 for note, entry_id in load.saved.items() if (note, entry_id) not in stored),
        "stored_more_than_once": sum(1 for n in by_note.values() if n > 1),
        "stored_unanswered": len(set(by_note) - set(load.saved)),
        "stored_never_sent": len(set(by_note) - set(load.saved) - load.unanswered),
        "half_written": half_written(app),
        "audit_verify_exit": code,
        "audit_verify_summary": output.strip().splitlines()[-1] if output.strip() else "",
        "recount_differences": {name: len(keys) for name, keys in recount_differences(app).items()},
    }


def clean(result: dict) -> bool:
    return (result["answered_201_missing"] == result["answered_201_other_id"] == result["stored_more_than_once"]
            == result["stored_never_sent"] == result["audit_verify_exit"] == 0
            and set(result["half_written"].values()) == {0} and set(result["recount_differences"].values()) == {0})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients, one subject each (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of worker kill then master kill (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of load before each fault (default 5)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="maintenance connection to a loopback PostgreSQL (env EDC_BENCH_PG_URL)")
    p.add_argument("--db-name", default="edc_bench_faults", help="database to (re)create and drop")
    hb.add_output_arguments(p)
    p.add_argument("--keep-log", action="store_true", help="copy gunicorn's log to bench/results/gunicorn.log")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.rounds <= 50 or not 0 < args.seconds <= 300:
        p.error("--clients in [1, 64], --rounds in [1, 50], --seconds in (0, 300]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, hb._on_sigterm)
    setup = eb.EntrySetup(args)
    try:
        print(f"preparing database {args.db_name}, keys and forms ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        setup.start_server()
        token = hb.login(setup.port)
        today = date.today()
        load = Load(setup, token, eb.enrol_subjects(setup.port, token, args.clients, today), today)
        started = time.monotonic()
        load.start()
        try:
            faults = run_faults(setup, load, args)
        finally:
            load.stop()
        result = {"benchmark": "fault_kill", "when": hb.utc_stamp(), "clients": args.clients, "rounds": args.rounds, "seconds": round(time.monotonic() - started, 1),
                  "statuses": dict(load.statuses), "faults": faults, **verdict(setup, load, token)}
        result["clean"] = clean(result)
        print(json.dumps(result, indent=2))
        if args.json or args.json_out:
            hb.write_results(args, result, stem="fault_kill")
        return 0 if result["clean"] else 1
    finally:
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
