"""One subject's casebook as FHIR R4 resources (built with the fhir.resources R4B models, validation on).

Pure functions: they read the Subject row (with its site), the subject's entries with their opened values
and the study's form definitions, and touch no database. The resources are described in docs/fhir.md; which
form and item feeds which element, with which codes, comes from study.yaml `fhir:` (edc.ecrf.definitions.FhirDef,
docs/forms.md §2.2): this module names no item of the trial.

Entries are `edc.models.Entry` rows or `edc.exports.source.EntryRecord`s: the mapper reads only the
attributes both have (`EntryLike`).

Only pseudonymised content leaves: the study number, sex, birth year and month, dates as collected. Items
flagged `identifying`, and encrypted items that study.yaml `exports: encrypted_items` does not release (the
adverse events' verbatim terms among them), are never read (`_Values` hides them). Resource ids are uuid5 of one fixed namespace
and the source record ids, so exporting the same data twice gives the same resources.

R4 wire format: only elements that R4 (4.0.1) and R4B (4.3.0) share are filled in (for example
ResearchSubject.individual and AdverseEvent.event, not their R5 names; no R4B-only element such as
Bundle.issues); tests/exports/test_fhir.py checks every resource against the official R4 JSON schema.

What each resource was built from: the builder records, with every resource, the records it read (its
source entry, the other entries whose values or mere presence change it, the subject row). An
incremental export (Bulk Data `_since`, edc.exports.fhir_ndjson) keeps a resource when one of those
changed after the cut-off; `dated_subject_resources` gives each resource that latest change.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from fhir.resources.R4B.adverseevent import AdverseEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from fhir.resources.R4B.resource import Resource

from edc.ecrf import FormDef, Study
from edc.ecrf.definitions import (
    AdministrationDef,
    AdverseEventDef,
    CodingDef,
    ComponentDef,
    DrugsDef,
    FhirDef,
    ObservationDef,
    ProcedureDef,
    ProductDef,
    QuantityDef,
    ValueDef,
)
from edc.ecrf.mapping import PRODUCT_SUSPECT
from edc.models.subjects import Subject

# Every resource type the mapper makes (the Bulk Data `_type` values we can honour), in the order it makes them.
RESOURCE_TYPES = ("Organization", "ResearchStudy", "Patient", "Consent", "ResearchSubject", "Condition", "Procedure",
                  "Medication", "MedicationAdministration", "Observation", "AdverseEvent", "Provenance")

# Never change: every exported resource id derives from it.
ID_NAMESPACE = uuid.UUID("5d0c6a63-2f6e-4c41-9d7c-3b1f0e8a4c27")

UCUM = "http://unitsofmeasure.org"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_ABSENT_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition"
AE_PROFILE = f"{AE_BACKPORT}/AdverseEvent-clinical-research"

SUBJECT_STATUS = {"screening": "screening", "enrolled": "on-study", "screen_failed": "ineligible",
                  "withdrawn": "withdrawn", "completed": "off-study", "deceased": "off-study"}
GENDER = {"F": "female", "M": "male"}
DEFAULT_AE_TEXT = "Adverse event"


def resource_id(kind: str, *source: object) -> str:
    """The id of the `kind` resource made from these source record ids: the same on every export."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join([kind, *map(str, source)])))


def ref(resource: Resource) -> dict[str, str]:
    return {"reference": f"{resource.get_resource_type()}/{resource.id}"}


def to_json(resource: Resource) -> dict[str, Any]:
    """R4 JSON of a resource (no empty elements)."""
    return resource.model_dump(mode="json")


def _missing(value: Any) -> str | None:
    return value.get("missing") if isinstance(value, dict) and set(value) == {"missing"} else None


def _present(value: Any) -> bool:
    return value is not None and value != "" and _missing(value) is None


def _filled(value: Any) -> bool:
    """A value or a missing-data code."""
    return value is not None and value != ""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # SQLite gives naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _instant(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds")


class EntryLike(Protocol):
    """What the mapper reads of an entry: an edc.models.Entry row or an edc.exports.source.EntryRecord."""

    id: uuid.UUID
    event_key: str
    form_id: str
    form_version: str
    version: int
    status: str
    created_at: datetime
    updated_at: datetime | None


