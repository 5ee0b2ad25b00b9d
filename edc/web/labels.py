"""The study's names for things in the user's language, for the templates: form titles, visit labels, code-list
labels (from the form definitions; English where a definition has no text in that language)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edc import runtime
from edc.extensions import db
from edc.web.i18n import language

if TYPE_CHECKING:
    from edc.ecrf import Study


def study() -> Study:
    return runtime.of(db.session).study


def in_language(labels: dict[str, str] | None, fallback: str = "") -> str:
    if not labels:
        return fallback
    return labels.get(language()) or labels.get("en") or next(iter(labels.values()), fallback)


def form_title(form_id: str) -> str:
    try:
        return in_language(study().form(form_id).title, form_id)
    except KeyError:
        return form_id


def event_label(event_key: str) -> str:
    """`SCR/1` -> its label; an instance of a repeatable event keeps its number (`Unscheduled visit 2`)."""
    event_id, _, instance = event_key.partition("/")
    try:
        event = study().event(event_id)
    except KeyError:
        return event_key
    label = in_language(event.label, event_id)
    return f"{label} {instance}" if event.repeatable and instance else label


def helpers() -> dict[str, Any]:
    """What the pages that name forms and visits pass to their templates."""
    return {"form_title": form_title, "event_label": event_label}
