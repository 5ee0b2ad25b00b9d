"""Fixtures of the fault tests; what they share lives in harness.py."""

from faults.harness import gunicorn, gunicorn_env, pg_proxy  # noqa: F401 (fixtures: a killable gunicorn, a database proxy to cut)