class DatedResource(NamedTuple):
    """A resource, the latest change among the records it was built from, and whether it is study-wide."""

    resource: Resource
    changed_at: datetime | None  # None: built from no record of the subject (its site's Organization, the study)
    shared: bool  # the same resource (same id) comes with every subject that has it: write it once


# Inputs of a resource besides entries: the subject row itself, or everything the subject has.
SUBJECT_ROW = "subject row"
WHOLE_CASEBOOK = "whole casebook"


class _Values:
    """An entry's opened values; withheld items (identifying, or encrypted and not released by study.yaml
    `exports: encrypted_items`) read as absent, whatever they hold."""

    def __init__(self, form: FormDef, values: dict[str, Any], withheld: Collection[str]) -> None:
        self.form = form
        self._values = values
        self._withheld = withheld

    def __getitem__(self, item_id: str) -> Any:
        if item_id in self._withheld:
            return None
        return self._values.get(item_id)

    def rows(self, group: str) -> list[_Values]:
        return [_Values(self.form, row, self._withheld) for row in (self._values.get(group) or []) if isinstance(row, dict)]

    def label(self, item_id: str, code: str | None = None) -> str | None:
        item = self.form.items.get(item_id)
        code = self[item_id] if code is None else code
        if item is None or not item.code_list or not isinstance(code, str) or code not in item.code_list:
            return None
        labels = item.code_list[code]
        return labels.get("en") or next(iter(labels.values()), None)


@dataclass
class _Source:
    entry: EntryLike
    values: _Values
    made: list[Resource] = field(default_factory=list)


