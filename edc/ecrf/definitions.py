"""The loaded, checked and compiled study definition: study, events, forms, items, checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .expressions import Expression

Labels = dict[str, str]  # language code -> text; "en" always present

CAPTURED_TYPES = ("text", "integer", "decimal", "date", "datetime", "boolean", "choice", "multichoice")
COMPUTED_TYPES = ("calculated", "derived")
ITEM_TYPES = CAPTURED_TYPES + COMPUTED_TYPES + ("group",)
NUMERIC_TYPES = ("integer", "decimal")
ANCHORS = ("registration", "planned_infusion", "day0")


class DefinitionError(Exception):
    """Invalid form definitions; `messages` are "file:line: message" strings."""

    def __init__(self, messages: list[str]):
        super().__init__("invalid form definitions:\n" + "\n".join(messages))
        self.messages = messages


@dataclass(slots=True, eq=False)
class ItemDef:
    """One item of a form (also the items inside a repeating group)."""

    id: str
    type: str
    label: Labels
    help: Labels = field(default_factory=dict)
    required: bool = False
    min: Any = None
    max: Any = None
    soft_min: Any = None
    soft_max: Any = None
    pattern: str | None = None
    max_length: int | None = None
    unit: str | None = None
    unit_display: str | None = None
    precision: int | None = None
    code_list: dict[str, Labels] | None = None
    code_list_name: str | None = None
    show_if: str | None = None
    expression: str | None = None
    derivation: str | None = None
    inputs: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    value_type: str | None = None
    encrypt: bool = False
    identifying: bool = False
    partial: str | None = None
    not_future: bool = False
    missing_codes: tuple[str, ...] = ()
    group: str | None = None
    line: int = 0
    show_if_program: Expression | None = None
    expression_program: Expression | None = None
    pattern_re: re.Pattern | None = None
    text_limit: int = 0          # max_length, or the study's default for text values

    @property
    def computed(self) -> bool:
        """Whether the server computes this item (calculated or derived)."""
        return self.type in COMPUTED_TYPES

    @property
    def value_kind(self) -> str:
        """The type of the item's values: its own type, or value_type for computed items."""
        return self.value_type if self.computed else self.type


@dataclass(slots=True, eq=False)
class GroupDef:
    """A repeating group of items inside a form (e.g. the medications given for one AE)."""

    id: str
    label: Labels
    items: tuple[str, ...]
    help: Labels = field(default_factory=dict)
    required: bool = False
    max_rows: int = 0
    show_if: str | None = None
    missing_codes: tuple[str, ...] = ()
    line: int = 0
    show_if_program: Expression | None = None
    row_plan: tuple[ItemDef, ...] = ()   # row items with show_if or computed values, in dependency order


@dataclass(slots=True, eq=False)
class SectionDef:
    """A titled part of a form; layout only."""

    id: str
    title: Labels
    items: tuple[str, ...]          # top-level item and group ids, in order
    line: int = 0


@dataclass(slots=True, eq=False)
class CheckDef:
    """A rule that must hold: `error` rejects the save, `warning` opens an automatic query."""

    id: str
    expression: str
    message: Labels
    severity: str
    items: tuple[str, ...]
    critical: bool = False
    scope: str = "form"            # "form" or "subject" (reads other forms or subject facts)
    group: str | None = None       # a row check of this repeating group
    line: int = 0
    program: Expression | None = None


@dataclass(slots=True, eq=False)
class FormDef:
    """One version of one form."""

    id: str
    version: str
    title: Labels
    repeating: bool
    items: dict[str, ItemDef]
    groups: dict[str, GroupDef]
    sections: list[SectionDef]
    checks: list[CheckDef]
    content_hash: str
    source: str
    description: Labels = field(default_factory=dict)
    missing_codes: tuple[str, ...] = ()
    released: bool = False
    study_id: str = ""
    canonical_url: str = ""
    top_level: tuple[str, ...] = ()          # top-level item and group ids in display order
    plan: tuple[ItemDef | GroupDef, ...] = ()  # show_if, computed items and groups in dependency order
    soft_items: tuple[ItemDef, ...] = ()
    missing_code_labels: dict[str, Labels] = field(default_factory=dict)
    text_max_length: int = 4000               # the study's limit for text without max_length, and for notes

    @property
    def encrypted_items(self) -> frozenset[str]:
        """Ids of the items stored encrypted (identifying or encrypt)."""
        return frozenset(item_id for item_id, item in self.items.items() if item.encrypt)


@dataclass(slots=True, eq=False)
class EventDef:
    """A visit of the schedule; `day` and the window count days from `anchor`."""

    id: str
    label: Labels
    anchor: str | None
    day: int | None
    window_before: int
    window_after: int
    forms: list[str]
    repeatable: bool = False
    optional: bool = False         # event-driven or optional: never overdue
    line: int = 0


@dataclass(slots=True, eq=False)
class Study:
    """The whole loaded definition set."""

    id: str
    title: Labels
    parameters: dict[str, Any]
    settings: dict[str, Any]
    missing_codes: dict[str, str]
    missing_code_labels: dict[str, Labels]
    languages: tuple[str, ...]
    events: list[EventDef]
    subject_logs: list[str]
    repeating_forms: dict[str, dict[str, Any]]
    form_roles: dict[str, set[str]]
    anchors: dict[str, dict[str, Any]]   # planned_infusion / day0 -> {form, item, event} whose date sets it
    code_lists: dict[str, dict[str, Labels]]
    canonical_url: str
    source: str
    exclusive_forms: set[str] = field(default_factory=set)   # entered only by their form_roles, not site staff
    # Source data verification per form: "all" items, "none", or a tuple of critical top-level item ids.
    sdv_default: str = "all"
    sdv_forms: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    all_forms: dict[str, dict[str, FormDef]] = field(default_factory=dict)   # form id -> version -> form
    cross_form_dependencies: dict[str, set[str]] = field(default_factory=dict)
    subject_fact_dependencies: dict[str, set[str]] = field(default_factory=dict)
    # forms/reference/<name>.yaml -> parsed data (edc.ecrf.reference: LabRanges, Ctcae); not part of any form's hash
    reference: dict[str, Any] = field(default_factory=dict)

    def sdv_requirement(self, form_id: str) -> str | tuple[str, ...]:
        """What monitors verify on an entry of `form_id`: "all" items, "none", or the critical item ids."""
        return self.sdv_forms.get(form_id, self.sdv_default)

    def event(self, event_id: str) -> EventDef:
        """Return the event `event_id`; KeyError when unknown."""
        for event in self.events:
            if event.id == event_id:
                return event
        raise KeyError(event_id)

    def forms_at(self, event_id: str) -> list[str]:
        """Return the form ids scheduled at `event_id`; KeyError when the event is unknown."""
        return list(self.event(event_id).forms)

    def versions(self, form_id: str) -> list[str]:
        """Return the versions of `form_id`, oldest first; KeyError when unknown."""
        return list(self.all_forms[form_id])

    def form(self, form_id: str, version: str | None = None) -> FormDef:
        """Return one version of a form (the latest when `version` is None); KeyError when unknown."""
        versions = self.all_forms[form_id]
        if version is None:
            return versions[next(reversed(versions))]
        return versions[str(version)]

    @property
    def form_ids(self) -> list[str]:
        """Return every form id."""
        return list(self.all_forms)

    def content_hashes(self) -> dict[tuple[str, str], str]:
        """Return (form id, version) -> content hash for every form version."""
        return {(form.id, form.version): form.content_hash
                for versions in self.all_forms.values() for form in versions.values()}
