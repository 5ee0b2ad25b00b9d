"""The selected casebooks as one CDISC ODM 1.3.2 snapshot, `odm.xml`, written element by element.

Layout (docs/exports.md, "CDISC ODM 1.3.2", has the details and the reasons):

    ODM  FileType=Snapshot, ODMVersion=1.3.2, FileOID and CreationDateTime from the caller
      Study: GlobalVariables, BasicDefinitions (the units used), ONE MetaDataVersion holding every form
             version the selected entries use: Protocol, StudyEventDef per visit (+ SE.COMMON for subject
             logs and daily forms), FormDef per form version (F.AE.V2), ItemGroupDef per form version and
             per repeating group, ItemDef, CodeList
      AdminData: Locations (sites, the sponsor); with audit also Users (login name and roles only) and
             SignatureDefs
      ClinicalData: SubjectData (study number) > StudyEventData > FormData > ItemGroupData > ItemData

Only pseudonymised content leaves: items flagged `identifying`, and encrypted items that study.yaml `exports:
encrypted_items` does not release (`Study.withheld_items`), have no ItemDef and no ItemData, and no
person's name, e-mail or free-text note is written. A missing-data code keeps its meaning without breaking
the item's data type: the item's ItemData is IsNull="Yes" and a companion item <ITEM>_MISSING (code list
CL.MISSING) carries the code.

Streaming: the metadata (bounded by the study definition) is written first, then one casebook at a time
from `source.casebooks`, so memory does not grow with the number of subjects. Deterministic: every order is
fixed and nothing but `file_oid` and `created_at` depends on the run, so the same data give the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain, count
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import XMLGenerator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edc import runtime
from edc.ecrf import FormDef, Study
from edc.ecrf.definitions import GroupDef, ItemDef
from edc.exports import source
from edc.exports.files import MULTI_SEPARATOR, ExportFile, Progress, describe, no_progress
from edc.models.audit import AuditRecord
from edc.models.monitoring import SIGNATURE_MEANINGS
from edc.models.sites import Site
from edc.models.users import User

FILE_NAME = "odm.xml"
MEDIA_TYPE = "application/xml"
ODM_NAMESPACE = "http://www.cdisc.org/ns/odm/v1.3"
SOURCE_SYSTEM = "edc"
COMMON_EVENT = "COMMON"                  # holds the subject logs and daily forms, which belong to no visit
SPONSOR_LOCATION = "LOC.SPONSOR"         # where actors without a site (data managers, safety) act
MISSING_CODE_LIST = "CL.MISSING"
MULTICHOICE_LIST = "edc:multichoice-codelist"   # Alias context: the code list of a multi-choice item
STATUS_CODE_LIST = "CL.ENTRY_STATUS"             # a FormData's Flag: draft or complete
ENTRY_STATUS_TEXT = {"draft": "Draft: saved, not yet marked complete", "complete": "Complete"}

DATA_TYPES = {"text": "text", "integer": "integer", "decimal": "float", "date": "date", "datetime": "datetime",
              "boolean": "boolean", "choice": "text", "multichoice": "text"}
USER_TYPES = {"investigator": "Investigator", "coordinator": "Investigator", "monitor": "Sponsor",
              "data_manager": "Sponsor", "safety": "Sponsor", "manufacturing": "Sponsor", "statistician": "Sponsor",
              "auditor": "Sponsor"}
SIGNATURE_TEXT = {
    "approval": "Approval: the investigator approves the data as recorded.",
    "review": "Review: the investigator has reviewed the data.",
    "responsibility": "Responsibility: the investigator takes responsibility for the data.",
    "authorship": "Authorship: the investigator is the author of the data.",
}
LEGAL_REASON = ("Electronic signature under 21 CFR 11.50, 11.70 and 11.200: the signer entered username and "
                "password again; any later change to the signed data invalidates the signature.")
# XML 1.0 cannot carry these characters at all, not even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_odm(session: Session, selection: source.Selection, directory: Path, *, include_audit: bool = False,
              file_oid: str, created_at: datetime, progress: Progress = no_progress) -> list[ExportFile]:
    """Write the selection as `odm.xml` (ODM 1.3.2 snapshot), optionally with audit records and signatures."""
    study = runtime.of(session).study
    metadata = Metadata(study, source.form_versions(session, selection))
    admin = _admin_data(session, include_audit)
    as_of = source.cutoff(session, selection)  # the file's AsOfDateTime; no audit record or signature after it
    path = Path(directory) / FILE_NAME
    subjects = 0
    with path.open("wb") as stream:
        xml = _Xml(stream)
        xml.start("ODM", {"xmlns": ODM_NAMESPACE, "ODMVersion": "1.3.2", "FileType": "Snapshot",
                          "Granularity": _granularity(selection), "FileOID": file_oid,
                          "CreationDateTime": _instant(created_at), "AsOfDateTime": as_of and _instant(as_of),
                          "Originator": study.canonical_url, "SourceSystem": SOURCE_SYSTEM})
        _write_study(xml, metadata)
        _write_admin_data(xml, metadata, admin)
        xml.start("ClinicalData", {"StudyOID": metadata.study_oid, "MetaDataVersionOID": metadata.oid})
        for book in source.casebooks(session, selection):
            audit = _SubjectAudit.read(session, book.subject.id, as_of, admin) if include_audit else None
            _write_subject(xml, metadata, book, audit)
            subjects += 1
            progress(subjects)
        xml.end("ClinicalData")
        xml.end("ODM")
        xml.finish()
    return [describe(path, records=subjects, media_type=MEDIA_TYPE,
                     description="CDISC ODM 1.3.2 snapshot: metadata of the form versions used, sites, casebooks"
                                 + (", audit records and signatures" if include_audit else ""))]


# ---------------------------------------------------------------------------------------------- the XML writer


class _Xml:
    """A streaming writer: each element goes to the file as it is started, indented one per line."""

    def __init__(self, stream: BinaryIO) -> None:
        self._out = XMLGenerator(stream, encoding="utf-8", short_empty_elements=True)
        self._out.startDocument()
        self._open: list[bool] = []          # per open element: whether it has child elements

    def start(self, name: str, attrs: dict[str, Any] | None = None) -> None:
        if self._open:
            self._open[-1] = True
            self._indent(len(self._open))
        self._out.startElement(name, _attributes(attrs))
        self._open.append(False)

    def end(self, name: str) -> None:
        if self._open.pop():
            self._indent(len(self._open))
        self._out.endElement(name)

    def leaf(self, name: str, attrs: dict[str, Any] | None = None, text: str | None = None) -> None:
        self.start(name, attrs)
        if text is not None:
            self._out.characters(_xml_text(text))
        self.end(name)

    def translated(self, name: str, labels: Iterable[tuple[str, str]]) -> None:
        self.start(name)
        for language, text in labels:
            self.leaf("TranslatedText", {"xml:lang": language}, text)
        self.end(name)

    def finish(self) -> None:
        self._out.ignorableWhitespace("\n")
        self._out.endDocument()

    def _indent(self, depth: int) -> None:
        self._out.ignorableWhitespace("\n" + "  " * depth)


def _attributes(attrs: dict[str, Any] | None) -> dict[str, str]:
    return {name: _xml_text(str(value)) for name, value in (attrs or {}).items() if value is not None}


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite gives naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


# ---------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ItemSpec:
    """Everything an ItemDef says except its OID: two form versions that give an item the same spec share it."""

    name: str
    data_type: str
    question: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    length: int | None = None
    significant_digits: int | None = None
    origin: str | None = None
    comment: str | None = None
    unit: str | None = None                                  # MeasurementUnit OID
    range_checks: tuple[tuple[str, str, str], ...] = ()      # (comparator, Soft|Hard, value)
    code_list: str | None = None                             # CodeList OID
    aliases: tuple[tuple[str, str], ...] = ()                # (context, name)


@dataclass(frozen=True)
class CodeListSpec:
    name: str
    codes: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]   # (coded value, decode texts)


@dataclass(frozen=True)
class UnitSpec:
    ucum: str
    symbol: str


@dataclass
class ItemRef:
    oid: str
    mandatory: bool


@dataclass
class GroupMeta:
    """One ItemGroupDef: the main group of a form version, or one of its repeating groups."""

    oid: str
    name: str
    repeating: bool
    mandatory: bool
    refs: list[ItemRef] = field(default_factory=list)


@dataclass
class FormMeta:
    """How one form version is written: its OIDs, item by item."""

    form: FormDef
    oid: str
    repeating: bool
    groups: list[GroupMeta] = field(default_factory=list)        # the main group first
    items: dict[str, str] = field(default_factory=dict)          # item id -> ItemDef OID (identifying items absent)
    missing: dict[str, str] = field(default_factory=dict)        # item or group id -> companion ItemDef OID
    group_oids: dict[str, str] = field(default_factory=dict)     # repeating group id -> ItemGroupDef OID


class _Oids:
    """An OID per distinct definition: the plain base for the first, base + "." + suffix for a later different
    one. Fed every version of a form in order (not only those in use), so an OID names the same definition
    in every export, and an item unchanged by a new form version keeps its OID (its data pool across versions)."""

    def __init__(self) -> None:
        self._given: dict[tuple[str, Hashable], str] = {}
        self._taken: set[str] = set()

    def oid(self, base: str, spec: Hashable, suffix: str) -> str:
        key = (base, spec)
        if key not in self._given:
            candidates = chain((base, f"{base}.{suffix}"), (f"{base}.{suffix}.{n}" for n in count(2)))
            oid = next(c for c in candidates if c not in self._taken)
            self._taken.add(oid)
            self._given[key] = oid
        return self._given[key]


class Metadata:
    """The Study element's content for the form versions in use, with the OIDs the clinical data refer to."""

    def __init__(self, study: Study, versions_in_use: dict[str, list[str]]) -> None:
        self.study = study
        self.study_oid = f"S.{study.id}"
        self.oid = "MDV." + _digest([(f, v, study.form(f, v).content_hash) for f, vs in versions_in_use.items() for v in vs])
        self.description = "Form versions: " + ", ".join(f"{f} {'/'.join(vs)}" for f, vs in versions_in_use.items())
        self.forms: dict[tuple[str, str], FormMeta] = {}
        self._oids = _Oids()
        self._item_specs: dict[str, ItemSpec] = {}       # every version's definitions, by OID
        self._list_specs: dict[str, CodeListSpec] = {}
        self._unit_specs: dict[str, UnitSpec] = {}
        self._withheld = {form_id: study.withheld_items(form_id) for form_id in versions_in_use}
        for form_id, in_use in versions_in_use.items():
            for version in study.versions(form_id):     # all versions, in order: see _Oids
                meta = self._form(study.form(form_id, version))
                if version in in_use:
                    self.forms[(form_id, version)] = meta
        # Only what the versions in use refer to is written, in first-use order.
        used_items = [ref.oid for meta in self.forms.values() for group in meta.groups for ref in group.refs]
        self.item_defs = {oid: self._item_specs[oid] for oid in dict.fromkeys(used_items)}
        used_lists = {spec.code_list for spec in self.item_defs.values()}
        used_lists |= {name for spec in self.item_defs.values() for context, name in spec.aliases if context == MULTICHOICE_LIST}
        self.code_lists = {oid: spec for oid, spec in self._list_specs.items() if oid in used_lists}
        used_units = {spec.unit for spec in self.item_defs.values()}
        self.units = {oid: spec for oid, spec in self._unit_specs.items() if oid in used_units}

    # --- lookups used while writing the clinical data

    def form_meta(self, form_id: str, version: str) -> FormMeta:
        try:
            return self.forms[(form_id, version)]
        except KeyError:  # an entry saved with a new form version while the export ran
            raise RuntimeError(f"form {form_id} version {version} appeared during the export; run it again") from None

    def event_order(self) -> dict[str, int]:
        return {event.id: index for index, event in enumerate(self.study.events)}

    def repeating_event(self, event_id: str) -> bool:
        return any(event.id == event_id and event.repeatable for event in self.study.events)

    def event_forms(self, event_id: str) -> list[str]:
        return next((event.forms for event in self.study.events if event.id == event_id), [])

    def common_forms(self) -> list[str]:
        return [*self.study.subject_logs, *self.study.repeating_forms]

    # --- building

    def _form(self, form: FormDef) -> FormMeta:
        name = form.id.upper()
        version = f"V{form.version}"
        repeating = form.repeating or form.id in self.study.subject_logs or form.id in self.study.repeating_forms
        meta = FormMeta(form, f"F.{name}.{version}", repeating)
        main = GroupMeta(f"IG.{name}.{version}", form.title.get("en", form.id), repeating=False, mandatory=True)
        meta.groups.append(main)
        for node_id in form.top_level:
            group = form.groups.get(node_id)
            if group is None:
                self._item(meta, main, form.items[node_id])
                continue
            if group.missing_codes:
                meta.missing[group.id] = self._companion(main, form, group.id)
            rows = GroupMeta(f"IG.{name}.{version}.{group.id}", group.label.get("en", group.id), repeating=True,
                             mandatory=group.required and group.show_if is None)
            meta.groups.append(rows)
            meta.group_oids[group.id] = rows.oid
            for item_id in group.items:
                self._item(meta, rows, form.items[item_id])
        return meta

    def _item(self, meta: FormMeta, group: GroupMeta, item: ItemDef) -> None:
        form = meta.form
        if item.id in self._withheld[form.id]:  # identifying, or encrypted and not released: never described, never written
            return
        spec = self._item_spec(form, item)
        oid = self._oids.oid(f"I.{form.id.upper()}.{item.id}", spec, f"V{form.version}")
        self._item_specs.setdefault(oid, spec)
        meta.items[item.id] = oid
        group.refs.append(ItemRef(oid, item.required and item.show_if is None and not item.missing_codes))
        if item.missing_codes:
            meta.missing[item.id] = self._companion(group, form, item.id)

    def _companion(self, group: GroupMeta, form: FormDef, of: str) -> str:
        """The <ITEM>_MISSING item that carries a missing-data code of item (or group) `of`."""
        codes = self.study.missing_codes
        spec = ItemSpec(name=f"{of}_MISSING", data_type="text", length=max(map(len, codes), default=1),
                        description=f"Missing-data code recorded for {of} (whose ItemData is then IsNull)",
                        code_list=self._missing_list())
        oid = self._oids.oid(f"I.{form.id.upper()}.{of}.MISSING", spec, f"V{form.version}")
        self._item_specs.setdefault(oid, spec)
        group.refs.append(ItemRef(oid, False))
        return oid

    def _missing_list(self) -> str:
        labels = self.study.missing_code_labels
        spec = CodeListSpec("Missing-data codes", tuple((code, self._labels(labels.get(code) or {"en": text}))
                                                        for code, text in self.study.missing_codes.items()))
        return self._code_list(MISSING_CODE_LIST, spec, "study")

    def _item_spec(self, form: FormDef, item: ItemDef) -> ItemSpec:
        kind = item.value_kind
        data_type = "partialDate" if kind == "date" and item.partial and not item.computed else DATA_TYPES[kind]
        code_list = None
        aliases: tuple[tuple[str, str], ...] = ()
        length = None
        if item.code_list:
            code_list = self._item_code_list(form, item)
            length = max(len(code) for code in item.code_list)
        if kind == "multichoice":
            # A value is a list of codes, which no single CodedValue matches: point at the list by an Alias.
            aliases, code_list, length = ((MULTICHOICE_LIST, code_list),), None, None
        elif kind == "text":
            length = item.text_limit or None
        return ItemSpec(
            name=item.id, data_type=data_type, question=self._labels(item.label), length=length,
            significant_digits=item.precision if kind == "decimal" else None,
            origin="Derived" if item.computed else None, comment=_derivation(item),
            unit=self._unit(item) if item.unit else None, range_checks=_range_checks(item) if kind in ("integer", "decimal") else (),
            code_list=code_list, aliases=aliases)

    def _item_code_list(self, form: FormDef, item: ItemDef) -> str:
        name = item.code_list_name or item.id
        spec = CodeListSpec(name, tuple((code, self._labels(labels)) for code, labels in item.code_list.items()))
        if name in self.study.code_lists:          # a shared list: one definition study-wide
            return self._code_list(f"CL.{name}", spec, f"{form.id.upper()}.V{form.version}")
        local = name.rsplit(".", 1)[-1]             # an inline list is named "<form dir>.<item>"
        return self._code_list(f"CL.{form.id.upper()}.{local}", spec, f"V{form.version}")

    def _code_list(self, base: str, spec: CodeListSpec, suffix: str) -> str:
        oid = self._oids.oid(base, spec, suffix)
        self._list_specs.setdefault(oid, spec)
        return oid

    def _unit(self, item: ItemDef) -> str:
        spec = UnitSpec(item.unit, item.unit_display or item.unit)
        oid = self._oids.oid(f"MU.{item.unit}", spec, spec.symbol)    # UCUM: /min is beats/min or breaths/min
        self._unit_specs.setdefault(oid, spec)
        return oid

    def _labels(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        """Label texts in the study's language order."""
        order = [*self.study.languages, *sorted(set(labels) - set(self.study.languages))]
        return tuple((language, labels[language]) for language in order if labels.get(language))


def _digest(parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _derivation(item: ItemDef) -> str | None:
    if item.type == "calculated":
        return f"Calculated (CEL): {item.expression}"
    if item.type == "derived":
        return f"Derived by the registered function {item.derivation}"
    return None


def _range_checks(item: ItemDef) -> tuple[tuple[str, str, str], ...]:
    bounds = [("GE", "Hard", item.min), ("LE", "Hard", item.max), ("GE", "Soft", item.soft_min), ("LE", "Soft", item.soft_max)]
    return tuple((comparator, strength, _number(bound)) for comparator, strength, bound in bounds if bound is not None)


def _number(value: Any) -> str:
    """A number in plain decimal notation (ODM float is xs:decimal: no exponent)."""
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(float(value))), "f")


