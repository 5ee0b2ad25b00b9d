"""Entry-save benchmark: a 30-item form through the HTTP API on gunicorn and PostgreSQL, against
a baseline that only inserts the same JSON row.

Scenario "entry": `POST /api/v1/subjects/{number}/entries` with the benchmark form `bench30`
(30 items: 2 encrypted, 1 calculated, 1 derived, 2 shown by show_if; 5 checks, none firing for
the payload) as the demo investigator: bearer token, permissions, subject scope, validation,
AES-GCM encryption, the hash-chained audit record, automatic queries, the form-status table and
the output schema. Its baseline "insert": `POST /bench/insert` (registered only with
EDC_BENCHMARK_ENDPOINTS=true), which inserts the same JSON as an entry row through SQLAlchemy and
nothing else. Both run in the same run against the same server, in alternating (ABBA) rounds.
Also measured in-process: `edc.ecrf.validate_entry` of the same payload (types, rules, derivations).

    .venv/bin/python bench/entry_bench.py [--clients 1,16] [--seconds 10] [--subjects 64] [--json]

The benchmark form is not part of the trial: `forms/` is copied into a temporary directory, the
form `bench30` is added there and listed in the copy's `subject_logs`, and the server reads that
copy (EDC_FORMS_DIR). Database (`edc_bench_entries`), keys, forms copy and gunicorn are created
here and removed at the end, on failure, on Ctrl-C and on SIGTERM. The harness (set-up, load
generator process, statistics) is the one of http_bench.py. See bench/README.md and
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import array
import gc
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import timeit
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # http_bench, also in the spawned load process
import http_bench as hb  # noqa: E402

PROJECT_ROOT = hb.PROJECT_ROOT

FORM_ID = "bench30"
TARGET_RATIO = 0.40           # entry throughput at least 40 % of insert's (16 clients)
TARGET_P95_MS = 100.0         # entry p95 under 100 ms (16 clients)
TARGET_VALIDATION_US = 1000.0  # validate_entry of the form under 1 ms
MAX_SUBJECTS = 1000

INSERT, ENTRY = "insert", "entry"
SCENARIOS = ((INSERT, "/bench/insert", False), (ENTRY, "/api/v1/subjects/{number}/entries", True))

# 30 items: 2 encrypted (INVNAME, COMMENT), 1 calculated (BMI), 1 derived (AGEMO, age_months_at),
# 2 with show_if (PACKYRS, SYMPDESC); 5 checks (2 errors, 3 warnings), none firing for PAYLOAD.
# Self-contained: every code list is given inline on its item (no name that forms/codelists.yaml or another
# form could define or drop), and the form names no missing-data code, study parameter or other form, so the
# trial's forms can change freely. The only edit to the copy is adding bench30 to study.yaml's subject_logs.
FORM_YAML = """\
# Benchmark form, written at run time by bench/entry_bench.py into a copy of forms/. Not part of the trial.
id: bench30
version: 1
repeating: true
title: {en: Benchmark assessment (30 items)}
sections:
  - id: ASSESSMENT
    title: {en: Assessment}
    items:
      - {id: ASMDAT, type: date, label: Assessment date, required: true, not_future: true}
      - {id: VISITNO, type: integer, label: Assessment number, min: 1, max: 999, required: true}
      - {id: ASSESSOR, type: choice, label: Assessed by, required: true,
         code_list: [{code: INV, label: Investigator}, {code: CRC, label: Coordinator}, {code: NURSE, label: Nurse}]}
      - {id: INVNAME, type: text, label: Assessor name, max_length: 100, encrypt: true}
      - {id: ECOGPS, type: choice, label: ECOG performance status, required: true,
         code_list: [{code: '0', label: Fully active}, {code: '1', label: Restricted in strenuous activity},
                     {code: '2', label: Ambulatory and capable of self-care}, {code: '3', label: Limited self-care},
                     {code: '4', label: Completely disabled}]}
      - {id: AGEMO, type: derived, label: Age at assessment (months), derivation: age_months_at, inputs: [ASMDAT],
         params: {date: ASMDAT}, value_type: integer}
  - id: VITALS
    title: {en: Vital signs}
    items:
      - {id: WEIGHT, type: decimal, label: Weight, unit: kg, precision: 1, min: 1, max: 300, soft_min: 3, soft_max: 150,
         required: true}
      - {id: HEIGHT, type: decimal, label: Height, unit: cm, precision: 1, min: 30, max: 250, soft_min: 45, soft_max: 210,
         required: true}
      - {id: BMI, type: calculated, label: Body-mass index, expression: "WEIGHT / ((HEIGHT / 100.0) * (HEIGHT / 100.0))",
         value_type: decimal, precision: 1, unit: "kg/m2"}
      - {id: TEMP, type: decimal, label: Temperature, unit: Cel, precision: 1, min: 30, max: 45, soft_min: 35, soft_max: 40,
         required: true}
      - {id: HR, type: integer, label: Heart rate, unit: /min, min: 20, max: 250, soft_min: 50, soft_max: 180, required: true}
      - {id: SBP, type: integer, label: Systolic blood pressure, unit: "mm[Hg]", min: 40, max: 250, soft_min: 70, soft_max: 160,
         required: true}
      - {id: DBP, type: integer, label: Diastolic blood pressure, unit: "mm[Hg]", min: 20, max: 150, soft_min: 40, soft_max: 100,
         required: true}
      - {id: RR, type: integer, label: Respiratory rate, unit: /min, min: 5, max: 80, soft_min: 10, soft_max: 40}
      - {id: SPO2, type: integer, label: Oxygen saturation, unit: "%", min: 50, max: 100, soft_min: 92}
  - id: HISTORY
    title: {en: Symptoms and history}
    items:
      - {id: SMOKER, type: choice, label: Current smoker, required: true,
         code_list: [{code: 'Y', label: 'Yes'}, {code: 'N', label: 'No'}]}
      - {id: PACKYRS, type: decimal, label: Pack-years, precision: 1, min: 0, max: 200, required: true, show_if: "SMOKER == 'Y'"}
      - {id: SYMPT, type: boolean, label: Any new symptoms, required: true}
      - {id: SYMPDESC, type: text, label: Describe the symptoms, max_length: 500, required: true, show_if: "SYMPT == true",
          encrypt: false, encrypt_reason: "synthetic benchmark text; kept clear so the figures stay comparable with earlier runs"}
      - {id: NEURO, type: boolean, label: Neurological signs, required: true}
      - {id: CRSGR, type: choice, label: CRS grade,
         code_list: [{code: '0', label: No CRS}, {code: '1', label: Grade 1}, {code: '2', label: Grade 2},
                     {code: '3', label: Grade 3}, {code: '4', label: Grade 4}]}
  - id: LABS
    title: {en: Laboratory}
    items:
      - {id: LABDAT, type: date, label: Sample date, not_future: true, required: true}
      - {id: HB, type: decimal, label: Haemoglobin, unit: g/dL, precision: 1, min: 2, max: 25, soft_min: 8, soft_max: 18}
      - {id: PLT, type: integer, label: Platelets, unit: "10*9/L", min: 0, max: 2000, soft_min: 20, soft_max: 600}
      - {id: ANC, type: decimal, label: Neutrophils, unit: "10*9/L", precision: 2, min: 0, max: 100, soft_min: 0.5}
      - {id: CRP, type: decimal, label: C-reactive protein, unit: mg/L, precision: 1, min: 0, max: 500, soft_max: 100}
      - {id: FERRITIN, type: integer, label: Ferritin, unit: ng/mL, min: 0, max: 100000, soft_max: 5000}
  - id: CLOSE
    title: {en: Follow-up}
    items:
      - {id: NEXTDAT, type: date, label: Next assessment date}
      - {id: COMMENT, type: text, label: Comment, max_length: 1000, encrypt: true}
      - {id: SIGNED, type: boolean, label: Reviewed by the investigator, required: true}
