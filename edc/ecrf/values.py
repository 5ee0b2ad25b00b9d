"""Item value types: parse client JSON, normalise for storage, bind for CEL, and sample for static checks."""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from .definitions import ItemDef
from .expressions import cel_date
from .inputs import EARLIEST_DATE, LATEST_DATE, date_problem, text_problem

MISSING = object()   # an unanswered, hidden or coded value: rules reading it are skipped
INT64 = 2 ** 63      # CEL ints are 64-bit; larger Python ints would silently become doubles

_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEAR_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
_YEAR = re.compile(r"[0-9]{4}")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})")
PARTIAL_FORMS = {"year": ("YYYY", "YYYY-MM", "YYYY-MM-DD"), "year-month": ("YYYY-MM", "YYYY-MM-DD")}


class InvalidValue(Exception):
    """A client value the item does not accept; the message is the problem's detail."""


# ---------------------------------------------------------------- parsing client values


def parse_value(item: ItemDef, raw: Any, today: date) -> tuple[Any, Any]:
    """Return (CEL value, stored JSON value) for a client value, or raise InvalidValue."""
    return _PARSERS[item.type](item, raw, today)


def _parse_text(item: ItemDef, raw: Any, today: date) -> tuple[str, str]:
    text = _string(raw, item.text_limit)
    if item.pattern_re is not None and item.pattern_re.fullmatch(text) is None:
        raise InvalidValue(f"does not match the expected format {item.pattern}")
    return text, text


def _string(raw: Any, limit: int) -> str:
    if not isinstance(raw, str):
        raise InvalidValue("must be a string")
    if len(raw) > limit:
        raise InvalidValue(f"is longer than {limit} characters")
    problem = text_problem(raw, multiline=True)  # free text and notes may run over lines
    if problem:
        raise InvalidValue(problem)
    return raw


def _parse_integer(item: ItemDef, raw: Any, today: date) -> tuple[int, int]:
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        raw = int(raw)
    if type(raw) is not int:
        raise InvalidValue("must be an integer")
    if not -INT64 <= raw < INT64:
        raise InvalidValue("is out of the integer range")
    check_hard_range(item, raw)
    return raw, raw


def _parse_decimal(item: ItemDef, raw: Any, today: date) -> tuple[float, float]:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidValue("must be a number")
    number = float(raw) if abs(raw) < 1e300 else math.inf
    if not math.isfinite(number):
        raise InvalidValue("must be a finite number")
    if item.precision is not None:
        number = round(number, item.precision)
    check_hard_range(item, number)
    return number, number


def _parse_date(item: ItemDef, raw: Any, today: date) -> tuple[Any, str]:
    if not isinstance(raw, str):
        raise InvalidValue("must be a date string YYYY-MM-DD")
    if item.partial is None:
        if not _FULL_DATE.fullmatch(raw):
            raise InvalidValue("must be a full date YYYY-MM-DD")
        day = _calendar_date(raw)
        _check_date_bounds(item, day, day, today)
        return cel_date(day), raw
    if _FULL_DATE.fullmatch(raw):
        first = last = _calendar_date(raw)
    elif _YEAR_MONTH.fullmatch(raw):
        first, last = _month_bounds(raw)
    elif _YEAR.fullmatch(raw) and item.partial == "year":
        first, last = _calendar_date(raw + "-01-01"), _calendar_date(raw + "-12-31")
    else:
        raise InvalidValue("must be a date " + " or ".join(PARTIAL_FORMS[item.partial]))
    _check_date_bounds(item, first, last, today)
    return raw, raw


def _calendar_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidValue("is not a valid calendar date") from None


def _month_bounds(text: str) -> tuple[date, date]:
    first = _calendar_date(text + "-01")
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _check_date_bounds(item: ItemDef, first: date, last: date, today: date) -> None:
    # A partial date is accepted when some day it can mean fits the bounds.
    if last < EARLIEST_DATE or first > LATEST_DATE:  # the study-wide range of every date item
        raise InvalidValue(f"must lie between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}")
    if item.not_future and first > today:
        raise InvalidValue("must not be in the future")
    if item.min is not None and last < item.min:
        raise InvalidValue(f"must not be before {item.min.isoformat()}")
    if item.max is not None and first > item.max:
        raise InvalidValue(f"must not be after {item.max.isoformat()}")