# ---------------------------------------------------------------------------------------------- the Study element


def _write_study(xml: _Xml, metadata: Metadata) -> None:
    study = metadata.study
    xml.start("Study", {"OID": metadata.study_oid})
    xml.start("GlobalVariables")
    xml.leaf("StudyName", text=study.id)
    xml.leaf("StudyDescription", text=study.title.get("en", study.id))
    xml.leaf("ProtocolName", text=study.id)
    xml.end("GlobalVariables")
    xml.start("BasicDefinitions")
    for oid, unit in metadata.units.items():
        xml.start("MeasurementUnit", {"OID": oid, "Name": unit.symbol})
        xml.translated("Symbol", [("en", unit.symbol)])
        xml.leaf("Alias", {"Context": "UCUM", "Name": unit.ucum})
        xml.end("MeasurementUnit")
    xml.end("BasicDefinitions")
    xml.start("MetaDataVersion", {"OID": metadata.oid, "Name": f"{study.id} form versions in use",
                                  "Description": metadata.description})
    _write_protocol(xml, metadata)
    for form_meta in metadata.forms.values():
        _write_form_def(xml, form_meta)
    for form_meta in metadata.forms.values():
        for group in form_meta.groups:
            _write_group_def(xml, group)
    for oid, spec in metadata.item_defs.items():
        _write_item_def(xml, oid, spec)
    for oid, spec in [*metadata.code_lists.items(), (STATUS_CODE_LIST, _status_list())]:
        xml.start("CodeList", {"OID": oid, "Name": spec.name, "DataType": "text"})
        for code, decode in spec.codes:
            xml.start("CodeListItem", {"CodedValue": code})
            xml.translated("Decode", decode)
            xml.end("CodeListItem")
        xml.end("CodeList")
    xml.end("MetaDataVersion")
    xml.end("Study")


