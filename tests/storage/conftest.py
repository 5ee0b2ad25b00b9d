"""Fixtures of the storage tests: the session's S3-compatible server (s3_server in tests/conftest.py: moto's
standalone server on a free loopback port, speaking the S3 protocol over HTTP) with the credentials an app reads.

Credentials are fake and given through the environment, as a deployment gives them (boto3's chain); the
shared config and credentials files and the instance metadata service are switched off, so nothing of the
machine's own AWS set-up is read.
"""

from __future__ import annotations

import uuid

import pytest

from servers import S3_BUCKET as BUCKET  # noqa: F401 (the storage tests' bucket)
from servers import S3Server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch, tmp_path) -> S3Server:
    """The session's S3 server, with the credentials an app's storage reads from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def unused_bucket() -> str:
    return f"edc-absent-{uuid.uuid4().hex[:12]}"