checks:
  - id: BP_ORDER
    assert: SBP > DBP
    message: {en: Systolic pressure must be higher than diastolic pressure.}
    severity: error
    items: [SBP, DBP]
  - id: NEXT_AFTER_ASSESSMENT
    assert: NEXTDAT > ASMDAT
    message: {en: The next assessment must come after this one.}
    severity: error
    items: [NEXTDAT]
  - id: LAB_WITHIN_WEEK
    assert: days_between(LABDAT, ASMDAT) >= 0 && days_between(LABDAT, ASMDAT) <= 7
    message: {en: The sample should be taken in the 7 days before the assessment.}
    severity: warning
    items: [LABDAT]
  - id: BMI_PLAUSIBLE
    assert: BMI >= 10.0 && BMI <= 60.0
    message: {en: The body-mass index is implausible; check weight and height.}
    severity: warning
    items: [WEIGHT, HEIGHT]
  - id: FEVER_HAS_SYMPTOMS
    assert: TEMP < 38.0 || SYMPT
    message: {en: A temperature of 38 °C or more should come with symptoms recorded.}
    severity: warning
    items: [TEMP, SYMPT]
"""
FORM_ITEMS = 30
FORM_CHECKS = 5


def payload(today: date) -> dict:
    """A typical complete entry: every captured item answered (28), both show_if items shown, no check firing."""
    return {
        "ASMDAT": (today - timedelta(days=1)).isoformat(), "VISITNO": 3, "ASSESSOR": "INV", "INVNAME": "Dr Ana Ruiz Soler",
        "ECOGPS": "1", "WEIGHT": 64.5, "HEIGHT": 171.0, "TEMP": 36.8, "HR": 78, "SBP": 118, "DBP": 76, "RR": 16, "SPO2": 97,
        "SMOKER": "Y", "PACKYRS": 12.5, "SYMPT": True, "SYMPDESC": "Mild headache since yesterday, resolved with paracetamol.",
        "NEURO": False, "CRSGR": "1", "LABDAT": (today - timedelta(days=3)).isoformat(), "HB": 12.3, "PLT": 210, "ANC": 3.45,
        "CRP": 4.2, "FERRITIN": 350, "NEXTDAT": (today + timedelta(days=28)).isoformat(),
        "COMMENT": "Patient well; no change to the treatment. Next assessment as planned.", "SIGNED": True,
    }


def write_forms(dst: Path) -> None:
    """Copy forms/ to dst, add bench30/1.yaml and list bench30 in the copy's subject_logs."""
    shutil.copytree(PROJECT_ROOT / "forms", dst)
    if (dst / FORM_ID).exists():
        raise RuntimeError(f"forms/ already has a form {FORM_ID!r}; the benchmark form needs that name")
    (dst / FORM_ID).mkdir()
    (dst / FORM_ID / "1.yaml").write_text(FORM_YAML, encoding="utf-8")
    study = dst / "study.yaml"
    study.write_text(with_subject_log(study.read_text(encoding="utf-8"), FORM_ID), encoding="utf-8")


