"""FHIR Bulk Data output: one NDJSON file per resource type, `<Type>.ndjson`, R4 JSON one resource a line.

The casebooks come from edc.exports.source (study-number order, a batch of subjects at a time) and each
subject's resources from the mapper (edc.exports.fhir), so a file holds the same resources as the
subjects' `$everything` Bundles, in the same order, written as they are built: the files stay open,
memory holds one batch of casebooks and never grows with the number of subjects. Same data, same bytes:
resource ids derive from record ids, keys come in the models' order, separators are compact.

Written once per export, whoever references them (deduplicated by id): the study-wide resources, that is
each site's Organization, the ResearchStudy and the Medications of `fhir.drugs` (one per drug).

`_since` (Selection.since): the Bulk Data rule is "resources whose state changed after `_since`". The
export has no stored history to diff against, so a resource counts as changed when any record it was
built from changed after `since` (edc.exports.fhir records them with each resource):
- a resource made from one entry (Observations, MedicationAdministrations, AdverseEvent...) follows that
  entry, plus the entries it points into when they can appear or change later: an AdverseEvent follows
  the entries that made its suspect product, drugs or procedure; a product administration the
  manufacturing entry (the product's id);
- Patient and ResearchSubject follow the subject row (status, dates); Consent the consent entry and the
  subject row (its fallback date); Condition the diagnosis, response and relapse entries (its clinical
  status follows the last response); the product's Medication its manufacturing and administration entries;
- an entry's Provenance follows that entry and whatever its targets follow; the subject's Provenance
  (whose targets move to an entry's Provenance once that entry exists) comes with every changed subject.
This may send a resource that did not change (a Provenance whose Condition was re-derived identically),
never leaves out one that did. Entries are never deleted, so there is no `deleted` list to give.
The Organization and ResearchStudy come with the subjects of every export, `_since` or not: a registry
needs them to resolve the references of what it receives, and they cost two lines per site.
The mapper builds from whole casebooks (Condition from every response, the product from every infusion):
with `since`, the selection is read with `whole_casebooks=True` whatever the caller gave.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from edc import runtime
from edc.exports import fhir
from edc.exports.files import ExportFile, Progress, describe, no_progress
from edc.exports.source import Selection, casebooks

MEDIA_TYPE = "application/fhir+ndjson"
RESOURCE_TYPES = frozenset(fhir.RESOURCE_TYPES)


def check_types(requested: Iterable[str]) -> frozenset[str]:
    """The resource types asked for (Bulk Data `_type`); ValueError names any type this export never makes."""
    wanted = frozenset(name.strip() for name in requested)
    unknown = sorted(wanted - RESOURCE_TYPES)
    if unknown:
        raise ValueError(f"Unsupported resource type(s): {', '.join(unknown)}; "
                         f"this server exports {', '.join(sorted(RESOURCE_TYPES))}.")
    if not wanted:
        raise ValueError("No resource type given.")
    return wanted


def write_ndjson(session: Session, selection: Selection, directory: Path, *, types: frozenset[str] | None = None,
                 progress: Progress = no_progress) -> list[ExportFile]:
    """Write the selected casebooks as `<Type>.ndjson` files into `directory`; one ExportFile per type written."""
    wanted = check_types(types) if types is not None else RESOURCE_TYPES
    since = selection.since
    if since is not None:
        selection = replace(selection, whole_casebooks=True)
    study = runtime.of(session).study
    with _TypeFiles(directory) as files:
        for done, book in enumerate(casebooks(session, selection), start=1):
            for item in fhir.dated_subject_resources(study, book.subject, [(e, e.values) for e in book.entries]):
                if item.resource.get_resource_type() in wanted and _changed_since(item, since):
                    files.write(item.resource, once=item.shared)
            progress(done)  # may raise Cancelled: the open files are closed on the way out
        return files.finish()


def _changed_since(item: fhir.DatedResource, since: datetime | None) -> bool:
    return since is None or item.changed_at is None or item.changed_at > since


def ndjson_line(resource) -> bytes:
    """One resource as an NDJSON line: compact R4 JSON in the models' key order, UTF-8, newline-terminated."""
    return json.dumps(fhir.to_json(resource), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _TypeFiles:
    """One open file per resource type, made on its first resource; counts what each holds."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.handles: dict[str, BinaryIO] = {}
        self.counts: dict[str, int] = {}
        self.written_once: set[str] = set()  # ids of study-wide resources already written (a few per site and drug)
        self._stack = ExitStack()

    def __enter__(self) -> _TypeFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def write(self, resource, *, once: bool) -> None:
        kind = resource.get_resource_type()
        if once:
            key = f"{kind}/{resource.id}"
            if key in self.written_once:
                return
            self.written_once.add(key)
        handle = self.handles.get(kind)
        if handle is None:
            handle = self.handles[kind] = self._stack.enter_context((self.directory / f"{kind}.ndjson").open("wb"))
            self.counts[kind] = 0
        handle.write(ndjson_line(resource))
        self.counts[kind] += 1

    def finish(self) -> list[ExportFile]:
        """Close the files and describe them, by type name."""
        self._stack.close()
        return [describe(self.directory / f"{kind}.ndjson", records=self.counts[kind], media_type=MEDIA_TYPE,
                         description=f"FHIR R4 {kind} resources, one per line")
                for kind in sorted(self.handles)]
