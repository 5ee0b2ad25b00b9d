"""Load a forms directory (study.yaml, codelists.yaml, <form>/<version>.yaml, released.yaml) and check it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .definitions import ANCHORS, DefinitionError, EventDef, Study
from .expressions import cel_constant
from .formfile import FormBuild, FormFileBuilder, StudyBasics, parse_code_list
from .mapping import MappingReader
from .reading import (
    IDENTIFIER,
    LANGUAGE,
    BadValue,
    FileReader,
    Problems,
    boolean,
    identifier,
    identifiers,
    integer,
    non_negative,
    one_of,
    positive,
    text,
    version,
    version_key,
)
from .source import YamlMap, YamlSyntaxError, read_yaml
from .static import evaluate_samples, resolve_form_refs
from .derivations import derivation_references
from .reference import REFERENCE_DIR, item_problems, load_reference, reference_file_names

STUDY_FILE, CODELISTS_FILE, RELEASED_FILE = "study.yaml", "codelists.yaml", "released.yaml"
_STUDY_FILES = (STUDY_FILE, CODELISTS_FILE, RELEASED_FILE)
STUDY_KEYS = {"id", "title", "languages", "canonical_url", "parameters", "settings", "missing_codes", "events",
              "subject_logs", "repeating_forms", "form_roles", "anchors", "sdv", "safety", "fhir", "exports",
              "lab_baseline"}
EVENT_KEYS = {"id", "label", "anchor", "day", "window_before", "window_after", "forms", "repeatable", "optional"}
REPEATING_FORM_KEYS = {"anchor", "from_day", "to_day", "date_item"}
SETTINGS: dict[str, tuple[Any, Any]] = {  # name -> (parser, default)
    "reason_required_after_first_save": (boolean, False),
    "text_max_length": (positive, 4000),
    "max_group_rows": (positive, 200),
}
ROLES = ("investigator", "coordinator", "monitor", "data_manager", "safety", "manufacturing")


def check_definitions(path: str | Path) -> list[str]:
    """Load and check every definition under `path`; return "file:line: message" problems ([] when valid)."""
    return _Loader(Path(path)).load()[1]


def load_study(path: str | Path) -> Study:
    """Load the study under `path`; raise DefinitionError with every problem when it is invalid."""
    study, messages = _Loader(Path(path)).load()
    if messages:
        raise DefinitionError(messages)
    return study


class _Loader:
    def __init__(self, root: Path):
        self.root = root
        self.problems = Problems()
        self.languages: tuple[str, ...] = ("en",)
        self._study_lines: dict[str, int] = {}
        self._repeating_lines: dict[str, int] = {}
        self._form_dirs: set[str] = set()     # forms with a file, even a broken one (no cascading "unknown form")
        self._mapping: MappingReader | None = None

    def reader(self, relative: str) -> FileReader:
        return FileReader(str(self.root / relative), self.problems, self.languages)

    def read(self, relative: str) -> tuple[FileReader, Any]:
        reader = self.reader(relative)
        try:
            node = read_yaml(self.root / relative)
        except YamlSyntaxError as exc:
            reader.error(exc.line, exc.message)
            return reader, None
        if node is None:
            reader.error(1, "the file is empty")
        return reader, node

    def load(self) -> tuple[Study | None, list[str]]:
        if not (self.root / STUDY_FILE).is_file():
            self.reader(STUDY_FILE).error(1, f"missing {STUDY_FILE} in {self.root}")
            return None, self.problems.messages()
        study, basics = self._study()
        study.reference = load_reference(self.root, self.problems)   # forms/reference/*.yaml
        files = self._form_files()
        self._form_dirs = {form_dir for _, form_dir, _ in files}
        builds = self._forms(basics, files)
        self._attach_reference(study, builds)
        for build in builds:
            study.all_forms.setdefault(build.form.id, {})[build.form.version] = build.form
        study.all_forms = {form_id: dict(sorted(versions.items(), key=lambda pair: version_key(pair[0])))
                           for form_id, versions in sorted(study.all_forms.items())}
        self._link(study, builds)
        self._check_schedule(study)
        self._check_releases(study)
        if self._mapping is not None:
            self._mapping.check(study)
        return study, self.problems.messages()

    # ------------------------------------------------------------ study.yaml

    def _study(self) -> tuple[Study, StudyBasics]:
        reader, node = self.read(STUDY_FILE)
        node = reader.mapping(node, getattr(node, "line", 1), STUDY_FILE) if node is not None else None
        node = node if node is not None else _empty_map()
        fields = reader.fields(node, "the study", STUDY_KEYS, ("id", "title", "missing_codes", "events"))
        self.languages = reader.languages = fields.get("languages", _languages, ("en",))
        study_id = fields.get("id", text, "study")
        missing_labels = fields.get("missing_codes", self._missing_codes(reader), {})
        settings = self._settings(reader, fields)
        code_lists = self._code_lists()
        sdv_default, sdv_forms = fields.get("sdv", _sdv, ("all", {}))
        study = Study(
            id=study_id, title=fields.get("title", reader.labels, {"en": study_id}),
            parameters=fields.get("parameters", _parameters, {}), settings=settings,
            missing_codes={code: labels["en"] for code, labels in missing_labels.items()},
            missing_code_labels=missing_labels, languages=self.languages,
            events=self._events(reader, fields), subject_logs=list(fields.get("subject_logs", identifiers, ())),
            repeating_forms=self._repeating_forms(reader, fields), form_roles=fields.get("form_roles", _form_roles, {}),
            exclusive_forms=fields.get("form_roles", _exclusive_forms, set()),
            anchors=fields.get("anchors", _anchors, {}),
            lab_baseline=fields.get("lab_baseline", _lab_baseline, None),
            sdv_default=sdv_default, sdv_forms=sdv_forms,
            code_lists=code_lists, canonical_url=fields.get("canonical_url", _url, f"urn:edc:{study_id}"),
            source=reader.file)
        self._study_lines = {key: fields.line(key) for key in ("subject_logs", "repeating_forms", "form_roles", "anchors", "sdv",
                                                               "lab_baseline")}
        self._mapping = MappingReader(reader)   # what the engine reads of the forms: checked once they are loaded
        if fields.has("safety"):
            study.safety = self._mapping.read_safety(node["safety"], fields.line("safety"))
        if fields.has("fhir"):
            study.fhir = self._mapping.read_fhir(node["fhir"], fields.line("fhir"))
        if fields.has("exports"):
            study.exported_encrypted = self._mapping.read_exports(node["exports"], fields.line("exports"))
        basics = StudyBasics(study.id, study.canonical_url, self.languages, tuple(missing_labels), missing_labels,
                             code_lists, study.parameters, settings["text_max_length"], settings["max_group_rows"])
        return study, basics

    def _missing_codes(self, reader: FileReader):
        def parse(value: Any) -> dict[str, dict[str, str]]:
            if not isinstance(value, dict) or not value:
                raise BadValue("must map each code to its label, e.g. ND: Not done")
            parsed = {}
            for code, label in value.items():
                identifier(code)
                parsed[code] = reader.labels(label)
            return parsed
        return parse

    def _settings(self, reader: FileReader, fields) -> dict[str, Any]:
        settings = {name: default for name, (_, default) in SETTINGS.items()}
        node = reader.mapping(fields.node["settings"], fields.line("settings"), "settings") if fields.has("settings") else None
        if node is not None:
            setting_fields = reader.fields(node, "settings", SETTINGS)
            for name, (parse, default) in SETTINGS.items():
                settings[name] = setting_fields.get(name, parse, default)
        return settings

    def _events(self, reader: FileReader, fields) -> list[EventDef]:
        entries = reader.sequence(fields.node["events"], fields.line("events"), "events") if fields.has("events") else None
        events, seen = [], {}
        for index, entry in enumerate(entries or ()):
            node = reader.mapping(entry, entries.item_line(index), "an event")
            if node is None:
                continue
            event = self._event(reader, node)
            if event.id in seen:
                reader.error(node.key_line("id"), f"duplicate event id {event.id!r} (first defined at line {seen[event.id]})")
            seen.setdefault(event.id, node.line)
            events.append(event)
        return events

    def _event(self, reader: FileReader, node: YamlMap) -> EventDef:
        fields = reader.fields(node, f"event {node.get('id')!r}", EVENT_KEYS, ("id", "label", "forms"))
        repeatable = fields.get("repeatable", boolean, False)
        optional = fields.get("optional", boolean, False)
        if not repeatable and not optional:
            for key in ("anchor", "day"):
                if not fields.has(key):
                    fields.error(None, f"scheduled event {node.get('id')!r} needs {key!r} (or repeatable: true, "
                                       "or optional: true for an event-driven visit)")
        elif fields.has("anchor") != fields.has("day"):
            fields.error(None, f"event {node.get('id')!r}: give both anchor and day, or neither")
        event_id = fields.get("id", identifier, f"event{node.line}")
        return EventDef(id=event_id, label=fields.get("label", reader.labels, {"en": event_id}),
                        anchor=fields.get("anchor", one_of(*ANCHORS)), day=fields.get("day", integer),
                        window_before=fields.get("window_before", non_negative, 0),
                        window_after=fields.get("window_after", non_negative, 0),
                        forms=list(fields.get("forms", identifiers, ())), repeatable=repeatable, optional=optional,
                        line=node.line)

    def _repeating_forms(self, reader: FileReader, fields) -> dict[str, dict[str, Any]]:
        node = reader.mapping(fields.node["repeating_forms"], fields.line("repeating_forms"), "repeating_forms") \
            if fields.has("repeating_forms") else None
        result: dict[str, dict[str, Any]] = {}
        for form_id, spec in (node or {}).items():
            if not isinstance(form_id, str) or not IDENTIFIER.fullmatch(form_id):
                reader.error(node.key_line(form_id), f"repeating_forms: {form_id!r} is not a form id")
                continue
            spec_node = reader.mapping(spec, node.key_line(form_id), f"repeating form {form_id!r}")
            if spec_node is None:
                continue
            spec_fields = reader.fields(spec_node, f"repeating form {form_id!r}", REPEATING_FORM_KEYS, REPEATING_FORM_KEYS)
            entry = {"anchor": spec_fields.get("anchor", one_of(*ANCHORS)), "from_day": spec_fields.get("from_day", integer),
                     "to_day": spec_fields.get("to_day", integer), "date_item": spec_fields.get("date_item", identifier)}
            self._repeating_lines[form_id] = spec_node.line
            if entry["from_day"] is not None and entry["to_day"] is not None and entry["from_day"] > entry["to_day"]:
                spec_fields.error("from_day", "from_day is after to_day")
            result[form_id] = entry
        return result

    # ------------------------------------------------------------ codelists.yaml

    def _code_lists(self) -> dict[str, dict[str, dict[str, str]]]:
        if not (self.root / CODELISTS_FILE).is_file():
            return {}
        reader, node = self.read(CODELISTS_FILE)
        if node is None or reader.mapping(node, getattr(node, "line", 1), CODELISTS_FILE) is None:
            return {}
        for key, line in node.duplicate_keys:
            reader.error(line, f"duplicate code list {key!r}")
        lists = {}
        for name, entries in node.items():
            try:
                identifier(name)
            except BadValue as exc:
                reader.error(node.key_line(name), f"code list name: {exc}")
                continue
            parsed = parse_code_list(reader, entries, node.key_line(name), f"code list {name!r}")
            if parsed is not None:
                lists[name] = parsed
        return lists

    # ------------------------------------------------------------ form files

    def _form_files(self) -> list[tuple[str, str, str]]:
        """Return (relative path, form directory, version) of every form file."""
        files = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith((".", "_")) or (entry.name == REFERENCE_DIR and entry.is_dir()):  # reference data
                continue
            if entry.is_file() and entry.suffix in (".yaml", ".yml") and entry.name not in _STUDY_FILES:
                self.reader(entry.name).error(1, "unexpected file: a form lives in <form id>/<version>.yaml")
            elif entry.is_dir():
                files.extend(self._versions_in(entry))
        return files

    def _versions_in(self, directory: Path) -> list[tuple[str, str, str]]:
        found = []
        for entry in sorted(directory.iterdir()):
            relative = f"{directory.name}/{entry.name}"
            if entry.suffix not in (".yaml", ".yml"):
                continue
            try:
                identifier(directory.name)
                found.append((relative, directory.name, version(entry.stem)))
            except BadValue as exc:
                self.reader(relative).error(1, f"form files are <form id>/<version>.yaml: {exc}")
        return found

    def _forms(self, basics: StudyBasics, files: list[tuple[str, str, str]]) -> list[FormBuild]:
        builds = []
        for relative, form_dir, file_version in files:
            reader, node = self.read(relative)
            if node is None:
                continue
            build = FormFileBuilder(reader, basics, node, form_dir=form_dir, file_version=file_version).build()
            if build is not None:
                builds.append(build)
        return builds

    # ------------------------------------------------------------ reference data for derived items

    def _attach_reference(self, study: Study, builds: list[FormBuild]) -> None:
        """Give each derived item whose derivation reads reference data that data in params["reference"].

        The item's params as written stay what its content hash covers: reference data has its own versioning
        (a lab range set applies from its effective date), so adding a range set does not change a form.
        """
        present = reference_file_names(self.root)
        for build in builds:
            for item in build.form.items.values():
                names = derivation_references(item.derivation) if item.type == "derived" and item.derivation else ()
                if not names:
                    continue
                if "reference" in item.params:
                    build.reader.error(item.line, f"derived item {item.id!r}: params.reference is set by the loader "
                                                  "from forms/reference/, not in the form")
                missing = [name for name in names if name not in study.reference]
                for name in missing:
                    if name not in present:
                        build.reader.error(item.line, f"derived item {item.id!r}: derivation {item.derivation!r} needs "
                                                      f"reference data {name!r}: add {REFERENCE_DIR}/{name}.yaml")
                if missing:
                    build.broken.add(item.id)       # an invalid reference file reports its own problems
                    continue
                references = {name: study.reference[name] for name in names}
                inputs = {name: build.form.items[name] for name in item.inputs if name in build.form.items}
                problems = item_problems(item.derivation, item.params, inputs, references)
                for problem in problems:
                    build.reader.error(item.line, f"derived item {item.id!r}: {problem}")
                if problems:
                    build.broken.add(item.id)
                item.params = {**item.params, "reference": references}

    # ------------------------------------------------------------ whole-study checks

    def _link(self, study: Study, builds: list[FormBuild]) -> None:
        for build in builds:
            resolve_form_refs(study, build, build.reader)
            evaluate_samples(build, build.reader)
        for build in builds:
            for check in build.form.checks:
                program = check.program
                for form_id in {ref[0] for ref in program.form_refs} | set(program.entry_refs) if program else ():
                    study.cross_form_dependencies.setdefault(form_id, set()).add(build.form.id)
            for pending in build.expressions:
                for fact in pending.program.subject_facts:
                    study.subject_fact_dependencies.setdefault(fact, set()).add(build.form.id)
        rule = study.lab_baseline
        if rule is not None:   # a lab result's baseline reads the lab form's other entries and the treatment dates
            for source in (rule["form"], rule["before"]["form"]):
                study.cross_form_dependencies.setdefault(source, set()).add(rule["form"])

    def _check_schedule(self, study: Study) -> None:
        reader = self.reader(STUDY_FILE)
        event_forms: set[str] = set()
        for event in study.events:
            for form_id in event.forms:
                if form_id not in study.all_forms and form_id not in self._form_dirs:
                    reader.error(event.line, f"event {event.id!r}: unknown form {form_id!r}")
            event_forms |= set(event.forms)
        self._check_unattached(study, reader, "subject_logs", study.subject_logs, event_forms)
        self._check_unattached(study, reader, "repeating_forms", list(study.repeating_forms), event_forms)
        for form_id, spec in study.repeating_forms.items():
            self._check_date_item(study, reader, form_id, spec)
        for form_id in study.form_roles:
            if form_id not in study.all_forms and form_id not in self._form_dirs:
                reader.error(self._study_lines["form_roles"], f"form_roles: unknown form {form_id!r}")
        self._check_sdv(study, reader)
        for anchor, source in study.anchors.items():
            form = study.all_forms.get(source["form"])
            item = form[next(reversed(form))].items.get(source["item"]) if form else None
            if item is None or item.group is not None or item.value_kind not in ("date", "datetime"):
                reader.error(self._study_lines["anchors"],
                             f"anchors: {anchor} must name a date item of a form ({source['form']}.{source['item']} is not one)")
            if source["event"] is not None and source["form"] not in {f for e in study.events if e.id == source["event"]
                                                                       for f in e.forms}:
                reader.error(self._study_lines["anchors"], f"anchors: {anchor}: form {source['form']!r} is not at event "
                                                           f"{source['event']!r}")
        self._check_lab_baseline(study, reader)
        attached = event_forms | set(study.subject_logs) | set(study.repeating_forms)
        for form_id, versions in study.all_forms.items():
            if form_id not in attached:
                latest = versions[next(reversed(versions))]
                self.reader(Path(latest.source).relative_to(self.root).as_posix()).error(
                    1, f"form {form_id!r} is in no event, subject log or repeating form of {STUDY_FILE}")

    def _check_lab_baseline(self, study: Study, reader: FileReader) -> None:
        """lab_baseline: its forms, date items and event must exist (the sample date a top-level full date)."""
        rule = study.lab_baseline
        if rule is None:
            return
        line = self._study_lines["lab_baseline"]
        for source, top_level in ((rule, True), (rule["before"], False)):
            form = study.all_forms.get(source["form"])
            item = form[next(reversed(form))].items.get(source["date"]) if form else None
            if item is None or item.value_kind != "date" or item.partial or (top_level and item.group is not None):
                reader.error(line, f"lab_baseline: {source['form']}.{source['date']} is not a full date item of a form")
        if not any(event.id == rule["fallback_event"] and rule["form"] in event.forms for event in study.events):
            reader.error(line, f"lab_baseline: form {rule['form']!r} is not at event {rule['fallback_event']!r}")

    def _check_sdv(self, study: Study, reader: FileReader) -> None:
        """sdv: every form must exist, and every critical item be a top-level item (or group) of its latest version."""
        for form_id, requirement in study.sdv_forms.items():
            if form_id not in study.all_forms:
                if form_id not in self._form_dirs:
                    reader.error(self._study_lines["sdv"], f"sdv: unknown form {form_id!r}")
                continue
            if isinstance(requirement, tuple):
                form = study.form(form_id)
                verifiable = {i for i, item in form.items.items() if item.group is None} | set(form.groups)
                for item_id in requirement:
                    if item_id not in verifiable:
                        reader.error(self._study_lines["sdv"], f"sdv: form {form_id!r} has no item {item_id!r} "
                                                               "(name top-level items or repeating groups)")

    def _check_unattached(self, study: Study, reader: FileReader, key: str, form_ids: list[str], event_forms: set[str]) -> None:
        line = self._study_lines[key]
        for form_id in form_ids:
            if form_id not in study.all_forms:
                if form_id not in self._form_dirs:
                    reader.error(line, f"{key}: unknown form {form_id!r}")
                continue
            if form_id in event_forms:
                reader.error(line, f"{key}: form {form_id!r} is also scheduled at an event; it belongs to no event")
            if not study.form(form_id).repeating:
                reader.error(line, f"{key}: form {form_id!r} must be repeating: true")
        if key == "subject_logs" and set(form_ids) & set(study.repeating_forms):
            reader.error(line, "a form cannot be both a subject log and a repeating dated form")

    def _check_date_item(self, study: Study, reader: FileReader, form_id: str, spec: dict[str, Any]) -> None:
        if form_id not in study.all_forms or spec["date_item"] is None:
            return
        item = study.form(form_id).items.get(spec["date_item"])
        if item is None or item.type not in ("date", "datetime") or item.partial or item.group or not item.required:
            reader.error(self._repeating_lines[form_id], f"repeating form {form_id!r}: date_item {spec['date_item']!r} "
                                       "must be a required full-date or date-time item at the top level of the form")

    def _check_releases(self, study: Study) -> None:
        if not (self.root / RELEASED_FILE).is_file():
            return
        reader, node = self.read(RELEASED_FILE)
        released = _released_hashes(reader, node)
        for (form_id, form_version), (recorded, line) in released.items():
            form = study.all_forms.get(form_id, {}).get(form_version)
            if form is None:
                reader.error(line, f"released version {form_version} of form {form_id!r} is missing: "
                                   "a released version is never removed")
                continue
            form.released = True
            if form.content_hash != recorded:
                self.reader(Path(form.source).relative_to(self.root).as_posix()).error(
                    1, f"released version {form_version} of form {form_id!r} has changed (content sha256 "
                       f"{form.content_hash[:12]}…, released {recorded[:12]}…): restore it and make the change in a new version")


def _released_hashes(reader: FileReader, node: Any) -> dict[tuple[str, str], tuple[str, int]]:
    released: dict[tuple[str, str], tuple[str, int]] = {}
    if node is None or reader.mapping(node, getattr(node, "line", 1), RELEASED_FILE) is None:
        return released
    for form_id, versions in node.items():
        versions_node = reader.mapping(versions, node.key_line(form_id), f"released versions of {form_id!r}")
        for form_version, digest in (versions_node or {}).items():
            line = versions_node.key_line(form_version)
            if not isinstance(form_version, str) or not isinstance(digest, str) or len(digest) != 64:
                reader.error(line, 'write each release as "<version>": <sha256 hex>, with the version quoted')
                continue
            released[(str(form_id), form_version)] = (digest, line)
    return released


def check_recorded_hashes(study: Study, recorded: Mapping[tuple[str, str], str]) -> list[str]:
    """Compare content hashes recorded when entries were captured with the loaded forms; return problems."""
    problems = []
    for (form_id, form_version), digest in recorded.items():
        form = study.all_forms.get(form_id, {}).get(form_version)
        if form is None:
            problems.append(f"form {form_id!r} version {form_version} has entries but no definition")
        elif form.content_hash != digest:
            problems.append(f"{form.source}:1: form {form_id!r} version {form_version} changed after entries were "
                            "captured with it: make the change in a new version")
    return problems


def release(path: str | Path, form_id: str, form_version: str | None = None) -> str:
    """Record a form version's content hash in released.yaml (making it immutable); return the hash."""
    root = Path(path)
    study = load_study(root)
    form = study.form(form_id, form_version)
    manifest = {(fid, ver): digest for fid, versions in study.all_forms.items()
                for ver, digest in ((v.version, v.content_hash) for v in versions.values() if v.released)}
    manifest[(form.id, form.version)] = form.content_hash
    lines = ["# Content hashes of released form versions: a released version never changes (bump the version).",
             "# Written by edc.ecrf.release(); checked by `flask edc forms check`."]
    for current in sorted({fid for fid, _ in manifest}):
        lines.append(f"{current}:")
        for (fid, ver), digest in sorted(manifest.items(), key=lambda pair: version_key(pair[0][1])):
            if fid == current:
                lines.append(f'  "{ver}": {digest}')
    (root / RELEASED_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return form.content_hash


def _empty_map() -> YamlMap:
    node = YamlMap()
    node.line, node.key_lines, node.duplicate_keys = 1, {}, []
    return node


def _languages(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(code, str) and LANGUAGE.fullmatch(code) for code in value):
        raise BadValue("must be a list of language codes such as en, es, ar")
    if "en" not in value or len(set(value)) != len(value):
        raise BadValue("must list distinct language codes, including 'en'")
    return tuple(value)


def _parameters(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue("must map parameter names to values")
    for name, parameter in value.items():
        identifier(name)
        try:
            cel_constant(parameter)
        except (TypeError, ValueError):
            raise BadValue(f"parameter {name!r} has an unsupported value") from None
    return {name: parameter for name, parameter in value.items()}


def _form_roles(value: Any) -> dict[str, set[str]]:
    """form_roles: {mfg: [manufacturing]} or {mfg: {roles: [manufacturing], only: true}}."""
    if not isinstance(value, dict):
        raise BadValue("must map form ids to lists of roles")
    roles = {}
    for form_id, names in value.items():
        if isinstance(names, dict):
            if not set(names) <= {"roles", "only"} or "roles" not in names:
                raise BadValue(f"form {form_id!r}: give a list of roles, or {{roles: [...], only: true|false}}")
            boolean(names.get("only", False))
            names = names["roles"]
        parsed = identifiers(names)
        for role in parsed:
            if role not in ROLES:
                raise BadValue(f"unknown role {role!r} for form {form_id!r} (roles: {', '.join(ROLES)})")
        roles[identifier(form_id)] = set(parsed)
    return roles


def _exclusive_forms(value: Any) -> set[str]:
    """The forms whose form_roles say `only: true`: site staff do not enter them."""
    _form_roles(value)
    return {form_id for form_id, spec in value.items() if isinstance(spec, dict) and spec.get("only") is True}


SDV_LEVELS = ("all", "none")


def _sdv(value: Any) -> tuple[str, dict[str, str | tuple[str, ...]]]:
    """sdv: {default: all, forms: {inf: [EXSTDTC, EXDOSE], cm: none}}: per form, all items, none, or the
    listed critical items; forms not listed follow `default` (all when absent)."""
    if not isinstance(value, dict) or not set(value) <= {"default", "forms"}:
        raise BadValue("must be {default: all|none, forms: {<form>: all | none | [critical item ids]}}")
    default = one_of(*SDV_LEVELS)(value.get("default", "all"))
    forms = value.get("forms", {})
    if not isinstance(forms, dict):
        raise BadValue("forms: must map form ids to all, none or a list of critical item ids")
    parsed: dict[str, str | tuple[str, ...]] = {}
    for form_id, requirement in forms.items():
        if isinstance(requirement, list):
            if not requirement:
                raise BadValue(f"form {form_id!r}: list at least one critical item, or say none")
            parsed[identifier(form_id)] = identifiers(requirement)
        elif requirement in SDV_LEVELS:
            parsed[identifier(form_id)] = requirement
        else:
            raise BadValue(f"form {form_id!r}: {requirement!r} is not all, none or a list of item ids")
    return default, parsed


ANCHOR_SOURCES = ("planned_infusion", "day0")  # registration is the enrolment date itself


def _anchors(value: Any) -> dict[str, dict[str, str]]:
    """anchors: {day0: {form: inf, item: EXSTDTC, event: INF1}}: the item whose date sets the anchor
    (`event`, optional: only the entry at that event sets it, for a form used at several events)."""
    if not isinstance(value, dict):
        raise BadValue("must map anchors (planned_infusion, day0) to {form, item}")
    anchors = {}
    for anchor, source in value.items():
        if anchor not in ANCHOR_SOURCES:
            raise BadValue(f"unknown anchor {anchor!r} (anchors set from forms: {', '.join(ANCHOR_SOURCES)})")
        if not isinstance(source, dict) or not {"form", "item"} <= set(source) <= {"form", "item", "event"}:
            raise BadValue(f"anchor {anchor!r} must be {{form: <form id>, item: <date item id>[, event: <event id>]}}")
        anchors[anchor] = {"form": identifier(source["form"]), "item": identifier(source["item"]),
                           "event": identifier(source["event"]) if "event" in source else None}
    return anchors


def _lab_baseline(value: Any) -> dict[str, Any]:
    """lab_baseline: {form: lb, date: LBDAT, before: {form: ld, date: ECSTDAT}, fallback_event: SCR}: a result's
    baseline is its last value sampled before the earliest `before` date, else its value at `fallback_event`."""
    keys = {"form", "date", "before", "fallback_event"}
    if not isinstance(value, dict) or set(value) != keys:
        raise BadValue("must be {form: <lab form>, date: <sample date item>, before: {form, date}, fallback_event: <event>}")
    before = value["before"]
    if not isinstance(before, dict) or set(before) != {"form", "date"}:
        raise BadValue("before must be {form: <form id>, date: <date item id>} (the first day of treatment)")
    return {"form": identifier(value["form"]), "date": identifier(value["date"]),
            "before": {"form": identifier(before["form"]), "date": identifier(before["date"])},
            "fallback_event": identifier(value["fallback_event"])}


def _url(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value or any(char.isspace() for char in value):
        raise BadValue("must be an absolute URI")
    return value.rstrip("/")
