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
    encrypt_reason: str = ""     # why the item is (or, for free text, is not) encrypted: docs/trial.md
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
    noted_items: tuple[ItemDef, ...] = ()     # derived items whose derivation can say why it derived nothing
    rechecked_items: tuple[ItemDef, ...] = ()  # derived items re-derived on stored values (they read other entries)
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
    # The CTCAE baseline of a lab result (study.yaml lab_baseline): {form, date, before: {form, date}, fallback_event}
    lab_baseline: dict[str, Any] | None = None
    # Source data verification per form: "all" items, "none", or a tuple of critical top-level item ids.
    sdv_default: str = "all"
    sdv_forms: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    all_forms: dict[str, dict[str, FormDef]] = field(default_factory=dict)   # form id -> version -> form
    cross_form_dependencies: dict[str, set[str]] = field(default_factory=dict)
    subject_fact_dependencies: dict[str, set[str]] = field(default_factory=dict)
    # forms/reference/<name>.yaml -> parsed data (edc.ecrf.reference: LabRanges, Ctcae); not part of any form's hash
    reference: dict[str, Any] = field(default_factory=dict)
    # What the engine reads of the forms (study.yaml `safety:` and `fhir:`); None: the study has none
    safety: SafetyDef | None = None
    fhir: FhirDef | None = None
    # Encrypted items the exports carry (study.yaml `exports: encrypted_items`), form id -> item ids; default none
    exported_encrypted: dict[str, frozenset[str]] = field(default_factory=dict)

    def sdv_requirement(self, form_id: str) -> str | tuple[str, ...]:
        """What monitors verify on an entry of `form_id`: "all" items, "none", or the critical item ids."""
        return self.sdv_forms.get(form_id, self.sdv_default)

    def withheld_items(self, form_id: str) -> dict[str, str]:
        """Items of `form_id` that no export carries, with why: "identifying" (never leaves the site) or
        "encrypted" (free text the study's `exports: encrypted_items` does not release). Any version counts,
        so a column never comes and goes with the versions an export happens to contain."""
        released = self.exported_encrypted.get(form_id, frozenset())
        withheld: dict[str, str] = {}
        for form in self.all_forms.get(form_id, {}).values():
            for item in form.items.values():
                if item.identifying:
                    withheld[item.id] = "identifying"
                elif item.encrypt and item.id not in released:
                    withheld.setdefault(item.id, "encrypted")
        return withheld

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


# --- what the engine reads of this study's forms (study.yaml `safety:` and `fhir:`; edc.ecrf.mapping) ----------

MAX_GRADE_KEYS = ("crs", "icans")   # the subject summary's maximum daily grades (max_crs_grade, max_icans_grade)


@dataclass(slots=True)
class AdverseEventItems:
    """The adverse-event log: the items the safety clocks and the safety summary read."""

    form: str
    grade: str | None = None
    serious: str | None = None
    awareness: str | None = None
    causality: str | None = None
    fatal_or_life_threatening: tuple[str, ...] = ()


@dataclass(slots=True)
class ReviewItems:
    """The sponsor's review of one serious adverse event (SUSAR decision and clock)."""

    form: str
    adverse_event: str
    expected: str | None = None
    first_knowledge: str | None = None
    submitted: str | None = None


@dataclass(slots=True)
class GradedForm:
    """A dated grading form: its entry's grade is the first of `grades` that holds one."""

    form: str
    grades: tuple[str, ...]


@dataclass(slots=True)
class SafetyDef:
    """study.yaml `safety:`: which forms and items are the adverse events, their review and the daily grades."""

    yes: str = "Y"
    no: str = "N"
    adverse_events: AdverseEventItems | None = None
    review: ReviewItems | None = None
    max_grades: dict[str, GradedForm] = field(default_factory=dict)
    line: int = 0

    @property
    def summary_forms(self) -> tuple[str, ...]:
        """The forms whose entries move the safety summary."""
        forms = [self.adverse_events.form] if self.adverse_events else []
        return tuple(dict.fromkeys(forms + [graded.form for graded in self.max_grades.values()]))


@dataclass(slots=True, frozen=True)
class CodingDef:
    """A code to send: `system` is a URI, or (local) the name of one of the study's own code systems."""

    system: str
    code: str
    display: str | None = None
    local: bool = False


@dataclass(slots=True)
class QuantityDef:
    """A number sent as a Quantity: unit is its text, ucum its UCUM code (both default to the item's unit)."""

    item: str
    unit: str | None = None
    ucum: str | None = None
    text: str | None = None          # the words after the number in a dosage text
    not_recorded: str | None = None  # the dosage text when the item holds a missing-data code


@dataclass(slots=True)
class BelowLimitDef:
    """A result below the limit of detection: `flag` yes sends "<" limit × factor."""

    flag: str
    limit: str
    factor: float = 1


