"""CEL expressions: compile once, find what they read, and bind values by the design's rules.

The CEL library has no type checker and reports only root names (`forms` for
`forms.apheresis.PRODUCT_ID`), so references are also read from the source text.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import cel

FORMS, ENTRIES, SUBJECT, PARAMS = "forms", "entries", "subject", "params"

# Subject facts an expression may read as `subject.<fact>`, with the item type that binds them.
SUBJECT_FACTS: dict[str, str] = {
    "site": "text",
    "sex": "text",
    "birth_year": "integer",
    "birth_month": "integer",
    "registration_date": "date",
    "planned_infusion": "date",
    "day0": "date",
    # The window of the scheduled visit the entry belongs to (absent for logs, repeating forms, event-driven
    # visits and before the visit's anchor is known): due date, first and last day of the window.
    "visit_due": "date",
    "visit_earliest": "date",
    "visit_latest": "date",
}
VISIT_FACTS = ("visit_due", "visit_earliest", "visit_latest")

# Identifiers CEL itself defines (type names appear among Program.variables()).
_CEL_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
                             "timestamp", "duration", "dyn"})
STANDARD_FUNCTIONS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string", "bytes", "bool",
    "timestamp", "duration", "dyn", "type", "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek",
    "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_ROOT = r"(?<![\w.])"


class ExpressionError(Exception):
    """An expression that does not compile or reads something it may not."""


def _earliest(value: Any) -> datetime | None:
    """Return the first instant a (partial) date can mean, as a CEL timestamp."""
    parts = _date_parts(value)
    if parts is None:
        return None
    year, month, day = parts
    return datetime(year, month or 1, day or 1, tzinfo=UTC)


def _latest(value: Any) -> datetime | None:
    """Return the last day a (partial) date can mean, at midnight, as a CEL timestamp."""
    parts = _date_parts(value)
    if parts is None:
        return None
    year, month, day = parts
    month = month or 12
    return datetime(year, month, day or calendar.monthrange(year, month)[1], tzinfo=UTC)


def _date_precision(value: Any) -> str | None:
    """Return "year", "month" or "day" for a (partial) date."""
    parts = _date_parts(value)
    if parts is None:
        return None
    return "day" if parts[2] else "month" if parts[1] else "year"


def _days_between(start: Any, end: Any) -> int | None:
    """Return whole days from `start` to `end` (timestamps or full dates)."""
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        start, end = _earliest(start), _earliest(end)
        if start is None or end is None:
            return None
    return (end.date() - start.date()).days


def _date_parts(value: Any) -> tuple[int, int | None, int | None] | None:
    # Functions called from CEL must not raise (the library prints the traceback); None makes the rule skip.
    if isinstance(value, datetime):
        return value.year, value.month, value.day
    if not isinstance(value, str):
        return None
    pieces = value.split("-")
    try:
        numbers = [int(piece) for piece in pieces]
        date(numbers[0], numbers[1] if len(numbers) > 1 else 1, numbers[2] if len(numbers) > 2 else 1)
    except (ValueError, IndexError):
        return None
    if len(numbers) > 3:
        return None
    numbers += [None] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return None
    return [float(v) for v in values]


def _sum_of(values: Any) -> float | None:
    """Sum of a list of numbers (0.0 for an empty list), as a double."""
    numbers = _numbers(values)
    return None if numbers is None else float(sum(numbers))


def _max_of(values: Any) -> float | None:
    """Largest of a list of numbers, as a double; an empty list makes the rule skip."""
    numbers = _numbers(values)
    return max(numbers) if numbers else None


def _hours_between(start: Any, end: Any) -> float | None:
    """Hours from timestamp `start` to timestamp `end`, as a double."""
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return None
    return (end - start).total_seconds() / 3600


def age_in_months(birth_year: int, birth_month: int, at: date) -> int:
    """Return age in completed months at `at`, counted from the 1st of the birth month."""
    return (at.year - birth_year) * 12 + (at.month - birth_month)


# Functions every expression may call; `age_months` is bound per subject at evaluation time.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "earliest": _earliest,
    "latest": _latest,
    "date_precision": _date_precision,
    "days_between": _days_between,
    "sum_of": _sum_of,
    "max_of": _max_of,
    "hours_between": _hours_between,
}
AGE_MONTHS = "age_months"
KNOWN_FUNCTIONS = STANDARD_FUNCTIONS | set(FUNCTIONS) | {AGE_MONTHS}


def age_months_function(subject: Mapping[str, Any]) -> Callable[[Any], int | None]:
    """Return the CEL function `age_months(timestamp)` for one subject."""
    birth_year, birth_month = subject.get("birth_year"), subject.get("birth_month")

    def age_months(at: Any) -> int | None:
        if not isinstance(at, datetime) or birth_year is None or birth_month is None:
            return None
        return age_in_months(birth_year, birth_month, at.date())

    return age_months


@dataclass(slots=True, eq=False)
class Expression:
    """A compiled CEL expression and everything it reads."""

    source: str
    program: Any
    names: tuple[str, ...]                      # own-entry items and groups
    form_refs: tuple[tuple[str, str], ...]      # (form id, item id) read as forms.<form>.<item>
    entry_refs: tuple[str, ...]                 # form ids read as entries.<form> (the subject's other entries)
    subject_facts: tuple[str, ...]
    params: tuple[str, ...]
    functions: tuple[str, ...]                  # named functions called
    constants: dict[str, Any] = field(default_factory=dict)  # params map and functions, bound once at load
    form_ref_items: dict[tuple[str, str], Any] = field(default_factory=dict)  # resolved ItemDef per form ref
    entry_ref_forms: dict[str, Any] = field(default_factory=dict)  # resolved FormDef (latest version) per entries ref

    @property
    def reads_subject(self) -> bool:
        """Whether this expression reads other forms or subject facts."""
        return bool(self.form_refs or self.entry_refs or self.subject_facts)


def compile_expression(source: Any) -> Expression:
    """Compile `source`, or raise ExpressionError naming the syntax problem or misuse of forms/subject/params."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(f"expression does not compile: {_first_line(exc)}") from None
    code = _without_strings(source)
    bound = set(_MACRO_VARIABLE.findall(code))
    roots = set(program.variables()) - bound - _CEL_TYPE_NAMES
    form_refs = _dotted(code, FORMS, 2) if FORMS in roots else ()
    entry_refs = tuple(ref[0] for ref in _dotted(code, ENTRIES, 1)) if ENTRIES in roots else ()
    subject_facts = tuple(ref[0] for ref in _dotted(code, SUBJECT, 1)) if SUBJECT in roots else ()
    params = tuple(ref[0] for ref in _dotted(code, PARAMS, 1)) if PARAMS in roots else ()
    functions = tuple(name for name in program.functions() if name[:1].isalpha())
    if AGE_MONTHS in functions:
        subject_facts = tuple(dict.fromkeys((*subject_facts, "birth_year", "birth_month")))
    names = tuple(sorted(roots - {FORMS, ENTRIES, SUBJECT, PARAMS}))
    return Expression(source, program, names, form_refs, entry_refs, subject_facts, params, functions)