def with_subject_log(text: str, form_id: str) -> str:
    """study.yaml's text with form_id added to subject_logs, whether that list is written in flow style, in block
    style, empty or absent; every other line and comment of the file stays as it was."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise RuntimeError("study.yaml is not a mapping")
    for key, value in root.value:
        if key.value != "subject_logs":
            continue
        if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):  # `subject_logs:`, `~` or `null`
            if value.value:
                return text[:value.start_mark.index] + f"[{form_id}]" + text[value.end_mark.index:]
            colon = text.index(":", key.end_mark.index) + 1
            return text[:colon] + f" [{form_id}]" + text[colon:]
        if not isinstance(value, yaml.SequenceNode) or not all(isinstance(v, yaml.ScalarNode) for v in value.value):
            raise RuntimeError(f"study.yaml line {value.start_mark.line + 1}: subject_logs is not a list of form ids")
        if value.flow_style or not value.value:  # [a, b] or []
            logs = [v.value for v in value.value]
            return text[:value.start_mark.index] + f"[{', '.join([*logs, form_id])}]" + text[value.end_mark.index:]
        last = value.value[-1].end_mark.index  # block style: one more `- id` line under the last one
        return text[:last] + "\n" + " " * value.start_mark.column + f"- {form_id}" + text[last:]
    return text.rstrip("\n") + f"\nsubject_logs: [{form_id}]\n"


# ---------------------------------------------------------------------------------------------
# Load generator: its own process, standard library only; one thread and one keep-alive
# connection per client. Each client cycles through its own (path, body) list.
# ---------------------------------------------------------------------------------------------

def _client_loop(host, port, requests, headers, barrier, warmup_until, state, budget, out):
    latencies = array.array("d")
    statuses: dict[str, int] = {}
    errors = 0
    conn = None
    cursor = 0

    def one(measure: bool) -> bool:
        nonlocal conn, errors, cursor
        path, body = requests[cursor % len(requests)]
        cursor += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=hb.SOCKET_TIMEOUT)
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            elapsed = time.perf_counter() - t0
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
                conn = None
            if measure:
                errors += 1
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            return errors < hb.MAX_ERRORS_PER_CLIENT
        if measure:
            statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
            if resp.status == 201:
                latencies.append(elapsed)
            else:
                errors += 1
        return errors < hb.MAX_ERRORS_PER_CLIENT

    try:
        n = 0
        while time.perf_counter() < warmup_until and n < budget:
            n += 1
            if not one(False):
                break
        barrier.wait(timeout=hb.SOCKET_TIMEOUT * 2)
        start, deadline = state["start"], state["deadline"]
        n = 0
        while n < budget and time.perf_counter() < deadline:
            n += 1
            if not one(True):
                break
        out.append((latencies, statuses, errors, time.perf_counter() - start))
    except threading.BrokenBarrierError:
        out.append((latencies, statuses, errors + 1, 0.0))
    finally:
        if conn is not None:
            conn.close()


def run_load(host, port, per_client, token, clients, warmup, seconds, max_requests) -> dict:
    """Drive `clients` concurrent clients, client k cycling through per_client[k]."""
    headers = {"Accept": "application/json", "Content-Type": "application/json", "Connection": "keep-alive"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    state: dict[str, float] = {}

    def mark_start():
        state["start"] = time.perf_counter()
        state["deadline"] = state["start"] + seconds
        state["cpu_start"] = time.process_time()

    barrier = threading.Barrier(clients, action=mark_start)
    budget = max(1, max_requests // clients)
    warmup_until = time.perf_counter() + warmup
    out: list = []
    gc.collect()
    gc.disable()
    threads = [
        threading.Thread(target=_client_loop, daemon=True,
                         args=(host, port, per_client[k], headers, barrier, warmup_until, state, budget, out))
        for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup + seconds + hb.SOCKET_TIMEOUT * 4)
    client_cpu = time.process_time() - state.get("cpu_start", time.process_time())
    gc.enable()
    lat = array.array("d")
    statuses: dict[str, int] = {}
    errors = 0
    for latencies, st, err, _ in out:
        lat.extend(latencies)
        errors += err
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    errors += clients - len(out)
    wall = max((elapsed for *_, elapsed in out), default=0.0)
    return {"latencies": lat.tobytes(), "statuses": statuses, "errors": errors, "wall": wall, "client_cpu": client_cpu}


def _load_process(conn, kwargs):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    try:
        try:
            result = run_load(**kwargs)
        except Exception as exc:
            result = {"failure": f"{type(exc).__name__}: {exc}"}
        conn.send(result)
    except OSError:
        pass
    finally:
        conn.close()


def measure_in_child(ctx, children, **kwargs) -> dict:
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_process, args=(child_end, kwargs), name="edc-entry-bench-load")
    children.append(proc)
    proc.start()
    child_end.close()
    limit = kwargs["warmup"] + kwargs["seconds"] + hb.SOCKET_TIMEOUT * 6 + 30
    try:
        if not parent_end.poll(limit):
            raise RuntimeError(f"load generator gave no result within {limit:.0f} s")
        result = parent_end.recv()
        proc.join(timeout=10)
    finally:
        parent_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        children.remove(proc)
    if "failure" in result:
        raise RuntimeError(f"load generator failed: {result['failure']}")
    lat = array.array("d")
    lat.frombytes(result["latencies"])
    result["latencies"] = lat
    return result


def requests_for(name: str, path: str, subjects: list[str], data: dict, clients: int) -> list[list[tuple[str, bytes]]]:
    """Client k takes subjects k, k+clients, k+2*clients, ... in turn: concurrent clients never share a subject
    (when there are at least as many subjects as clients), and every subject gets entries."""
    per_client = []
    for k in range(clients):
        mine = subjects[k::clients] or [subjects[k % len(subjects)]]
        reqs = []
        for number in mine:
            if name == ENTRY:
                body = {"form": FORM_ID, "data": data, "complete": True}
                reqs.append((path.format(number=number), json.dumps(body).encode()))
            else:
                reqs.append((path, json.dumps({"subject": number, "form": FORM_ID, "data": data}).encode()))
        per_client.append(reqs)
    return per_client


# ---------------------------------------------------------------------------------------------
# In-process validation timing
# ---------------------------------------------------------------------------------------------

def measure_validation(forms_dir: Path, data: dict, today: date, repeats: int) -> dict:
    """Best-of-`repeats` per-call time of validate_entry(bench30, data, complete=True), in µs."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    from edc.ecrf import ValidationContext, load_study, validate_entry

    study = load_study(str(forms_dir))
    form = study.form(FORM_ID)
    subject = {"site": "ES01", "birth_year": today.year - 14, "birth_month": 5, "sex": "F", "registration_date": today - timedelta(days=10),
               "day0": None, "planned_infusion": None}
    context = ValidationContext(subject=subject, today=today)
    result = validate_entry(form, data, complete=True, context=context)
    if result.errors or result.warnings or result.missing_required or result.hidden:
        raise RuntimeError(f"the benchmark payload does not validate cleanly: errors={result.errors} "
                           f"warnings={result.warnings} missing={result.missing_required} hidden={result.hidden}")
    if len(form.items) != FORM_ITEMS or len(form.encrypted_items) != 2:
        raise RuntimeError(f"{FORM_ID} has {len(form.items)} items and {len(form.encrypted_items)} encrypted ones")

    def best(fn) -> tuple[float, int]:
        timer = timeit.Timer(fn)
        number, _ = timer.autorange()  # enough calls for at least 0.2 s
        return min(timer.repeat(repeats, number)) / number * 1e6, number

    validate_us, number = best(lambda: validate_entry(form, data, complete=True, context=context))
    with_context_us, _ = best(lambda: validate_entry(form, data, complete=True,
                                                     context=ValidationContext(subject=subject, today=today)))
    return {"validate_us": validate_us, "with_context_us": with_context_us, "calls_per_repeat": number,
            "repeats": repeats, "stored_items": len(result.values)}


