"""Reference data bundled with the form definitions (forms/reference/*.yaml), and the MedDRA dictionary loader.

`forms/reference/` is not a form: each YAML file in it is one reference data set, named by its file
name (`lab_ranges.yaml` -> `lab_ranges`) and of the kind its `kind:` key declares:

- `kind: lab_ranges` — laboratory reference ranges per site laboratory, versioned by `effective_from`
  (a range set applies from its date until the next set's date), per age band in months
  (`from <= age < to`), per analyte `[low, high]` in the analyte's study unit (`null`: no limit);
- `kind: ctcae` — CTCAE term names, SOC names and grade texts 1-5 (no MedDRA codes), and for the terms
  a laboratory value grades, the thresholds per grade: `LLN`, `ULN`, `<k> x LLN|ULN|baseline`,
  `ULN|baseline + <k>` or an absolute value in the analyte's study unit (several alternatives in a list: any
  one suffices; `>=`/`<=` in front: inclusive), and those that replace them after an abnormal baseline.

`load_reference` parses and checks every file ("file:line: message" problems, like form files) and
returns name -> parsed data (`LabRanges`, `Ctcae`). A derivation registered with
`register_derivation(name, reference=...)` receives the data it names in `params["reference"]`.

MedDRA is licensed (trial.md §4.3): its codes are never in the repository. `load_meddra_file` checks a
licensed ASCII distribution file (llt.asc or mdhier.asc, `$`-separated) and installs it in the
deployment's `meddra_dir`; `meddra_lookup` searches the installed LLTs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .reading import IDENTIFIER, BadValue, FileReader, Problems, identifier, iso_date, number, text
from .source import YamlMap, YamlSyntaxError, read_yaml

REFERENCE_DIR = "reference"
LOW, NORMAL, HIGH = "LOW", "NORMAL", "HIGH"
SITE_CODE = re.compile(r"[A-Z]{2}[0-9]{2}")
GRADES = (1, 2, 3, 4, 5)

# The 26 MedDRA system organ classes as CTCAE v5.0 names them (the names only, no codes).
SOC_NAMES = frozenset({
    "Blood and lymphatic system disorders", "Cardiac disorders", "Congenital, familial and genetic disorders",
    "Ear and labyrinth disorders", "Endocrine disorders", "Eye disorders", "Gastrointestinal disorders",
    "General disorders and administration site conditions", "Hepatobiliary disorders", "Immune system disorders",
    "Infections and infestations", "Injury, poisoning and procedural complications", "Investigations",
    "Metabolism and nutrition disorders", "Musculoskeletal and connective tissue disorders",
    "Neoplasms benign, malignant and unspecified (incl cysts and polyps)", "Nervous system disorders",
    "Pregnancy, puerperium and perinatal conditions", "Psychiatric disorders", "Renal and urinary disorders",
    "Reproductive system and breast disorders", "Respiratory, thoracic and mediastinal disorders",
    "Skin and subcutaneous tissue disorders", "Social circumstances", "Surgical and medical procedures",
    "Vascular disorders",
})


# ================================================================ laboratory reference ranges


@dataclass(frozen=True, slots=True)
class Analyte:
    id: str
    label: str
    unit: str


@dataclass(frozen=True, slots=True)
class AgeBand:
    """Ages `from_months <= age < to_months` (no upper limit when to_months is None)."""

    from_months: int
    to_months: int | None
    ranges: Mapping[str, tuple[float | None, float | None]]
    line: int = 0

    def holds(self, age_months: int) -> bool:
        return self.from_months <= age_months and (self.to_months is None or age_months < self.to_months)

    @property
    def label(self) -> str:
        return f"{self.from_months}-<{self.to_months} months" if self.to_months is not None \
            else f">={self.from_months} months"


@dataclass(frozen=True, slots=True)
class RangeSet:
    """The ranges a laboratory uses from `effective_from` until the next set's date."""

    effective_from: date
    bands: tuple[AgeBand, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class Laboratory:
    id: str
    site: str
    name: str
    range_sets: tuple[RangeSet, ...]      # ascending effective_from

    def range_set_on(self, day: date) -> RangeSet | None:
        """The range set in force on `day`: the latest one whose effective_from is on or before it."""
        current = None
        for range_set in self.range_sets:
            if range_set.effective_from <= day:
                current = range_set
        return current


@dataclass(frozen=True, slots=True)
class RangeInForce:
    """One analyte's range for one sample: the limits and where they come from (for the audit trail)."""

    analyte: str
    low: float | None
    high: float | None
    laboratory: str
    effective_from: date
    band: AgeBand

    @property
    def reference(self) -> str:
        return f"{self.laboratory} {self.effective_from.isoformat()} {self.band.label}"


@dataclass(frozen=True, slots=True)
class LabRanges:
    """Reference ranges of every site laboratory (kind: lab_ranges)."""

    name: str
    sites: tuple[str, ...]
    analytes: Mapping[str, Analyte]
    laboratories: Mapping[str, Laboratory]    # by site code
    source: str = ""

    def range_set(self, site: str, age_months: int, day: date) -> tuple[Laboratory, RangeSet, AgeBand] | None:
        """The site laboratory's range set in force on `day` and its band for `age_months`, or None."""
        laboratory = self.laboratories.get(site)
        range_set = laboratory.range_set_on(day) if laboratory is not None else None
        if range_set is None:
            return None
        band = next((band for band in range_set.bands if band.holds(age_months)), None)
        return None if band is None else (laboratory, range_set, band)

    def lookup(self, site: str, age_months: int, day: date, analyte: str) -> RangeInForce | None:
        """The range of `analyte` in force at `site` on `day` for a subject aged `age_months`, or None."""
        found = self.range_set(site, age_months, day)
        if found is None or analyte not in found[2].ranges:
            return None
        laboratory, range_set, band = found
        low, high = band.ranges[analyte]
        return RangeInForce(analyte, low, high, laboratory.id, range_set.effective_from, band)


def range_flag(value: float, low: float | None, high: float | None) -> str:
    """LOW below the lower limit, HIGH above the upper limit, else NORMAL (a limit itself is normal);
    compared as the decimals written."""
    if low is not None and decimal_of(value) < decimal_of(low):
        return LOW
    if high is not None and decimal_of(value) > decimal_of(high):
        return HIGH
    return NORMAL


# ================================================================ CTCAE


def decimal_of(value: int | float | Decimal | str) -> Decimal:
    """A number as the decimal it was written as: 0.7 is 0.7, not 0.6999999999999999555910790149937.

    Values and limits are compared and multiplied as decimals, so that 1.05 is exactly 1.5 x 0.70 (a binary
    float gives 1.0499999999999998 and would grade the value one step too high)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))         # the shortest text that reads back as the same float: what was entered
    return Decimal(value)


BASELINE = "baseline"
# What decided a derived grade (the ctcae_lab_basis derivation's codes).
BASIS_CODES = {None: "ABSOLUTE", "LLN": "LLN", "ULN": "ULN", BASELINE: "BASELINE"}
NO_CRITERION = "NONE"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a threshold may be relative to: the range's lower and upper limits and the subject's baseline value
    (None: no range in force, or no baseline)."""

    low: Decimal | None = None
    high: Decimal | None = None
    baseline: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Threshold:
    """An absolute value (basis None), or a multiple of the lower/upper limit of normal or of the baseline
    (basis LLN/ULN/baseline), or an amount added to one of them (offset: "ULN + 2").

    A value beyond the threshold reaches its grade (CTCAE's ">3.0 x ULN", "<LLN"); `inclusive`: a value equal
    to it does too (CTCAE's "1.5 - 3.0 x baseline", "25% decrease from baseline")."""

    factor: Decimal
    basis: str | None = None
    offset: bool = False
    inclusive: bool = False

    def value(self, limits: Limits) -> Decimal | None:
        if self.basis is None:
            return self.factor
        limit = {"LLN": limits.low, "ULN": limits.high, BASELINE: limits.baseline}[self.basis]
        if limit is None:
            return None
        return limit + self.factor if self.offset else self.factor * limit

    def __str__(self) -> str:
        factor = format(self.factor.normalize(), "f")
        if self.basis is None:
            text = factor
        elif self.offset:
            text = f"{self.basis} + {factor}"
        else:
            text = self.basis if self.factor == 1 else f"{factor} x {self.basis}"
        return f"{text} (inclusive)" if self.inclusive else text


@dataclass(frozen=True, slots=True)
class Assessment:
    """A value's grade by one set of criteria: the grade (0: none reached), what decided it (the basis of the
    threshold reached, a BASIS_CODES key; None with grade 0), and the highest grade whose threshold could not be
    computed for want of a reference range (0: none), so the grade is only known when `undecided <= grade`."""

    grade: int
    basis: str | None
    undecided: int = 0

    @property
    def decided(self) -> bool:
        return self.undecided <= self.grade


@dataclass(frozen=True, slots=True)
class LabCriteria:
    """How a laboratory value grades a CTCAE term: grade g if the value is below (low) or above (high)
    any of grade g's thresholds; the grade is the highest such g, 0 when none applies.

    `abnormal_baseline`: the thresholds that replace `thresholds` when the subject's baseline value was itself
    abnormal (beyond the limit of normal on the term's side), as CTCAE writes for the transaminases, alkaline
    phosphatase, bilirubin and fibrinogen. Thresholds relative to the baseline inside `thresholds` are further
    alternatives (creatinine: "> 1.5 - 3.0 x baseline; > 1.5 - 3.0 x ULN", the higher grade stands); without a
    baseline they do not apply."""

    analyte: str
    direction: str                          # "low" or "high"
    unit: str
    thresholds: Mapping[int, tuple[Threshold, ...]]
    line: int = 0
    abnormal_baseline: Mapping[int, tuple[Threshold, ...]] | None = None

    def bases(self) -> set[str]:
        tables = [self.thresholds, *([self.abnormal_baseline] if self.abnormal_baseline else [])]
        return {t.basis for table in tables for alternatives in table.values() for t in alternatives
                if t.basis in ("LLN", "ULN")}

    def beyond(self, value: Decimal, limit: Decimal, inclusive: bool = False) -> bool:
        """Whether `value` lies beyond `limit` on this term's side (at it counts only when inclusive)."""
        if inclusive and value == limit:
            return True
        return value < limit if self.direction == "low" else value > limit

    def abnormal(self, value: Decimal, low: Decimal | None, high: Decimal | None) -> bool | None:
        """Whether a (baseline) value is outside the range on this term's side; None without that limit."""
        limit = low if self.direction == "low" else high
        return None if limit is None else self.beyond(value, limit)

    def assess(self, value: Decimal, limits: Limits, baseline_abnormal: bool = False) -> Assessment:
        """The grade of `value`: the highest grade one of whose thresholds it crosses."""
        table = self.abnormal_baseline if baseline_abnormal and self.abnormal_baseline else self.thresholds
        grade, basis, undecided = 0, None, 0
        for level, alternatives in table.items():
            for threshold in alternatives:
                limit = threshold.value(limits)
                if limit is None:
                    if threshold.basis != BASELINE:         # no baseline: that alternative does not apply
                        undecided = max(undecided, level)
                    continue
                if level > grade and self.beyond(value, limit, threshold.inclusive):
                    grade, basis = level, threshold.basis
        return Assessment(grade, BASIS_CODES[basis] if grade else None, undecided)

    # Kept for callers that grade with a range and no baseline.
    def grade(self, value: float, low: float | None, high: float | None) -> int | None:
        """The grade of `value` given the range's limits; None when a limit it needs is missing."""
        limits = Limits(None if low is None else decimal_of(low), None if high is None else decimal_of(high))
        found = self.assess(decimal_of(value), limits)
        return found.grade if found.decided else None


@dataclass(frozen=True, slots=True)
class CtcaeTerm:
    term: str
    soc: str
    grades: Mapping[int, str | None]        # None: the grade does not exist for this term ("-")
    specify: str | None = None
    definition: str | None = None
    note: str | None = None
    verify: bool = False
    labs: tuple[LabCriteria, ...] = ()      # one per analyte the term is graded on (corrected or ionised calcium)
    line: int = 0
    analyte: str | None = None              # a laboratory term whose grade is not derived: the analyte it concerns

    @property
    def name(self) -> str:
        return f"{self.term}: {self.specify}" if self.specify else self.term

    @property
    def lab(self) -> LabCriteria | None:
        """The term's first (usually only) laboratory criteria."""
        return self.labs[0] if self.labs else None

    def criteria(self, analyte: str | None = None) -> LabCriteria | None:
        """The criteria on `analyte` (None: the first)."""
        if analyte is None:
            return self.lab
        return next((criteria for criteria in self.labs if criteria.analyte == analyte), None)


@dataclass(frozen=True, slots=True)
class Ctcae:
    """CTCAE term names and grade texts (kind: ctcae)."""

    name: str
    version: str
    terms: Mapping[str, CtcaeTerm]            # by name ("<term>" or "<term>: <specify>")
    source: str = ""

    def lab_terms(self) -> dict[str, CtcaeTerm]:
        return {name: term for name, term in self.terms.items() if term.labs}


# ================================================================ loading and checking


def load_reference(root: Path, problems: Problems, display_root: Path | None = None) -> dict[str, Any]:
    """Parse and check every YAML file of `root/reference`; return name -> data (valid files only).

    Problems go to `problems` as "file:line: message" (paths shown as under `display_root`, default `root`).
    """
    directory = root / REFERENCE_DIR
    if not directory.is_dir():
        return {}
    parsed: dict[str, Any] = {}
    readers: dict[str, tuple[FileReader, Any]] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith((".", "_")) or path.suffix not in (".yaml", ".yml"):
            continue
        reader = FileReader(str((display_root or root) / REFERENCE_DIR / path.name), problems)
        name = path.stem
        if not IDENTIFIER.fullmatch(name):
            reader.error(1, f"reference data file names are identifiers (a letter, then letters, digits or _): {name!r}")
            continue
        if name in readers:
            reader.error(1, f"reference data {name!r} is defined twice (.yaml and .yml)")
            continue
        try:
            node = read_yaml(path)
        except YamlSyntaxError as exc:
            reader.error(exc.line, exc.message)
            readers[name] = (reader, None)
            continue
        readers[name] = (reader, node)
        before = len(problems.entries)
        data = _parse_file(reader, name, node)
        if data is not None and len(problems.entries) == before:
            parsed[name] = data
    for name in _check_across_files(parsed, problems, unreadable=set(readers) - set(parsed)):
        del parsed[name]                  # unusable: its problems are reported
    return parsed


def reference_file_names(root: Path) -> set[str]:
    """Names of the reference data files present (valid or not), to tell 'missing' from 'invalid'."""
    directory = root / REFERENCE_DIR
    if not directory.is_dir():
        return set()
    return {path.stem for path in directory.iterdir() if path.suffix in (".yaml", ".yml")}


_PARSERS: dict[str, Callable[[FileReader, str, YamlMap], Any]] = {}


def _parse_file(reader: FileReader, name: str, node: Any) -> Any:
    if node is None:
        reader.error(1, "the file is empty")
        return None
    if not isinstance(node, YamlMap):
        reader.error(getattr(node, "line", 1), "a reference data file must be a mapping")
        return None
    kind = node.get("kind")
    if kind not in _PARSERS:
        reader.error(node.key_line("kind"), f"reference data needs kind: {' or '.join(sorted(_PARSERS))}")
        return None
    return _PARSERS[kind](reader, name, node)


def _fields(reader: FileReader, node: Any, line: int, what: str, allowed: set[str], required: Iterable[str]):
    mapping = reader.mapping(node, line, what)
    return None if mapping is None else reader.fields(mapping, what, allowed, required)


def _site_code(value: Any) -> str:
    if not isinstance(value, str) or not SITE_CODE.fullmatch(value):
        raise BadValue(f"{value!r} is not a site code (two capital letters and two digits, e.g. ES01)")
    return value


def _ucum(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(char.isspace() for char in value):
        raise BadValue("must be a UCUM unit code such as 10*9/L, g/dL or mmol/L")
    return value


def _age_months(value: Any) -> tuple[int, int | None]:
    if (not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int
            or not (value[1] is None or type(value[1]) is int)):
        raise BadValue("must be [from, to] in whole months (from <= age < to; to: null for no upper limit)")
    if value[0] < 0 or (value[1] is not None and value[1] <= value[0]):
        raise BadValue(f"{value[0]}-<{value[1]} months is not an age band (0 <= from < to)")
    return value[0], value[1]


def _range(value: Any) -> tuple[float | None, float | None]:
    if not isinstance(value, list) or len(value) != 2:
        raise BadValue("must be [low, high] (null for a missing limit)")
    low, high = (None if bound is None else number(bound) for bound in value)
    if low is None and high is None:
        raise BadValue("needs a low or a high limit")
    if low is not None and high is not None and low >= high:
        raise BadValue(f"low {low} is not below high {high}")
    return (None if low is None else float(low)), (None if high is None else float(high))


LAB_RANGES_KEYS = {"kind", "title", "note", "sites", "analytes", "laboratories"}
ANALYTE_KEYS = {"label", "unit"}
LABORATORY_KEYS = {"id", "site", "name", "range_sets"}
RANGE_SET_KEYS = {"effective_from", "note", "bands"}
BAND_KEYS = {"age_months", "ranges"}


def _parse_lab_ranges(reader: FileReader, name: str, node: YamlMap) -> LabRanges | None:
    fields = reader.fields(node, "the lab ranges", LAB_RANGES_KEYS, ("kind", "sites", "analytes", "laboratories"))
    sites = fields.get("sites", _site_list, ())
    analytes = _analytes(reader, fields) if fields.has("analytes") else {}
    laboratories: dict[str, Laboratory] = {}
    lab_ids: dict[str, int] = {}
    entries = reader.sequence(node["laboratories"], fields.line("laboratories"), "laboratories") \
        if fields.has("laboratories") else None
    for index, entry in enumerate(entries or ()):
        lab_fields = _fields(reader, entry, entries.item_line(index), "a laboratory", LABORATORY_KEYS, LABORATORY_KEYS)
        if lab_fields is None:
            continue
        lab_id = lab_fields.get("id", identifier)
        site = lab_fields.get("site", _site_code)
        lab_name = lab_fields.get("name", text)
        if lab_id is not None:
            if lab_id in lab_ids:
                lab_fields.error("id", f"duplicate laboratory id {lab_id!r} (first at line {lab_ids[lab_id]})")
            lab_ids.setdefault(lab_id, lab_fields.line("id"))
        if site is not None and sites and site not in sites:
            lab_fields.error("site", f"unknown site {site!r}: add it to sites ({', '.join(sites)})")
        elif site is not None and site in laboratories:
            lab_fields.error("site", f"site {site} already has a laboratory ({laboratories[site].id}): "
                                     "a change of laboratory is a new range set of the site's laboratory")
        range_sets = _range_sets(reader, lab_fields, analytes) if lab_fields.has("range_sets") else ()
        if None not in (lab_id, site, lab_name) and site not in laboratories:
            laboratories[site] = Laboratory(lab_id, site, lab_name, range_sets)
    for site in sites:
        if site not in laboratories:
            reader.error(fields.line("sites"), f"site {site} has no laboratory")
    return LabRanges(name, tuple(sites), analytes, laboratories, reader.file)


def _site_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BadValue("must list the study's site codes")
    codes = tuple(_site_code(code) for code in value)
    if len(set(codes)) != len(codes):
        raise BadValue("repeats a site")
    return codes


def _analytes(reader: FileReader, fields) -> dict[str, Analyte]:
    node = reader.mapping(fields.node["analytes"], fields.line("analytes"), "analytes")
    analytes: dict[str, Analyte] = {}
    for key, line in (node.duplicate_keys if node is not None else ()):
        reader.error(line, f"duplicate analyte {key!r}")
    for analyte_id, spec in (node or {}).items():
        line = node.key_line(analyte_id)
        try:
            identifier(analyte_id)
        except BadValue as exc:
            reader.error(line, f"analyte: {exc}")
            continue
        spec_fields = _fields(reader, spec, line, f"analyte {analyte_id}", ANALYTE_KEYS, ANALYTE_KEYS)
        if spec_fields is None:
            continue
        label, unit = spec_fields.get("label", text), spec_fields.get("unit", _ucum)
        if label is not None and unit is not None:
            analytes[analyte_id] = Analyte(analyte_id, label, unit)
    return analytes


def _range_sets(reader: FileReader, lab_fields, analytes: Mapping[str, Analyte]) -> tuple[RangeSet, ...]:
    entries = reader.sequence(lab_fields.node["range_sets"], lab_fields.line("range_sets"), "range_sets")
    if entries is not None and not entries:
        lab_fields.error("range_sets", "a laboratory needs at least one range set")
    range_sets: list[RangeSet] = []
    for index, entry in enumerate(entries or ()):
        set_fields = _fields(reader, entry, entries.item_line(index), "a range set", RANGE_SET_KEYS,
                             ("effective_from", "bands"))
        if set_fields is None:
            continue
        effective = set_fields.get("effective_from", iso_date)
        if effective is not None and range_sets:
            previous = range_sets[-1]
            if effective == previous.effective_from:
                set_fields.error("effective_from", f"effective_from {effective} overlaps the range set at line "
                                                   f"{previous.line} (same date): one set is in force per day")
            elif effective < previous.effective_from:
                set_fields.error("effective_from", f"effective_from {effective} is before the previous range set's "
                                                   f"({previous.effective_from}, line {previous.line}): "
                                                   "list range sets in date order")
        bands = _bands(reader, set_fields, analytes) if set_fields.has("bands") else ()
        if effective is not None:
            range_sets.append(RangeSet(effective, bands, set_fields.line()))
    return tuple(range_sets)


def _bands(reader: FileReader, set_fields, analytes: Mapping[str, Analyte]) -> tuple[AgeBand, ...]:
    entries = reader.sequence(set_fields.node["bands"], set_fields.line("bands"), "bands")
    if entries is not None and not entries:
        set_fields.error("bands", "a range set needs at least one age band")
    bands: list[AgeBand] = []
    for index, entry in enumerate(entries or ()):
        band_fields = _fields(reader, entry, entries.item_line(index), "an age band", BAND_KEYS, BAND_KEYS)
        if band_fields is None:
            continue
        months = band_fields.get("age_months", _age_months)
        ranges = _ranges(reader, band_fields, analytes) if band_fields.has("ranges") else {}
        if months is None:
            continue
        if bands:
            previous = bands[-1]
            where = f"the band at line {previous.line} ({previous.label})"
            if previous.to_months is None or months[0] < previous.to_months:
                band_fields.error("age_months", f"age band {months[0]}-<{months[1]} months overlaps {where}: "
                                                "list bands from the youngest, each starting where the previous ends")
                continue
            if months[0] > previous.to_months:
                band_fields.error("age_months", f"ages {previous.to_months}-<{months[0]} months have no band "
                                                f"(after {where})")
        bands.append(AgeBand(months[0], months[1], ranges, band_fields.line()))
    return tuple(bands)


def _ranges(reader: FileReader, band_fields, analytes: Mapping[str, Analyte]) -> dict[str, tuple[float | None, float | None]]:
    node = reader.mapping(band_fields.node["ranges"], band_fields.line("ranges"), "ranges")
    if node is None:
        return {}
    for key, line in node.duplicate_keys:
        reader.error(line, f"duplicate range for {key!r}")
    ranges = {}
    for analyte, value in node.items():
        line = node.key_line(analyte)
        if analyte not in analytes:
            reader.error(line, f"unknown analyte {analyte!r} (analytes: {', '.join(analytes)})")
            continue
        try:
            ranges[analyte] = _range(value)
        except BadValue as exc:
            reader.error(line, f"{analyte}: {exc}")
    missing = [analyte for analyte in analytes if analyte not in node]
    if missing:
        reader.error(band_fields.line("ranges"), f"no range for {', '.join(missing)}: every band gives every analyte")
    return ranges


CTCAE_KEYS = {"kind", "version", "title", "source", "note", "terms"}
TERM_KEYS = {"term", "specify", "soc", "definition", "note", "verify", "grades", "lab", "analyte"}
LAB_KEYS = {"analyte", "direction", "unit", "grades", "abnormal_baseline"}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_THRESHOLD = re.compile(rf"(>=|<=)?\s*(?:({_NUMBER})\s*x\s*)?(LLN|ULN|baseline)(?:\s*\+\s*({_NUMBER}))?")
THRESHOLD_FORMS = ("a number, LLN, ULN, '<k> x LLN|ULN|baseline' or 'ULN|baseline + <k>', "
                   "with '>=' (direction high) or '<=' (low) in front when a value at the threshold reaches the grade")


def _parse_ctcae(reader: FileReader, name: str, node: YamlMap) -> Ctcae | None:
    fields = reader.fields(node, "the CTCAE data", CTCAE_KEYS, ("kind", "version", "terms"))
    version = fields.get("version", _version_text)
    entries = reader.sequence(node["terms"], fields.line("terms"), "terms") if fields.has("terms") else None
    terms: dict[str, CtcaeTerm] = {}
    for index, entry in enumerate(entries or ()):
        term = _term(reader, entry, entries.item_line(index))
        if term is None:
            continue
        if term.name in terms:
            reader.error(term.line, f"duplicate term {term.name!r} (first at line {terms[term.name].line})")
            continue
        terms[term.name] = term
    return Ctcae(name, version or "", terms, reader.file)


def _version_text(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]+\.[0-9]+", value):
        raise BadValue('must be a quoted version such as "5.0"')
    return value


def _term(reader: FileReader, entry: Any, line: int) -> CtcaeTerm | None:
    fields = _fields(reader, entry, line, "a CTCAE term", TERM_KEYS, ("term", "soc", "grades"))
    if fields is None:
        return None
    term, soc = fields.get("term", text), fields.get("soc", text)
    if soc is not None and soc not in SOC_NAMES:
        fields.error("soc", f"unknown system organ class {soc!r}")
        soc = None
    grades = _grades(reader, fields) if fields.has("grades") else None
    labs = _term_labs(reader, fields) if fields.has("lab") else ()
    verify = fields.get("verify", _true, False)
    if term is None or soc is None or grades is None or labs is None:
        return None
    return CtcaeTerm(term, soc, grades, specify=fields.get("specify", text), definition=fields.get("definition", text),
                     note=fields.get("note", text), verify=verify, labs=labs, line=fields.line(),
                     analyte=fields.get("analyte", identifier))


def _term_labs(reader: FileReader, fields) -> tuple[LabCriteria, ...] | None:
    """`lab:` one criteria mapping, or a list of them on different analytes (corrected or ionised calcium)."""
    node, line = fields.node["lab"], fields.line("lab")
    entries = [(node, line)] if not isinstance(node, list) else [(entry, node.item_line(index))
                                                                 for index, entry in enumerate(node)]
    if not entries:
        reader.error(line, "lab: give the criteria, or leave lab out")
        return None
    labs = [_lab_criteria(reader, entry, entry_line) for entry, entry_line in entries]
    if None in labs:
        return None
    analytes = [criteria.analyte for criteria in labs]
    if len(set(analytes)) != len(analytes):
        reader.error(line, "lab: one criteria per analyte")
        return None
    return tuple(labs)


def _true(value: Any) -> bool:
    if value is not True:
        raise BadValue("write verify: true, or leave it out")
    return value


def _grades(reader: FileReader, fields) -> dict[int, str | None] | None:
    node = reader.mapping(fields.node["grades"], fields.line("grades"), "grades")
    if node is None:
        return None
    grades: dict[int, str | None] = {}
    ok = True
    for grade in node:
        if grade not in GRADES:
            reader.error(node.key_line(grade), f"grades are 1 to 5, not {grade!r}")
            ok = False
    for grade in GRADES:
        if grade not in node:
            reader.error(node.line, f"grade {grade} is missing (write {grade}: null when CTCAE has no such grade)")
            ok = False
            continue
        value = node[grade]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            reader.error(node.key_line(grade), f"grade {grade}: write the CTCAE text, or null when there is none")
            ok = False
        grades[grade] = value
    if ok and all(value is None for value in grades.values()):
        reader.error(node.line, "a term needs at least one grade text")
        ok = False
    return grades if ok else None


def _threshold(value: Any, direction: str | None) -> Threshold:
    if isinstance(value, bool):
        raise BadValue(f"a threshold is {THRESHOLD_FORMS}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise BadValue("a threshold must not be negative")
        return Threshold(decimal_of(value))
    match = _THRESHOLD.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise BadValue(f"{value!r} is not a threshold ({THRESHOLD_FORMS})")
    mark, multiple, basis, added = match.groups()
    if multiple and added:
        raise BadValue(f"{value!r}: a threshold multiplies a limit or adds to it, not both")
    if mark and mark != {"high": ">=", "low": "<="}.get(direction or ""):
        raise BadValue(f"{value!r}: write '>=' for a direction high term, '<=' for a direction low one")
    factor = Decimal(multiple or added or "1")
    if factor <= 0:
        raise BadValue("a multiple of a limit or the baseline must be positive")
    return Threshold(factor, basis, offset=added is not None, inclusive=mark is not None)


def _lab_criteria(reader: FileReader, node: Any, line: int) -> LabCriteria | None:
    lab_fields = _fields(reader, node, line, "lab", LAB_KEYS, ("analyte", "direction", "unit", "grades"))
    if lab_fields is None:
        return None
    analyte = lab_fields.get("analyte", identifier)
    direction = lab_fields.get("direction", _direction)
    unit = lab_fields.get("unit", _ucum)
    thresholds = _threshold_table(reader, lab_fields, "grades", direction)
    abnormal = _threshold_table(reader, lab_fields, "abnormal_baseline", direction) \
        if lab_fields.has("abnormal_baseline") else {}
    if thresholds is None or abnormal is None or None in (analyte, direction, unit):
        return None
    return LabCriteria(analyte, direction, unit, thresholds, lab_fields.line(), abnormal_baseline=abnormal or None)


def _threshold_table(reader: FileReader, lab_fields, key: str, direction: str | None,
                     ) -> dict[int, tuple[Threshold, ...]] | None:
    """grades 1-4 -> their thresholds (a list gives alternatives: any one suffices), ascending grades."""
    node = reader.mapping(lab_fields.node.get(key), lab_fields.line(key), f"lab {key}") if lab_fields.has(key) else None
    thresholds: dict[int, tuple[Threshold, ...]] = {}
    ok = node is not None
    for grade, value in (node or {}).items():
        line = node.key_line(grade)
        if grade not in (1, 2, 3, 4):
            reader.error(line, f"laboratory grades are 1 to 4, not {grade!r}")
            ok = False
            continue
        try:
            thresholds[grade] = tuple(_threshold(item, direction) for item in (value if isinstance(value, list) else [value]))
        except BadValue as exc:
            reader.error(line, f"grade {grade}: {exc}")
            ok = False
            continue
        if not thresholds[grade]:
            reader.error(line, f"grade {grade} needs a threshold")
            ok = False
    if ok and node is not None and not thresholds:
        reader.error(node.line, f"lab {key} need at least one grade")
        ok = False
    if ok and direction is not None:
        ok = _monotone(reader, node, direction, thresholds)
    return dict(sorted(thresholds.items())) if ok else None


def _direction(value: Any) -> str:
    if value not in ("low", "high"):
        raise BadValue("must be low (grades below thresholds) or high (grades above thresholds)")
    return value


def _monotone(reader: FileReader, node: YamlMap, direction: str, thresholds: Mapping[int, tuple[Threshold, ...]]) -> bool:
    """A higher grade needs a more extreme value: compare the thresholds of the same basis."""
    ok = True
    ordered = sorted(thresholds.items())
    for (lower_grade, lower), (grade, higher) in zip(ordered, ordered[1:]):
        for a in lower:
            for b in higher:
                if (a.basis, a.offset) != (b.basis, b.offset):
                    continue
                wrong = b.factor >= a.factor if direction == "low" else b.factor <= a.factor
                if wrong:
                    reader.error(node.key_line(grade), f"grade {grade} threshold {b} is not "
                                 f"{'below' if direction == 'low' else 'above'} grade {lower_grade}'s {a}")
                    ok = False
    return ok


_PARSERS.update({"lab_ranges": _parse_lab_ranges, "ctcae": _parse_ctcae})


def _check_across_files(parsed: Mapping[str, Any], problems: Problems, unreadable: set[str]) -> list[str]:
    """CTCAE laboratory criteria must name analytes of the lab ranges, in their unit, with the limits they use.
    Return the names of the data sets that fail (nothing is compared while some file is itself invalid)."""
    lab_ranges = [data for data in parsed.values() if isinstance(data, LabRanges)]
    failed = []
    for name, data in parsed.items():
        if not isinstance(data, Ctcae) or unreadable:
            continue
        reader = FileReader(data.source, problems)
        for term in data.lab_terms().values():
            for criteria in term.labs:
                found = [problem for ranges in lab_ranges for problem in _criteria_problems(term, criteria, ranges)]
                if not lab_ranges:
                    found = [f"term {term.name!r}: no lab_ranges reference data defines analyte {criteria.analyte!r}"]
                for problem in found:
                    reader.error(criteria.line, problem)
                if found and name not in failed:
                    failed.append(name)
    return failed


def _criteria_problems(term: CtcaeTerm, criteria: LabCriteria, ranges: LabRanges) -> list[str]:
    analyte = ranges.analytes.get(criteria.analyte)
    if analyte is None:
        return [f"term {term.name!r}: unknown analyte {criteria.analyte!r} (not in {ranges.name})"]
    if analyte.unit != criteria.unit:
        return [f"term {term.name!r}: unit {criteria.unit} differs from {ranges.name}'s {analyte.unit} for "
                f"{analyte.id}: write the thresholds in {analyte.unit}"]
    problems = []
    for basis in sorted(criteria.bases()):
        position = 0 if basis == "LLN" else 1
        for laboratory in ranges.laboratories.values():
            for range_set in laboratory.range_sets:
                for band in range_set.bands:
                    limits = band.ranges.get(analyte.id)
                    if limits is not None and limits[position] is None:
                        problems.append(f"term {term.name!r} grades on the {basis} of {analyte.id}, but {laboratory.id} "
                                        f"({range_set.effective_from}, {band.label}) gives no "
                                        f"{'low' if position == 0 else 'high'} limit (line {band.line})")
    return problems


# ================================================================ derived items that use reference data

ItemCheck = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], list[str]]
_ITEM_CHECKS: dict[str, ItemCheck] = {}


def register_item_check(derivation: str) -> Callable[[ItemCheck], ItemCheck]:
    """Register `check(params, input_items, references) -> [problem]` for derived items using `derivation`:
    the loader reports its problems at the item's line (unknown analyte, unit differing from the data...)."""
    def register(fn: ItemCheck) -> ItemCheck:
        _ITEM_CHECKS[derivation] = fn
        return fn
    return register


def item_problems(derivation: str, params: Mapping[str, Any], input_items: Mapping[str, Any],
                  references: Mapping[str, Any]) -> list[str]:
    """Problems of one derived item's params against the reference data its derivation reads."""
    check = _ITEM_CHECKS.get(derivation)
    return check(params, input_items, references) if check is not None else []


# ================================================================ MedDRA (licensed: never in the repository)

# MedDRA ASCII distribution formats: `$`-separated fields, each line ending with `$`.
MEDDRA_FILES: dict[str, tuple[str, ...]] = {
    "llt.asc": ("llt_code", "llt_name", "pt_code", "llt_whoart_code", "llt_harts_code", "llt_costart_sym",
                "llt_icd9_code", "llt_icd9cm_code", "llt_icd10_code", "llt_currency", "llt_jart_code"),
    "mdhier.asc": ("pt_code", "hlt_code", "hlgt_code", "soc_code", "pt_name", "hlt_name", "hlgt_name", "soc_name",
                   "soc_abbrev", "null_field", "pt_soc_code", "primary_soc_fg"),
}
_MEDDRA_CODES = {"llt.asc": ("llt_code", "pt_code"), "mdhier.asc": ("pt_code", "hlt_code", "hlgt_code", "soc_code", "pt_soc_code")}
_MEDDRA_NAMES = {"llt.asc": ("llt_name",), "mdhier.asc": ("pt_name", "hlt_name", "hlgt_name", "soc_name")}
_MEDDRA_FLAGS = {"llt.asc": ("llt_currency",), "mdhier.asc": ("primary_soc_fg",)}
MANIFEST = "manifest.json"


class MeddraError(ValueError):
    """A MedDRA file that is not a valid ASCII distribution file, or no dictionary installed."""


def meddra_kind(path: Path) -> str:
    """`llt.asc` or `mdhier.asc`, from the file name (any case)."""
    kind = path.name.lower()
    if kind not in MEDDRA_FILES:
        raise MeddraError(f"{path.name}: expected one of {', '.join(MEDDRA_FILES)} from the MedDRA ASCII distribution")
    return kind


def parse_meddra_file(path: Path) -> tuple[str, list[dict[str, str]]]:
    """Check every line of a MedDRA ASCII file; return (kind, records). Raise MeddraError naming the first bad lines."""
    kind = meddra_kind(path)
    columns = MEDDRA_FILES[kind]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MeddraError(f"{path}: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")            # older MedDRA releases are Latin-1
    records, errors, seen = [], [], set()
    key = columns[0]
    for number_, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("$")
        if fields and fields[-1] == "":
            fields = fields[:-1]                   # each record ends with a separator
        if len(fields) != len(columns):
            errors.append(f"line {number_}: {len(fields)} fields, expected {len(columns)} ({', '.join(columns)})")
        else:
            record = dict(zip(columns, fields))
            bad = [name for name in _MEDDRA_CODES[kind] if not re.fullmatch(r"[0-9]{8}", record[name])]
            bad += [name for name in _MEDDRA_NAMES[kind] if not record[name].strip()]
            bad += [name for name in _MEDDRA_FLAGS[kind] if record[name] not in ("Y", "N")]
            if bad:
                errors.append(f"line {number_}: bad {', '.join(bad)} (codes are 8 digits, names non-empty, flags Y/N)")
            elif kind == "llt.asc" and record[key] in seen:
                errors.append(f"line {number_}: duplicate {key} {record[key]}")
            else:
                seen.add(record[key])
                records.append(record)
        if len(errors) >= 10:
            break
    if errors:
        raise MeddraError(f"{path.name} is not a valid MedDRA {kind} file: " + "; ".join(errors))
    if not records:
        raise MeddraError(f"{path.name} holds no records")
    if kind == "llt.asc" and not any(record["llt_code"] == record["pt_code"] for record in records):
        raise MeddraError(f"{path.name}: no LLT is its own PT, so this is not a complete llt.asc")
    return kind, records


def load_meddra_file(path: Path, meddra_dir: Path, version: str | None = None) -> dict[str, Any]:
    """Check `path` and install it in `meddra_dir` (atomically; replaces the previous file); return its manifest entry."""
    kind, records = parse_meddra_file(path)
    meddra_dir.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes()
    handle, temporary = tempfile.mkstemp(dir=meddra_dir, prefix=f".{kind}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, meddra_dir / kind)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    manifest_path = meddra_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    entry = {"records": len(records), "sha256": hashlib.sha256(data).hexdigest(), "version": version,
             "loaded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    manifest[kind] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"file": kind, **entry}


def meddra_lookup(meddra_dir: Path, term: str, limit: int = 20) -> list[dict[str, Any]]:
    """LLTs whose name contains `term` (case-insensitive; exact matches first), with their PT and primary SOC
    when mdhier.asc is installed too. Raise MeddraError when no llt.asc is installed."""
    llt_path = meddra_dir / "llt.asc"
    if not llt_path.is_file():
        raise MeddraError(f"no MedDRA dictionary in {meddra_dir}: load the licensed llt.asc with `flask edc meddra load`")
    _, llts = parse_meddra_file(llt_path)
    hierarchy: dict[str, dict[str, str]] = {}
    if (meddra_dir / "mdhier.asc").is_file():
        for record in parse_meddra_file(meddra_dir / "mdhier.asc")[1]:
            if record["primary_soc_fg"] == "Y":
                hierarchy[record["pt_code"]] = record
    wanted = term.strip().casefold()
    if not wanted:
        return []
    found = [record for record in llts if wanted in record["llt_name"].casefold()]
    found.sort(key=lambda record: (record["llt_name"].casefold() != wanted, record["llt_currency"] != "Y",
                                   record["llt_name"].casefold()))
    results = []
    for record in found[:limit]:
        pt = hierarchy.get(record["pt_code"], {})
        results.append({"llt_code": record["llt_code"], "llt_name": record["llt_name"], "pt_code": record["pt_code"],
                        "current": record["llt_currency"] == "Y", "pt_name": pt.get("pt_name"),
                        "soc_name": pt.get("soc_name"), "soc_code": pt.get("soc_code")})
    return results


__all__ = [
    "BASIS_CODES", "NO_CRITERION", "AgeBand", "Analyte", "Assessment", "Ctcae", "CtcaeTerm", "LabCriteria", "LabRanges",
    "Laboratory", "Limits", "MeddraError", "RangeInForce", "RangeSet", "Threshold", "decimal_of", "item_problems", "load_meddra_file", "load_reference", "meddra_lookup",
    "parse_meddra_file", "range_flag", "reference_file_names", "register_item_check",
]