def _status_list() -> CodeListSpec:
    return CodeListSpec("Entry status", tuple((code, (("en", text),)) for code, text in ENTRY_STATUS_TEXT.items()))


def _write_protocol(xml: _Xml, metadata: Metadata) -> None:
    study = metadata.study
    xml.start("Protocol")
    for order, event in enumerate(study.events, 1):
        mandatory = event.day is not None and not event.optional and not event.repeatable
        xml.leaf("StudyEventRef", {"StudyEventOID": f"SE.{event.id}", "OrderNumber": order, "Mandatory": _yes(mandatory)})
    xml.leaf("StudyEventRef", {"StudyEventOID": f"SE.{COMMON_EVENT}", "OrderNumber": len(study.events) + 1, "Mandatory": "No"})
    xml.end("Protocol")
    for event in study.events:
        kind = "Scheduled" if event.day is not None else "Unscheduled"
        _write_event_def(xml, metadata, f"SE.{event.id}", event.label.get("en", event.id), event.repeatable, kind, event.forms)
    _write_event_def(xml, metadata, f"SE.{COMMON_EVENT}", "Subject logs and daily assessments (no visit)", False, "Common",
                     metadata.common_forms())


def _write_event_def(xml: _Xml, metadata: Metadata, oid: str, name: str, repeating: bool, kind: str,
                     form_ids: list[str]) -> None:
    xml.start("StudyEventDef", {"OID": oid, "Name": name, "Repeating": _yes(repeating), "Type": kind})
    order = 0
    for form_id in form_ids:
        for (used_id, _version), form_meta in metadata.forms.items():
            if used_id == form_id:
                order += 1
                xml.leaf("FormRef", {"FormOID": form_meta.oid, "OrderNumber": order, "Mandatory": "No"})
    xml.end("StudyEventDef")