# ---------------------------------------------------------------------------------------------
# Set-up: http_bench's Setup with the forms copy, and the subjects
# ---------------------------------------------------------------------------------------------

class EntrySetup(hb.Setup):
    def prepare_app(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edc-entry-bench-"))
        keys, self.forms_dir = self.tmp / "keys", self.tmp / "forms"
        keys.mkdir()
        write_forms(self.forms_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
        env.update({
            "EDC_ENV": "development",
            "EDC_DATABASE_URL": self.app_url,
            "EDC_KEYS_DIR": str(keys),
            "EDC_FORMS_DIR": str(self.forms_dir),
            "EDC_BENCHMARK_ENDPOINTS": "true",
            "EDC_ACCESS_TOKEN_SECONDS": str(hb.ACCESS_TOKEN_SECONDS),
            "EDC_WORKERS": str(self.args.workers),
            "EDC_THREADS": str(self.args.threads),
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        hb.flask_steps(env, [["forms", "check", "--dir", str(self.forms_dir)], ["keys", "init", "--development"], ["init"],
                             ["seed-demo"]], timeout=300)

    def db_counts(self) -> dict:
        """What the run left in its database: entries per form version, queries, audit records."""
        import psycopg

        url = self.app_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute("SELECT form_version, count(*), count(DISTINCT subject_id) FROM entries WHERE form_id = %s "
                        "GROUP BY form_version", (FORM_ID,))
            by_version = {v: (n, s) for v, n, s in cur.fetchall()}
            cur.execute("SELECT count(*) FROM queries")
            queries = cur.fetchone()[0]
            cur.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM entries WHERE form_id = %s AND form_version = '1' "
                        "GROUP BY subject_id) t", (FORM_ID,))
            max_per_subject = cur.fetchone()[0] or 0
        api = by_version.get("1", (0, 0))
        base = by_version.get("bench", (0, 0))
        return {"entry_rows": api[0], "entry_subjects": api[1], "entry_rows_max_per_subject": max_per_subject,
                "insert_rows": base[0], "insert_subjects": base[1], "queries": queries}


def enrol_subjects(port: int, token: str, count: int, today: date) -> list[str]:
    numbers = []
    consent = (today - timedelta(days=10)).isoformat()
    for i in range(count):  # bounded: count <= MAX_SUBJECTS
        body = {"site": "ES01", "birth_year": today.year - 2 - i % 20, "birth_month": 1 + i % 12, "sex": "FMU"[i % 3],
                "consent_date": consent}
        status, doc = hb.http_call(port, "POST", "/api/v1/subjects", body, token=token)
        if status != 201:
            raise RuntimeError(f"enrolling subject {i + 1} answered {status}: {doc}")
        numbers.append(doc["number"])
    return numbers


# ---------------------------------------------------------------------------------------------
# Figures and report
# ---------------------------------------------------------------------------------------------

def derived(results: dict) -> dict:
    out = {}
    for clients, by in results.items():
        base, api = by[INSERT], by[ENTRY]
        ratios = [a / b for a, b in zip(api["round_throughput"], base["round_throughput"]) if b]
        out[clients] = {
            "throughput_ratio": (api["throughput"] / base["throughput"]) if base["throughput"] else float("nan"),
            "throughput_ratio_per_round": ratios,
            "throughput_ratio_median_of_rounds": hb._median(ratios),
            "p50_delta_ms": api["p50_ms"] - base["p50_ms"],
        }
    return out


def verdicts(results: dict, figures: dict, validation: dict) -> list[tuple[str, str, bool | None]]:
    at = max(results)  # the targets are stated at 16 clients; use the largest count run
    ratio = figures[at]["throughput_ratio"]
    p95 = results[at][ENTRY]["p95_ms"]
    return [
        (f"entry throughput >= {TARGET_RATIO:.2f} x insert at {at} clients", f"{ratio:.2f}", ratio >= TARGET_RATIO),
        (f"entry p95 < {TARGET_P95_MS:.0f} ms at {at} clients", f"{p95:.1f} ms", p95 < TARGET_P95_MS),
        (f"validate_entry < {TARGET_VALIDATION_US / 1000:.0f} ms", f"{validation['validate_us']:.0f} µs "
         f"({validation['validate_us'] / TARGET_VALIDATION_US:.3f} of 1 ms)", validation["validate_us"] < TARGET_VALIDATION_US),
    ]


def markdown(results: dict, figures: dict, validation: dict, counts: dict | None) -> str:
    paths = dict((name, path) for name, path, _ in SCENARIOS)
    lines = [
        "| clients | endpoint | requests | errors | req/s | p50 ms | p95 ms | p99 ms | load-generator CPU |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for clients, by in results.items():
        for name in (INSERT, ENTRY):
            r = by[name]
            lines.append(f"| {clients} | `{paths[name]}` | {r['requests']} | {r['errors']} | {r['throughput']:.0f} | "
                         f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['client_cpu_percent']:.0f} % |")
    lines += ["", "| clients | throughput entry/insert | per round | entry p50 − insert p50 (ms) |", "|--:|--:|---|--:|"]
    for clients, f in figures.items():
        per_round = ", ".join(f"{x:.2f}" for x in f["throughput_ratio_per_round"])
        lines.append(f"| {clients} | {f['throughput_ratio']:.2f} | {per_round} | {f['p50_delta_ms']:.2f} |")
    lines += ["", f"In-process `validate_entry({FORM_ID}, complete=True)`: **{validation['validate_us']:.0f} µs** per call "
              f"(best of {validation['repeats']} x {validation['calls_per_repeat']} calls; "
              f"{validation['with_context_us']:.0f} µs including building the ValidationContext)."]
    if counts:
        lines.append(f"Rows left by the run: {counts['entry_rows']} API entries over {counts['entry_subjects']} subjects "
                     f"(at most {counts['entry_rows_max_per_subject']} per subject at the end), {counts['insert_rows']} baseline "
                     f"rows over {counts['insert_subjects']} other subjects, {counts['queries']} queries opened.")
    lines.append("")
    for label, value, ok in verdicts(results, figures, validation):
        lines.append(f"- Target: {label}: {value} -> {'met' if ok else 'NOT met'}.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,16", help="comma-separated client counts (default 1,16)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured seconds per endpoint per client count, split over --rounds (default 10)")
    p.add_argument("--rounds", type=int, default=4, help="alternating insert/entry segments per client count (default 4)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each segment (default 1)")
    p.add_argument("--max-requests", type=int, default=50_000,
                   help="request cap per segment, warm-up and measurement each (default 50000)")
    p.add_argument("--subjects", type=int, default=64,
                   help="subjects enrolled for the API entries (as many again for the baseline's rows; default 64)")
    p.add_argument("--validation-repeats", type=int, default=7, help="timeit repeats of validate_entry (default 7)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    p.add_argument("--pg", default=os.environ.get("EDC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="maintenance connection to a loopback PostgreSQL (env EDC_BENCH_PG_URL)")
    p.add_argument("--db-name", default="edc_bench_entries", help="database to (re)create and drop (default edc_bench_entries)")
    hb.add_output_arguments(p)
    p.add_argument("--keep-log", action="store_true", help="copy gunicorn's log to bench/results/gunicorn.log")
    args = p.parse_args(argv)
    try:
        args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        p.error("--clients must be comma-separated integers")
    if not args.client_counts or any(c < 1 or c > 256 for c in args.client_counts):
        p.error("--clients must be between 1 and 256")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60 or not 1 <= args.rounds <= 50:
        p.error("--seconds must be in (0, 600], --warmup in [0, 60], --rounds in [1, 50]")
    if args.max_requests < 1 or not 1 <= args.subjects <= MAX_SUBJECTS or not 1 <= args.validation_repeats <= 50:
        p.error(f"--max-requests must be positive, --subjects in [1, {MAX_SUBJECTS}], --validation-repeats in [1, 50]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, hb._on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctx = multiprocessing.get_context("spawn")
    children: list = []
    setup = EntrySetup(args)
    today = datetime.now(timezone.utc).date()  # the service's "today" for not_future is UTC
    data = payload(today)
    try:
        print(f"preparing database {args.db_name}, keys and the forms copy with {FORM_ID} ...", file=sys.stderr)
        setup.create_database()
        setup.prepare_app()
        print("timing validate_entry in-process ...", file=sys.stderr)
        validation = measure_validation(setup.forms_dir, data, today, args.validation_repeats)
        setup.start_server()
        facts = hb.machine_facts(setup, args)
        print(f"gunicorn on 127.0.0.1:{setup.port} with {args.workers} workers x {args.threads} threads; "
              f"{facts['cpus_visible']} CPUs visible; PostgreSQL {facts['postgresql']}", file=sys.stderr)

        token, token_at = hb.login(setup.port), time.monotonic()
        print(f"enrolling {2 * args.subjects} subjects at ES01 ...", file=sys.stderr)
        numbers = enrol_subjects(setup.port, token, 2 * args.subjects, today)
        # Disjoint pools: a baseline row (form_version "bench") must not become the latest bench30 entry
        # of a subject the API writes to (the API reads every entry of the subject on each save).
        pools = {ENTRY: numbers[:args.subjects], INSERT: numbers[args.subjects:]}

        # Sanity: one of each answers 201 before anything is timed; the entry opens no query.
        for name, path, auth in SCENARIOS:
            req_path, body = requests_for(name, path, pools[name][:1], data, 1)[0][0]
            status, doc = hb.http_call(setup.port, "POST", req_path, json.loads(body), token=token if auth else None)
            if status != 201:
                raise RuntimeError(f"POST {req_path} answered {status}: {doc}")
            if name == ENTRY and (doc.get("warnings") or doc.get("queries_opened")):
                raise RuntimeError(f"the benchmark entry raised warnings or queries: {doc.get('warnings')}")

        segment = args.seconds / args.rounds
        results: dict[int, dict] = {}
        for clients in args.client_counts:
            plans = {name: requests_for(name, path, pools[name], data, clients) for name, path, _ in SCENARIOS}
            segments: dict[str, list] = {INSERT: [], ENTRY: []}
            for rnd in range(args.rounds):
                order = SCENARIOS if rnd % 2 == 0 else SCENARIOS[::-1]  # ABBA
                for name, _, auth in order:
                    if time.monotonic() - token_at + args.warmup + segment > hb.ACCESS_TOKEN_SECONDS - 60:
                        token, token_at = hb.login(setup.port), time.monotonic()
                    seg = measure_in_child(
                        ctx, children, host="127.0.0.1", port=setup.port, per_client=plans[name],
                        token=token if auth else None, clients=clients, warmup=args.warmup,
                        seconds=segment, max_requests=args.max_requests,
                    )
                    segments[name].append(seg)
                    print(f"  clients={clients} round={rnd + 1}/{args.rounds} {name:6s}: "
                          f"{len(seg['latencies'])} ok, {seg['errors']} errors in {seg['wall']:.2f} s", file=sys.stderr)
            results[clients] = {name: hb.summarise(segs) for name, segs in segments.items()}

        facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # includes the run's own load
        counts = setup.db_counts()
        figures = derived(results)
        print()
        print(f"edc entry-save benchmark - {facts['cpus_visible']} CPUs, PostgreSQL {facts['postgresql']}, "
              f"gunicorn {facts['gunicorn']} gthread {args.workers}x{args.threads}, {len(pools[ENTRY])} + "
              f"{len(pools[INSERT])} subjects, {args.seconds:g} s per endpoint per client count in {args.rounds} "
              f"alternating rounds; load average at start {facts['load_average_at_start'][0]:.2f}, "
              f"at end {facts['load_average_at_end'][0]:.2f}; commit {facts['commit']}")
        print()
        print(markdown(results, figures, validation, counts))
        total_errors = sum(r[name]["errors"] for r in results.values() for name in (INSERT, ENTRY))
        if total_errors:
            print(f"\n{total_errors} requests failed; the figures above are not trustworthy.", file=sys.stderr)
            tail = setup.log_tail(15)
            if tail:
                print(f"gunicorn log (tail):\n{tail}", file=sys.stderr)

        if args.json or args.json_out:
            doc = {
                "benchmark": "entry_bench", "when": hb.utc_stamp(), "facts": facts,
                "settings": {k: getattr(args, k) for k in ("client_counts", "seconds", "rounds", "warmup", "max_requests",
                                                            "subjects", "validation_repeats")},
                "results": {str(c): {n: dict(r) for n, r in by.items()} for c, by in results.items()},
                "derived": {str(c): f for c, f in figures.items()},
                "validation": validation, "rows": counts,
                "targets": [{"target": label, "value": value, "met": ok} for label, value, ok in verdicts(results, figures, validation)],
            }
            hb.write_results(args, doc)
        return 1 if total_errors else 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        for proc in list(children):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
