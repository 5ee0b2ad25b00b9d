"""One subject's casebook as FHIR R4 resources (built with the fhir.resources R4B models, validation on).

Pure functions: they read the Subject row (with its site), the subject's entries with their opened values
and the study's form definitions, and touch no database. The mapping is described in docs/fhir.md.

Entries are `edc.models.Entry` rows or `edc.exports.source.EntryRecord`s: the mapper reads only the
attributes both have (`EntryLike`).

Only pseudonymised content leaves: the study number, sex, birth year and month, dates as collected. Items
flagged `identifying` are never read (`_Values` hides them). Resource ids are uuid5 of one fixed namespace
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from fhir.resources.R4B.adverseevent import AdverseEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from fhir.resources.R4B.resource import Resource

from edc.ecrf import FormDef, Study
from edc.models.subjects import Subject

# Every resource type the mapper makes (the Bulk Data `_type` values we can honour), in the order it makes them.
RESOURCE_TYPES = ("Organization", "ResearchStudy", "Patient", "Consent", "ResearchSubject", "Condition", "Procedure",
                  "Medication", "MedicationAdministration", "Observation", "AdverseEvent", "Provenance")

# Never change: every exported resource id derives from it.
ID_NAMESPACE = uuid.UUID("5d0c6a63-2f6e-4c41-9d7c-3b1f0e8a4c27")

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
ATC = "http://www.whocc.no/atc"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_ABSENT_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_BACKPORT = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition"
AE_PROFILE = f"{AE_BACKPORT}/AdverseEvent-clinical-research"

# Study missing-data code -> data-absent-reason code (the study code travels beside it).
ABSENT_REASON = {"ND": "not-performed", "UNK": "unknown", "NA": "not-applicable", "NE": "unknown"}
SUBJECT_STATUS = {"screening": "screening", "enrolled": "on-study", "screen_failed": "ineligible",
                  "withdrawn": "withdrawn", "completed": "off-study", "deceased": "off-study"}
GENDER = {"F": "female", "M": "male"}
# NCIt grade concepts of the AE-research IG (fhir.md §4.5).
NCIT_GRADE = {"1": ("C41338", "Grade 1 Mild Adverse Event"), "2": ("C41339", "Grade 2 Moderate Adverse Event"),
              "3": ("C41340", "Grade 3 Severe Adverse Event"),
              "4": ("C41337", "Grade 4 Life Threatening or Disabling Adverse Event"),
              "5": ("C48275", "Grade 5 Death Related to Adverse Event")}
# CDISC OUT code list concepts (NCIt); the form's own code is kept as a second coding.
NCIT_OUTCOME = {"RECOVERED": ("C49498", "Recovered/Resolved"), "RECOVERING": ("C49496", "Recovering/Resolving"),
                "NOT_RECOVERED": ("C49494", "Not Recovered/Not Resolved"),
                "SEQUELAE": ("C49495", "Recovered/Resolved with Sequelae"), "FATAL": ("C48275", "Fatal"),
                "UNKNOWN": ("C17998", "Unknown")}
NCIT_RELATEDNESS = {"RELATED": ("C53260", "Related"), "POSSIBLE": ("C53258", "Possibly Related"),
                    "UNLIKELY": ("C53257", "Unlikely Related"), "UNRELATED": ("C53256", "Not Related")}
# AE form item -> NCIt concept where one was verified (fhir.md §4.6); the others carry only the study code.
SERIOUSNESS_CRITERIA = {"AESDTH": None, "AESLIFE": ("C84266", "Is Life Threatening"),
                        "AESHOSP": ("C83052", "Requires Inpatient Hospitalization"), "AESDISAB": None,
                        "AESCONG": None, "AESMIE": None}
LD_ATC = {"FLUDARABINE": ("L01BB05", "fludarabine"), "CYCLOPHOSPHAMIDE": ("L01AA01", "cyclophosphamide")}
CART_PRODUCT = "varnimcabtagene autoleucel (ARI-0001)"
IV_ROUTE = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
B_ALL = {"coding": [{"system": SNOMED, "code": "277571004", "display": "B-cell acute lymphoblastic leukemia"},
                    {"system": ICD10, "code": "C91.0", "display": "Acute lymphoblastic leukaemia"}],
         "text": "B-cell acute lymphoblastic leukaemia"}


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
    """An entry's opened values; identifying items read as absent, whatever they hold."""

    def __init__(self, form: FormDef, values: dict[str, Any]) -> None:
        self.form = form
        self._values = values

    def __getitem__(self, item_id: str) -> Any:
        item = self.form.items.get(item_id)
        if item is not None and item.identifying:
            return None
        return self._values.get(item_id)

    def rows(self, group: str) -> list[_Values]:
        return [_Values(self.form, row) for row in (self._values.get(group) or []) if isinstance(row, dict)]

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
        self.subject = subject
        self.base = study.canonical_url.rstrip("/") + "/fhir"
        self.resources: list[Resource] = []
        self.sources: list[_Source] = []
        self.subject_made: list[Resource] = []
        self.inputs: dict[int, list[_Source | str]] = {}  # id(resource) -> what it was built from
        self.shared: set[int] = set()
        ordered = sorted(entries, key=lambda pair: (pair[0].created_at, str(pair[0].id)))
        self.by_form: dict[str, list[_Source]] = {}
        for entry, values in ordered:
            source = _Source(entry, _Values(study.form(entry.form_id, entry.form_version), values))
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
        return {"coding": [{"system": DATA_ABSENT, "code": ABSENT_REASON.get(missing_code, "unknown")},
                           self.code("missing-data", missing_code)],
                "text": (self.study.missing_code_labels.get(missing_code) or {}).get("en", missing_code)}

    def first(self, form_id: str) -> _Source | None:
        found = self.by_form.get(form_id)
        return found[0] if found else None

    # ------------------------------------------------------------------ the subject

    def build(self) -> list[Resource]:
        subject, study = self.subject, self.study
        site = subject.site
        self.organization = self.add(Organization(
            id=resource_id("Organization", site.id),
            identifier=[{"system": self.system("sid", "site"), "value": site.code}],
            active=site.status == "active", name=site.name, address=[{"country": site.country}]), None, shared=True)
        self.study_resource = self.add(ResearchStudy(
            id=resource_id("ResearchStudy", study.id),
            identifier=[{"system": self.system("sid", "study"), "value": study.id}],
            title=study.title.get("en") or study.id, status="active", condition=[B_ALL]), None, shared=True)
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
        self.apheresis = self._apheresis()
        self.ld_medications: dict[str, Medication] = {}
        self.ld_given: list[MedicationAdministration] = []
        self._lymphodepletion()
        self.cart = self._cart_product()
        self.fractions: list[MedicationAdministration] = []
        self._fractions()
        for source in self.by_form.get("resp", []):
            self._response(source)
        for source in self.by_form.get("bca", []):
            self._b_cells(source)
        for source in self.by_form.get("crs_daily", []):
            self._grade(source, "crs", "CRSDAT", "CRSGRINV", "CRSGRDRV", "Cytokine release syndrome grade (ASTCT)")
        for source in self.by_form.get("icans_daily", []):
            self._grade(source, "icans", "NDTC", "ICANSINV", "ICANSDRV",
                        "Immune effector cell-associated neurotoxicity syndrome grade (ASTCT)")
        for source in self.by_form.get("ae", []):
            self._adverse_event(source)
        self._provenance()
        return self.resources

    def _consent(self) -> Consent:
        source = self.first("ic")
        values = source.values if source else None
        when = values["RFICDAT"] if values and _present(values["RFICDAT"]) else self.subject.consent_date.isoformat()
        version = values["ICVERS"] if values and _present(values["ICVERS"]) else None
        provisions = []
        for item, text in (("SAMPCONS", "Storage of samples for future research"),
                           ("LTFUCONS", "Long-term follow-up")):
            if values and values[item] in ("Y", "N"):
                provisions.append({"type": "permit" if values[item] == "Y" else "deny",
                                   "code": [{"coding": [self.code("consent-provision", item)], "text": text}]})
        policy_uri = f"{self.study.canonical_url.rstrip('/')}/consent" + (f"/{version}" if version else "")
        return self.add(Consent(
            id=resource_id("Consent", self.subject.id),
            status="active",
            scope={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
            category=[{"coding": [{"system": LOINC, "code": "59284-0", "display": "Consent Document"}]}],
            patient=ref(self.patient), dateTime=when, organization=[ref(self.organization)],
            policy=[{"uri": policy_uri}],
            provision={"type": "permit", **({"provision": provisions} if provisions else {})}), source,
            reads=[SUBJECT_ROW, *self.forms("ic")])  # the consent date falls back on the subject's

    def _condition(self) -> Condition:
        source = self.first("dh")
        values = source.values if source else None
        prior_relapses = values["NRELAPSE"] if values else None
        status = "relapse" if isinstance(prior_relapses, int) and prior_relapses > 0 else "active"
        responses = [s.values["RSORRES"] for s in self.by_form.get("resp", []) if _present(s.values["RSORRES"])]
        if responses and responses[-1] in ("CR", "CRi", "MLFS"):
            status = "remission"
        if self.by_form.get("relapse") or (responses and responses[-1] == "RELAPSE"):
            status = "relapse"
        extra = {}
        if values and _present(values["DXDAT"]):
            extra["onsetDateTime"] = values["DXDAT"]
        return self.add(Condition(
            id=resource_id("Condition", self.subject.id, "B-ALL"),
            clinicalStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": status}]},
            verificationStatus={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                            "code": "confirmed"}]},
            category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "problem-list-item"}]}],
            code=B_ALL, subject=ref(self.patient), **extra), source,
            reads=self.forms("dh", "resp", "relapse"))  # the clinical status follows the responses

    # ------------------------------------------------------------------ apheresis, lymphodepletion, product

    def _apheresis(self) -> Procedure | None:
        source = self.first("aph")
        if source is None:
            return None
        values = source.values
        extra: dict[str, Any] = {}
        if _present(values["APHDAT"]):
            extra["performedDateTime"] = values["APHDAT"]
        if values["APHCOMP"] == "Y":
            extra["complication"] = [{"text": "Apheresis complication (see the eCRF)"}]
        return self.add(Procedure(
            id=resource_id("Procedure", source.entry.id),
            status="completed" if _present(values["APHDAT"]) else "unknown",
            code={"coding": [self.code("procedure", "APHERESIS", "Leukapheresis for ARI-0001 manufacturing")],
                  "text": "Leukapheresis"},
            subject=ref(self.patient), **extra), source, reads=self.forms("aph"))

    def _lymphodepletion(self) -> None:
        for source in self.by_form.get("ld", []):
            values = source.values
            bsa = values["BSA"] if _present(values["BSA"]) else None
            for index, row in enumerate(values.rows("EC")):
                drug = row["ECTRT"]
                if not _present(drug) or not _present(row["ECSTDAT"]):
                    continue
                medication = self.ld_medications.get(drug)
                if medication is None:
                    atc, name = LD_ATC.get(drug, (None, drug.lower()))
                    medication = self.add(Medication(
                        id=resource_id("Medication", "lymphodepletion", drug),
                        code={"coding": ([{"system": ATC, "code": atc, "display": name}] if atc else [])
                              + [self.code("ld-drug", drug, values.label("ECTRT", drug))], "text": name}), source,
                        reads=self.forms("ld"), shared=True)  # made by the first entry naming the drug
                    self.ld_medications[drug] = medication
                dosage: dict[str, Any] = {"route": IV_ROUTE}
                if _present(row["ECDOSE"]):
                    dosage["dose"] = {"value": row["ECDOSE"], "unit": "mg", "system": UCUM, "code": "mg"}
                if _present(row["ECDOSPM"]):
                    dosage["text"] = f"{row['ECDOSPM']} mg/m2" + (f" (body surface area {bsa} m2)" if bsa else "")
                given = self.add(MedicationAdministration(
                    id=resource_id("MedicationAdministration", source.entry.id, "EC", index),
                    status="completed", medicationReference=ref(medication), subject=ref(self.patient),
                    effectiveDateTime=row["ECSTDAT"],
                    dosage=dosage), source)
                self.ld_given.append(given)

    def _cart_product(self) -> Medication | None:
        made = self.first("mfg")
        infused = self.by_form.get("inf", [])
        if made is None and not infused:
            return None
        coi = next((s.values["COI"] for s in [*([made] if made else []), *infused] if _present(s.values["COI"])), None)
        extra: dict[str, Any] = {}
        if coi:
            extra["identifier"] = [{"system": self.system("sid", "chain-of-identity"), "value": coi}]
        if made and _present(made.values["BATCHNO"]):
            extra["batch"] = {"lotNumber": made.values["BATCHNO"]}
        return self.add(Medication(
            id=resource_id("Medication", "ARI-0001", made.entry.id if made else self.subject.id),
            code={"coding": [self.code("product", "ARI-0001", CART_PRODUCT)], "text": CART_PRODUCT}, **extra),
            made, reads=self.forms("mfg", "inf"))

    def _fractions(self) -> None:
        if self.cart is None:
            return
        for source in sorted(self.by_form.get("inf", []), key=lambda s: s.values["EXFRACT"] if isinstance(s.values["EXFRACT"], int) else 0):
            values = source.values
            extra: dict[str, Any] = {}
            if values["EXOCCUR"] == "N":
                status = "not-done"
                extra["statusReason"] = [{"text": "Fraction not given"}]
            else:
                status = "completed"
                extra["dosage"] = self._cart_dosage(values)
            self.fractions.append(self.add(MedicationAdministration(
                id=resource_id("MedicationAdministration", source.entry.id),
                status=status, medicationReference=ref(self.cart), subject=ref(self.patient),
                effectiveDateTime=values["EXSTDTC"], **extra), source,
                reads=self.forms("mfg")))  # the product's id is the manufacturing entry's

    def _cart_dosage(self, values: _Values) -> dict[str, Any]:
        """The dose is the number of viable CAR+ cells given; the dose per kg goes in the text and an extension."""
        cells, weight, per_kg = values["EXDOSE"], values["EXWT"], values["EXDOSKG"]
        if not _present(per_kg) and _present(cells) and _present(weight) and weight:
            per_kg = round(cells / weight, 4)
        parts = [f"Fraction {values['EXFRACT']}"]
        dosage: dict[str, Any] = {"route": IV_ROUTE}
        if _present(cells):
            dosage["dose"] = {"value": cells, "unit": "10*6 viable CAR+ cells", "system": UCUM, "code": "10*6"}
            parts.append(f"{cells} x10^6 viable CAR+ cells")
        elif _missing(cells):
            dosage["extension"] = [{"url": DATA_ABSENT_EXTENSION, "valueCode": ABSENT_REASON.get(_missing(cells), "unknown")}]
            parts.append(f"cells given not recorded ({_missing(cells)})")
        if _present(per_kg):
            dosage.setdefault("extension", []).append({"url": self.system("StructureDefinition", "dose-per-kg"),
                                    "valueQuantity": {"value": per_kg, "unit": "10*6 viable CAR+ cells/kg",
                                                      "system": UCUM, "code": "10*6/kg"}})
            parts.append(f"{per_kg} x10^6 viable CAR+ cells/kg")
        if _present(weight):
            parts.append(f"dosing weight {weight} kg")
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

    def _value(self, raw: Any, present: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """dataAbsentReason for a missing-data code, else the value that `present` builds."""
        missing = _missing(raw)
        if missing:
            return {"dataAbsentReason": self.absent(missing)}
        return present()

    def _response(self, source: _Source) -> None:
        values = source.values
        members = []
        if values["BMDONE"] == "Y" and (values["BMMRDVAL"] is not None or values["BMMRDUND"] is not None):
            members.append(self._mrd(source))
        elif _missing(values["BMDONE"]):
            members.append(self._observation(source, "MRD", self._mrd_code(), "laboratory", values["RSDAT"],
                                             self._value(values["BMDONE"], dict)))
        if _present(values["CNSSTAT"]) or _missing(values["CNSSTAT"]):
            members.append(self._observation(
                source, "CNS", {"coding": [self.code("observation", "CNS-STATUS", "CNS status")],
                                "text": "CNS status (CNS1/CNS2/CNS3)"},
                "laboratory", values["LPDAT"] if _present(values["LPDAT"]) else values["RSDAT"],
                self._value(values["CNSSTAT"], lambda: {"valueCodeableConcept": {
                    "coding": [self.code("cns-status", values["CNSSTAT"], values.label("CNSSTAT"))]}})))
        response = values["RSORRES"]
        value = self._value(response, lambda: {"valueCodeableConcept": {
            "coding": [self.code("response", response, values.label("RSORRES"))],
            "text": values.label("RSORRES") or str(response)}} if _present(response) else {})
        if not value:
            return
        components = []
        if _present(values["RSDRV"]):
            components.append({"code": {"coding": [self.code("observation", "RESPONSE-DERIVED",
                                                             "Response derived from the protocol criteria")]},
                               "valueCodeableConcept": {"coding": [self.code("response-derived", values["RSDRV"],
                                                                             values.label("RSDRV"))]}})
        self._observation(
            source, "RESPONSE",
            {"coding": [{"system": LOINC, "code": "97509-4", "display": "Cancer disease progression"},
                        self.code("observation", "RESPONSE", "Disease response (investigator)")],
             "text": "Disease response"},
            "exam", values["RSDAT"], value, focus=[ref(self.condition)],
            **({"hasMember": [ref(m) for m in members]} if members else {}),
            **({"component": components} if components else {}))

    def _mrd_code(self) -> dict[str, Any]:
        return {"coding": [self.code("observation", "MRD-BM", "Minimal residual disease in bone marrow")],
                "text": "Minimal residual disease, bone marrow"}

    def _mrd(self, source: _Source) -> Observation:
        values = source.values
        if values["BMMRDUND"] == "Y" and _present(values["BMMRDLOD"]):
            value = {"valueQuantity": {"value": round(values["BMMRDLOD"] * 100, 10), "comparator": "<", "unit": "%",
                                       "system": UCUM, "code": "%"}}
        else:
            raw = values["BMMRDVAL"]
            value = self._value(raw, lambda: {"valueQuantity": {"value": raw, "unit": "%", "system": UCUM, "code": "%"}}
                                if _present(raw) else {"dataAbsentReason": self.absent("UNK")})
        extra: dict[str, Any] = {}
        if _present(values["BMMRDMETH"]):
            extra["method"] = {"coding": [self.code("mrd-method", values["BMMRDMETH"], values.label("BMMRDMETH"))]}
        return self._observation(source, "MRD", self._mrd_code(), "laboratory",
                                 values["BMDAT"] if _present(values["BMDAT"]) else values["RSDAT"], value, **extra)

    def _b_cells(self, source: _Source) -> None:
        values = source.values
        aplasia = values["BCA"]
        if aplasia is None:
            return
        components = []
        for item, code, unit, ucum in (("CD19ABS", "CD19-ABS", "/uL", "/uL"), ("CD19PCT", "CD19-PCT", "%", "%")):
            raw = values[item]
            if raw is None:
                continue
            component = {"code": {"coding": [self.code("observation", code)], "text": f"CD19+ B cells ({unit})"}}
            component.update(self._value(raw, lambda: {"valueQuantity": {"value": raw, "unit": unit, "system": UCUM,
                                                                 "code": ucum}}))
            components.append(component)
        self._observation(
            source, "BCA", {"coding": [self.code("observation", "BCELL-APLASIA", "B-cell aplasia")],
                            "text": "B-cell aplasia"},
            "laboratory", values["LBDAT"], self._value(aplasia, lambda: {"valueBoolean": aplasia == "Y"}),
            **({"component": components} if components else {}))

    def _grade(self, source: _Source, syndrome: str, date_item: str, grade_item: str, derived_item: str,
               text: str) -> None:
        values = source.values
        grade = values[grade_item]
        if grade is None:
            return
        value = self._value(grade, lambda: {"valueCodeableConcept": {
            "coding": [self.code(f"astct-{syndrome}-grade", grade, values.label(grade_item))]}})
        components = []
        if isinstance(values[derived_item], int):
            components.append({"code": {"coding": [self.code("observation", f"{syndrome.upper()}-GRADE-DERIVED",
                                                             "Grade derived from the recorded signs")]},
                               "valueInteger": values[derived_item]})
        self._observation(source, f"{syndrome.upper()}-GRADE",
                          {"coding": [self.code("observation", f"{syndrome.upper()}-GRADE", text)], "text": text},
                          "exam", values[date_item], value, **({"component": components} if components else {}))

    # ------------------------------------------------------------------ adverse events

    def _adverse_event(self, source: _Source) -> None:
        values = source.values
        extensions: list[dict[str, Any]] = []
        grade = values["AETOXGR"]
        if _present(grade) and grade in NCIT_GRADE:
            codings = [{"system": NCIT, "code": NCIT_GRADE[grade][0], "display": NCIT_GRADE[grade][1]}]
            scale = values["AETOXSCL"] or ""
            if str(scale).startswith("ASTCT") and values["AECAT"] in ("CRS", "ICANS"):
                codings.append(self.code(f"astct-{values['AECAT'].lower()}-grade", grade))
            else:
                codings.append(self.code("ctcae-grade", grade))
            extensions.append({"url": f"{AE_BACKPORT}/ae-grade",
                               "valueCodeableConcept": {"coding": codings, "text": f"Grade {grade} ({scale})"
                                                        if scale else f"Grade {grade}"}})
        present = [item for item in SERIOUSNESS_CRITERIA if values[item] == "Y"]
        for item in present:  # only when serious: the profile forbids criteria on a non-serious event
            verified = SERIOUSNESS_CRITERIA[item]
            codings = ([{"system": NCIT, "code": verified[0], "display": verified[1]}] if verified else []) \
                + [self.code("ae-seriousness-criterion", item, values.form.items[item].label.get("en"))]
            extensions.append({"url": f"{AE_BACKPORT}/seriousness-criteria", "extension": [
                {"url": "criterionCode", "valueCodeableConcept": {"coding": codings}},
                {"url": "criterionPresent", "valueBoolean": True}]})
        reads: list[_Source | str] = []  # a suspect made later (or renamed) changes the event
        for item, suspects in (("AEREL", [self.cart] if self.cart else []),
                               ("AERELLD", list(self.ld_medications.values())),
                               ("AERELPROC", [self.apheresis] if self.apheresis else [])):
            relatedness = values[item]
            if not _present(relatedness) or relatedness not in NCIT_RELATEDNESS:
                continue
            code, display = NCIT_RELATEDNESS[relatedness]
            for suspect in suspects:
                reads.extend(self.inputs[id(suspect)])
                extensions.append({"url": f"{AE_BACKPORT}/suspect-entity", "extension": [
                    {"url": "instance", "valueReference": ref(suspect)},
                    {"url": "causality", "extension": [{"url": "entityRelatedness", "valueCodeableConcept": {
                        "coding": [{"system": NCIT, "code": code, "display": display},
                                   self.code("ae-relatedness", relatedness)]}}]}]})
        extensions.append({"url": f"{AE_BACKPORT}/research-subject-ref", "valueReference": ref(self.research_subject)})
        if _present(values["AEENDAT"]):
            extensions.append({"url": f"{AE_BACKPORT}/resolve-date", "valueDateTime": values["AEENDAT"]})
        event: dict[str, Any] = {"text": values["AETERM"] if _present(values["AETERM"]) else "Adverse event"}
        if values["AECAT"] == "CRS":
            event["coding"] = [{"system": NCIT, "code": "C143394", "display": "Cytokine release syndrome"}]
        elif _present(values["AECAT"]):
            event["coding"] = [self.code("ae-category", values["AECAT"], values.label("AECAT"))]
        outcome = values["AEOUT"]
        extra: dict[str, Any] = {}
        if _present(outcome) and outcome in NCIT_OUTCOME:
            extra["outcome"] = {"coding": [{"system": NCIT, "code": NCIT_OUTCOME[outcome][0],
                                            "display": NCIT_OUTCOME[outcome][1]},
                                           self.code("ae-outcome", outcome, values.label("AEOUT"))]}
        if _present(values["AESTDAT"]):
            extra["date"] = values["AESTDAT"]
        if _present(values["AEAWDTC"]):
            extra["detected"] = values["AEAWDTC"]
        serious = bool(present)
        self.add(AdverseEvent(
            id=resource_id("AdverseEvent", source.entry.id),
            meta={"profile": [AE_PROFILE]},
            extension=extensions,
            modifierExtension=[{"url": f"{AE_BACKPORT}/status",
                                "valueCode": "in-progress" if values["AEONGO"] == "Y" else "completed"}],
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
