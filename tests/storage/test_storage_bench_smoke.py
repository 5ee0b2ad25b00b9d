"""bench/storage_bench.py still runs (tiny sizes; the figures are never judged). It needs no database, so it
runs in the SQLite pass only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import BACKEND, project_root


@pytest.mark.skipif(BACKEND == "postgresql", reason="no database involved: once is enough")
def test_storage_bench_runs(tmp_path):
    out = tmp_path / "storage.json"
    result = subprocess.run([sys.executable, str(project_root() / "bench" / "storage_bench.py"), "--megabytes", "1",
                             "--rounds", "1", "--json-out", str(out)],
                            capture_output=True, text=True, timeout=120, env={
                                "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
                                "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "storage_bench" and set(doc["ratio_to_baseline"]) == {
        "local", "s3", "boto3_direct", "local_response", "s3_response"}
    assert all(rate > 0 for rate in doc["read_mb_per_s"].values())
    assert list(tmp_path.iterdir()) == [out]  # its scratch directory is gone