def _write_form_def(xml: _Xml, form_meta: FormMeta) -> None:
    form = form_meta.form
    xml.start("FormDef", {"OID": form_meta.oid, "Name": f"{form.title.get('en', form.id)} (version {form.version})",
                          "Repeating": _yes(form_meta.repeating)})
    for order, group in enumerate(form_meta.groups, 1):
        xml.leaf("ItemGroupRef", {"ItemGroupOID": group.oid, "OrderNumber": order, "Mandatory": _yes(group.mandatory)})
    xml.leaf("Alias", {"Context": "edc:form", "Name": f"{form.id}/{form.version}"})
    xml.end("FormDef")


def _write_group_def(xml: _Xml, group: GroupMeta) -> None:
    xml.start("ItemGroupDef", {"OID": group.oid, "Name": group.name, "Repeating": _yes(group.repeating)})
    for order, ref in enumerate(group.refs, 1):
        xml.leaf("ItemRef", {"ItemOID": ref.oid, "OrderNumber": order, "Mandatory": _yes(ref.mandatory)})
    xml.end("ItemGroupDef")


def _write_item_def(xml: _Xml, oid: str, spec: ItemSpec) -> None:
    xml.start("ItemDef", {"OID": oid, "Name": spec.name, "DataType": spec.data_type, "Length": spec.length,
                          "SignificantDigits": spec.significant_digits, "Origin": spec.origin, "Comment": spec.comment})
    if spec.description:
        xml.translated("Description", [("en", spec.description)])
    if spec.question:
        xml.translated("Question", spec.question)
    if spec.unit:
        xml.leaf("MeasurementUnitRef", {"MeasurementUnitOID": spec.unit})
    for comparator, strength, value in spec.range_checks:
        xml.start("RangeCheck", {"Comparator": comparator, "SoftHard": strength})
        xml.leaf("CheckValue", text=value)
        xml.end("RangeCheck")
    if spec.code_list:
        xml.leaf("CodeListRef", {"CodeListOID": spec.code_list})
    for context, name in spec.aliases:
        xml.leaf("Alias", {"Context": context, "Name": name})
    xml.end("ItemDef")


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


