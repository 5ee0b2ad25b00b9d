"""Streaming throughput of export storage: reading an export file through the S3 backend, and through the
local backend, against the baseline of reading the same local file with plain `open().read()`, in one run.

    .venv/bin/python bench/storage_bench.py [--megabytes 256] [--rounds 5] [--endpoint URL --bucket NAME] [--json]

Without `--endpoint` it starts moto's standalone S3 server (a test dependency) on a free loopback port, so
the S3 figure is that of a pure-Python server on the same machine: a floor for MinIO or AWS S3, not their
speed. With `--endpoint` (MinIO, Ceph, on loopback only) credentials come from the environment as for edc.

Each variant reads the whole object in the chunks edc's downloads send (edc/api/downloads.py CHUNK) through
the same `Storage.open` a download uses (`local`, `s3`), and once more as the body of the very response a
download builds (`edc.api.downloads.stored_file`, iterated as the WSGI server iterates it: `local_response`,
`s3_response`); `boto3_direct` reads the object with boto3's own `get_object` body, without edc's storage
layer, to show what that layer costs. The variants alternate in ABBA order over `--rounds` rounds, so drift of the machine hits
all alike, and the page cache is warm for all (the file is read once first). Publishing (what a worker does
at the end of an export) is timed once per backend. Figures: MB/s per variant (median of the rounds) and
each variant's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from flask import Flask  # noqa: E402

from edc.api.downloads import CHUNK, stored_file  # noqa: E402
from edc.storage import LocalStorage, S3Storage  # noqa: E402

MB = 1 << 20
KEY = "bench/export.bin"


def read_all(stream) -> int:
    total = 0
    with stream:
        while chunk := stream.read(CHUNK):
            total += len(chunk)
    return total


def read_response(app: Flask, stream, size: int) -> int:
    """The bytes a WSGI server would send for a download of `stream` (the response edc builds)."""
    with app.test_request_context("/"):
        response = stored_file(stream, media_type="application/zip", size=size, sha256="0" * 64, download_name="x.zip")
        total = 0
        for chunk in response.response:
            total += len(chunk)
        response.close()
    return total


def timed(read) -> float:
    started = time.perf_counter()
    size = read()
    return size / MB / (time.perf_counter() - started)


def make_file(directory: Path, megabytes: int) -> Path:
    """Incompressible content, as a zip of CSV files is."""
    path = directory / "export.bin"
    with path.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(MB))
    return path


def s3_settings(endpoint: str, bucket: str) -> dict:
    return {"storage_s3_bucket": bucket, "storage_s3_prefix": "", "storage_s3_endpoint_url": endpoint,
            "storage_s3_region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), "storage_s3_addressing_style": "path",
            "storage_s3_server_side_encryption": "", "storage_s3_timeout_seconds": 60, "storage_s3_max_attempts": 3}


def start_moto():
    from moto.server import ThreadedMotoServer

    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def publish(storage, scratch: Path, source: Path) -> float:
    """Publish a copy of the file as the worker does (the copy is consumed); seconds the publication took."""
    work = scratch / f"work-{time.monotonic_ns()}"
    work.mkdir()
    shutil.copyfile(source, work / Path(KEY).name)
    started = time.perf_counter()
    storage.publish(str(Path(KEY).parent), work)
    return time.perf_counter() - started


def run(args) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="edc-storage-bench-"))
    server = None
    try:
        source = make_file(scratch, args.megabytes)
        endpoint = args.endpoint
        if not endpoint:
            server, endpoint = start_moto()
        s3 = S3Storage(s3_settings(endpoint, args.bucket))
        if server is not None:
            s3.client.create_bucket(Bucket=args.bucket)
        local = LocalStorage(scratch / "store")
        uploads = {"local": publish(local, scratch, source), "s3": publish(s3, scratch, source)}
        app, size = Flask("storage_bench"), source.stat().st_size
        variants = {"baseline": lambda: read_all(source.open("rb")),
                    "local": lambda: read_all(local.open(KEY)), "s3": lambda: read_all(s3.open(KEY)),
                    "boto3_direct": lambda: read_all(s3.client.get_object(Bucket=args.bucket, Key=KEY)["Body"]),
                    "local_response": lambda: read_response(app, local.open(KEY), size),
                    "s3_response": lambda: read_response(app, s3.open(KEY), size)}
        read_all(source.open("rb"))  # warm the page cache for every variant
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                rates[name].append(timed(variants[name]))
        s3.delete(str(Path(KEY).parent))
        median = {name: statistics.median(values) for name, values in rates.items()}
        return {"benchmark": "storage_bench", "megabytes": args.megabytes, "rounds": args.rounds, "chunk_bytes": CHUNK,
                "server": "moto" if server is not None else "given endpoint",
                "read_mb_per_s": {k: round(v, 1) for k, v in median.items()},
                "read_rounds_mb_per_s": {k: [round(v, 1) for v in values] for k, values in rates.items()},
                "ratio_to_baseline": {k: round(median[k] / median["baseline"], 3) for k in median if k != "baseline"},
                "publish_seconds": {k: round(v, 3) for k, v in uploads.items()},
                "publish_s3_mb_per_s": round(args.megabytes / uploads["s3"], 1)}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=256, help="size of the export file read (default 256)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--endpoint", default="", help="an S3-compatible server on loopback; default: start moto's")
    parser.add_argument("--bucket", default="edc-bench")
    parser.add_argument("--json", action="store_true", help="write the figures to bench/results/")
    parser.add_argument("--json-out", default="", help="write the figures to this file")
    args = parser.parse_args()
    if not 1 <= args.megabytes <= 4096 or not 1 <= args.rounds <= 50:
        parser.error("--megabytes 1..4096 and --rounds 1..50")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks clean up
    result = run(args)
    rates, ratio = result["read_mb_per_s"], result["ratio_to_baseline"]
    print(f"{args.megabytes} MB read in {CHUNK // 1024} KiB chunks, median of {args.rounds} rounds ({result['server']}):")
    print(f"  {'baseline (open().read)':<26}{rates['baseline']:>9.1f} MB/s")
    for name in ratio:
        print(f"  {name:<26}{rates[name]:>9.1f} MB/s  x{ratio[name]:.3f}")
    print(f"  publish: local {result['publish_seconds']['local']:.3f} s (a rename), "
          f"S3 {result['publish_seconds']['s3']:.2f} s ({result['publish_s3_mb_per_s']:.1f} MB/s upload)")
    out = Path(args.json_out) if args.json_out else (PROJECT_ROOT / "bench" / "results" / "storage.json" if args.json else None)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
