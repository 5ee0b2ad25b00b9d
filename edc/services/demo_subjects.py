"""Synthetic demo subjects of the MILenARI trial: complete casebooks through Day 28, built through the
same services as the API (subjects.enrol, entries.create_entry / update_entry), so every rule runs.

For benchmarks, the exports and demonstrations. Refused in production. What a run creates:

- `count` subjects spread over the four demo sites (ES01, IT01, LB01, JO01), each enrolled by its site's
  investigator, aged 1 to 25 years, both sexes, registered over the past months;
- for each subject every form of every scheduled event from screening to Day 28 (SCR, APH, MFG entered by
  the manufacturing account, LD, PRE, INF1-INF3 fractions 24 h apart, D7, D14, D21, D28), the daily CRS
  assessment from Day 0 to Day 28, the ICANS assessment twice a day while inpatient (Day 0-14) and daily
  to Day 28, concomitant medications and adverse events;
- about 30 % of the subjects with a CRS episode (grades 1-3; grade 4 in the one serious case), about 15 %
  with ICANS, treated as the protocol says (tocilizumab from CRS grade 2, a vasopressor whenever
  hypotension needs one, dexamethasone for grade 3 CRS and ICANS from grade 2);
- exactly one serious adverse event (the CRS of one subject, with its SAE supplement, the investigator's
  awareness time and the safety officer's review) and exactly one relapse (event REL).

The demo study (`seed_study`, `flask edc seed-demo --study`, what `make serve` seeds on an empty database)
builds the same casebooks for the twelve subjects of `DEMO_STUDY`, each moved in time so that it stands at
its stage today (`STAGES`: screening with drafts, screened, apheresis, lymphodepletion, Day 3 to Day 21 of
the follow-up, complete through Day 28): what falls after the stage has not happened and is not saved. It
adds a CRS episode of grade 2 treated with tocilizumab, the SAE, a soft-limit slip that opens an automatic
query, then today's review: a monitor's query, source data verification of one casebook and its signature
by the site's principal investigator.

Everything is drawn from `random.Random` seeded with `seed` and the subject's index, and every date is
relative to today (`edc.clock.utcnow()`): the same seed on the same day gives the same values.

Time: each subject's entries are saved at the (simulated) time they would be entered at the site: the
module moves `edc.clock.utcnow` through the subject's calendar while it saves (enrolment sets the
registration date to today; the rules refuse future dates), and puts it back afterwards. Every moment is
in the past. The caller's transaction holds the data; `commit` is called after each subject.

A save the rules refuse (UnprocessableContent) stops the run: the error names the subject, the form and
the event, with the rule's errors. Warnings open automatic queries as for any site.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import clock, runtime
from edc.ecrf import age_in_months, clinical
from edc.models.entries import Entry, Query
from edc.models.subjects import Subject
from edc.models.users import User
from edc.problems import Conflict, UnprocessableContent
from edc.security.permissions import Actor
from edc.services import entries, queries, scope, sdv, signatures, subjects
from edc.services.auth import actor_for
from edc.services.concurrency import etag_of
from edc.services.demo import DEMO_ACCOUNTS, DEMO_PASSWORD, DEMO_SITES

SITE_INVESTIGATORS = {site: username for username, _, grants in DEMO_ACCOUNTS
                      for role, site, _ in grants if role == "investigator"}
MANUFACTURING_ACCOUNT, SAFETY_ACCOUNT = "mfg", "safety"
SITE_ZONES = {code: ZoneInfo(tz) for code, _, _, tz in DEMO_SITES}

# How far back registrations go, in days before today (the last ones leave room for Day 28 and a margin).
REGISTRATION_DAYS_AGO = (85, 330)
CRS_SHARE, ICANS_SHARE = 0.30, 0.15


# ================================================================ the public entry point


@dataclass
class SeedReport:
    subjects: list[str] = field(default_factory=list)
    entries: Counter = field(default_factory=Counter)           # form id -> entries created
    updates: Counter = field(default_factory=Counter)           # form id -> entries changed later (end dates, SAE follow-up)
    queries: Counter = field(default_factory=Counter)           # check id -> automatic queries opened
    open_queries: int = 0
    crs_subjects: list[str] = field(default_factory=list)
    icans_subjects: list[str] = field(default_factory=list)
    sae_subject: str | None = None
    relapse_subject: str | None = None
    stages: dict[str, str] = field(default_factory=dict)        # subject -> stage reached (the demo study)
    drafts: Counter = field(default_factory=Counter)            # form id -> entries left as drafts
    manual_queries: list[str] = field(default_factory=list)     # the demo study's monitor queries (ids)
    verified_entries: int = 0                                   # entries the demo study's monitor verified
    signed_subject: str | None = None                           # the casebook the demo study's PI signed


def seed_subjects(session: Session, count: int, *, seed: int = 0, sites: Collection[str] | None = None,
                  commit: Callable[[], None] | None = None) -> SeedReport:
    """Create `count` synthetic subjects with complete casebooks through Day 28 (see the module docstring).

    With `sites`, only the subjects of the `count` who belong to those sites: runs over disjoint sites
    (in parallel, say) together build what one run over every site builds."""
    if runtime.of(session).settings["env"] == "production":
        raise Conflict("Demo subjects are never created in production.")
    if count < 1:
        raise UnprocessableContent(errors=[{"pointer": "/subjects", "detail": "Must be at least 1."}])
    actors = _demo_actors(session)
    today = clock.utcnow()
    plans = _plans(count, seed, today)
    if sites is not None:
        unknown = sorted(set(sites) - {code for code, *_ in DEMO_SITES})
        if unknown:
            raise UnprocessableContent(errors=[{"pointer": "/sites", "detail": f"No demo site {', '.join(unknown)}."}])
        plans = [plan for plan in plans if plan.site in sites]
    report = SeedReport()
    _build(session, plans, actors, today, report, commit)
    _count_queries(session, report)
    return report


def _build(session: Session, plans: list[_Plan], actors: dict[str, Actor], today: datetime, report: SeedReport,
           commit: Callable[[], None] | None) -> dict[int, str]:
    """Save the plans' casebooks under the simulated clock; the study number of each plan, by index."""
    numbers = {}
    with _simulated_clock(today) as moment:
        for plan in plans:
            casebook = _Casebook(session, plan, actors, moment, report)
            casebook.build()
            report.subjects.append(casebook.number)
            numbers[plan.index] = casebook.number
            if commit:
                commit()
    return numbers


def _count_queries(session: Session, report: SeedReport) -> None:
    ids = sa.select(Subject.id).where(Subject.number.in_(report.subjects))
    rows = session.execute(sa.select(Query.check_id, Query.state, sa.func.count())
                           .where(Query.subject_id.in_(ids), Query.origin == "auto")
                           .group_by(Query.check_id, Query.state)).all()
    for check_id, state, n in rows:
        report.queries[check_id or "(soft range)"] += n
        if state == "open":
            report.open_queries += n


# ================================================================ the demo study: subjects at different stages

# Where each subject of the demo study stands: data entry stopped (yesterday, at the local hour) on the given
# day of the subject's calendar, counted from registration, apheresis or Day 0 (the first fraction). What
# falls after that moment has not happened yet; the casebook ends there. None: complete through Day 28.
STAGES: dict[str, tuple[str, int, int] | None] = {
    "screening": ("registration", 0, 13),        # enrolled this morning: the last screening forms are drafts
    "screened": ("registration", 4, 21),         # every screening form complete, eligible, enrolled
    "apheresis": ("apheresis", 2, 21),           # cells collected, manufacturing under way
    "lymphodepletion": ("day0", -4, 21),         # the second day of fludarabine and cyclophosphamide
    "day3": ("day0", 3, 22),                     # infused, in the daily CRS/ICANS follow-up
    "day7": ("day0", 7, 22),
    "day14": ("day0", 14, 22),
    "day21": ("day0", 21, 22),
    "day28": None,
}
# From this local hour on the stage's last day, the forms saved are drafts with only their first items.
DRAFTS_FROM_HOUR = {"screening": 12}

# The demo study that `make serve` shows a newcomer: 12 subjects, 3 a site, in order of the plans.
# site, stage, extra days back (complete casebooks: how long ago Day 28 was, roughly), what happens to it
DEMO_STUDY: tuple[tuple[str, str, int, str | None], ...] = (
    ("ES01", "day28", 60, "signed"),      # complete, source-verified and signed by the site's PI
    ("IT01", "day28", 30, "sae"),         # complete, with the study's one SAE (CRS grade 4), reviewed
    ("JO01", "day28", 5, None),
    ("LB01", "day21", 0, None),
    ("IT01", "day14", 0, None),
    ("ES01", "day7", 0, "crs2"),          # CRS grade 2 treated with tocilizumab; an open automatic and manual query
    ("JO01", "day7", 0, None),
    ("LB01", "day3", 0, None),
    ("JO01", "lymphodepletion", 0, None),
    ("LB01", "apheresis", 0, None),
    ("IT01", "screened", 0, None),
    ("ES01", "screening", 0, None),
)
MONITOR_ACCOUNT = "mon.es01"
SIGNING_MEANING = "approval"


def seed_study(session: Session, *, seed: int = 0, commit: Callable[[], None] | None = None) -> SeedReport:
    """The demo study of `DEMO_STUDY`: casebooks built as `seed_subjects` builds them but stopped at each
    subject's stage, then a monitor's review (a manual query, source data verification) and the principal
    investigator's signature of one casebook. Refused in production and on a study that has subjects."""
    if runtime.of(session).settings["env"] == "production":
        raise Conflict("Demo subjects are never created in production.")
    if session.scalar(sa.select(sa.func.count()).select_from(Subject)):
        raise Conflict("The study already has subjects; the demo study only fills an empty one.")
    actors = _demo_actors(session, extra=(MONITOR_ACCOUNT,))
    today = clock.utcnow()
    plans = _study_plans(seed, today)
    report = SeedReport()
    numbers = _build(session, plans, actors, today, report, commit)
    for plan in plans:
        report.stages[numbers[plan.index]] = plan.stage or "day28"
    stories = {story: numbers[index] for index, (_, _, _, story) in enumerate(DEMO_STUDY) if story}
    _review(session, actors, report, stories)
    if commit:
        commit()
    _count_queries(session, report)
    return report


