"""Servers the tests start as separate processes or threads, shared by the test folders that need them:
gunicorn serving wsgi.py, `flask edc ...` commands (one-shot or long-running, such as the worker), plain HTTP
calls on fresh connections, and an S3-compatible object store (moto's standalone server).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import sqlalchemy as sa
from botocore.config import Config
from sqlalchemy.pool import NullPool

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 60
S3_REGION = "us-east-1"
S3_BUCKET = "edc-exports-test"
# Fake credentials, given through the environment as a deployment gives them (boto3's chain); the shared
# config and credentials files and the instance metadata service are switched off, so nothing of the
# machine's own AWS set-up is read.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
                  "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(port: int, method: str, path: str, body=None, headers=None, timeout: float = 10.0, raw: bool = False):
    """One request on a fresh connection: (status, headers, body): the bytes with raw=True, else the parsed JSON
    (None when it is not JSON). OSError or HTTPException when nobody answers (refused, reset, cut short)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = {"Accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        content = response.read()
        if raw:
            return response.status, dict(response.getheaders()), content
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        return response.status, dict(response.getheaders()), parsed
    finally:
        conn.close()


# ---------------------------------------------------------------- databases of their own (PostgreSQL)

def database_next_to(run_url: str, suffix: str) -> str:
    """The URL of a database named after the run's, so parallel runs on one server keep apart."""
    url = sa.make_url(run_url)
    return url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)


def recreate_database(url: str) -> None:
    name = sa.make_url(url).database
    with _maintenance_engine(url).connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    with _maintenance_engine(url).connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')


def _maintenance_engine(url: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)


def process_env(settings: dict[str, str]) -> dict[str, str]:
    """The test process's environment without its EDC_ settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env.update(settings, PYTHONUNBUFFERED="1")
    return env


def flask_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "edc:create_app", *args]


class Process:
    """A long-running command in a process group of its own (so stopping it stops its children), its output
    appended to a log file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = process_env(env)
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        """SIGKILL the whole group and wait until it is gone (the test is over: no graceful shutdown)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _live_members(self.process.pid) and time.monotonic() < deadline:  # the port is free once all are gone
            time.sleep(0.02)
        self.process = None


def _live_members(group: int) -> list[int]:
    """Processes of the group that have not exited. Exited ones may linger as zombies until whoever adopted
    them reaps them (seconds, in some containers), holding nothing: they are not waited for."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(pgrp) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


class Gunicorn(Process):
    """gunicorn serving wsgi.py on a free port that it keeps across restarts. --preload builds the app once, in
    the master, instead of once per worker (each build loads the forms: seconds on a busy machine)."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        env = {**env, "EDC_BIND": f"127.0.0.1:{self.port}", "EDC_WORKERS": str(workers), "EDC_THREADS": str(threads),
               "GUNICORN_CMD_ARGS": "--preload"}
        super().__init__([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_call(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready within {READY_SECONDS} s:\n{self.log_tail()}")

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()


class S3Server:
    """A client of an S3-compatible server, and the app settings that point at one of its buckets."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))

    def keys(self, bucket: str = S3_BUCKET, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def settings(self, bucket: str = S3_BUCKET, **more) -> dict:
        """App settings for this server's bucket."""
        return {"storage_backend": "s3", "storage_s3_bucket": bucket, "storage_s3_endpoint_url": self.endpoint,
                "storage_s3_region": S3_REGION, "storage_s3_addressing_style": "path", "storage_s3_timeout_seconds": 5,
                **more}


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's standalone S3 server on a free loopback port, in a thread of this process, with one bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(f"http://{host}:{port}")
        s3.client.create_bucket(Bucket=S3_BUCKET)
        yield s3
    finally:
        server.stop()
