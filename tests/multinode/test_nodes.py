"""A deployment of several nodes, tested through HTTP on both (PostgreSQL only: SQLite serves one machine).

Two gunicorn nodes and two workers on one database, one key directory and one object store (conftest.py):
simultaneous saves of one entry through both nodes, the same subject enrolled through both at once, a burst
of wrong passwords spread over both, keys changed with the CLI and followed by the node that was not
restarted, an export written by a worker and downloaded through a node, and two `flask edc init` at once.
The key change runs last: on a release whose nodes do not follow the keys, it leaves node B behind.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import PASSWORD
from multinode.conftest import SUBJECT, VITALS, Deployment, Node
from servers import PROJECT_ROOT, database_next_to, drop_database, flask_command, process_env, recreate_database

pytestmark = pytest.mark.postgresql_only

EXPORT_SECONDS = 40  # a worker looks for export jobs every 5 s
START_SECONDS = 60  # for a flask command to build its app and reach the database


def at_once(calls: list[Callable[[], tuple]]) -> list:
    """Make the calls together, each from its own thread released by one barrier; their results (or the
    exception a call raised) in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - no answer at all is a result to report
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def statuses(results: list) -> Counter:
    return Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results)


def enrol(node: Node, token: str, **more) -> str:
    status, _, body = node.call("POST", "/api/v1/subjects", {**SUBJECT, **more}, token)
    assert status == 201, (status, body)
    return body["number"]


def vitals_entry(node: Node, token: str, number: str, complete: bool = False) -> tuple[str, str]:
    """A new vitals entry of the subject: (its id, its ETag)."""
    body = {"form": "vitals", "event": "SCR", "data": VITALS, "complete": complete}
    status, headers, created = node.call("POST", f"/api/v1/subjects/{number}/entries", body, token)
    assert status == 201, (status, created)
    return created["id"], headers["ETag"]


def test_simultaneous_saves_of_one_entry_through_both_nodes_one_wins_the_rest_get_412(deployment: Deployment):
    token = deployment.a.token("pi")
    for attempt in range(2):
        entry_id, etag = vitals_entry(deployment.a, token, enrol(deployment.a, token))
        saves = [lambda node=deployment.nodes[i % 2], hr=100 + i: node.call(
            "PUT", f"/api/v1/entries/{entry_id}", {"data": {**VITALS, "HR": hr}}, token, **{"If-Match": etag})
            for i in range(8)]
        results = at_once(saves)
        assert statuses(results) == Counter({200: 1, 412: 7}), (attempt, statuses(results))
        winner = next(r for r in results if r[0] == 200)
        status, _, stored = deployment.b.call("GET", f"/api/v1/entries/{entry_id}", token=token)
        assert status == 200 and stored["data"]["HR"] == winner[2]["data"]["HR"]


def test_the_same_hospital_number_enrolled_through_both_nodes_at_once_is_one_subject(deployment: Deployment):
    tokens = [node.token("pi") for node in deployment.nodes]
    for attempt in range(3):
        hospital_number = f"HN-{attempt}-{time.monotonic_ns()}"
        results = at_once([lambda node=node, token=token: node.call(
            "POST", "/api/v1/subjects", {**SUBJECT, "hospital_number": hospital_number}, token)
            for node, token in zip(deployment.nodes, tokens)])
        assert statuses(results) == Counter({201: 1, 409: 1}), (attempt, statuses(results))
        refused = next(r for r in results if r[0] == 409)
        assert refused[1]["Content-Type"] == "application/problem+json"


def passwords_checked(deployment: Deployment, username: str, address: str) -> tuple[int, int]:
    """login_failed audit records of the account from this address, and its throttle counter there."""
    audited = deployment.scalar("SELECT count(*) FROM audit_records WHERE action = 'login_failed' "
                                "AND actor_username = :u AND client_address = :a", u=username, a=address)
    counted = deployment.scalar("SELECT failures FROM login_throttles WHERE key = :k", k=f"user:{username}@{address}")
    return audited, counted


def test_a_burst_of_wrong_passwords_over_both_nodes_gets_no_more_checked_than_a_sequence(deployment: Deployment):
    slow, burst = "198.51.100.7", "198.51.100.8"
    in_sequence = []
    while not in_sequence or in_sequence[-1] == 401:
        in_sequence.append(deployment.nodes[len(in_sequence) % 2].login("guessed-slowly", "wrong-horse-1", slow)[0])
        assert len(in_sequence) < 30, in_sequence
    checked_in_sequence = in_sequence.count(401)
    assert in_sequence[-1] == 429 and passwords_checked(deployment, "guessed-slowly", slow) == (checked_in_sequence,) * 2

    results = at_once([lambda node=deployment.nodes[i % 2]: node.login("guessed", "wrong-horse-1", burst) for i in range(16)])
    answered = statuses(results)
    assert set(answered) <= {401, 429}, answered
    assert answered[401] <= checked_in_sequence, (answered, checked_in_sequence)
    assert passwords_checked(deployment, "guessed", burst) == (answered[401], answered[401])  # each failure counted and audited