def _study_plans(seed: int, today: datetime) -> list[_Plan]:
    """The demo study's stories: drawn as `_plans` draws them, then moved in time so that each subject
    stands at its stage today."""
    yesterday = today.date() - timedelta(days=1)
    plans = []
    for index, (site, stage, days_back, story) in enumerate(DEMO_STUDY):
        plan = _plan(seed, index, today)
        plan.site, plan.stage = site, stage
        if story == "sae":
            plan.serious = True
            _serious_story(plan)
        elif story == "crs2":
            plan.crs, plan.icans, plan.fn_days = {1: 1, 2: 2, 3: 2, 4: 1}, {}, []
            # A slip at the Day 7 visit: 210 beats/min typed for 120 (a soft limit: an automatic query).
            plan.slip = ("D7", "vs", {"HR": 210})
        spec = STAGES[stage]
        if spec is None:
            # Complete through Day 28 (and its results two days later): Day 0 at least 40 days ago.
            _shift(plan, (yesterday - timedelta(days=40 + days_back) - plan.planned).days)
            plans.append(plan)
            continue
        anchor, day, hour = spec
        start = {"registration": plan.registration, "apheresis": plan.aph, "day0": plan.planned}[anchor]
        _shift(plan, (yesterday - (start + timedelta(days=day))).days)
        plan.stop = datetime.combine(yesterday, time(hour), tzinfo=plan.zone)
        if stage in DRAFTS_FROM_HOUR:
            plan.drafts_from = datetime.combine(yesterday, time(DRAFTS_FROM_HOUR[stage]), tzinfo=plan.zone)
        plans.append(plan)
    return sorted(plans, key=lambda p: (p.registration, p.index))


def study_subjects(today: datetime, *, seed: int = 0) -> list[tuple[str, str, str | None]]:
    """(study number, stage, story) of each subject the demo study seeded on `today` with `seed` gets, in the
    order of DEMO_STUDY: for tests and demonstrations that look for "the signed casebook" or "the SAE"."""
    numbers: dict[int, str] = {}
    seen: Counter = Counter()
    for plan in _study_plans(seed, today):
        seen[plan.site] += 1
        numbers[plan.index] = f"{plan.site}-{seen[plan.site]:04d}"
    return [(numbers[index], stage, story) for index, (_, stage, _, story) in enumerate(DEMO_STUDY)]


def _shift(plan: _Plan, days: int) -> None:
    """Move a subject's calendar by `days`, at the same age at consent."""
    delta = timedelta(days=days)
    plan.registration += delta
    plan.consent += delta
    plan.aph += delta
    plan.planned += delta
    months = plan.consent.year * 12 + plan.consent.month - 1 - plan.age_months
    plan.birth_year, plan.birth_month = months // 12, months % 12 + 1


def _review(session: Session, actors: dict[str, Actor], report: SeedReport, stories: dict[str, str]) -> None:
    """Today's review work, at the real time: the monitor queries a value of the CRS subject's Day 7 visit and
    verifies the signed subject's entries against source; that subject's principal investigator signs its
    casebook (with the demo password, as the API asks for it)."""
    monitor = actors[MONITOR_ACCOUNT]
    lab = session.scalars(sa.select(Entry).join(Subject, Entry.subject_id == Subject.id).where(
        Subject.number == stories["crs2"], Entry.form_id == "lb", Entry.event_key == "D7/1")).one()
    query = queries.open_query(session, monitor, entry_id=lab.id, item="PLT",
                               message="The platelet count differs from the laboratory report in the source "
                                       "documents: please check and correct it or confirm it.")
    report.manual_queries.append(str(query.id))
    signed = stories["signed"]
    subject = session.scalars(sa.select(Subject).where(Subject.number == signed)).one()
    for entry in session.scalars(sa.select(Entry).where(Entry.subject_id == subject.id).order_by(Entry.created_at, Entry.id)):
        sdv.verify(session, monitor, entry.id, whole_entry=True)
        report.verified_entries += 1
    investigator = actors[SITE_INVESTIGATORS[subject.site.code]]
    signatures.sign_casebook(session, investigator, signed, username=investigator.username,
                             password=DEMO_PASSWORD, meaning=SIGNING_MEANING)
    report.signed_subject = signed


# ================================================================ accounts and time


def _demo_actors(session: Session, extra: tuple[str, ...] = ()) -> dict[str, Actor]:
    """The demo accounts that enter the data, as the API would see them (their active roles)."""
    wanted = [*SITE_INVESTIGATORS.values(), MANUFACTURING_ACCOUNT, SAFETY_ACCOUNT, *extra]
    found = {user.username: user for user in session.scalars(sa.select(User).where(User.username.in_(wanted)))}
    missing = [name for name in wanted if name not in found]
    if missing:
        raise Conflict(f"The demo accounts are missing ({', '.join(missing)}): run `flask edc seed-demo` first.")
    return {name: actor_for(found[name]) for name in wanted}


class _Moment:
    """The simulated current time: only moves forward within a subject, and never reaches today."""

    def __init__(self, today: datetime) -> None:
        self.today = today
        self.now = today

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        if moment >= self.today:
            raise AssertionError(f"demo data would be entered in the future ({moment.isoformat()})")
        self.now = moment


@contextmanager
def _simulated_clock(today: datetime) -> Iterator[_Moment]:
    real = clock.utcnow
    moment = _Moment(today)
    clock.utcnow = moment
    try:
        yield moment
    finally:
        clock.utcnow = real


# ================================================================ the subject's story


@dataclass
class _Plan:
    index: int
    rng: random.Random
    site: str
    sex: str
    age_months: int                 # at consent
    birth_year: int
    birth_month: int
    consent: date
    registration: date
    dev_delay: bool
    height: float
    weight: float
    aph: date
    planned: date                   # planned first fraction = Day 0
    crs: dict[int, int]             # study day -> ASTCT grade, over the CRS episode
    icans: dict[int, int]           # study day -> ASTCT grade, over the ICANS episode
    fn_days: list[int]              # days of fever from febrile neutropenia (no CRS)
    response: str                   # CR / CRi / NR at Day 28
    mrd_detected: bool
    serious: bool = False           # the subject with the run's one SAE
    relapse_day: int | None = None  # the subject with the run's one relapse
    stage: str | None = None        # the demo study's stage (STAGES); None: complete through Day 28
    stop: datetime | None = None    # nothing is saved from this moment on (the stage reached)
    drafts_from: datetime | None = None   # entries saved from this moment on are partly entered drafts
    slip: tuple[str, str, dict[str, Any]] | None = None   # (event, form, values) typed wrongly at that form

    def reached(self, study_day: int) -> bool:
        """Whether the subject's calendar has reached this study day (before the stage's stop)."""
        return self.stop is None or datetime.combine(self.day(study_day), time(0), tzinfo=self.zone) < self.stop

    @property
    def zone(self) -> ZoneInfo:
        return SITE_ZONES[self.site]

    def day(self, study_day: int) -> date:
        return self.planned + timedelta(days=study_day)

    def age_years_at(self, at: date) -> int:
        return age_in_months(self.birth_year, self.birth_month, at) // 12

    def age_months_at(self, at: date) -> int:
        return age_in_months(self.birth_year, self.birth_month, at)


# Years of age at consent, weighted towards children (relapsed/refractory paediatric B-ALL, 1 to 25 years).
_AGE_WEIGHTS = {1: 3, 2: 3, 3: 3, 4: 5, 5: 5, 6: 5, 7: 5, 8: 5, 9: 5, 10: 4, 11: 4, 12: 4, 13: 4, 14: 4, 15: 4,
                16: 2, 17: 2, 18: 2, 19: 2, 20: 1, 21: 1, 22: 1, 23: 1, 24: 1, 25: 1}
# Median height (cm) and weight (kg) by completed year of age, both sexes (WHO / CDC growth charts, rounded).
_GROWTH = {0: (68, 8.0), 1: (80, 10.9), 2: (90, 13.0), 3: (98, 15.0), 4: (105, 17.0), 5: (111, 19.2), 6: (117, 21.5),
           7: (123, 24.0), 8: (129, 26.5), 9: (134, 29.5), 10: (139, 32.5), 11: (145, 36.5), 12: (151, 41.0),
           13: (157, 46.0), 14: (162, 51.0), 15: (166, 55.5), 16: (168, 58.5), 17: (170, 61.0)}


def _plans(count: int, seed: int, today: datetime) -> list[_Plan]:
    """Every subject's story, in order of registration (study numbers follow it)."""
    plans = [_plan(seed, index, today) for index in range(count)]
    run = random.Random(f"milenari-demo:{seed}:run")
    serious = run.randrange(count)
    plans[serious].serious = True
    _serious_story(plans[serious])
    # The relapse: the subject (other than the SAE one when possible) with the longest follow-up after Day 28.
    candidates = [p for p in plans if not p.serious] or plans
    relapsing = max(candidates, key=lambda p: ((today.date() - p.planned).days, -p.index))
    available = (today.date() - relapsing.planned).days - 10
    relapsing.relapse_day = max(35, min(relapsing.rng.randint(60, 150), available))
    relapsing.response, relapsing.mrd_detected = "CR", relapsing.rng.random() < 0.5
    return sorted(plans, key=lambda p: (p.registration, p.index))


def _plan(seed: int, index: int, today: datetime) -> _Plan:
    rng = random.Random(f"milenari-demo:{seed}:{index}")
    site = DEMO_SITES[index % len(DEMO_SITES)][0]
    sex = rng.choice("FM")
    years = rng.choices(list(_AGE_WEIGHTS), weights=list(_AGE_WEIGHTS.values()))[0]
    age_months = min(311, max(12, years * 12 + rng.randrange(12)))
    registration = today.date() - timedelta(days=rng.randint(*REGISTRATION_DAYS_AGO))
    consent = registration - timedelta(days=rng.choice((0, 0, 1, 2, 3, 5, 7)))
    months = consent.year * 12 + consent.month - 1 - age_months
    birth_year, birth_month = months // 12, months % 12 + 1
    height, weight = _body(rng, age_months, sex)
    aph = registration + timedelta(days=rng.randint(6, 12))
    planned = aph + timedelta(days=rng.randint(32, 38))
    crs = _episode(rng, rng.choices((1, 2, 3), weights=(45, 38, 17))[0], rng.randint(3, 8)) \
        if rng.random() < CRS_SHARE else {}
    icans: dict[int, int] = {}
    if rng.random() < ICANS_SHARE:
        onset = (min(crs) + rng.randint(1, 4)) if crs and rng.random() < 0.8 else rng.randint(4, 9)
        icans = _episode(rng, rng.choices((1, 2, 3), weights=(45, 35, 20))[0], onset)
    fn_days: list[int] = []
    if not crs and rng.random() < 0.25:
        first = rng.randint(6, 11)
        fn_days = list(range(first, first + rng.randint(1, 3)))
    response = rng.choices(("CR", "CRi", "NR"), weights=(85, 9, 6))[0]
    return _Plan(index=index, rng=rng, site=site, sex=sex, age_months=age_months, birth_year=birth_year,
                 birth_month=birth_month, consent=consent, registration=registration,
                 dev_delay=rng.random() < 0.04, height=height, weight=weight, aph=aph, planned=planned,
                 crs=crs, icans=icans, fn_days=fn_days, response=response,
                 mrd_detected=response != "NR" and rng.random() < 0.12)


def _serious_story(plan: _Plan) -> None:
    """The run's one SAE: CRS reaching grade 4 (two vasopressors, intensive care), recovered."""
    onset = plan.rng.randint(3, 5)
    plan.crs = {onset + i: grade for i, grade in enumerate((1, 2, 3, 4, 4, 3, 2, 1))}
    plan.fn_days = []
    if plan.icans:
        start = onset + 2
        plan.icans = {start + i: grade for i, grade in enumerate((1, 2, 2, 1))}