@dataclass(slots=True)
class ValueDef:
    """Observation.value[x] (or a component's): coded, boolean, a Quantity (unit/ucum) or an integer."""

    item: str
    codes: str | None = None         # the study's code system of the item's codes: valueCodeableConcept
    text: bool = False               # the CodeableConcept's text is the code's label
    boolean: bool = False            # valueBoolean: true when the item holds the yes code
    unit: str | None = None
    ucum: str | None = None
    below_limit: BelowLimitDef | None = None
    unknown: str | None = None       # the missing-data code sent when the observation is made without a value

    @property
    def quantity(self) -> bool:
        return self.unit is not None or self.ucum is not None or self.below_limit is not None


@dataclass(slots=True)
class ComponentDef:
    code: tuple[CodingDef, ...]
    value: ValueDef
    text: str | None = None


@dataclass(slots=True)
class CodedItemDef:
    item: str
    codes: str


@dataclass(slots=True)
class ObservationDef:
    """One Observation per entry of `form` (members: made first from the same entry, and referenced)."""

    key: str
    form: str
    category: str
    code: tuple[CodingDef, ...]
    value: ValueDef
    text: str | None = None
    date: tuple[str, ...] = ()
    done: str | None = None
    method: CodedItemDef | None = None
    components: tuple[ComponentDef, ...] = ()
    focus: str | None = None
    members: tuple[ObservationDef, ...] = ()


@dataclass(slots=True)
class ConditionDef:
    key: str
    code: tuple[CodingDef, ...]
    text: str
    form: str | None = None
    onset: str | None = None
    prior_relapses: str | None = None
    response_form: str | None = None
    response_item: str | None = None
    remission: tuple[str, ...] = ()
    relapse: tuple[str, ...] = ()
    relapse_forms: tuple[str, ...] = ()


@dataclass(slots=True)
class ProvisionDef:
    item: str
    text: str


@dataclass(slots=True)
class ConsentDef:
    form: str
    date: str | None = None
    version: str | None = None
    provisions: tuple[ProvisionDef, ...] = ()


@dataclass(slots=True)
class ProcedureDef:
    key: str
    form: str
    code: CodingDef
    text: str | None = None
    date: str | None = None
    complication: str | None = None
    complication_text: str | None = None


@dataclass(slots=True)
class DrugsDef:
    """Drugs given in the rows of a repeating group: one Medication per drug code, one administration per row."""

    key: str
    form: str
    group: str
    drug: str
    codes: str
    date: str
    concepts: dict[str, CodingDef] = field(default_factory=dict)
    dose: QuantityDef | None = None
    dose_per_m2: str | None = None
    body_surface_area: str | None = None
    route: CodingDef | None = None


@dataclass(slots=True)
class AdministrationDef:
    form: str
    date: str
    chain_of_identity: str | None = None
    number: str | None = None
    label: str | None = None
    given: str | None = None
    not_given_text: str | None = None
    dose: QuantityDef | None = None
    dose_per_kg: QuantityDef | None = None
    weight: QuantityDef | None = None


@dataclass(slots=True)
class ProductDef:
    key: str
    code: CodingDef
    text: str
    form: str | None = None
    batch: str | None = None
    chain_of_identity: str | None = None
    route: CodingDef | None = None
    administration: AdministrationDef | None = None


@dataclass(slots=True)
class ConceptItemDef:
    """A coded item sent as a concept (where one is given) and the study's own code."""

    item: str
    codes: str
    concepts: dict[str, CodingDef] = field(default_factory=dict)


@dataclass(slots=True)
class GradeDef:
    item: str
    codes: str
    scale: str | None = None
    codes_by_category: dict[str, str] = field(default_factory=dict)
    concepts: dict[str, CodingDef] = field(default_factory=dict)


@dataclass(slots=True)
class CriterionDef:
    item: str
    concept: CodingDef | None = None


@dataclass(slots=True)
class SuspectDef:
    item: str
    suspect: str        # "product", a drugs key or a procedures key


@dataclass(slots=True)
class AdverseEventDef:
    form: str
    term: str | None = None
    category: ConceptItemDef | None = None
    start: str | None = None
    awareness: str | None = None
    end: str | None = None
    ongoing: str | None = None
    grade: GradeDef | None = None
    seriousness_codes: str = "ae-seriousness-criterion"
    criteria: tuple[CriterionDef, ...] = ()
    causality_codes: str = "ae-relatedness"
    causality_concepts: dict[str, CodingDef] = field(default_factory=dict)
    suspects: tuple[SuspectDef, ...] = ()
    outcome: ConceptItemDef | None = None


@dataclass(slots=True)
class FhirDef:
    """study.yaml `fhir:`: which form and item feeds which element of each exported resource."""

    yes: str = "Y"
    no: str = "N"
    absent_reasons: dict[str, str] = field(default_factory=dict)   # missing-data code -> data-absent-reason
    condition: ConditionDef | None = None
    consent: ConsentDef | None = None
    procedures: tuple[ProcedureDef, ...] = ()
    drugs: tuple[DrugsDef, ...] = ()
    product: ProductDef | None = None
    observations: tuple[ObservationDef, ...] = ()
    adverse_event: AdverseEventDef | None = None
    line: int = 0
