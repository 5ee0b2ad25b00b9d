"""What the fault tests share (conftest.py imports the fixtures): a gunicorn server of the test's database that
can be killed and restarted, a TCP proxy in front of PostgreSQL that can be cut (an outage of the database for
edc's processes only, since the suite's PostgreSQL is shared), clients saving entries, and the checks that nothing
was lost or half-written (bench/integrity.py, which bench/fault_kill.py runs too).
"""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.integrity import audit_verify, half_written, recount_differences  # noqa: F401 (the tests' checks)
from servers import Gunicorn, http_call  # noqa: F401 (http_call: the tests' client)

AE = {"AESTDAT": "2026-11", "AEONGO": True, "AETOXGR": "1", "AESER": "N", "AEREL": "POSSIBLE"}  # demo forms' ae, less AETERM


@dataclass
class WriteLoad:
    """Threads (one per subject), each saving adverse events of its own subject over fresh connections until stopped."""

    port: int
    token: str
    subjects: list[str]
    saved: dict[str, str] = field(default_factory=dict)     # term -> entry id, for every 201
    unanswered: set[str] = field(default_factory=set)       # terms whose request got no answer
    refused: dict[str, int] = field(default_factory=dict)   # term -> status, for every other answer
    statuses: Counter = field(default_factory=Counter)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(len(self.subjects))]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self, k: int) -> None:
        number, i = self.subjects[k], 0
        while not self.stopping.is_set():
            i += 1
            term = f"client {k} save {i}"
            try:
                status, _, body = http_call(self.port, "POST", f"/api/v1/subjects/{number}/entries",
                                            {"form": "ae", "data": {**AE, "AETERM": term}, "complete": True},
                                            {"Authorization": f"Bearer {self.token}"})
            except (OSError, http.client.HTTPException):  # killed mid-request: the answer is lost
                with self.lock:
                    self.unanswered.add(term)
                    self.statuses["no answer"] += 1
                time.sleep(0.1)
                continue
            with self.lock:
                self.statuses[status] += 1
                if status == 201:
                    self.saved[term] = body["id"]
                else:
                    self.refused[term] = status

    def wait_for_saves(self, more: int, timeout: float = 60) -> None:
        target = len(self.saved) + more
        deadline = time.monotonic() + timeout
        while len(self.saved) < target:
            assert time.monotonic() < deadline, f"only {len(self.saved)} saves of {target} within {timeout} s: {self.statuses}"
            time.sleep(0.05)

    def wait_for_answers(self, status: int, more: int, timeout: float = 30) -> None:
        target = self.statuses[status] + more
        deadline = time.monotonic() + timeout
        while self.statuses[status] < target:
            assert time.monotonic() < deadline, f"fewer than {more} more {status} within {timeout} s: {self.statuses}"
            time.sleep(0.05)


def stored_terms(client, headers, subjects: list[str]) -> Counter:
    """(term, entry id) of every adverse event stored, read back through the API."""
    found: Counter = Counter()
    for number in subjects:
        response = client.get(f"/api/v1/subjects/{number}/entries?form=ae", headers=headers)
        assert response.status_code == 200, response.get_json()
        found.update((e["data"]["AETERM"], e["id"]) for e in response.get_json())
    return found


class KillableGunicorn(Gunicorn):
    """The suite's gunicorn (tests/servers.py), whose worker or master the test can SIGKILL; `start` waits
    until it is ready and counts the starts (a server that recovered by itself was started once)."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2, threads: int = 4) -> None:
        super().__init__(env, log, workers, threads)
        self.starts = 0

    def start(self) -> None:
        super().start()
        self.starts += 1
        self.wait_ready()

    def workers(self) -> list[int]:
        """The master's live children (its workers)."""
        master = self.process.pid
        children = Path(f"/proc/{master}/task/{master}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill_worker(self) -> int:
        """SIGKILL one worker; the master starts another."""
        victim = self.workers()[0]
        os.kill(victim, signal.SIGKILL)
        return victim

    def kill_master(self) -> None:
        """SIGKILL the master, then its workers (which would otherwise go on serving a while: as a machine crash
        would), so the port is free for a restart."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.stop()


class TcpProxy:
    """A TCP forwarder to PostgreSQL that can be cut: every open connection is dropped and new ones are refused
    (accepted and closed at once, as a stopped server's address would), until it is restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.closing = False
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up or self.closing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        ends = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select(list(ends), [], [], 0.2)
                if not self.up or self.closing:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    ends[end].sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket that cut() closed meanwhile (fd -1)
            return
        finally:
            for end in (client, server):
                _close(end)
            with self.lock:
                if (client, server) in self.pairs:
                    self.pairs.remove((client, server))

    def cut(self) -> None:
        self.up = False
        with self.lock:
            pairs, self.pairs = list(self.pairs), []
        for client, server in pairs:
            _close(client)
            _close(server)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closing = True
        self.cut()
        _close(self.listener)
        self.thread.join(timeout=5)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def pg_proxy(database_url):
    url = sa.make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield proxy
    proxy.close()


@pytest.fixture
def gunicorn_env(database_url, keys_dir, tmp_path) -> dict[str, str]:
    """Settings of a gunicorn on the test's database (the demo forms of config/testing.toml)."""
    return {"EDC_ENV": "testing", "EDC_DATABASE_URL": database_url, "EDC_KEYS_DIR": keys_dir,
            "EDC_PUBLIC_BASE_URL": "http://127.0.0.1", "EDC_EXPORT_DIR": str(tmp_path / "exports")}


@pytest.fixture
def gunicorn(gunicorn_env, tmp_path, app):
    """A gunicorn of the test's database, stopped (and its processes killed) before the database is emptied."""
    server = KillableGunicorn(gunicorn_env, tmp_path / "gunicorn.log")
    yield server
    server.stop()