# ---------------------------------------------------------------------------------------------- AdminData


@dataclass
class _Admin:
    sites: list[Site]
    site_codes: dict[uuid.UUID, str]
    users: list[tuple[str, str | None, str | None, list[str]]]   # (username, UserType, roles text, site codes)
    with_audit: bool


def _admin_data(session: Session, include_audit: bool) -> _Admin:
    """Every site (subjects, audit records and signatures point at them); with audit, every actor of a
    subject's audit chain and every user, by login name and roles only."""
    sites = list(session.scalars(sa.select(Site).order_by(Site.code)))
    users: list[tuple[str, str | None, str | None, list[str]]] = []
    if include_audit:
        codes = {site.id: site.code for site in sites}
        known = {}
        for user in session.scalars(sa.select(User).order_by(User.username)):
            grants = [g for g in user.roles if g.revoked_at is None]
            roles = sorted({_role_text(g.role, g.principal_investigator, codes.get(g.site_id)) for g in grants})
            known[user.username] = (user.username, _user_type(g.role for g in grants), ", ".join(roles) or None,
                                    sorted({codes[g.site_id] for g in grants if g.site_id in codes}))
        actors = session.scalars(sa.select(AuditRecord.actor_username).where(AuditRecord.chain.like("subject:%")).distinct())
        for username in set(actors) - set(known):
            known[username] = (username, "Other", "system" if username.startswith("system:") else None, [])
        users = [known[name] for name in sorted(known)]
    return _Admin(sites, {site.id: site.code for site in sites}, users, include_audit)


