"""What any value a client sends may hold, whatever the route: the rules of text, dates and integers.

The eCRF engine applies them to every item value, the API's argument parser (edc.api.parsing) to every
field of every request, and the FHIR token endpoint to its parameters and client assertions, so no value
that a database, a CSV file or an XML export cannot hold faithfully is ever stored. They live in the engine
because the engine imports nothing else of edc; the rest imports them from here.

- Text never holds a lone UTF-16 surrogate (JSON can spell one, "\\ud800", UTF-8 cannot store it) nor a
  C0 control character or DEL; multi-line text (free-text items, notes, reasons, query messages) may
  hold tab, CR and LF.
- Dates lie between EARLIEST_DATE and LATEST_DATE; a date-time's own (local) date too, so its UTC
  instant always exists.
- Integers fit in a signed 64-bit column.
"""

from __future__ import annotations

import re
from datetime import date, datetime

EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2100, 12, 31)
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MULTILINE_ALLOWED = "\t\n\r"

_SINGLE_LINE_REFUSED = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_MULTI_LINE_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why this text cannot be accepted (a message for the field's error), or None."""
    found = (_MULTI_LINE_REFUSED if multiline else _SINGLE_LINE_REFUSED).search(value)
    if found is None:
        return None
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        return surrogate_problem(char)
    if multiline:
        return f"must not contain the control character U+{ord(char):04X} (tab, CR and LF are allowed)"
    return f"must not contain the control character U+{ord(char):04X} (no line breaks or tabs here)"


def surrogate_problem(value: str) -> str | None:
    """The one rule of text that no context relaxes: no lone surrogate (structured values, JWT claims)."""
    found = _SURROGATE.search(value)
    return None if found is None else f"must not contain a lone UTF-16 surrogate (U+{ord(found.group()):04X})"


def date_problem(day: date) -> str | None:
    """Why this date (or a date-time's own date) is out of the accepted range, or None."""
    if isinstance(day, datetime):
        day = day.date()
    if EARLIEST_DATE <= day <= LATEST_DATE:
        return None
    return f"must lie between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}"


def integer_problem(number: int) -> str | None:
    """Why this integer cannot be stored (it does not fit in 64 bits), or None."""
    if INT64_MIN <= number <= INT64_MAX:
        return None
    return "is out of the 64-bit integer range"