def _episode(rng: random.Random, peak: int, onset: int) -> dict[int, int]:
    """Daily grades of one episode rising to `peak` and back to grade 1 (ASTCT grades, one per day)."""
    if peak == 1:
        grades = [1] * rng.randint(2, 4)
    elif peak == 2:
        grades = [1] * rng.randint(1, 2) + [2] * rng.randint(1, 3) + [1] * rng.randint(1, 2)
    else:
        grades = [1] + [2] * rng.randint(1, 2) + [3] * rng.randint(1, 2) + [2] * rng.randint(1, 2) + [1]
    return {onset + i: grade for i, grade in enumerate(grades)}


def _body(rng: random.Random, age_months: int, sex: str) -> tuple[float, float]:
    """Height (cm) and weight (kg) around the median for age and sex."""
    years = age_months / 12
    if years >= 17:
        height, weight = (176.0, 70.0) if sex == "M" else (163.0, 58.0)
    else:
        low, high = math.floor(years), math.floor(years) + 1
        h0, w0 = _GROWTH[low]
        h1, w1 = _GROWTH.get(high, ((176.0, 70.0) if sex == "M" else (163.0, 58.0)))
        share = years - low
        height, weight = h0 + (h1 - h0) * share, w0 + (w1 - w0) * share
        if years >= 13:
            height, weight = (height + 3, weight + 2) if sex == "M" else (height - 3, weight - 2)
    return round(height * rng.uniform(0.95, 1.05), 1), round(weight * rng.uniform(0.85, 1.15), 1)


# ================================================================ the casebook of one subject

_YN = {True: "Y", False: "N"}
# Typical normal laboratory values by age band (completed months: from, to), in the LB form's units.
_LAB_NORMAL = (
    (0, 72, {"HGB": (11.0, 13.5), "SODIUM": (136, 143), "K": (3.7, 4.8), "CA": (9.0, 10.4), "PHOS": (4.2, 6.0),
             "URATE": (2.0, 4.5), "LDH": (170, 320), "CREAT": (0.18, 0.35), "UREA": (12, 32), "ALT": (8, 25),
             "AST": (18, 45), "BILI": (0.2, 0.8), "ALP": (160, 380), "ALB": (3.7, 4.8), "INR": (0.9, 1.15),
             "APTT": (27, 35), "FIBRINO": (210, 370), "IGG": (520, 1100), "IGA": (30, 130), "IGM": (50, 160)}),
    (72, 144, {"HGB": (12.0, 14.5), "SODIUM": (136, 143), "K": (3.7, 4.8), "CA": (9.0, 10.4), "PHOS": (3.9, 5.3),
               "URATE": (2.3, 5.0), "LDH": (140, 270), "CREAT": (0.35, 0.65), "UREA": (17, 37), "ALT": (8, 25),
               "AST": (14, 35), "BILI": (0.2, 0.8), "ALP": (150, 420), "ALB": (3.8, 4.8), "INR": (0.9, 1.15),
               "APTT": (27, 35), "FIBRINO": (210, 370), "IGG": (700, 1350), "IGA": (50, 220), "IGM": (50, 180)}),
    (144, 216, {"HGB": (12.5, 15.0), "SODIUM": (136, 143), "K": (3.7, 4.8), "CA": (8.8, 10.1), "PHOS": (3.1, 5.0),
                "URATE": (2.8, 6.2), "LDH": (130, 250), "CREAT": (0.55, 0.9), "UREA": (17, 40), "ALT": (8, 28),
                "AST": (12, 30), "BILI": (0.3, 1.0), "ALP": (80, 380), "ALB": (3.8, 5.0), "INR": (0.9, 1.15),
                "APTT": (27, 35), "FIBRINO": (210, 370), "IGG": (780, 1500), "IGA": (80, 300), "IGM": (50, 220)}),
    (216, 10_000, {"HGB": (12.5, 15.5), "SODIUM": (136, 143), "K": (3.7, 4.9), "CA": (8.8, 10.0), "PHOS": (2.7, 4.3),
                   "URATE": (3.0, 6.5), "LDH": (140, 230), "CREAT": (0.65, 1.1), "UREA": (17, 42), "ALT": (10, 35),
                   "AST": (12, 35), "BILI": (0.3, 1.0), "ALP": (45, 120), "ALB": (3.8, 5.0), "INR": (0.9, 1.15),
                   "APTT": (27, 35), "FIBRINO": (220, 380), "IGG": (780, 1500), "IGA": (90, 350), "IGM": (50, 210)}),
)
# Blood counts (×10⁹/L) by time point: ANC, lymphocytes, haemoglobin (g/dL), platelets.
_COUNTS = {
    "SCR": {"ANC": (0.6, 3.5), "LYM": (0.8, 3.2), "HGB": (8.0, 11.5), "PLT": (30, 220)},
    "APH": {"ANC": (0.9, 3.5), "LYM": (0.8, 2.5), "HGB": (8.5, 11.5), "PLT": (50, 250)},
    "LD": {"ANC": (0.9, 4.0), "LYM": (0.6, 2.2), "HGB": (8.5, 11.5), "PLT": (45, 250)},
    "D7": {"ANC": (0.02, 0.7), "LYM": (0.1, 1.5), "HGB": (7.5, 10.0), "PLT": (15, 120)},
    "D14": {"ANC": (0.1, 1.6), "LYM": (0.3, 2.0), "HGB": (8.0, 10.5), "PLT": (25, 160)},
    "D21": {"ANC": (0.6, 3.0), "LYM": (0.4, 2.0), "HGB": (8.5, 11.0), "PLT": (40, 220)},
    "D28": {"ANC": (1.1, 4.0), "LYM": (0.5, 2.2), "HGB": (9.0, 12.5), "PLT": (105, 320)},
}
_FRONTLINE = {"ES01": "SEHOP-PETHEMA 2013 protocol", "IT01": "AIEOP-BFM ALL 2017 protocol",
              "LB01": "St. Jude Total Therapy XV-based protocol", "JO01": "UKALL 2011-based protocol"}
_GENERAL_HISTORY = (
    ("Transfusional iron overload", True), ("Vincristine-related peripheral neuropathy", False),
    ("Steroid-induced hyperglycaemia", False), ("Asthma", True), ("Osteonecrosis of the femoral head", True),
    ("Pegaspargase hypersensitivity", False), ("Central venous catheter-related thrombosis", False),
)