def _user_type(roles: Iterable[str]) -> str:
    kinds = {USER_TYPES.get(role, "Other") for role in roles}
    return next((kind for kind in ("Investigator", "Sponsor") if kind in kinds), "Other")


def _role_text(role: str, principal: bool, site: str | None) -> str:
    text = "principal investigator" if principal else role.replace("_", " ")
    return f"{text} {site}" if site else text


def _write_admin_data(xml: _Xml, metadata: Metadata, admin: _Admin) -> None:
    xml.start("AdminData", {"StudyOID": metadata.study_oid})
    for username, kind, roles, sites in admin.users:
        xml.start("User", {"OID": _user_oid(username), "UserType": kind})
        xml.leaf("LoginName", text=username)
        if roles:
            xml.leaf("DisplayName", text=roles)
        for code in sites:
            xml.leaf("LocationRef", {"LocationOID": _location_oid(code)})
        xml.end("User")
    effective = "2000-01-01"
    locations = [(SPONSOR_LOCATION, f"{metadata.study.id} sponsor and coordinating centre", "Sponsor", effective)]
    locations += [(_location_oid(site.code), site.name, "Site", _day(site.created_at)) for site in admin.sites]
    for oid, name, kind, since in locations:
        xml.start("Location", {"OID": oid, "Name": name, "LocationType": kind})
        xml.leaf("MetaDataVersionRef", {"StudyOID": metadata.study_oid, "MetaDataVersionOID": metadata.oid,
                                        "EffectiveDate": since})
        xml.end("Location")
    if admin.with_audit:
        for meaning in SIGNATURE_MEANINGS:
            xml.start("SignatureDef", {"OID": _signature_def_oid(meaning), "Methodology": "Electronic"})
            xml.leaf("Meaning", text=SIGNATURE_TEXT.get(meaning, meaning))
            xml.leaf("LegalReason", text=LEGAL_REASON)
            xml.end("SignatureDef")
    xml.end("AdminData")