def _parse_datetime(item: ItemDef, raw: Any, today: date) -> tuple[datetime, str]:
    if not isinstance(raw, str) or not _DATETIME.fullmatch(raw):
        raise InvalidValue("must be a date-time with a UTC offset, e.g. 2026-11-20T14:30:00+01:00")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidValue("is not a valid date-time") from None
    problem = date_problem(moment)  # its own date, so that its UTC instant exists
    if problem:
        raise InvalidValue(problem)
    if item.not_future and moment.date() > today:
        raise InvalidValue("must not be in the future")
    return moment, moment.isoformat()


def _parse_boolean(item: ItemDef, raw: Any, today: date) -> tuple[bool, bool]:
    if not isinstance(raw, bool):
        raise InvalidValue("must be true or false")
    return raw, raw


def _parse_choice(item: ItemDef, raw: Any, today: date) -> tuple[str, str]:
    if not isinstance(raw, str):
        raise InvalidValue("must be a code (a string)")
    if raw not in item.code_list:
        raise InvalidValue(f"{_shorten(raw)!r} is not one of the codes " + ", ".join(item.code_list))
    return raw, raw


def _parse_multichoice(item: ItemDef, raw: Any, today: date) -> tuple[list[str], list[str]]:
    if not isinstance(raw, list) or not all(isinstance(code, str) for code in raw):
        raise InvalidValue("must be a list of codes (strings)")
    unknown = [code for code in raw if code not in item.code_list]
    if unknown:
        raise InvalidValue(f"{_shorten(unknown[0])!r} is not one of the codes " + ", ".join(item.code_list))
    if len(set(raw)) != len(raw):
        raise InvalidValue("must not repeat a code")
    codes = [code for code in item.code_list if code in raw]  # code-list order: one stored form per answer
    return codes, list(codes)


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"


_PARSERS: dict[str, Callable[[ItemDef, Any, date], tuple[Any, Any]]] = {
    "text": _parse_text,
    "integer": _parse_integer,
    "decimal": _parse_decimal,
    "date": _parse_date,
    "datetime": _parse_datetime,
    "boolean": _parse_boolean,
    "choice": _parse_choice,
    "multichoice": _parse_multichoice,
}


def check_hard_range(item: ItemDef, number: float) -> None:
    """Raise InvalidValue when a number is outside the item's hard min/max."""
    if item.min is not None and number < item.min:
        raise InvalidValue(f"must be at least {_number(item.min)}{_unit(item)}")
    if item.max is not None and number > item.max:
        raise InvalidValue(f"must be at most {_number(item.max)}{_unit(item)}")


def soft_range_message(item: ItemDef, number: float) -> str | None:
    """Return the warning for a number outside the soft range, or None."""
    low = item.soft_min is not None and number < item.soft_min
    high = item.soft_max is not None and number > item.soft_max
    if not (low or high):
        return None
    if low:
        bound = f"below the expected minimum {_number(item.soft_min)}"
    else:
        bound = f"above the expected maximum {_number(item.soft_max)}"
    return f"{item.label['en']}: {_number(number)}{_unit(item)} is {bound}{_unit(item)}; please confirm"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unit(item: ItemDef) -> str:
    return f" {item.unit_display or item.unit}" if item.unit else ""


def parse_missing_code(raw: dict, allowed: tuple[str, ...], limit: int) -> dict[str, str]:
    """Return the stored form of {"missing": code, "note": ...}, or raise InvalidValue."""
    if set(raw) - {"missing", "note"}:
        raise InvalidValue('a missing-data code is {"missing": code, "note": optional text}')
    code, note = raw.get("missing"), raw.get("note")
    if not isinstance(code, str) or code not in allowed:
        choices = ", ".join(allowed) or "none"
        raise InvalidValue(f"missing-data code must be one of: {choices}")
    stored = {"missing": code}
    if note is not None and note != "":
        stored["note"] = _string(note, limit)
    return stored


def is_unanswered(raw: Any) -> bool:
    """Whether a client value means "no answer" (null, empty string, empty list)."""
    return raw is None or raw == "" or raw == []


# ---------------------------------------------------------------- computed results