class _Casebook:
    """Builds one subject's casebook: its story as dated actions, then saved in time order."""

    def __init__(self, session: Session, plan: _Plan, actors: dict[str, Actor], moment: _Moment,
                 report: SeedReport) -> None:
        self.session, self.plan, self.rng = session, plan, plan.rng
        self.investigator = actors[SITE_INVESTIGATORS[plan.site]]
        self.manufacturing, self.safety_officer = actors[MANUFACTURING_ACCOUNT], actors[SAFETY_ACCOUNT]
        self.moment, self.report = moment, report
        self.number = ""
        self.actions: list[tuple[datetime, int, Callable[[], None]]] = []
        self.saved: dict[str, tuple[Entry, dict[str, Any]]] = {}   # entries changed later, by key
        self.params = runtime.of(session).study.parameters
        self.gvhd = "NONE"                  # after the prior transplant, if any
        self.steroid_days: set[int] = set()  # days of dexamethasone for CRS

    # ---------------------------------------------------------------- time and saving

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        """A local wall time at the subject's site (kept within the day: 07:00-22:00)."""
        return datetime.combine(day, time(hour, minute), tzinfo=self.plan.zone)

    def stamp(self, moment: datetime) -> str:
        """A date-time item value: local wall time with its UTC offset."""
        return moment.astimezone(self.plan.zone).isoformat(timespec="minutes")

    def later(self, when: datetime, action: Callable[[], None]) -> None:
        self.actions.append((when.astimezone(UTC), len(self.actions), action))

    def entry(self, when: datetime, form: str, data: dict[str, Any] | Callable[[], dict[str, Any]], *,
              event: str | None = None, instance: int = 1, actor: Actor | None = None, key: str | None = None) -> None:
        """Schedule a new complete entry, saved at `when` (a draft with its first items only, from the plan's
        `drafts_from`)."""
        plan = self.plan
        draft = plan.drafts_from is not None and when >= plan.drafts_from

        def save() -> None:
            values = data() if callable(data) else data
            if plan.slip and plan.slip[:2] == (event, form):
                values = {**values, **plan.slip[2]}
            if draft:
                values = dict(list(values.items())[: (len(values) + 1) // 2])
            try:
                outcome = entries.create_entry(self.session, actor or self.investigator, self.number, form=form,
                                               data=values, complete=not draft, event=event, event_instance=instance)
            except UnprocessableContent as exc:
                raise self._refused(exc, form, event, instance) from None
            if draft:
                self.report.drafts[form] += 1
            self.report.entries[form] += 1
            if key:
                self.saved[key] = (outcome.entry, values)
        self.later(when, save)

    def change(self, when: datetime, key: str, changes: dict[str, Any], reason: str, *,
               remove: tuple[str, ...] = (), actor: Actor | None = None) -> None:
        """Schedule a change of an entry saved earlier (same item set with `changes`), with its reason."""
        def save() -> None:
            entry, values = self.saved[key]
            values = {k: v for k, v in {**values, **changes}.items() if k not in remove}
            try:
                outcome = entries.update_entry(self.session, actor or self.investigator, entry.id, data=values,
                                               complete=True, expected_etag=etag_of(entry), reason=reason)
            except UnprocessableContent as exc:
                raise self._refused(exc, entry.form_id, entry.event_key or None, 1) from None
            self.report.updates[entry.form_id] += 1
            self.saved[key] = (outcome.entry, values)
        self.later(when, save)

    def _refused(self, exc: UnprocessableContent, form: str, event: str | None, instance: int) -> UnprocessableContent:
        where = f"event {event}" + (f" (instance {instance})" if instance != 1 else "") if event else "the subject log"
        return UnprocessableContent(
            f"Demo subject {self.number}: the {form} entry at {where}, saved as of "
            f"{self.moment.now:%Y-%m-%d %H:%M} UTC, was refused ({len(self.report.subjects)} earlier subjects are "
            f"saved): {exc.detail}", errors=exc.errors or [])

    def build(self) -> None:
        plan = self.plan
        self.moment.set(self.at(plan.registration, 9, self.rng.randrange(50)).astimezone(UTC))
        subject = subjects.enrol(self.session, self.investigator, site=plan.site, birth_year=plan.birth_year,
                                 birth_month=plan.birth_month, sex=plan.sex, consent_date=plan.consent)
        self.number = subject.number
        self.seq = subject.seq
        self.prepare()
        self.screening()
        self.apheresis_to_infusion()
        self.daily_assessments()
        self.visits()
        self.medications_and_events()
        if plan.relapse_day is not None:
            self.relapse()
        for when, _, action in sorted(self.actions, key=lambda a: (a[0], a[1])):
            if plan.stop is not None and when >= plan.stop:
                break       # the stage reached: the rest has not happened yet
            self.moment.set(max(self.moment.now, when))
            action()
        if plan.crs and plan.reached(min(plan.crs)):
            self.report.crs_subjects.append(self.number)
        if plan.icans and plan.reached(min(plan.icans)):
            self.report.icans_subjects.append(self.number)
        if plan.serious:
            self.report.sae_subject = self.number
        if plan.relapse_day is not None:
            self.report.relapse_subject = self.number

    # ---------------------------------------------------------------- values decided before any entry

    def prepare(self) -> None:
        """The clinical values several forms share: history, weights, counts, the daily CRS/ICANS states."""
        plan, rng = self.plan, self.rng
        self.coi = f"ARI-{[code for code, *_ in DEMO_SITES].index(plan.site) + 1:02d}{self.seq:04d}"
        self.ld_weight = round(plan.weight * rng.uniform(0.97, 1.01), 1)
        self.history = self._history()
        self.counts = {visit: self._counts(visit) for visit in _COUNTS}
        self.cd3 = round(self.counts["APH"]["LYM"] * 1000 * rng.uniform(0.55, 0.8))
        self.pb_blasts_scr = rng.random() < 0.35
        self.d28 = plan.day(28 + rng.choice((-1, 0, 0, 0, 1)))
        self.crs_mode = rng.choice(("FLUIDS", "O2"))     # how grade 2 shows: hypotension on fluids, or low-flow oxygen
        self.crs_days = {day: self._crs_state(day) for day in range(0, 29)}
        self.toci_days = self._toci_days()
        self.icans_days = {day: self._icans_state(day) for day in range(0, 29)}

    def _counts(self, visit: str) -> dict[str, float]:
        plan, rng = self.plan, self.rng
        ranges = dict(_COUNTS[visit])
        if visit == "D28" and plan.response == "CRi":
            if rng.random() < 0.5:
                ranges["ANC"] = (0.3, 0.9)
            else:
                ranges["PLT"] = (40, 95)
        elif visit == "D28" and plan.response == "NR":
            ranges.update(ANC=(0.3, 2.5), PLT=(20, 150))
        if visit == "D7" and plan.fn_days:
            ranges["ANC"] = (0.02, 0.4)
        counts = {name: rng.uniform(*bounds) for name, bounds in ranges.items()}
        counts["MONO"] = rng.uniform(0.05, 0.6)
        return {"ANC": round(counts["ANC"], 2), "LYM": round(counts["LYM"], 2), "HGB": round(counts["HGB"], 1),
                "PLT": round(counts["PLT"]), "WBC": round(counts["ANC"] + counts["LYM"] + counts["MONO"], 2)}

    def _history(self) -> dict[str, Any]:
        """The disease before the trial: diagnosis, relapses, transplant, refractoriness (months before consent)."""
        plan, rng = self.plan, self.rng
        age = plan.age_months
        category = rng.choices(("refractory", "first_relapse", "second_relapse", "post_hsct"), weights=(15, 25, 25, 35))[0]
        if category in ("second_relapse", "post_hsct") and age < 30:
            category = "first_relapse"
        if category == "first_relapse" and age < 18:
            category = "refractory"
        last = rng.randint(1, 2)
        hsct_ago = None
        if category == "refractory":
            dx_ago, relapses = min(rng.randint(4, 10), age - 2), []
        elif category == "first_relapse":
            dx_ago = min(rng.randint(14, 48), age - 2)
            relapses = [last]
        elif category == "second_relapse":
            dx_ago = min(rng.randint(30, 84), age - 2)
            relapses = [rng.randint(last + 8, max(last + 8, dx_ago - 10)), last]
        else:
            dx_ago = min(rng.randint(24, 84), age - 2)
            hsct_ago = rng.randint(last + 7, max(last + 7, dx_ago - 8))
            relapses = [last]
            if dx_ago - 3 >= hsct_ago + 3 and rng.random() < 0.4:     # a first relapse before the transplant
                relapses.insert(0, rng.randint(hsct_ago + 3, dx_ago - 3))
        genet = rng.choices((["NONE"], ["ETV6RUNX1"], ["KMT2AR"], ["HYPODIP"], ["IAMP21"], ["TCF3PBX1"], ["PHLIKE"],
                             ["BCRABL1"], ["OTHER"]), weights=(30, 15, 10 if age < 36 else 3, 5, 5, 5, 10, 6, 6))[0]
        consent = plan.consent
        relapse_dates = [_months_before(consent, months, rng) for months in relapses]
        last_relapse = relapse_dates[-1] if relapse_dates else None
        return {
            "category": category, "dx": _months_before(consent, dx_ago, rng), "relapses": relapse_dates,
            "hsct": _months_before(consent, hsct_ago, rng) if hsct_ago else None,
            "refractory": category == "refractory" or rng.random() < 0.25,
            "genet": genet, "immuno": rng.choices(("COMMON", "PREB", "PROB"), weights=(70, 20, 10 if age >= 36 else 40))[0],
            "cns": rng.choices(("CNS1", "CNS2", "CNS3"), weights=(80, 12, 8))[0],
            "cd19_date": last_relapse or consent - timedelta(days=rng.randint(7, 40)),
        }

    def _crs_state(self, day: int) -> dict[str, Any]:
        """The day's CRS assessment (the worst state in the 24 hours), graded as planned."""
        plan, rng = self.plan, self.rng
        grade = plan.crs.get(day, 0)
        episode = sorted(plan.crs)
        first_toci = next((d for d in episode if plan.crs[d] >= 2), None)
        first_g3 = next((d for d in episode if plan.crs[d] >= 3), None)
        in_episode = grade > 0
        febrile = in_episode and (day <= first_toci if first_toci is not None else day != episode[-1] or len(episode) == 1)
        fn_fever = day in plan.fn_days
        age_years = plan.age_years_at(plan.day(day))
        threshold = 70 + 2 * age_years if age_years <= 10 else 90
        state = {
            "grade": grade,
            "TMAX": round(rng.uniform(39.0, 40.2) if febrile and plan.serious else rng.uniform(38.1, 39.8) if febrile
                          else rng.uniform(38.3, 39.3) if fn_fever else rng.uniform(36.8, 37.8) if in_episode
                          else rng.uniform(36.3, 37.4), 1),
            "ANTIPYR": in_episode, "TOCI": in_episode and first_toci is not None and day >= first_toci,
            "STEROID": in_episode and first_g3 is not None and day >= first_g3,
            "SBPMIN": threshold + rng.randint(12, 30), "HYPOT": "NONE", "NPRESS": 0, "O2DEV": "NONE", "O2FLOW": None,
            "ICU": False, "fever_other_cause": fn_fever, "threshold": threshold,
        }
        if grade == 2 and self.crs_mode == "FLUIDS":
            state.update(HYPOT="FLUIDS", SBPMIN=threshold - rng.randint(2, 8))
        elif grade == 2:
            state.update(O2DEV="NC", O2FLOW=round(rng.uniform(0.5, 3.0), 1))
        elif grade == 3 and plan.serious:
            state.update(HYPOT="VASO", NPRESS=1, SBPMIN=threshold - rng.randint(10, 18), O2DEV="NC", O2FLOW=2.0, ICU=True)
        elif grade == 3:
            state.update(O2DEV=rng.choice(("HFNC", "FACEMASK")))
            if rng.random() < 0.5:
                state.update(HYPOT="FLUIDS", SBPMIN=threshold - rng.randint(2, 8))
        elif grade == 4:
            state.update(HYPOT="VASO", NPRESS=2, SBPMIN=threshold - rng.randint(12, 20), O2DEV="HFNC", ICU=True)
        derived = clinical.crs_grade(
            temp_c=state["TMAX"], hypotension=state["HYPOT"], pressors=state["NPRESS"], o2_device=state["O2DEV"],
            o2_flow_lpm=state["O2FLOW"], fever_other_cause=fn_fever if state["TMAX"] >= 38.0 else None,
            previously_treated=state["ANTIPYR"] or state["TOCI"] or state["STEROID"],
            hypotension_other_cause=False if state["HYPOT"] != "NONE" else None,
            hypoxia_other_cause=False if state["O2DEV"] != "NONE" else None, death=False)
        if derived != grade:
            raise AssertionError(f"demo CRS day {day}: planned grade {grade}, the data give {derived}")
        return state

    def _toci_days(self) -> list[int]:
        """Tocilizumab doses: from grade 2, again at grade 3 and at grade 4 (at most params.toci_max_doses)."""
        plan = self.plan
        episode = sorted(plan.crs)
        days: list[int] = []
        for level in (2, 3, 4):
            first = next((d for d in episode if plan.crs[d] >= level), None)
            if first is not None and first not in days:
                days.append(first)
        return days[: self.params["toci_max_doses"]]

    def _icans_state(self, day: int) -> list[tuple[datetime, dict[str, Any]]]:
        """The day's neurological assessments: twice a day while inpatient (Day 0-14), then daily."""
        plan = self.plan
        grade = plan.icans.get(day, 0)
        slots = ((8, 0), (20, 0)) if day <= 14 else ((10, 0),)
        assessments = []
        for hour, minute in slots:
            moment = self.at(plan.day(day), hour, minute + self.rng.randrange(30))
            assessments.append((moment, self._neuro(moment, grade)))
        return assessments

    def _neuro(self, moment: datetime, grade: int) -> dict[str, Any]:
        plan, rng = self.plan, self.rng
        capd = plan.dev_delay or plan.age_months_at(moment.date()) < self.params["capd_below_age_months"]
        values: dict[str, Any] = {"NDTC": self.stamp(moment), "DEVDELAY": _YN[plan.dev_delay], "TOOLDONE": "Y"}
        loc = {0: "ALERT", 1: rng.choice(("ALERT", "ALERT", "SPONT")), 2: "VOICE" if capd else rng.choice(("ALERT", "SPONT")),
               3: rng.choice(("SPONT", "VOICE"))}[grade]
        if capd:
            total = {0: 0, 1: rng.randint(1, 8), 2: rng.randint(1, 8), 3: rng.randint(9, 16)}[grade]
            values.update(_capd_answers(total, rng))
            score = {"capd": total, "ice": None}
        else:
            total = {0: 10, 1: rng.randint(7, 9), 2: rng.randint(3, 6), 3: rng.randint(1, 2)}[grade]
            values.update(_ice_answers(total, rng))
            score = {"ice": total, "capd": None}
        values.update(LOC=loc, SEIZ="NONE", MOTOR="N", ICP="NONE", ICHEM="N", ICANSDEATH="N", ICANSINV=str(grade))
        if loc != "ALERT":
            values["LOCOTH"] = "N"
        derived = clinical.icans_grade(tool="CAPD" if capd else "ICE", loc=loc, seizure="NONE", motor=False, icp="NONE",
                                       loc_other_cause=False if loc != "ALERT" else None, **score)
        if derived != grade:
            raise AssertionError(f"demo ICANS {moment}: planned grade {grade}, the data give {derived}")
        return values

    # ---------------------------------------------------------------- screening (SCR)

    def screening(self) -> None:
        plan, rng = self.plan, self.rng
        reg = plan.registration
        self.entry(self.at(reg, 9, 50), "ic", self._ic(), event="SCR")
        self.entry(self.at(reg, 10, 5), "dm", {
            "RFICDAT": plan.consent.isoformat(), "BRTHYY": plan.birth_year, "BRTHMO": plan.birth_month, "SEX": plan.sex,
            "DEVDELAY": _YN[plan.dev_delay], "WEIGHT": plan.weight, "HEIGHT": plan.height}, event="SCR")
        self.entry(self.at(reg, 11, 0), "dh", self._dh(), event="SCR")
        self.entry(self.at(reg, 11, 20), "prior_tx", self._prior_tx(), event="SCR")
        self.entry(self.at(reg, 11, 35), "hsct_hx", self._hsct_hx(), event="SCR")
        self.entry(self.at(reg, 11, 50), "mh", self._mh(), event="SCR")
        self.entry(self.at(reg, 12, 30), "vs", self._vs(reg, weight=plan.weight, height=plan.height), event="SCR")
        self.entry(self.at(reg, 12, 45), "pe", self._pe(reg, screening=True), event="SCR")
        self.ps_score = rng.choice((70, 80, 80, 90, 90, 90, 100, 100))
        lansky = plan.age_months_at(reg) < self.params["lansky_below_age_years"] * 12
        self.entry(self.at(reg, 12, 55), "ps", {"PSDAT": reg.isoformat(), ("LANSKY" if lansky else "KARNOFSKY"): self.ps_score},
                   event="SCR")
        self.entry(self.at(reg, 16, 0), "lb", self._lb("SCR", reg), event="SCR")
        self.entry(self.at(reg, 16, 20), "preg", self._preg(reg), event="SCR")
        self.entry(self.at(reg + timedelta(days=1), 13, 0), "bca", self._bca("SCR", reg), event="SCR")
        marrow = reg + timedelta(days=rng.randint(1, 2))
        results = marrow + timedelta(days=2)
        self.entry(self.at(results, 15, 0), "resp", self._resp_screening(marrow), event="SCR")
        self.entry(self.at(results, 16, 0), "ie", self._ie(), event="SCR")
        self.later(self.at(results, 16, 10), self._mark_enrolled)

    def _mark_enrolled(self) -> None:
        subject = scope.get_subject(self.session, self.investigator, self.number, "subjects:status")
        subjects.change_status(self.session, self.investigator, self.number, status="enrolled", reason=None,
                               expected_etag=etag_of(subject))

    def _ic(self) -> dict[str, Any]:
        plan = self.plan
        values = {"RFICDAT": plan.consent.isoformat(), "ICVERS": "V1_0", "LTFUCONS": "Y",
                  "SAMPCONS": "Y" if self.rng.random() < 0.9 else "N"}
        if self.params["assent_min_age_years"] * 12 <= plan.age_months < self.params["majority_age_years"] * 12:
            values.update(ASSENTOBT="Y", ASSENTDAT=plan.consent.isoformat())
        return values

    def _dh(self) -> dict[str, Any]:
        history = self.history
        values: dict[str, Any] = {
            "DXDAT": _year_month(history["dx"]), "DXIMMUNO": history["immuno"], "DXGENET": history["genet"],
            "DXCNS": history["cns"], "NRELAPSE": len(history["relapses"]), "REFRACT": _YN[history["refractory"]],
            "PRIORHSCT": 1 if history["hsct"] else 0}
        if "OTHER" in history["genet"]:
            values["DXGENETO"] = self.rng.choice(("IKZF1 deletion", "CDKN2A/B deletion", "CRLF2 rearrangement"))
        if history["relapses"]:
            values.update(LASTREL_DAT=history["relapses"][-1].isoformat(),
                          LASTREL_SITE=self.rng.choices(("BM", "COMBINED", "CNS"), weights=(80, 15, 5))[0])
        return values

    def _prior_tx(self) -> dict[str, Any]:
        """One row per line of therapy: front line, then one line per relapse (or the refractory salvage)."""
        plan, rng, history = self.plan, self.rng, self.history
        dx, relapses, hsct = history["dx"], history["relapses"], history["hsct"]
        tki = "BCRABL1" in history["genet"]
        classes = ["CHEMO", "TKI"] if tki else ["CHEMO"]
        events = sorted([*relapses, *([hsct] if hsct else [])])

        def line_end(start: date, days: int) -> date:
            """`days` after the start, but before the next relapse or transplant (and not after consent)."""
            following = next((day for day in events if day > start), None)
            limit = following - timedelta(days=rng.randint(15, 40)) if following else plan.consent
            return max(start, min(start + timedelta(days=days), limit, plan.consent))

        refractory = history["category"] == "refractory"
        front_end = line_end(dx, rng.randint(35, 60) if refractory else rng.randint(660, 900))
        rows = [{"CMTRT": _FRONTLINE[plan.site] + (" with imatinib" if tki else ""), "CMAGCLAS": classes,
                 "CMSTDAT": _year_month(dx), "CMENDAT": _year_month(front_end), "CMBRESP": "NR" if refractory else "CR"}]
        for number, relapse in enumerate(relapses, start=1):
            last = number == len(relapses)
            end = plan.consent if last else line_end(relapse, rng.randint(60, 120))
            rows.append({"CMTRT": "IntReALL 2010 relapse protocol" if number == 1 else "FLAG-Ida reinduction",
                         "CMAGCLAS": classes, "CMSTDAT": _year_month(relapse), "CMENDAT": _year_month(end),
                         "CMBRESP": rng.choice(("NR", "CRI", "PD")) if last else "CR"})
        if refractory:
            start = min(front_end + timedelta(days=rng.randint(10, 30)), plan.consent)
            inotuzumab = rng.random() < 0.5
            rows.append({"CMTRT": "Inotuzumab ozogamicin" if inotuzumab else "FLAG-Ida",
                         "CMAGCLAS": ["CD22"] if inotuzumab else ["CHEMO"], "CMSTDAT": _year_month(start),
                         "CMENDAT": _year_month(plan.consent), "CMBRESP": "NR"})
        return {"CMPRIOR": rows}

    def _hsct_hx(self) -> dict[str, Any]:
        hsct = self.history["hsct"]
        if not hsct:
            return {"HSCTOCC": "N"}
        age_years = self.plan.age_years_at(hsct)
        self.gvhd = self.rng.choices(("NONE", "ACUTE"), weights=(60, 40))[0]
        return {"HSCTOCC": "Y", "HSCT": [{"PRSTDAT": hsct.isoformat(), "HSCTDON": self.rng.choice(("MSD", "MUD", "HAPLO", "MMUD")),
                                          "HSCTTBI": _YN[age_years >= 4], "HSCTGVHD": self.gvhd}]}

    def _mh(self) -> dict[str, Any]:
        plan, rng, history = self.plan, self.rng, self.history
        dx = history["dx"]
        rows = [{"MHCAT": "ALL_DIAGNOSIS", "MHTERM": "B-cell precursor acute lymphoblastic leukaemia",
                 "MHSTDAT": _year_month(dx), "MHONGO": "Y"}]
        if history["cns"] == "CNS3":
            rows.append({"MHCAT": "PRIOR_CNS_DISEASE", "MHTERM": "CNS involvement at diagnosis (CNS3), cleared",
                         "MHSTDAT": _year_month(dx), "MHONGO": "N",
                         "MHENDAT": _year_month(min(dx + timedelta(days=45), plan.consent))})
        if history["hsct"] and self.gvhd == "ACUTE":
            start = history["hsct"] + timedelta(days=rng.randint(20, 60))
            rows.append({"MHCAT": "GENERAL", "MHTERM": "Acute graft-versus-host disease of the skin, grade II",
                         "MHSTDAT": _year_month(start), "MHONGO": "N",
                         "MHENDAT": _year_month(min(start + timedelta(days=rng.randint(30, 90)), plan.consent))})
        for term, ongoing in rng.sample(_GENERAL_HISTORY, rng.randint(0, 2)):
            start = min(dx + timedelta(days=rng.randint(20, 200)), plan.consent)
            row = {"MHCAT": "GENERAL", "MHTERM": term, "MHSTDAT": _year_month(start), "MHONGO": _YN[ongoing]}
            if not ongoing:
                row["MHENDAT"] = _year_month(min(start + timedelta(days=rng.randint(20, 120)), plan.consent))
            rows.append(row)
        return {"MHYN": "Y", "MH": rows}

    def _preg(self, day: date) -> dict[str, Any]:
        plan = self.plan
        if plan.sex != "F":
            return {}
        years = plan.age_years_at(day)
        potential = years >= 13 or (years >= 11 and self.rng.random() < 0.4)
        if not potential:
            return {"PREGCBP": "N"}
        return {"PREGCBP": "Y", "PREGDAT": day.isoformat(), "PREGSPEC": "SERUM", "PREGRES": "NEG"}

    def _ie(self) -> dict[str, Any]:
        history = self.history
        definitions = {"refractory": ["REFRACT"], "first_relapse": ["HSCTINEL"], "second_relapse": ["REL2"],
                       "post_hsct": ["POSTHSCT"]}[history["category"]]
        if history["category"] == "post_hsct" and len(history["relapses"]) >= 2:
            definitions.append("REL2")
        if history["refractory"] and "REFRACT" not in definitions:
            definitions.append("REFRACT")
        if "BCRABL1" in history["genet"]:
            definitions.append("PHTKI")
        return {"IEPROTV": "V1_0", "IEINCL01": "Y", "IEINCL01DAT": history["cd19_date"].isoformat(), "IEINCL02": "Y",
                "IEINCL02R": definitions, "IEINCL03": "Y", "IEINCL04": "Y", "IEEXCL01": "N", "IEEXCL02": "N",
                "IEEXCL03": "N", "IEEXCL04": "N", "IEEXCL05": "N", "IEEXCL06": "N"}


    # ---------------------------------------------------------------- shared form builders

    def _vs(self, day: date, *, study_day: int | None = None, weight: float | None = None,
            height: float | None = None) -> dict[str, Any]:
        """Vital signs; on a day of the CRS episode they show its fever, hypotension and oxygen need."""
        plan, rng = self.plan, self.rng
        years = plan.age_years_at(day)
        hr = (100, 140) if years < 3 else (85, 120) if years < 6 else (70, 110) if years < 13 else (60, 95)
        rr = (24, 34) if years < 3 else (20, 28) if years < 6 else (16, 24) if years < 13 else (12, 20)
        crs = self.crs_days.get(study_day) if study_day is not None else None
        threshold = 70 + 2 * years if years <= 10 else 90
        sbp = threshold + rng.randint(15, 32)
        temp, spo2 = round(rng.uniform(36.3, 37.3), 1), rng.randint(96, 100)
        if crs and (crs["grade"] or crs["TMAX"] >= 38.0):      # a CRS day, or fever from febrile neutropenia
            temp = round(max(36.5, crs["TMAX"] - rng.uniform(0.0, 0.6)), 1)
            sbp = crs["SBPMIN"] + rng.randint(4, 12) if crs["HYPOT"] != "NONE" else sbp
            spo2 = rng.randint(93, 97) if crs["O2DEV"] != "NONE" else spo2
            hr = (hr[0] + 20, hr[1] + 25)
        values = {"VSDAT": day.isoformat(), "TEMP": temp, "HR": rng.randint(*hr), "SYSBP": sbp,
                  "DIABP": round(sbp * rng.uniform(0.55, 0.65)), "RESP": rng.randint(*rr), "OXYSAT": spo2}
        if weight is not None:
            values["WEIGHT"] = weight
        if height is not None:
            values["HEIGHT"] = height
        return values

    def _pe(self, day: date, *, screening: bool = False) -> dict[str, Any]:
        plan, rng = self.plan, self.rng
        systems = ["GENERAL", "SKIN", "HEENT", "LYMPH", "CARDIO", "RESPIR", "ABDOMEN", "NEURO", "MUSCSKEL"]
        if plan.sex == "M":
            systems.append("GENITOUR")
        rows = []
        for system in systems:
            row = {"PETESTCD": system, "PEORRES": "NORMAL"}
            if screening and system == "ABDOMEN" and rng.random() < 0.2:
                row.update(PEORRES="ABNORMAL", PEDESC="Mild hepatosplenomegaly", PECLSIG="N")
            elif screening and system == "SKIN" and rng.random() < 0.15:
                row.update(PEORRES="ABNORMAL", PEDESC="Scattered petechiae on the lower limbs", PECLSIG="N")
            rows.append(row)
        return {"PEDAT": day.isoformat(), "PEEXAM": rows}

    def _lb(self, visit: str, day: date, *, study_day: int | None = None) -> dict[str, Any]:
        """Local laboratory panels of a visit: counts from the visit's profile, chemistry around the normal range."""
        plan, rng = self.plan, self.rng
        age = plan.age_months_at(day)
        normal = next(ranges for low, high, ranges in _LAB_NORMAL if low <= age < high)

        def draw(name: str, digits: int = 0) -> float | int:
            low, high = normal[name]
            value = rng.uniform(low, high)
            return round(value, digits) if digits else round(value)

        counts = self.counts[visit]
        values: dict[str, Any] = {"LBDAT": day.isoformat(), "ANC": counts["ANC"], "LYM": counts["LYM"],
                                  "HGB": counts["HGB"], "PLT": counts["PLT"], "WBC": counts["WBC"]}
        if visit == "SCR" and self.pb_blasts_scr:
            values["WBC"] = round(counts["WBC"] + rng.uniform(0.5, 25.0), 2)
        if visit == "APH":
            return values
        recent = max((self.crs_days[d]["grade"] for d in range(study_day - 2, study_day + 1) if d in self.crs_days),
                     default=0) if study_day is not None else 0
        values.update(SODIUM=draw("SODIUM"), K=draw("K", 1), CA=draw("CA", 1), PHOS=draw("PHOS", 1), URATE=draw("URATE", 1),
                      LDH=round(draw("LDH") * (rng.uniform(1.5, 3.5) if visit == "SCR" else 1.0)),
                      CREAT=draw("CREAT", 2), UREA=draw("UREA"), ALT=round(draw("ALT") * rng.uniform(1.0, 2.5)),
                      AST=round(draw("AST") * rng.uniform(1.0, 2.0)), BILI=draw("BILI", 2), ALP=draw("ALP"),
                      ALB=round(draw("ALB", 1) - (0.6 if recent >= 2 else 0.0), 1),
                      CRP=round(rng.uniform(40, 120) * recent if recent else rng.uniform(0.5, 12.0), 1),
                      FERRITIN=round(rng.uniform(300, 2500) * (1 + 3 * recent) * (2.5 if recent >= 4 else 1.0)))
        if visit != "D28":
            values.update(INR=draw("INR", 2), APTT=draw("APTT", 1),
                          FIBRINO=round(rng.uniform(110, 170)) if recent >= 3 else draw("FIBRINO"))
        if visit in ("SCR", "D28"):
            igg = draw("IGG") if visit == "SCR" else round(rng.uniform(250, 700))
            values.update(IGG=igg, IGA=round(draw("IGA") * (1.0 if visit == "SCR" else 0.5)),
                          IGM=round(draw("IGM") * (1.0 if visit == "SCR" else 0.4)))
            if visit == "D28":
                self.igg_d28 = igg
        if visit == "SCR":
            values.update(HIVSER="NEG", HBSAG="NEG", HBCAB="NEG", HCVAB="NEG", CMVPCR="NOTDET", EBVPCR="NOTDET",
                          ADVPCR="NOTDET")
        return values

    def _bca(self, visit: str, day: date) -> dict[str, Any]:
        """B cells (aplasia from Day 7 on) and the CAR transgene in blood (and marrow, CSF at Day 28)."""
        rng = self.rng
        if visit == "SCR":
            lymphocytes = self.counts["SCR"]["LYM"] * 1000
            absolute = round(rng.uniform(5, 350), 1)
            return {"LBDAT": day.isoformat(), "CD19ABS": absolute, "CD19PCT": round(min(60.0, 100 * absolute / lymphocytes), 2)}
        values = {"LBDAT": day.isoformat(), "CD19ABS": round(rng.uniform(0.0, 8.0), 1), "CD19PCT": round(rng.uniform(0.0, 1.5), 2)}
        level = {"D7": (5_000, 80_000), "D14": (2_000, 60_000), "D21": (1_000, 30_000), "D28": (500, 15_000),
                 "REL": (50, 800)}[visit]
        rows = [{"CARSPEC": "PB", "CARLOD": 5.0, "CARLOQ": 20.0, "CARRES": "QUANT", "CARQPCR": round(rng.uniform(*level), 1)}]
        if visit == "D28":
            rows.append({"CARSPEC": "BM", "CARLOD": 5.0, "CARLOQ": 20.0, "CARRES": "QUANT",
                         "CARQPCR": round(rng.uniform(200, 5_000), 1)})
            rows.append({"CARSPEC": "CSF", "CARLOD": 5.0, "CARLOQ": 20.0, **(
                {"CARRES": "QUANT", "CARQPCR": round(rng.uniform(20, 400), 1)} if rng.random() < 0.6 else {"CARRES": "BLQ"})})
        values["CARPCR"] = rows
        if visit in ("D7", "D14", "D21", "D28"):
            values.update(CARFLOW=round(rng.uniform(5, 150), 1), CARFLOWPCT=round(rng.uniform(2, 40), 2))
        return values

    def _csf(self, day: date) -> dict[str, Any]:
        return {"CNSSIGN": "N", "CSFDONE": "Y", "LPDAT": day.isoformat(), "CSFWBC": round(self.rng.uniform(0, 3), 1),
                "CSFRBC": round(self.rng.uniform(0, 8), 1), "CSFBLAST": "N", "EMD": "N",
                "EMDMETH": ["EXAM", "US"] if self.plan.sex == "M" else ["EXAM"]}

    def _resp_screening(self, marrow: date) -> dict[str, Any]:
        rng = self.rng
        blasts = round(rng.uniform(8, 85) if self.history["category"] != "refractory" else rng.uniform(6, 60), 1)
        counts = self.counts["SCR"]
        return {"RSDAT": marrow.isoformat(), "BMDONE": "Y", "BMDAT": marrow.isoformat(), "BMBLAST": blasts,
                "BMMRDMETH": "MFC", "BMMRDLOD": 0.0001, "BMMRDCELLS": rng.randint(300_000, 1_000_000), "BMMRDUND": "N",
                "BMMRDVAL": round(min(100.0, blasts * rng.uniform(0.8, 1.1)), 6),
                "PBBLAST": _YN[self.pb_blasts_scr], "ANC": round(counts["ANC"] * 1000), "PLT": round(counts["PLT"] * 1000),
                "TRANSF": "Y" if rng.random() < 0.4 else "N", "CD19BLAST": "POS", **self._csf(marrow),
                "RSORRES": {"missing": "NA"}}

    def _resp_day28(self, day: date) -> dict[str, Any]:
        plan, rng = self.plan, self.rng
        counts = self.counts["D28"]
        values: dict[str, Any] = {"RSDAT": day.isoformat(), "BMDONE": "Y", "BMDAT": day.isoformat(),
                                  "PBBLAST": "N", "ANC": round(counts["ANC"] * 1000), "PLT": round(counts["PLT"] * 1000),
                                  "TRANSF": "N", **self._csf(day)}
        if plan.response == "NR":
            blasts = round(rng.uniform(15, 70), 1)
            values.update(BMBLAST=blasts, BMMRDMETH="MFC", BMMRDLOD=0.0001, BMMRDUND="N",
                          BMMRDVAL=round(blasts * rng.uniform(0.8, 1.1), 6), CD19BLAST=rng.choice(("POS", "POS", "NEG")),
                          RSORRES="NR")
            return values
        values.update(BMBLAST=round(rng.uniform(0.0, 2.5), 1), RSORRES=plan.response)
        if plan.mrd_detected:
            values.update(BMMRDMETH="MFC", BMMRDLOD=0.0001, BMMRDUND="N", BMMRDVAL=round(rng.uniform(0.01, 0.5), 6),
                          CD19BLAST=rng.choice(("POS", "DIM")))
        else:
            ngs = rng.random() < 0.25
            values.update(BMMRDMETH="NGS" if ngs else "MFC", BMMRDLOD=0.000001 if ngs else 0.0001, BMMRDUND="Y",
                          CD19BLAST="NO_BLASTS")
        values["BMMRDCELLS"] = rng.randint(500_000, 2_000_000)
        return values


    # ---------------------------------------------------------------- apheresis to the third fraction

    def apheresis_to_infusion(self) -> None:
        plan, rng, params = self.plan, self.rng, self.params
        aph, day0 = plan.aph, plan.planned
        aph_weight = round(plan.weight * rng.uniform(0.98, 1.02), 1)
        self.entry(self.at(aph, 17, 0), "aph", {
            "APHDAT": aph.isoformat(), "PLANINFDAT": day0.isoformat(), "WEIGHT": aph_weight,
            "ALC": round(self.counts["APH"]["LYM"] * 1000), "CD3ABS": self.cd3,
            "APHVOL": round(aph_weight * 0.075 * rng.uniform(2.0, 3.0), 2), "COI": self.coi, "APHCOMP": "N", "APHREP": "N"},
            event="APH")
        self.entry(self.at(aph, 17, 10), "vs", self._vs(aph, weight=aph_weight), event="APH")
        self.entry(self.at(aph, 17, 20), "lb", self._lb("APH", aph), event="APH")
        # Manufacturing and QP release, entered by the manufacturing account.
        release = day0 - timedelta(days=rng.randint(3, 7))
        total = round(plan.weight * params["target_dose_per_kg"] * rng.uniform(1.6, 4.0), 1)
        self.entry(self.at(release, 15, 0), "mfg", {
            "COI": self.coi, "BATCHNO": f"B{day0:%y%m}-{plan.site}{self.seq:04d}",
            "LVLOT": f"LV{day0.year % 100:02d}-{rng.randint(1, 12):03d}", "VIAB": round(rng.uniform(80, 97), 1),
            "CARPCT": round(rng.uniform(15, 60), 1), "VCN": round(rng.uniform(0.8, 3.5), 2), "TOTCAR": total,
            "STERIL": "PASS", "MYCO": "PASS", "ENDO": "PASS", "RCLREL": "PASS", "RELDAT": release.isoformat()},
            event="MFG", actor=self.manufacturing)
        # Lymphodepletion: fludarabine and cyclophosphamide on days -5, -4 and -3.
        ld_days = [day0 - timedelta(days=5 - i) for i in range(params["ld_days"])]
        bsa = math.sqrt(plan.height * self.ld_weight / 3600)
        rows = []
        for day in ld_days:
            for drug, per_m2 in (("FLUDARABINE", params["flu_dose_per_m2"]), ("CYCLOPHOSPHAMIDE", params["cy_dose_per_m2"])):
                rows.append({"ECTRT": drug, "ECSTDAT": day.isoformat(),
                             "ECDOSE": round(per_m2 * bsa * rng.uniform(0.98, 1.02), 1), "ECDOSADJ": "N"})
        self.entry(self.at(ld_days[-1], 18, 0), "ld", {"WEIGHT": self.ld_weight, "HEIGHT": plan.height, "EC": rows},
                   event="LD")
        self.entry(self.at(ld_days[0], 12, 0), "vs", self._vs(ld_days[0], weight=self.ld_weight), event="LD")
        self.entry(self.at(ld_days[0], 16, 0), "lb", self._lb("LD", ld_days[0], study_day=-5), event="LD")
        # Pre-infusion check the day before Day 0.
        pre = day0 - timedelta(days=1)
        self.entry(self.at(pre, 15, 0), "preinf", {
            "PREDAT": pre.isoformat(), "PRENOINF": "Y", "PRENOGVHD": "Y", "PREORGAN": "Y", "PRENODET": "Y",
            "PRENEURO": "Y", "PREELIG": "Y"}, event="PRE")
        self.entry(self.at(pre, 15, 10), "vs", self._vs(pre), event="PRE")
        # Three fractions (10 / 30 / 60 % of the target dose) at least 24 hours apart.
        start = self.at(day0, 10, rng.randrange(30))
        for fraction in (1, 2, 3):
            weight = round(self.ld_weight * rng.uniform(0.99, 1.01), 1)
            share = params[f"fraction_{fraction}_pct"] / 100
            dose = round(params["target_dose_per_kg"] * share * weight * rng.uniform(0.97, 1.02), 2)
            values = {"EXFRACT": fraction, "EXOCCUR": "Y", "EXSTDTC": self.stamp(start), "COI": self.coi,
                      "EXWT": weight, "EXDOSE": dose, "PREMED": "Y", "PREMEDCS": "N", "INFREAC": "N"}
            if fraction > 1:
                values["PRECRS"] = "N"
            event = f"INF{fraction}"
            self.entry(start + timedelta(hours=2), "inf", values, event=event)
            self.entry(start + timedelta(hours=2, minutes=10), "vs", self._vs(start.date(), study_day=fraction - 1,
                                                                                weight=weight), event=event)
            # In UTC: across a change of summer time, 24 wall-clock hours are 23 or 25 real hours.
            start = (start.astimezone(UTC) + timedelta(hours=24, minutes=rng.randint(5, 60))).astimezone(plan.zone)

    # ---------------------------------------------------------------- daily CRS and ICANS assessments

    def daily_assessments(self) -> None:
        plan = self.plan
        for day in range(0, self.params["daily_assessment_last_day"] + 1):
            state = self.crs_days[day]
            values: dict[str, Any] = {
                "CRSDAT": plan.day(day).isoformat(), "TMAX": state["TMAX"], "ANTIPYR": _YN[state["ANTIPYR"]],
                "TOCI": _YN[state["TOCI"]], "STEROID": _YN[state["STEROID"]], "SBPMIN": state["SBPMIN"],
                "HYPOT": state["HYPOT"], "NPRESS": state["NPRESS"], "O2DEV": state["O2DEV"], "CRSDEATH": "N",
                "CRSGRINV": str(state["grade"]), "ICUADM": _YN[state["ICU"]]}
            if state["TMAX"] >= 38.0:
                values["FEVEROTH"] = _YN[state["fever_other_cause"]]
            if state["HYPOT"] != "NONE":
                values["HYPOTOTH"] = "N"
            if state["O2DEV"] == "NC":
                values["O2FLOW"] = state["O2FLOW"]
            if state["O2DEV"] != "NONE":
                values["HYPOXOTH"] = "N"
            self.entry(self.at(plan.day(day), 21, 0), "crs_daily", values)
            for moment, neuro in self.icans_days[day]:
                self.entry(moment + timedelta(minutes=30), "icans_daily", neuro)

    # ---------------------------------------------------------------- Day 7 to Day 28 visits

    def visits(self) -> None:
        plan = self.plan
        for visit, study_day in (("D7", 7), ("D14", 14), ("D21", 21), ("D28", None)):
            day = self.d28 if study_day is None else plan.day(study_day)
            offset = (day - plan.planned).days
            self.entry(self.at(day, 11, 0), "vs", self._vs(day, study_day=offset,
                                                           weight=self.ld_weight if visit == "D28" else None), event=visit)
            self.entry(self.at(day, 15, 0), "lb", self._lb(visit, day, study_day=offset), event=visit)
            self.entry(self.at(day + timedelta(days=1), 12, 0), "bca", self._bca(visit, day), event=visit)
        self.entry(self.at(self.d28, 11, 15), "pe", self._pe(self.d28), event="D28")
        self.entry(self.at(self.d28 + timedelta(days=2), 15, 0), "resp", self._resp_day28(self.d28), event="D28")


    # ---------------------------------------------------------------- concomitant medications and adverse events

    def medication(self, start: date, end: date | None, name: str, category: str, indication: str, *, route: str,
                   dose: float | None = None, unit: str | None = None, agent: str | None = None, hour: int = 18,
                   stop_hour: int = 20, at_once: bool = False) -> None:
        """A CM entry: saved when started (ongoing) and changed when stopped, or saved once (`at_once`, or a
        single day) with its end date."""
        values: dict[str, Any] = {"CMTRT": name, "CMCAT": category, "CMINDC": indication, "CMROUTE": route,
                                  "CMSTDAT": start.isoformat()}
        if category == "CRS/ICANS THERAPY":
            values.update(CMCRSAGT=agent, CMWT=self.ld_weight)
        elif category == "VASOPRESSOR":
            values["CMVPAGT"] = agent
        if dose is not None:
            values.update(CMDOSE=dose, CMDOSU=unit)
            if unit == "mg/kg":
                values["CMWT"] = self.ld_weight
        if end is None:
            self.entry(self.at(start, hour), "cm", {**values, "CMONGO": "Y"})
        elif at_once or end == start:
            self.entry(self.at(end, stop_hour if end != start else hour), "cm",
                       {**values, "CMONGO": "N", "CMENDAT": end.isoformat()})
        else:
            key = f"cm:{len(self.actions)}"
            self.entry(self.at(start, hour), "cm", {**values, "CMONGO": "Y"}, key=key)
            self.change(self.at(end, stop_hour), key, {"CMONGO": "N", "CMENDAT": end.isoformat()},
                        "Treatment stopped: end date recorded.")

    def _ae(self, category: str, term: str, start: date, end: date | None, grade: int, *, special: str | None = None,
            related: str = "RELATED", related_ld: str = "UNRELATED", treated: bool = True,
            start_time: str | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "AECAT": category, "AETERM": term, "AESTDAT": start.isoformat(), "AEONGO": _YN[end is None],
            "AETOXGR": str(grade), "AESI": _YN[special is not None], "AESDTH": "N", "AESLIFE": "N", "AESHOSP": "N",
            "AESDISAB": "N", "AESCONG": "N", "AESMIE": "N", "AEREL": related, "AERELLD": related_ld,
            "AERELPROC": {"missing": "NA"}, "AEACN": "NOT_APPLICABLE",
            "AEOUT": "RECOVERED" if end else "NOT_RECOVERED", "AECONTRT": _YN[treated]}
        if end:
            values["AEENDAT"] = end.isoformat()
        if special:
            values["AESICAT"] = special
        if start_time:
            values["AESTTIM"] = start_time
        return values

    def medications_and_events(self) -> None:
        plan, rng = self.plan, self.rng
        day0, weight = plan.planned, self.ld_weight
        ld_start = day0 - timedelta(days=5)
        # Anti-infective prophylaxis from lymphodepletion; seizure prophylaxis at two sites; premedication.
        self.medication(ld_start, None, "Aciclovir", "ANTIINFECTIVE", "Antiviral prophylaxis", route="ORAL",
                        dose=min(round(10 * weight), 400), unit="mg", hour=17)
        self.medication(ld_start, None, "Co-trimoxazole", "ANTIINFECTIVE", "Pneumocystis prophylaxis", route="ORAL",
                        dose=min(round(5 * weight), 160), unit="mg", hour=17)
        self.medication(day0, None, "Fluconazole", "ANTIINFECTIVE", "Antifungal prophylaxis", route="ORAL",
                        dose=min(round(6 * weight), 400), unit="mg", hour=13)
        if plan.site in ("ES01", "IT01"):
            self.medication(day0, plan.day(28), "Levetiracetam", "ANTIEPILEPTIC", "Seizure prophylaxis after CAR-T",
                            route="ORAL", dose=min(round(10 * weight), 500), unit="mg", hour=13, stop_hour=19)
        self.medication(day0, day0 + timedelta(days=2), "Paracetamol", "OTHER", "Premedication before ARI-0001",
                        route="ORAL", dose=min(round(15 * weight), 1000), unit="mg", at_once=True, stop_hour=14)
        self.medication(day0, day0 + timedelta(days=2), "Dexchlorpheniramine", "OTHER", "Premedication before ARI-0001",
                        route="INTRAVENOUS", dose=round(min(0.15 * weight, 5), 1), unit="mg", at_once=True, stop_hour=14)
        if plan.crs:
            self._crs_events()
        if plan.icans:
            self._icans_events()
        if plan.fn_days:
            first, last = plan.day(plan.fn_days[0]), plan.day(plan.fn_days[-1])
            end = first + timedelta(days=rng.randint(5, 7))
            self.medication(first, end, "Piperacillin-tazobactam", "ANTIINFECTIVE", "Febrile neutropenia",
                            route="INTRAVENOUS", dose=min(round(100 * weight), 4000), unit="mg", hour=19)
            self.entry(self.at(last + timedelta(days=2), 11, 0), "ae", self._ae(
                "OTHER", "Febrile neutropenia", first, last + timedelta(days=1), 3, related="POSSIBLE",
                related_ld="POSSIBLE"))
        self._cytopenia_events()
        if self.counts["D7"]["PLT"] < 20:
            self.medication(plan.day(7), plan.day(7), "Platelet concentrate", "BLOOD PRODUCT", "Thrombocytopenia",
                            route="INTRAVENOUS", dose=round(10 * weight), unit="mL", hour=17)
        after = self.d28 + timedelta(days=1)
        if plan.response == "CRi" and self.counts["D28"]["ANC"] < 1.0:
            self.medication(after, None, "Filgrastim", "GCSF", "Neutropenia after CAR-T", route="SUBCUTANEOUS",
                            dose=round(5 * weight), unit="ug", hour=12)
        if self.igg_d28 < 400:
            self.medication(after, after, "Human normal immunoglobulin (IVIG)", "IVIG", "Hypogammaglobulinaemia",
                            route="INTRAVENOUS", dose=0.4, unit="g/kg", hour=15)
            self.entry(self.at(after, 15, 30), "ae", self._ae(
                "OTHER", "Hypogammaglobulinaemia", self.d28, None, 2, special="HYPOGAM", related_ld="UNLIKELY"))

    def _crs_events(self) -> None:
        plan, rng, params = self.plan, self.rng, self.params
        episode = sorted(plan.crs)
        onset, last, peak = plan.day(episode[0]), plan.day(episode[-1]), max(plan.crs.values())
        weight = self.ld_weight
        per_kg = params["toci_mg_per_kg_under_30kg"] if weight < params["toci_weight_cutoff_kg"] \
            else params["toci_mg_per_kg_from_30kg"]
        self.medication(onset, last, "Paracetamol", "OTHER", "Fever (cytokine release syndrome)", route="ORAL",
                        dose=min(round(15 * weight), 1000), unit="mg", at_once=True, stop_hour=19)
        for day in self.toci_days:
            self.medication(plan.day(day), plan.day(day), "Tocilizumab", "CRS/ICANS THERAPY",
                            f"Cytokine release syndrome grade {plan.crs[day]}", route="INTRAVENOUS",
                            dose=math.floor(min(per_kg * weight, params["toci_max_mg"])), unit="mg", agent="TOCILIZUMAB",
                            hour=19)
        first_g3 = next((d for d in episode if plan.crs[d] >= 3), None)
        if first_g3 is not None:
            stop = min(first_g3 + rng.randint(2, 3), episode[-1])
            self.steroid_days = set(range(first_g3, stop + 1))
            self.medication(plan.day(first_g3), plan.day(stop), "Dexamethasone", "CRS/ICANS THERAPY",
                            "Cytokine release syndrome grade 3", route="INTRAVENOUS", dose=round(min(0.5 * weight, 10), 1),
                            unit="mg", agent="CORTICOSTEROID", hour=18)
        vaso = [d for d in episode if self.crs_days[d]["HYPOT"] == "VASO"]
        for agent, days in (("NOREPINEPHRINE", vaso), ("EPINEPHRINE", [d for d in vaso if self.crs_days[d]["NPRESS"] >= 2])):
            if days:
                self.medication(plan.day(days[0]), plan.day(days[-1]), agent.title(), "VASOPRESSOR",
                                "Hypotension (cytokine release syndrome)", route="INTRAVENOUS", dose=0.1,
                                unit="ug/kg/min", agent=agent, hour=15)
        onset_time = f"{rng.randint(12, 22):02d}:{rng.choice((0, 15, 30, 45)):02d}"
        if not plan.serious:
            self.entry(self.at(last + timedelta(days=1), 11, 0), "ae", self._ae(
                "CRS", "Cytokine release syndrome", onset, last, peak, special="CRS", start_time=onset_time))
            return
        # The run's one SAE: reported within hours of the investigator's awareness (transfer to intensive care
        # at grade 4), reviewed by the sponsor's safety officer, and followed up once it resolved.
        worst = plan.day(next(d for d in episode if plan.crs[d] == 4))
        aware = self.at(worst, 14, rng.randrange(30))
        serious = self._ae("CRS", "Cytokine release syndrome", onset, None, 4, special="CRS", start_time=onset_time)
        serious.update(
            AESLIFE="Y", AESHOSP="Y", AEAWDTC=self.stamp(aware), AEOUT="NOT_RECOVERED", SAERPTR="INVESTIGATOR",
            SAEFUNUM=0,
            SAENARR=(f"Fever from Day {episode[0]} after the first ARI-0001 fraction, treated with paracetamol. "
                     "CRS progressed with hypotension needing norepinephrine, then a second vasopressor and high-flow "
                     "oxygen: transferred to intensive care. Tocilizumab and dexamethasone given."),
            SAETEST="CRP and ferritin markedly raised, fibrinogen low; blood cultures negative.")
        self.entry(self.at(worst, 21, 30), "ae", serious, key="sae")
        madrid = ZoneInfo("Europe/Madrid")
        sponsor_aware = self.at(worst, 21, 50)
        self.entry(self.at(worst + timedelta(days=1), 9, 30), "sae_review", lambda: {
            "AEREF": str(self.saved["sae"][0].id),
            "SPAWDTC": sponsor_aware.astimezone(madrid).isoformat(timespec="minutes"), "AEEXPECT": "Y"},
            actor=self.safety_officer)
        self.change(self.at(last + timedelta(days=2), 11, 0), "sae", {
            "AEONGO": "N", "AEENDAT": last.isoformat(), "AEOUT": "RECOVERED", "SAEFUNUM": 1,
            "SAENARR": serious["SAENARR"] + f" Follow-up: vasopressors stopped, CRS resolved on Day {episode[-1]}."},
            "SAE follow-up report 1: the event resolved.")

    def _icans_events(self) -> None:
        plan, rng = self.plan, self.rng
        episode = sorted(plan.icans)
        onset, last, peak = plan.day(episode[0]), plan.day(episode[-1]), max(plan.icans.values())
        first_g2 = next((d for d in episode if plan.icans[d] >= 2), None)
        if first_g2 is not None and first_g2 not in self.steroid_days:
            self.medication(plan.day(first_g2), plan.day(min(first_g2 + rng.randint(2, 3), episode[-1])), "Dexamethasone",
                            "CRS/ICANS THERAPY", f"ICANS grade {plan.icans[first_g2]}", route="INTRAVENOUS",
                            dose=round(min(0.5 * self.ld_weight, 10), 1), unit="mg", agent="CORTICOSTEROID", hour=18)
        self.entry(self.at(last + timedelta(days=1), 12, 0), "ae", self._ae(
            "ICANS", "Immune effector cell-associated neurotoxicity syndrome", onset, last, peak, special="ICANS",
            treated=first_g2 is not None))

    def _cytopenia_events(self) -> None:
        """Neutropenia or thrombocytopenia reported as adverse events for some subjects, graded from the labs."""
        plan, rng = self.plan, self.rng
        later = [("D14", plan.day(14)), ("D21", plan.day(21)), ("D28", self.d28)]
        for count, term, recovered_at, grades in (
                ("ANC", "Neutrophil count decreased", 1.0, ((0.5, 4), (1.0, 3))),
                ("PLT", "Platelet count decreased", 75, ((25, 4), (50, 3)))):
            value = self.counts["D7"][count]
            grade = next((g for limit, g in grades if value < limit), None)
            if grade is None or rng.random() >= 0.35:
                continue
            end = next((day for visit, day in later if self.counts[visit][count] >= recovered_at), None)
            values = self._ae("OTHER", term, plan.day(7), end, grade, related="POSSIBLE", related_ld="POSSIBLE",
                              treated=False, special=None if end else "CYTOPENIA")
            self.entry(self.at(end or self.d28, 17, 0), "ae", values)

    # ---------------------------------------------------------------- the run's one relapse

    def relapse(self) -> None:
        plan, rng = self.plan, self.rng
        day = plan.day(plan.relapse_day)
        blasts = round(rng.uniform(20, 70), 1)
        self.entry(self.at(day + timedelta(days=1), 12, 0), "bca", self._bca("REL", day), event="REL")
        self.entry(self.at(day + timedelta(days=2), 16, 0), "relapse", {
            "RELDAT": day.isoformat(), "RELSITE": ["BM"], "RELBMBL": blasts, "RELCD19": "NEG", "RELTX": ["INO"]},
            event="REL")
        self.entry(self.at(day + timedelta(days=2), 16, 10), "resp", {
            "RSDAT": day.isoformat(), "BMDONE": "Y", "BMDAT": day.isoformat(), "BMBLAST": blasts, "BMMRDMETH": "MFC",
            "BMMRDLOD": 0.0001, "BMMRDCELLS": rng.randint(300_000, 1_000_000), "BMMRDUND": "N",
            "BMMRDVAL": round(blasts * rng.uniform(0.8, 1.1), 6), "PBBLAST": _YN[rng.random() < 0.5],
            "ANC": rng.randint(600, 2500), "PLT": rng.randint(30_000, 150_000), "TRANSF": "N", "CD19BLAST": "NEG",
            **self._csf(day), "RSORRES": "RELAPSE"}, event="REL")
        self.medication(day + timedelta(days=4), None, "Inotuzumab ozogamicin", "OTHER",
                        "CD19-negative relapse of B-ALL after ARI-0001", route="INTRAVENOUS", dose=0.5, unit="mg/m2",
                        hour=14)


def _months_before(day: date, months: int, rng: random.Random) -> date:
    """A date in the calendar month `months` months before `day` (a day of that month drawn from rng)."""
    total = day.year * 12 + day.month - 1 - months
    return date(total // 12, total % 12 + 1, rng.randint(1, 28))


def _year_month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


_ICE_ITEMS = {"ICE_ORI": 4, "ICE_NAME": 3, "ICE_CMD": 1, "ICE_WRITE": 1, "ICE_ATT": 1}
_CAPD_FREQUENCY = ("NEVER", "RARELY", "SOMETIMES", "OFTEN", "ALWAYS")


def _ice_answers(total: int, rng: random.Random) -> dict[str, int]:
    """ICE item scores adding up to `total` (points lost first in attention, writing and orientation)."""
    scores = dict(_ICE_ITEMS)
    for _ in range(10 - total):
        item = rng.choices([i for i in scores if scores[i] > 0],
                           weights=[{"ICE_ATT": 4, "ICE_WRITE": 4, "ICE_ORI": 3, "ICE_NAME": 2, "ICE_CMD": 1}[i]
                                    for i in scores if scores[i] > 0])[0]
        scores[item] -= 1
    return scores


def _capd_answers(total: int, rng: random.Random) -> dict[str, str]:
    """CAPD answers (items 1-4 reverse-scored) adding up to `total` points."""
    points = [0] * 8
    for _ in range(total):
        position = rng.choice([i for i in range(8) if points[i] < 4])
        points[position] += 1
    return {f"CAPD{i + 1}": _CAPD_FREQUENCY[4 - p if i < 4 else p] for i, p in enumerate(points)}