def _dotted(code: str, root: str, depth: int) -> tuple[tuple[str, ...], ...]:
    """Return the distinct `root.a[.b]` paths in `code`; any other use of `root` is an error."""
    segment = r"\s*\.\s*([A-Za-z_]\w*)"
    path = re.compile(_ROOT + root + segment * depth)
    uses = len(re.findall(_ROOT + root + r"\b", code))
    found = path.findall(code)
    if len(found) != uses:
        shape = f"{root}.<form>.<item>" if depth == 2 else f"{root}.<form>" if root == ENTRIES else f"{root}.<name>"
        raise ExpressionError(f"read `{root}` only as {shape}")
    return tuple(dict.fromkeys((match,) if depth == 1 else match for match in found))


def _without_strings(source: str) -> str:
    """Blank out string literals so names inside quotes are not taken for references."""
    out, index, length = [], 0, len(source)
    while index < length:
        char = source[index]
        if char not in "'\"":
            out.append(char)
            index += 1
            continue
        raw = index > 0 and source[index - 1] in "rR"
        quote = source[index:index + 3] if source[index:index + 3] in ("'''", '"""') else char
        index += len(quote)
        while index < length and not source.startswith(quote, index):
            index += 2 if source[index] == "\\" and not raw else 1
        index += len(quote)
        out.append('""')
    return "".join(out)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: Exception) -> str:
    """Return a one-line description of a CEL evaluation error."""
    return _first_line(exc).split(". CEL does not coerce")[0]


def cel_date(value: date) -> datetime:
    """Return a date as a CEL timestamp: midnight UTC (CEL has no date type)."""
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def cel_constant(value: Any) -> Any:
    """Return a study parameter as a CEL value (dates become timestamps)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return cel_date(value)
    if isinstance(value, dict):
        return {str(key): cel_constant(item) for key, item in value.items()}
    if isinstance(value, list):
        return [cel_constant(item) for item in value]
    return value