def test_an_export_written_by_a_worker_downloads_through_the_other_node_from_object_storage(deployment: Deployment):
    enrol(deployment.a, deployment.a.token("pi"))
    status, _, asked = deployment.a.call("POST", "/api/v1/exports", {"format": "csv"}, deployment.a.token("stat"))
    assert status == 202, asked
    token = deployment.b.token("stat")
    job = finished_export(deployment.b, token, asked["id"])
    status, _, manifest = deployment.b.call("GET", f"/api/v1/exports/{job['id']}/manifest", token=token)
    assert status == 200, manifest
    listed = manifest["files"] + [manifest["archive"]]
    assert deployment.s3.keys(deployment.bucket, f"{job['id']}/") == {f"{job['id']}/{f['name']}" for f in listed} | {
        f"{job['id']}/manifest.json"}
    for entry in listed:
        status, _, content = deployment.b.call("GET", f"/api/v1/exports/{job['id']}/files/{entry['name']}", token=token,
                                               raw=True)
        assert status == 200 and hashlib.sha256(content).hexdigest() == entry["sha256"], (entry["name"], status)
    writers = [w.log.name for w in deployment.workers if f"{job['id']} completed" in w.log.read_text(errors="replace")]
    assert len(writers) == 1, writers                                       # one worker ran it ...
    for name, directory in deployment.scratch.items():                      # ... and left no file on its disk
        assert not directory.exists() or not any(directory.rglob(f"*{job['id']}*")), name


def finished_export(node: Node, token: str, job_id: str) -> dict:
    deadline = time.monotonic() + EXPORT_SECONDS
    while time.monotonic() < deadline:
        status, _, job = node.call("GET", f"/api/v1/exports/{job_id}", token=token)
        assert status == 200, job
        if job["state"] in ("completed", "failed"):
            assert job["state"] == "completed", job
            return job
        time.sleep(0.25)
    raise AssertionError(f"export {job_id} not finished within {EXPORT_SECONDS} s")


def test_two_inits_at_once_on_an_empty_database_both_succeed(deployment: Deployment):
    url = database_next_to(deployment.database_url, "init")
    recreate_database(url)
    try:
        with held_migration_start(url) as release:
            env = process_env({**deployment.env, "EDC_DATABASE_URL": url})
            inits = [subprocess.Popen(flask_command("edc", "init"), cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
            release(lambda: waiting_sessions(url) >= 2 or any(init.poll() is not None for init in inits))
            outputs = [init.communicate(timeout=120)[0] for init in inits]
        for init, output in zip(inits, outputs):
            assert init.returncode == 0 and "database at migration head" in output, output[-800:]
    finally:
        drop_database(url)


@contextmanager
def held_migration_start(url: str) -> Iterator[Callable[[Callable[[], bool]], None]]:
    """Hold the name of Alembic's version table in an open transaction, so that migrations started now wait
    at their first statement; release(ready) rolls it back once ready() (or after START_SECONDS). The two
    inits then migrate at the same moment, not whenever each process has finished building its app."""
    engine = sa.create_engine(url, poolclass=NullPool)
    conn = engine.connect()
    transaction = conn.begin()
    conn.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)")

    def release(ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        transaction.rollback()

    try:
        yield release
    finally:
        conn.close()
        engine.dispose()


def waiting_sessions(url: str) -> int:
    """Sessions of the database waiting for a lock (a table's name, or an advisory lock)."""
    engine = sa.create_engine(sa.make_url(url).set(database="postgres"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                                        "AND wait_event_type = 'Lock'"), {"d": sa.make_url(url).database}).scalar_one()
    finally:
        engine.dispose()


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def test_keys_changed_with_the_cli_are_followed_by_the_node_that_was_not_restarted(deployment: Deployment):
    pi = deployment.a.token("pi")
    entry_id, _ = vitals_entry(deployment.a, pi, enrol(deployment.a, pi), complete=True)
    added = deployment.command("edc", "keys", "add-signing-key", "--development")
    new_kid = added.split("new signing key ")[1].split(";")[0]
    assert "data key 2" in deployment.command("edc", "keys", "rotate")
    deployment.a.server.restart()                                      # node A restarts; node B does not

    token = deployment.a.token("monitor")
    assert kid_of(token) == new_kid                                    # node A signs with the new key ...
    status, _, me = deployment.b.call("GET", "/api/v1/me", token=token)
    assert status == 200, me                                           # ... node B accepts it
    pi = deployment.a.token("pi")
    status, _, signed = deployment.a.call("POST", f"/api/v1/entries/{entry_id}/signatures",
                                          {"username": "pi", "password": PASSWORD, "meaning": "approval"}, pi)
    assert status == 201 and signed["key_id"] == 2, signed              # signed under the new data key ...
    status, _, listed = deployment.b.call("GET", f"/api/v1/entries/{entry_id}/signatures", token=pi)
    assert status == 200, listed
    assert [s["digest_valid"] for s in listed] == [True], listed       # ... which node B verifies
