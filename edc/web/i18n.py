"""The language of the pages: the form labels come from the form definitions in each language; the page's own
words come from the catalogue in edc/web/messages/*.yaml (English text -> es, it, ar). Arabic pages are
right to left. A missing translation shows the English text, never an error."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from flask import g, request

LANGUAGES = {"en": "English", "es": "Español", "it": "Italiano", "ar": "العربية"}
RTL_LANGUAGES = frozenset({"ar"})
LANGUAGE_COOKIE = "edc_lang"
MESSAGES_DIR = Path(__file__).parent / "messages"


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """Every page text with its translations, from all message files (one per area of the application)."""
    merged: dict[str, dict[str, str]] = {}
    for path in sorted(MESSAGES_DIR.glob("*.yaml")):
        for english, translations in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            if english in merged:
                raise ValueError(f"{path.name}: {english!r} is translated in another message file too")
            merged[english] = translations
    return merged


def choose_language() -> None:
    """The user's choice (cookie), else the browser's preference, else English."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    g.lang = chosen if chosen in LANGUAGES else (request.accept_languages.best_match(list(LANGUAGES)) or "en")


def language() -> str:
    return g.get("lang", "en")


def translate(english: str, **values: object) -> str:
    """The page text in the user's language; `values` fill its {placeholders}."""
    text = catalogue().get(english, {}).get(language()) or english
    return text.format(**values) if values else text