class _Builder:
    """Builds one subject's resources in a fixed order, remembering which entry each came from."""

    def __init__(self, study: Study, subject: Subject, entries: Iterable[tuple[EntryLike, dict[str, Any]]]) -> None:
        self.study = study
        self.map = study.fhir or FhirDef()  # which form and item feeds what (study.yaml fhir:); none: the subject only
        self.subject = subject
        self.base = study.canonical_url.rstrip("/") + "/fhir"
        self.resources: list[Resource] = []
        self.sources: list[_Source] = []
        self.subject_made: list[Resource] = []
        self.inputs: dict[int, list[_Source | str]] = {}  # id(resource) -> what it was built from
        self.shared: set[int] = set()
        ordered = sorted(entries, key=lambda pair: (pair[0].created_at, str(pair[0].id)))
        self.by_form: dict[str, list[_Source]] = {}
        withheld_by_form: dict[str, dict[str, str]] = {}
        for entry, values in ordered:
            if entry.form_id not in withheld_by_form:
                withheld_by_form[entry.form_id] = study.withheld_items(entry.form_id)
            withheld = withheld_by_form[entry.form_id]
            source = _Source(entry, _Values(study.form(entry.form_id, entry.form_version), values, withheld))
            self.sources.append(source)
            self.by_form.setdefault(entry.form_id, []).append(source)

    # ------------------------------------------------------------------ helpers

    def system(self, kind: str, name: str) -> str:
        return f"{self.base}/{kind}/{name}"

    def code(self, name: str, code: str, display: str | None = None) -> dict[str, Any]:
        coding = {"system": self.system("CodeSystem", name), "code": str(code)}
        if display:
            coding["display"] = display
        return coding

    def add(self, resource: Resource, source: _Source | None, reads: Iterable[_Source | str] = (),
            shared: bool = False) -> Resource:
        """Keep a resource made from `source` (None: from the subject), which also `reads` other inputs."""
        self.resources.append(resource)
        (source.made if source else self.subject_made).append(resource)
        self.inputs[id(resource)] = ([source] if source else []) + list(reads)
        if shared:
            self.shared.add(id(resource))
        return resource

    def forms(self, *form_ids: str) -> list[_Source]:
        return [source for form_id in form_ids for source in self.by_form.get(form_id, [])]

    def changed_at(self, resource: Resource) -> datetime | None:
        """The latest change among the inputs of a resource (None when it has none)."""
        times = [self._input_time(i) for i in self.inputs[id(resource)]]
        return max(times, default=None)

    def _input_time(self, read: _Source | str) -> datetime:
        if isinstance(read, _Source):
            return _utc(read.entry.updated_at or read.entry.created_at)
        subject_time = _utc(self.subject.updated_at or self.subject.created_at)
        if read == WHOLE_CASEBOOK:
            return max([subject_time, *(self._input_time(s) for s in self.sources)])
        return subject_time

    def absent(self, missing_code: str) -> dict[str, Any]:
        return {"coding": [{"system": DATA_ABSENT, "code": self.absent_reason(missing_code)},
                           self.code("missing-data", missing_code)],
                "text": (self.study.missing_code_labels.get(missing_code) or {}).get("en", missing_code)}

    def absent_reason(self, missing_code: str) -> str:
        """The data-absent-reason code of a study missing-data code (fhir.data_absent_reasons; else unknown)."""
        return self.map.absent_reasons.get(missing_code, "unknown")

    def coding(self, spec: CodingDef) -> dict[str, Any]:
        """A code of the study definition: of a terminology, or of one of the study's own code systems."""
        coding = {"system": self.system("CodeSystem", spec.system) if spec.local else spec.system, "code": spec.code}
        if spec.display:
            coding["display"] = spec.display
        return coding

    def concept(self, codings: Iterable[CodingDef], text: str | None) -> dict[str, Any]:
        concept: dict[str, Any] = {"coding": [self.coding(c) for c in codings]}
        if text:
            concept["text"] = text
        return concept

    def first(self, form_id: str | None) -> _Source | None:
        found = self.by_form.get(form_id) if form_id else None
        return found[0] if found else None

    def quantity(self, spec: QuantityDef | ValueDef, values: _Values, value: Any) -> dict[str, Any]:
        """A UCUM Quantity; the code is the mapping's ucum or the item's unit, the unit text the mapping's or the code."""
        ucum = spec.ucum or self.unit_of(values, spec.item)
        return {"value": value, "unit": spec.unit or ucum, "system": UCUM, "code": ucum}

    @staticmethod
    def unit_of(values: _Values, item_id: str) -> str | None:
        item = values.form.items.get(item_id)
        return item.unit if item is not None else None

    # ------------------------------------------------------------------ the subject

    def build(self) -> list[Resource]:
        subject, study, mapping = self.subject, self.study, self.map
        site = subject.site
        self.organization = self.add(Organization(
            id=resource_id("Organization", site.id),
            identifier=[{"system": self.system("sid", "site"), "value": site.code}],
            active=site.status == "active", name=site.name, address=[{"country": site.country}]), None, shared=True)
        condition = mapping.condition
        self.study_resource = self.add(ResearchStudy(
            id=resource_id("ResearchStudy", study.id),
            identifier=[{"system": self.system("sid", "study"), "value": study.id}],
            title=study.title.get("en") or study.id, status="active",
            **({"condition": [self.concept(condition.code, condition.text)]} if condition else {})), None, shared=True)
        self.patient = self.add(Patient(
            id=patient_id_for(subject.id),
            meta={"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                "code": "PSEUDED", "display": "pseudonymized"}]},
            identifier=[{"system": self.system("sid", "subject"), "value": subject.number}],
            gender=GENDER.get(subject.sex, "unknown"),
            birthDate=f"{subject.birth_year:04d}-{subject.birth_month:02d}",
            managingOrganization=ref(self.organization),
            **({"deceasedBoolean": True} if subject.status == "deceased" else {})), None, reads=[SUBJECT_ROW])
        self.consent = self._consent()
        self.add(ResearchSubject(
            id=resource_id("ResearchSubject", subject.id),
            identifier=[{"system": self.system("sid", "subject"), "value": subject.number}],
            status=SUBJECT_STATUS[subject.status], period={"start": subject.registration_date.isoformat()},
            study=ref(self.study_resource), individual=ref(self.patient), consent=ref(self.consent)), None,
            reads=[SUBJECT_ROW])
        self.research_subject = self.resources[-1]
        self.condition = self._condition()
        self.procedures: dict[str, Procedure] = {}
        for spec in mapping.procedures:
            made = self._procedure(spec)
            if made is not None:
                self.procedures[spec.key] = made
        self.drugs: dict[str, dict[str, Medication]] = {}
        for spec in mapping.drugs:
            self._drugs(spec)
        self.product = self._product()
        self._administrations()
        for spec in mapping.observations:
            for source in self.by_form.get(spec.form, []):
                self._observe(spec, source)
        if mapping.adverse_event is not None:
            for source in self.by_form.get(mapping.adverse_event.form, []):
                self._adverse_event(mapping.adverse_event, source)
        self._provenance()
        self._stamp_last_updated()
        return self.resources

    def _stamp_last_updated(self) -> None:
        """meta.lastUpdated of each resource: the latest change among the records it was built from (so a client's
        next `_since` can start from it). The site's Organization follows the site row; the ResearchStudy and the
        drugs' Medications come from the form definitions, not from a record, and carry none."""
        for resource in self.resources:
            if resource is self.organization:
                changed = _utc(self.subject.site.updated_at or self.subject.site.created_at)
            elif id(resource) in self.shared:
                continue
            else:
                changed = self.changed_at(resource)
            if changed is None:
                continue
            stamp = changed.isoformat(timespec="milliseconds")
            if resource.meta is None:
                resource.meta = Meta(lastUpdated=stamp)
            else:
                resource.meta.lastUpdated = stamp

    def _consent(self) -> Consent:
        spec = self.map.consent
        source = self.first(spec.form) if spec else None
        values = source.values if source else None
        date = values[spec.date] if values and spec.date else None
        when = date if _present(date) else self.subject.consent_date.isoformat()
        version = values[spec.version] if values and spec.version else None
        version = version if _present(version) else None
        provisions = []
        for provision in spec.provisions if values else ():
            if values[provision.item] in (self.map.yes, self.map.no):
                provisions.append({"type": "permit" if values[provision.item] == self.map.yes else "deny",
                                   "code": [{"coding": [self.code("consent-provision", provision.item)],
                                             "text": provision.text}]})
        policy_uri = f"{self.study.canonical_url.rstrip('/')}/consent" + (f"/{version}" if version else "")
        return self.add(Consent(
            id=resource_id("Consent", self.subject.id),
            status="active",
            scope={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
            category=[{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Consent Document"}]}],
            patient=ref(self.patient), dateTime=when, organization=[ref(self.organization)],
            policy=[{"uri": policy_uri}],
            provision={"type": "permit", **({"provision": provisions} if provisions else {})}), source,
            reads=[SUBJECT_ROW, *(self.forms(spec.form) if spec else [])])  # the date falls back on the subject's

    def _condition(self) -> Condition | None:
        spec = self.map.condition
        if spec is None:
            return None
        source = self.first(spec.form)
        values = source.values if source else None
        prior_relapses = values[spec.prior_relapses] if values and spec.prior_relapses else None
        status = "relapse" if isinstance(prior_relapses, int) and prior_relapses > 0 else "active"
        responses = [s.values[spec.response_item] for s in self.by_form.get(spec.response_form, [])
                     if _present(s.values[spec.response_item])] if spec.response_item else []
        if responses and responses[-1] in spec.remission:
            status = "remission"
        if any(self.by_form.get(form_id) for form_id in spec.relapse_forms) or (responses and responses[-1] in spec.relapse):
            status = "relapse"
        extra = {}
        if values and spec.onset and _present(values[spec.onset]):
            extra["onsetDateTime"] = values[spec.onset]
        inputs = [form_id for form_id in (spec.form, spec.response_form, *spec.relapse_forms) if form_id]
        return self.add(Condition(
            id=resource_id("Condition", self.subject.id, spec.key),
            clinicalStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": status}]},
            verificationStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                            "code": "confirmed"}]},
            category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "problem-list-item"}]}],
            code=self.concept(spec.code, spec.text), subject=ref(self.patient), **extra), source,
            reads=self.forms(*dict.fromkeys(inputs)))  # the clinical status follows the responses

    # ------------------------------------------------------------------ procedures, drugs, the product

    def _procedure(self, spec: ProcedureDef) -> Procedure | None:
        source = self.first(spec.form)
        if source is None:
            return None
        values = source.values
        done = _present(values[spec.date]) if spec.date else False
        extra: dict[str, Any] = {}
        if done:
            extra["performedDateTime"] = values[spec.date]
        if spec.complication and values[spec.complication] == self.map.yes:
            extra["complication"] = [{"text": spec.complication_text}]
        return self.add(Procedure(
            id=resource_id("Procedure", source.entry.id),
            status="completed" if done else "unknown", code=self.concept([spec.code], spec.text),
            subject=ref(self.patient), **extra), source, reads=self.forms(spec.form))

    def _drugs(self, spec: DrugsDef) -> None:
        medications = self.drugs.setdefault(spec.key, {})
        for source in self.by_form.get(spec.form, []):
            values = source.values
            bsa = values[spec.body_surface_area] if spec.body_surface_area else None
            bsa = bsa if _present(bsa) else None
            for index, row in enumerate(values.rows(spec.group)):
                drug = row[spec.drug]
                if not _present(drug) or not _present(row[spec.date]):
                    continue
                medication = medications.get(drug)
                if medication is None:
                    concept = spec.concepts.get(drug)
                    name = concept.display if concept and concept.display else drug.lower()
                    medication = self.add(Medication(
                        id=resource_id("Medication", spec.key, drug),
                        code={"coding": ([self.coding(concept)] if concept else [])
                              + [self.code(spec.codes, drug, values.label(spec.drug, drug))], "text": name}), source,
                        reads=self.forms(spec.form), shared=True)  # made by the first entry naming the drug
                    medications[drug] = medication
                dosage: dict[str, Any] = {"route": self.concept([spec.route], None)} if spec.route else {}
                if spec.dose and _present(row[spec.dose.item]):
                    dosage["dose"] = self.quantity(spec.dose, values, row[spec.dose.item])
                if spec.dose_per_m2 and _present(row[spec.dose_per_m2]):
                    dosage["text"] = f"{row[spec.dose_per_m2]} {self.unit_of(values, spec.dose_per_m2)}" + (
                        f" (body surface area {bsa} {self.unit_of(values, spec.body_surface_area)})" if bsa else "")
                self.add(MedicationAdministration(
                    id=resource_id("MedicationAdministration", source.entry.id, spec.group, index),
                    status="completed", medicationReference=ref(medication), subject=ref(self.patient),
                    effectiveDateTime=row[spec.date], **({"dosage": dosage} if dosage else {})), source)

    def _product(self) -> Medication | None:
        spec = self.map.product
        if spec is None:
            return None
        made = self.first(spec.form)
        given = spec.administration
        infused = self.by_form.get(given.form, []) if given else []
        if made is None and not infused:
            return None
        sources = [(made, spec.chain_of_identity)] if made else []
        sources += [(source, given.chain_of_identity) for source in infused]
        coi = next((s.values[item] for s, item in sources if item and _present(s.values[item])), None)
        extra: dict[str, Any] = {}
        if coi:
            extra["identifier"] = [{"system": self.system("sid", "chain-of-identity"), "value": coi}]
        if made and spec.batch and _present(made.values[spec.batch]):
            extra["batch"] = {"lotNumber": made.values[spec.batch]}
        inputs = [form_id for form_id in (spec.form, given.form if given else None) if form_id]
        return self.add(Medication(
            id=resource_id("Medication", spec.key, made.entry.id if made else self.subject.id),
            code=self.concept([spec.code], spec.text), **extra), made, reads=self.forms(*dict.fromkeys(inputs)))

    def _administrations(self) -> None:
        product = self.map.product
        spec = product.administration if product else None
        if self.product is None or spec is None:
            return

        def number(source: _Source) -> int:
            value = source.values[spec.number] if spec.number else None
            return value if isinstance(value, int) else 0

        for source in sorted(self.by_form.get(spec.form, []), key=number):
            values = source.values
            extra: dict[str, Any] = {}
            if spec.given and values[spec.given] == self.map.no:
                status = "not-done"
                extra["statusReason"] = [{"text": spec.not_given_text}]
            else:
                status = "completed"
                extra["dosage"] = self._dosage(product, spec, values)
            self.add(MedicationAdministration(
                id=resource_id("MedicationAdministration", source.entry.id),
                status=status, medicationReference=ref(self.product), subject=ref(self.patient),
                effectiveDateTime=values[spec.date], **extra), source,
                reads=self.forms(product.form) if product.form else [])  # the product's id is that entry's

    def _dosage(self, product: ProductDef, spec: AdministrationDef, values: _Values) -> dict[str, Any]:
        """The dose given (with the data-absent extension when not recorded); the dose per kg (given, else the
        dose over the weight) in an extension; the number, dose, dose per kg and weight in the text."""
        dose = values[spec.dose.item] if spec.dose else None
        weight = values[spec.weight.item] if spec.weight else None
        per_kg = values[spec.dose_per_kg.item] if spec.dose_per_kg else None
        if spec.dose_per_kg and not _present(per_kg) and _present(dose) and _present(weight) and weight:
            per_kg = round(dose / weight, 4)
        parts = []
        if spec.label:
            parts.append(f"{spec.label} {values[spec.number]}" if spec.number else spec.label)
        dosage: dict[str, Any] = {"route": self.concept([product.route], None)} if product.route else {}
        if _present(dose):
            dosage["dose"] = self.quantity(spec.dose, values, dose)
            parts.append(f"{dose} {spec.dose.text or dosage['dose']['unit']}")
        elif _missing(dose):
            dosage["extension"] = [{"url": DATA_ABSENT_EXTENSION, "valueCode": self.absent_reason(_missing(dose))}]
            parts.append(f"{spec.dose.not_recorded or 'dose not recorded'} ({_missing(dose)})")
        if _present(per_kg):
            quantity = self.quantity(spec.dose_per_kg, values, per_kg)
            dosage.setdefault("extension", []).append({"url": self.system("StructureDefinition", "dose-per-kg"),
                                                       "valueQuantity": quantity})
            parts.append(f"{per_kg} {spec.dose_per_kg.text or quantity['unit']}")
        if _present(weight):
            unit = spec.weight.unit or spec.weight.ucum or self.unit_of(values, spec.weight.item)
            parts.append(" ".join(str(part) for part in (spec.weight.text, weight, unit) if part))
        if parts:
            dosage["text"] = ", ".join(parts)
        return dosage

    # ------------------------------------------------------------------ observations

    def _observation(self, source: _Source, key: str, code: dict[str, Any], category: str, when: Any,
                     value: dict[str, Any], **extra: Any) -> Observation:
        body: dict[str, Any] = {
            "id": resource_id("Observation", source.entry.id, key),
            "status": "final" if source.entry.status == "complete" else "preliminary",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": code, "subject": ref(self.patient), **value, **extra}
        if _present(when):
            body["effectiveDateTime"] = when
        return self.add(Observation(**body), source)

    def _observe(self, spec: ObservationDef, source: _Source) -> Observation | None:
        """The Observation `spec` makes of one entry (its members first), or None when the entry has no value for it."""
        values = source.values
        members = [made for made in (self._observe(member, source) for member in spec.members) if made is not None]
        value = self._observed_value(spec, values)
        if value is None:
            return None
        extra: dict[str, Any] = {}
        if spec.method and _present(values[spec.method.item]):
            method = values[spec.method.item]
            extra["method"] = {"coding": [self.code(spec.method.codes, method, values.label(spec.method.item))]}
        components = [made for made in (self._component(c, values) for c in spec.components) if made is not None]
        if components:
            extra["component"] = components
        if members:
            extra["hasMember"] = [ref(member) for member in members]
        if spec.focus == "condition" and self.condition is not None:
            extra["focus"] = [ref(self.condition)]
        when = next((values[item] for item in spec.date if _present(values[item])), None)
        return self._observation(source, spec.key, self.concept(spec.code, spec.text), spec.category, when, value,
                                 **extra)

    def _observed_value(self, spec: ObservationDef, values: _Values) -> dict[str, Any] | None:
        """value[x] or dataAbsentReason; None: not observed (done is not yes, or neither value nor flag filled)."""
        value = spec.value
        if spec.done:
            done = values[spec.done]
            if _missing(done):
                return {"dataAbsentReason": self.absent(_missing(done))}
            if done != self.map.yes:
                return None
        raw = values[value.item]
        limit = value.below_limit
        flag = values[limit.flag] if limit else None
        if not _filled(raw) and not _filled(flag):
            return None
        if limit and flag == self.map.yes and _present(values[limit.limit]):
            quantity = self.quantity(value, values, round(values[limit.limit] * limit.factor, 10))
            return {"valueQuantity": {**quantity, "comparator": "<"}}
        if _missing(raw):
            return {"dataAbsentReason": self.absent(_missing(raw))}
        if not _present(raw):
            return {"dataAbsentReason": self.absent(value.unknown)} if value.unknown else None
        return self._typed(value, values, raw)

    def _typed(self, spec: ValueDef, values: _Values, raw: Any) -> dict[str, Any]:
        if spec.codes:
            concept: dict[str, Any] = {"coding": [self.code(spec.codes, raw, values.label(spec.item))]}
            if spec.text:
                concept["text"] = values.label(spec.item) or str(raw)
            return {"valueCodeableConcept": concept}
        if spec.boolean:
            return {"valueBoolean": raw == self.map.yes}
        if spec.quantity:
            return {"valueQuantity": self.quantity(spec, values, raw)}
        return {"valueInteger": raw}

    def _component(self, spec: ComponentDef, values: _Values) -> dict[str, Any] | None:
        raw = values[spec.value.item]
        if not _filled(raw):
            return None
        code = self.concept(spec.code, spec.text)
        if _missing(raw):
            return {"code": code, "dataAbsentReason": self.absent(_missing(raw))}
        return {"code": code, **self._typed(spec.value, values, raw)}

    # ------------------------------------------------------------------ adverse events

    def _suspects(self, name: str) -> list[Resource]:
        if name == PRODUCT_SUSPECT:
            return [self.product] if self.product else []
        if name in self.drugs:
            return list(self.drugs[name].values())
        return [self.procedures[name]] if name in self.procedures else []

    def _adverse_event(self, spec: AdverseEventDef, source: _Source) -> None:
        values, yes = source.values, self.map.yes
        extensions: list[dict[str, Any]] = []
        category = values[spec.category.item] if spec.category else None
        grading = spec.grade
        grade = values[grading.item] if grading else None
        if grading and _present(grade) and str(grade) in grading.concepts:
            codings = [self.coding(grading.concepts[str(grade)])]
            scale = (values[grading.scale] if grading.scale else None) or ""
            by_category = grading.codes_by_category.get(category) if isinstance(category, str) else None
            codings.append(self.code(by_category or grading.codes, grade))
            extensions.append({"url": f"{AE_BACKPORT}/ae-grade",
                               "valueCodeableConcept": {"coding": codings, "text": f"Grade {grade} ({scale})"
                                                        if scale else f"Grade {grade}"}})
        present = [criterion for criterion in spec.criteria if values[criterion.item] == yes]
        for criterion in present:  # only when serious: the profile forbids criteria on a non-serious event
            codings = ([self.coding(criterion.concept)] if criterion.concept else []) \
                + [self.code(spec.seriousness_codes, criterion.item, values.form.items[criterion.item].label.get("en"))]
            extensions.append({"url": f"{AE_BACKPORT}/seriousness-criteria", "extension": [
                {"url": "criterionCode", "valueCodeableConcept": {"coding": codings}},
                {"url": "criterionPresent", "valueBoolean": True}]})
        reads: list[_Source | str] = []  # a suspect made later (or renamed) changes the event
        for suspected in spec.suspects:
            relatedness = values[suspected.item]
            if not _present(relatedness) or relatedness not in spec.causality_concepts:
                continue
            concept = self.coding(spec.causality_concepts[relatedness])
            for suspect in self._suspects(suspected.suspect):
                reads.extend(self.inputs[id(suspect)])
                extensions.append({"url": f"{AE_BACKPORT}/suspect-entity", "extension": [
                    {"url": "instance", "valueReference": ref(suspect)},
                    {"url": "causality", "extension": [{"url": "entityRelatedness", "valueCodeableConcept": {
                        "coding": [concept, self.code(spec.causality_codes, relatedness)]}}]}]})
        extensions.append({"url": f"{AE_BACKPORT}/research-subject-ref", "valueReference": ref(self.research_subject)})
        if spec.end and _present(values[spec.end]):
            extensions.append({"url": f"{AE_BACKPORT}/resolve-date", "valueDateTime": values[spec.end]})
        term = values[spec.term] if spec.term else None
        event: dict[str, Any] = {"text": term if _present(term) else DEFAULT_AE_TEXT}
        if spec.category and _present(category):
            concept = spec.category.concepts.get(category)
            event["coding"] = [self.coding(concept)] if concept else \
                [self.code(spec.category.codes, category, values.label(spec.category.item))]
        extra: dict[str, Any] = {}
        outcome = values[spec.outcome.item] if spec.outcome else None
        if _present(outcome) and outcome in spec.outcome.concepts:
            extra["outcome"] = {"coding": [self.coding(spec.outcome.concepts[outcome]),
                                           self.code(spec.outcome.codes, outcome, values.label(spec.outcome.item))]}
        if spec.start and _present(values[spec.start]):
            extra["date"] = values[spec.start]
        if spec.awareness and _present(values[spec.awareness]):
            extra["detected"] = values[spec.awareness]
        serious = bool(present)
        ongoing = spec.ongoing is not None and values[spec.ongoing] == yes
        self.add(AdverseEvent(
            id=resource_id("AdverseEvent", source.entry.id),
            meta={"profile": [AE_PROFILE]},
            extension=extensions,
            modifierExtension=[{"url": f"{AE_BACKPORT}/status", "valueCode": "in-progress" if ongoing else "completed"}],
            actuality="actual", event=event, subject=ref(self.patient),
            seriousness={"coding": [{"system": AE_SERIOUSNESS, "code": "serious" if serious else "non-serious",
                                     "display": "Serious" if serious else "Non-serious"}]},
            study=[ref(self.study_resource)], **extra), source, reads=reads)

    # ------------------------------------------------------------------ provenance

    def _provenance(self) -> None:
        site_agent = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                            "code": "author"}]}, "who": ref(self.organization)}]
        subject = self.subject
        self.add(Provenance(
            id=resource_id("Provenance", subject.id, subject.version),
            target=[ref(r) for r in self.subject_made if r.get_resource_type() not in ("Organization", "ResearchStudy")],
            recorded=_instant(subject.updated_at or subject.created_at), agent=site_agent,
            activity=self._activity(subject.version),
            entity=[{"role": "source", "what": {"identifier": {"system": self.system("sid", "subject-record"),
                                                              "value": str(subject.id)}}}]), None,
            reads=[WHOLE_CASEBOOK])  # its targets move to an entry's Provenance once that entry exists
        for source in self.sources:
            if not source.made:
                continue
            entry = source.entry
            self.add(Provenance(
                id=resource_id("Provenance", entry.id, entry.version),
                target=[ref(r) for r in source.made], recorded=_instant(entry.updated_at or entry.created_at),
                agent=site_agent, activity=self._activity(entry.version),
                entity=[{"role": "source", "what": {
                    "identifier": {"system": self.system("sid", "entry"), "value": str(entry.id)},
                    "display": f"{entry.form_id} v{entry.form_version}" + (f" at {entry.event_key}" if entry.event_key else "")}}]),
                None, reads=[source, *(read for made in source.made for read in self.inputs[id(made)])])

    @staticmethod
    def _activity(version: int) -> dict[str, Any]:
        code = "CREATE" if version <= 1 else "UPDATE"
        return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": code}]}