def coerce_result(item: ItemDef, value: Any) -> tuple[Any, Any]:
    """Return (CEL value, stored value) for a calculated or derived result; raise TypeError when mistyped."""
    kind = item.value_type
    if kind == "integer" and type(value) is int:
        return value, value
    if kind == "decimal" and type(value) in (int, float) and math.isfinite(value):
        number = round(float(value), item.precision) if item.precision is not None else float(value)
        return number, number
    if kind == "boolean" and type(value) is bool:
        return value, value
    if kind == "text" and isinstance(value, str):
        return value, value
    if kind == "choice" and isinstance(value, str) and value in item.code_list:
        return value, value
    if kind == "date" and isinstance(value, date):
        day = value.date() if isinstance(value, datetime) else value
        return cel_date(day), day.isoformat()
    if kind == "datetime" and isinstance(value, datetime) and value.tzinfo is not None:
        return value, value.isoformat()
    raise TypeError(f"{item.id}: {value!r} is not a {kind} value")


# ---------------------------------------------------------------- stored values back to CEL


def from_stored(item: ItemDef, stored: Any) -> Any:
    """Return the CEL value of a stored value, or MISSING (coded, absent or unreadable)."""
    if stored is None or isinstance(stored, dict):
        return MISSING
    kind = item.value_kind
    try:
        if kind == "date":
            if item.partial is not None and not item.computed:
                return stored if isinstance(stored, str) else MISSING
            return cel_date(date.fromisoformat(stored))
        if kind == "datetime":
            return datetime.fromisoformat(stored)
        if kind == "decimal":
            return float(stored) if type(stored) in (int, float) else MISSING
        if kind == "integer":
            return stored if type(stored) is int else MISSING
        if kind == "boolean":
            return stored if isinstance(stored, bool) else MISSING
        if kind == "multichoice":
            return list(stored) if isinstance(stored, list) else MISSING
        return stored if isinstance(stored, str) else MISSING
    except (TypeError, ValueError):
        return MISSING


def natural(item: ItemDef, cel_value: Any) -> Any:
    """Return a CEL value as the Python value derivations receive (full dates as `date`)."""
    if item.value_kind == "date" and isinstance(cel_value, datetime):
        return cel_value.date()
    return cel_value


# ---------------------------------------------------------------- typed samples for static checks


def samples(item: ItemDef) -> dict[str, Any]:
    """Return typical, minimum and maximum CEL values of an item, for evaluating expressions statically."""
    kind = item.value_kind
    if kind in ("integer", "decimal"):
        return _number_samples(item, float if kind == "decimal" else int)
    if kind == "date":
        if item.partial is not None and not item.computed:
            shortest = "2026" if item.partial == "year" else "2026-01"
            return {"typical": "2026-06-15", "minimum": shortest, "maximum": "2026-12-31"}
        low = item.min or date(2000, 1, 1)
        high = item.max or date(2030, 12, 31)
        typical = min(max(date(2026, 6, 15), low), high)
        return {"typical": cel_date(typical), "minimum": cel_date(low), "maximum": cel_date(high)}
    if kind == "datetime":
        return {"typical": datetime(2026, 6, 15, 14, 30, tzinfo=UTC),
                "minimum": datetime(2000, 1, 1, tzinfo=UTC),
                "maximum": datetime(2030, 12, 31, 23, 59, tzinfo=UTC)}
    if kind == "boolean":
        return {"typical": True, "minimum": False, "maximum": True}
    if kind == "choice":
        codes = list(item.code_list or {"X": {}})
        return {"typical": codes[len(codes) // 2], "minimum": codes[0], "maximum": codes[-1]}
    if kind == "multichoice":
        codes = list(item.code_list or {"X": {}})
        return {"typical": codes[:1], "minimum": codes[-1:], "maximum": codes}
    return {"typical": "text", "minimum": "a", "maximum": "x" * 20}


def _number_samples(item: ItemDef, cast: type) -> dict[str, Any]:
    low = next((bound for bound in (item.min, item.soft_min) if bound is not None), 0)
    high = next((bound for bound in (item.max, item.soft_max) if bound is not None), low + 100)
    middle = (low + high) / 2
    return {"typical": cast(round(middle) if cast is int else middle), "minimum": cast(low), "maximum": cast(high)}