def _day(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date().isoformat()


def _user_oid(username: str) -> str:
    return f"USR.{username}"


def _location_oid(site_code: str | None) -> str:
    return f"LOC.{site_code}" if site_code else SPONSOR_LOCATION


def _signature_def_oid(meaning: str) -> str:
    return f"SD.{meaning}"


# ---------------------------------------------------------------------------------------------- ClinicalData


@dataclass
class _SubjectAudit:
    """The last audit record of the subject, of each entry and of each item or group of an entry (a snapshot
    carries one AuditRecord per element: the change that gave it its current value), and the signatures."""

    subject: dict[str, Any] | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    fields: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    entry_signatures: dict[uuid.UUID, source.SignatureRecord] = field(default_factory=dict)
    casebook_signature: source.SignatureRecord | None = None
    site_codes: dict[uuid.UUID, str] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session, subject_id: uuid.UUID, as_of: datetime | None, admin: _Admin) -> _SubjectAudit:
        audit = cls(site_codes=admin.site_codes)
        for record in source.subject_audit_trail(session, subject_id):   # oldest first: the last one wins
            if as_of is not None and _aware(record["occurred_at"]) > as_of:
                continue
            if record["entity_type"] == "subject" and record["action"] != "casebook_signed":
                audit.subject = record
            elif record["entity_type"] == "entry" and record["action"] != "entry_signed":
                audit.entries[record["entity_id"]] = record
                for change in record["changes"]:
                    audit.fields[(record["entity_id"], change["field"])] = record
        for signature in source.subject_signatures(session, subject_id, until=as_of):  # as they stood at the cut-off
            if not signature.valid:
                continue
            if signature.entry_id is None:
                audit.casebook_signature = signature
            else:
                audit.entry_signatures[signature.entry_id] = signature
        return audit


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _write_subject(xml: _Xml, metadata: Metadata, book: source.Casebook, audit: _SubjectAudit | None) -> None:
    subject = book.subject
    xml.start("SubjectData", {"SubjectKey": subject.number})
    if audit is not None:
        _write_audit_record(xml, audit.subject)
        _write_signature(xml, audit, audit.casebook_signature)
    xml.leaf("SiteRef", {"LocationOID": _location_oid(subject.site.code)})
    for event_oid, repeat_key, entries in _events(metadata, book.entries):
        xml.start("StudyEventData", {"StudyEventOID": event_oid, "StudyEventRepeatKey": repeat_key})
        for entry in entries:
            _write_form_data(xml, metadata, entry, audit)
        xml.end("StudyEventData")
    xml.end("SubjectData")


def _events(metadata: Metadata, entries: list[source.EntryRecord]) -> list[tuple[str, str | None, list[source.EntryRecord]]]:
    """Entries by event instance, in schedule order (then instance number); the subject logs and daily forms
    last; inside an event, forms in the event's order and each form's entries oldest first."""
    schedule = metadata.event_order()
    by_event: dict[str, list[source.EntryRecord]] = {}
    for entry in entries:
        by_event.setdefault(entry.event_key, []).append(entry)

    def event_position(key: str) -> tuple[int, int]:
        if not key:
            return len(schedule), 0
        event_id, _, instance = key.partition("/")
        return schedule.get(event_id, len(schedule) + 1), int(instance or 1)

    result = []
    for key in sorted(by_event, key=lambda k: (event_position(k), k)):
        event_id, _, instance = key.partition("/")
        if key:
            form_order = metadata.event_forms(event_id)
            oid, repeat_key = f"SE.{event_id}", instance if metadata.repeating_event(event_id) else None
        else:
            form_order = metadata.common_forms()
            oid, repeat_key = f"SE.{COMMON_EVENT}", None
        rank = {form_id: index for index, form_id in enumerate(form_order)}
        ordered = sorted(by_event[key], key=lambda e: rank.get(e.form_id, len(rank)))   # stable: creation order kept
        result.append((oid, repeat_key, ordered))
    return result


def _write_form_data(xml: _Xml, metadata: Metadata, entry: source.EntryRecord, audit: _SubjectAudit | None) -> None:
    meta = metadata.form_meta(entry.form_id, entry.form_version)
    form, values = meta.form, entry.values
    entry_key = str(entry.id)
    # The entry id is the repeat key: it never changes, whatever the selection (a running number would).
    xml.start("FormData", {"FormOID": meta.oid, "FormRepeatKey": entry_key if meta.repeating else None})
    if audit is not None:
        _write_audit_record(xml, audit.entries.get(entry_key))
        signature = audit.entry_signatures.get(entry.id)
        _write_signature(xml, audit, signature if signature and signature.entry_version == entry.version else None)
    # Whether the site marked the entry complete: a flag, since ODM has no status attribute.
    xml.start("Annotation", {"SeqNum": 1})
    xml.start("Flag")
    xml.leaf("FlagValue", {"CodeListOID": STATUS_CODE_LIST}, entry.status)
    xml.end("Flag")
    xml.end("Annotation")
    xml.start("ItemGroupData", {"ItemGroupOID": meta.groups[0].oid})
    for node_id in form.top_level:
        value = values.get(node_id)
        if node_id in form.groups:
            code = _missing_code(value)
            if code is not None and node_id in meta.missing:
                _write_item_data(xml, meta.missing[node_id], code, _field_audit(audit, entry_key, node_id))
        else:
            _write_item(xml, meta, node_id, value, _field_audit(audit, entry_key, node_id))
    xml.end("ItemGroupData")
    for group in (form.groups[node_id] for node_id in form.top_level if node_id in form.groups):
        rows = values.get(group.id)
        if isinstance(rows, list):
            _write_rows(xml, meta, group, rows, _field_audit(audit, entry_key, group.id))
    xml.end("FormData")