def subject_resources(study: Study, subject: Subject,
                      entries: Iterable[tuple[EntryLike, dict[str, Any]]]) -> list[Resource]:
    """Every resource of one subject, in a fixed order: site, study, patient, enrolment, then the casebook."""
    return _Builder(study, subject, entries).build()


def dated_subject_resources(study: Study, subject: Subject,
                            entries: Iterable[tuple[EntryLike, dict[str, Any]]]) -> list[DatedResource]:
    """subject_resources, each with the latest change among what it was built from and whether it is study-wide."""
    builder = _Builder(study, subject, entries)
    return [DatedResource(resource, builder.changed_at(resource), id(resource) in builder.shared)
            for resource in builder.build()]


def everything_bundle(resources: list[Resource], base_url: str, self_url: str) -> dict[str, Any]:
    """The Patient/$everything answer: a searchset Bundle (the patient matches, the rest is included), R4 JSON."""
    base = base_url.rstrip("/")
    patient = next(r for r in resources if r.get_resource_type() == "Patient")
    entries = [{"fullUrl": f"{base}/{r.get_resource_type()}/{r.id}", "resource": r,
                "search": {"mode": "match" if r is patient else "include"}} for r in resources]
    bundle = Bundle(id=resource_id("Bundle", "everything", patient.id), type="searchset", total=1,
                    link=[{"relation": "self", "url": self_url}], entry=entries)
    return to_json(bundle)


def patient_id_for(subject_id: uuid.UUID | str) -> str:
    """The exported Patient id of a subject row."""
    return resource_id("Patient", subject_id)
