"""Fixtures of the storage tests: an S3-compatible server for the whole session (moto's standalone server on a
free loopback port, speaking the S3 protocol over HTTP) and settings that point an app at a bucket of it.

Credentials are fake and given through the environment, as a deployment gives them (boto3's chain); the
shared config and credentials files and the instance metadata service are switched off, so nothing of the
machine's own AWS set-up is read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
BUCKET = "edc-exports-test"


class S3Server:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(s3={"addressing_style": "path"}))

    def keys(self, bucket: str = BUCKET, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def settings(self, bucket: str = BUCKET, **more) -> dict:
        """App settings for this server's bucket."""
        return {"storage_backend": "s3", "storage_s3_bucket": bucket, "storage_s3_endpoint_url": self.endpoint,
                "storage_s3_region": REGION, "storage_s3_addressing_style": "path", "storage_s3_timeout_seconds": 5,
                **more}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(f"http://{host}:{port}")
        s3.client.create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path) -> S3Server:
    """The session's S3 server, with the credentials an app's storage reads from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def unused_bucket() -> str:
    return f"edc-absent-{uuid.uuid4().hex[:12]}"
