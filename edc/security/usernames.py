"""Usernames: one normalisation for lookup, throttling and creation, and the characters a username may hold."""

from __future__ import annotations

import re
import unicodedata

# Lower-case ASCII letters and digits, then '.', '_' or '-': safe in URLs, log lines, CSV cells and file
# names, and free of look-alike characters. 2 to 64 characters, after normalisation.
PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
RULE = "Use 2-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit."
_ACCEPTABLE = re.compile(PATTERN)


def normalize(raw: str) -> str:
    """The one form of a typed username: NFKC, case-folded, without surrounding white space.

    NFKC maps full-width and compatibility forms (U+FF4D 'ｍ') to their plain letter; NFKC is applied again
    after case folding because folding can leave a string that is no longer in NFKC."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", raw).casefold())
    return folded.strip()


def is_acceptable(name: str) -> bool:
    """Whether a normalised name keeps to the username rules (every account's name does)."""
    return _ACCEPTABLE.fullmatch(name) is not None
