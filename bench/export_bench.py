"""Export benchmark: FHIR Bulk Data (NDJSON) and CSV exports of about 500 and of 2,000 synthetic subjects with
complete casebooks to Day 28, on PostgreSQL: seconds, resources (or item values) per second, peak memory.

    .venv/bin/python bench/export_bench.py [--subjects 2000] [--seed 0] [--small-site ES01] [--json]

The study is the monitoring benchmark's (bench/monitoring_bench.py): seeded once through the services and
cached as a `pg_dump` under bench/.cache/, restored here in seconds and migrated to the head. The ~500-subject
export is the same study's export restricted to one site (`--small-site`, about a quarter of the subjects),
so both sizes read the same database; the count is reported exactly.

Each export runs in a fresh child process as the worker runs it (an export job asked by the demo
statistician, then `exports.run_pending`), so its peak resident memory (ru_maxrss) is its own. Targets of
issue 6, written down as met or missed, never asserted:
- FHIR: resources per second at least 50% of what fhir.resources alone achieves building (validation on) and
  serialising the same resources, in the same child, right after the export (the baseline reads them back
  from the export's NDJSON files);
- CSV: at least 200,000 item values per second (rows of items_long.csv);
- peak memory at 2,000 subjects no more than 10% above that at ~500, per format.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # bench helpers, the app
import http_bench as hb  # noqa: E402
import monitoring_bench as mb  # noqa: E402

PROJECT_ROOT = hb.PROJECT_ROOT
FHIR_RATIO_TARGET = 0.5
CSV_VALUES_PER_SECOND_TARGET = 200_000
MEMORY_GROWTH_TARGET = 1.10


# ---------------------------------------------------------------------------------------------
# One export, inside a child process with the app's environment
# ---------------------------------------------------------------------------------------------

def run_one(fmt: str, site: str | None) -> dict:
    import sqlalchemy as sa

    from edc import create_app, runtime
    from edc.extensions import db
    from edc.models import User
    from edc.services import exports
    from edc.services.auth import actor_for  # the demo statistician, as a request would see them

    app = create_app()
    with app.app_context():
        session = db.session
        runtime.bind(session, runtime.for_app(app))
        statistician = actor_for(session.scalars(sa.select(User).where(User.username == "stat")).one())
        job = exports.request_export(session, statistician, exports.ExportRequest(
            format=fmt, sites=(site,) if site else None))
        session.commit()
        started = time.perf_counter()
        exports.run_pending(session)
        seconds = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the baseline loads anything
        session.refresh(job)
        if job.state != "completed":
            raise RuntimeError(f"export {job.id} ended {job.state}: {job.error}")
        manifest = job.manifest
        directory = exports.job_directory(session, job.id)
        result = {"format": fmt, "site": site, "subjects": manifest["subjects"], "seconds": round(seconds, 2),
                  "peak_rss_mb": round(peak_kib / 1024, 1),
                  "files": {f["name"]: f["records"] for f in manifest["files"]}}
        if fmt == "fhir":
            resources = sum(f["records"] for f in manifest["files"])
            result["resources"] = resources
            result["resources_per_second"] = round(resources / seconds)
            result["baseline"] = fhir_resources_alone(directory, [f["name"] for f in manifest["files"]])
            result["ratio_to_baseline"] = round(result["resources_per_second"] / result["baseline"]["resources_per_second"], 3)
        else:
            values = next(f["records"] for f in manifest["files"] if f["name"] == "items_long.csv")
            result["item_values"] = values
            result["item_values_per_second"] = round(values / seconds)
        exports.cancel(session, statistician, job.id)  # delete the files: the disk holds one export at a time
        session.commit()
        return result


def fhir_resources_alone(directory: Path, names: list[str]) -> dict:
    """fhir.resources alone on the same resources: build each model from its JSON (validation on, as the
    exporter builds) and serialise it to JSON the way the exporter does (model_dump, then json.dumps)."""
    from fhir.resources.R4B import get_fhir_model_class

    documents = []
    for name in names:
        with (directory / name).open() as stream:
            documents += [json.loads(line) for line in stream]
    classes = {doc["resourceType"]: get_fhir_model_class(doc["resourceType"]) for doc in documents}
    started = time.perf_counter()
    for doc in documents:
        model = classes[doc["resourceType"]].model_validate(doc)
        json.dumps(model.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
    seconds = time.perf_counter() - started
    return {"resources": len(documents), "seconds": round(seconds, 2),
            "resources_per_second": round(len(documents) / seconds)}


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------

def measure(setup: mb.MonitoringSetup, fmt: str, site: str | None) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run-one", fmt, "--site", site or ""],
                          cwd=PROJECT_ROOT, env=setup.env, capture_output=True, text=True, timeout=6 * 3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{fmt} export failed:\n{proc.stdout}{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verdicts(results: dict) -> list[str]:
    lines = []
    for size, by_format in results.items():
        fhir, csv = by_format["fhir"], by_format["csv"]
        lines.append(f"{size}: FHIR {fhir['ratio_to_baseline']:.0%} of fhir.resources alone "
                     f"({'met' if fhir['ratio_to_baseline'] >= FHIR_RATIO_TARGET else 'missed'}, target 50%); "
                     f"CSV {csv['item_values_per_second']:,} item values/s "
                     f"({'met' if csv['item_values_per_second'] >= CSV_VALUES_PER_SECOND_TARGET else 'missed'}, "
                     f"target 200,000)")
    small, large = results["small"], results["large"]
    for fmt in ("fhir", "csv"):
        growth = large[fmt]["peak_rss_mb"] / small[fmt]["peak_rss_mb"]
        lines.append(f"{fmt} peak memory {small[fmt]['peak_rss_mb']} MB at {small[fmt]['subjects']} subjects, "
                     f"{large[fmt]['peak_rss_mb']} MB at {large[fmt]['subjects']}: x{growth:.3f} "
                     f"({'met' if growth <= MEMORY_GROWTH_TARGET else 'missed'}, target at most x1.10)")
    return lines


def markdown(results: dict) -> str:
    rows = ["| export | subjects | seconds | resources or item values | per second | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|"]
    for by_format in results.values():
        for fmt, r in by_format.items():
            count = r.get("resources", r.get("item_values"))
            rate = r.get("resources_per_second", r.get("item_values_per_second"))
            rows.append(f"| {fmt}{' ' + r['site'] if r['site'] else ''} | {r['subjects']} | {r['seconds']} | "
                        f"{count:,} | {rate:,} | {r['peak_rss_mb']} |")
            if fmt == "fhir":
                b = r["baseline"]
                rows.append(f"| fhir.resources alone (same resources) | | {b['seconds']} | {b['resources']:,} | "
                            f"{b['resources_per_second']:,} | |")
    return "\n".join(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=2000, help="subjects of the cached study (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small-site", default="ES01", help="the site whose subjects make the ~500-subject export")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--db-name", default="edc_bench_exports", help="database to (re)create and drop")
    mb.add_cache_argument(p)
    mb.add_jobs_argument(p)
    hb.add_output_arguments(p)
    p.add_argument("--run-one", choices=("fhir", "csv"), help=argparse.SUPPRESS)  # internal: one export in a child
    p.add_argument("--site", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # What MonitoringSetup reads of its own arguments (the study is built by the same code, cached alike).
    args.rebuild, args.queries_per_subject, args.workers, args.threads, args.keep_log = False, 3.0, 1, 1, False
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(args.run_one, args.site or None)))
        return 0
    signal.signal(signal.SIGTERM, hb._on_sigterm)  # clean up on `kill` as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup = mb.MonitoringSetup(args)
    try:
        print(f"preparing database {args.db_name} ({args.subjects} subjects, seed {args.seed}) ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        setup.env["EDC_EXPORT_DIR"] = str(setup.tmp / "exports")
        results: dict = {}
        for size, site in (("small", args.small_site), ("large", None)):
            results[size] = {}
            for fmt in ("fhir", "csv"):
                results[size][fmt] = measure(setup, fmt, site)
                print(f"  {fmt} {size}: {json.dumps(results[size][fmt])}", file=sys.stderr)
        facts = {"cpus_visible": len(os.sched_getaffinity(0)), "load_average_at_start": setup.load_at_start,
                 "python": sys.version.split()[0], "study": setup.preparation}
        print(f"\nedc export benchmark - {args.subjects}-subject study (seed {args.seed}), "
              f"{facts['cpus_visible']} CPUs, load average at start {facts['load_average_at_start'][0]:.2f}\n")
        print(markdown(results))
        print()
        print("\n".join(verdicts(results)))
        if args.json or args.json_out:
            hb.write_results(args, {"benchmark": "export_bench", "when": hb.utc_stamp(), "results": results,
                                    "verdicts": verdicts(results), "facts": facts},
                             stem=f"export_bench-{args.subjects}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