def _write_rows(xml: _Xml, meta: FormMeta, group: GroupDef, rows: list[Any], record: dict[str, Any] | None) -> None:
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            continue
        xml.start("ItemGroupData", {"ItemGroupOID": meta.group_oids[group.id], "ItemGroupRepeatKey": number})
        _write_audit_record(xml, record)
        for item_id in group.items:
            _write_item(xml, meta, item_id, row.get(item_id), None)
        xml.end("ItemGroupData")


def _field_audit(audit: _SubjectAudit | None, entry_key: str, field_id: str) -> dict[str, Any] | None:
    return audit.fields.get((entry_key, field_id)) if audit is not None else None


def _write_item(xml: _Xml, meta: FormMeta, item_id: str, value: Any, record: dict[str, Any] | None) -> None:
    oid = meta.items.get(item_id)      # None for withheld items (Study.withheld_items): they never leave
    if oid is None or value is None or value == "" or value == []:
        return
    code = _missing_code(value)
    if code is None:
        text = _value_text(meta.form.items[item_id], value)
        if text is not None:
            _write_item_data(xml, oid, text, record)
        return
    _write_item_data(xml, oid, None, record)
    if item_id in meta.missing:
        _write_item_data(xml, meta.missing[item_id], code, None)


def _write_item_data(xml: _Xml, oid: str, value: str | None, record: dict[str, Any] | None) -> None:
    attrs = {"ItemOID": oid, "Value": value} if value is not None else {"ItemOID": oid, "IsNull": "Yes"}
    if record is None:
        xml.leaf("ItemData", attrs)
        return
    xml.start("ItemData", attrs)
    _write_audit_record(xml, record)
    xml.end("ItemData")


def _missing_code(value: Any) -> str | None:
    """The code of a stored missing-data value ({"missing": code} with an optional note, which stays behind)."""
    return value.get("missing") if isinstance(value, dict) and isinstance(value.get("missing"), str) else None


def _value_text(item: ItemDef, value: Any) -> str | None:
    """A stored value as ODM text: dates as collected (partial ones stay partial), decimals without exponent."""
    kind = item.value_kind
    if kind == "multichoice":
        return MULTI_SEPARATOR.join(value) if isinstance(value, list) and all(isinstance(c, str) for c in value) else None
    if isinstance(value, bool):
        return ("true" if value else "false") if kind == "boolean" else None
    if kind in ("integer", "decimal") and isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return value
    return None


def _write_audit_record(xml: _Xml, record: dict[str, Any] | None) -> None:
    if record is None:
        return
    xml.start("AuditRecord")
    xml.leaf("UserRef", {"UserOID": _user_oid(record["actor"])})
    xml.leaf("LocationRef", {"LocationOID": _location_oid(record["site"])})
    xml.leaf("DateTimeStamp", text=_instant(record["occurred_at"]))
    if record.get("reason"):
        xml.leaf("ReasonForChange", text=record["reason"])
    xml.leaf("SourceID", text=f"audit:{record['id']}")
    xml.end("AuditRecord")


def _write_signature(xml: _Xml, audit: _SubjectAudit, signature: source.SignatureRecord | None) -> None:
    if signature is None:
        return
    xml.start("Signature")
    xml.leaf("UserRef", {"UserOID": _user_oid(signature.signer_username)})
    xml.leaf("LocationRef", {"LocationOID": _location_oid(audit.site_codes.get(signature.site_id))})
    xml.leaf("SignatureRef", {"SignatureOID": _signature_def_oid(signature.meaning)})
    xml.leaf("DateTimeStamp", text=_instant(signature.signed_at))
    xml.end("Signature")


# ---------------------------------------------------------------------------------------------- the selection


def _granularity(selection: source.Selection) -> str | None:
    """ODM's shorthand for what the file covers: All when nothing is filtered out, SingleSite for one site."""
    restricted = [selection.forms, selection.statuses, selection.since]
    if any(value is not None for value in restricted):
        return None
    if selection.site_ids is None:
        return "All"
    return "SingleSite" if len(selection.site_ids) == 1 else None


