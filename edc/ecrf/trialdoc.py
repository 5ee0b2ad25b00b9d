"""docs/trial.md: the study's specification, generated from the loaded definitions (`flask edc forms doc`).

`render_trial_doc(study)` returns the Markdown: the schedule, the protocol parameters (with the comment
written next to each in study.yaml: its [P] basis), every form (items, computed items, checks), the
derivations (rule and trial.md section, read from the tables in the docstrings of the modules that
register them), the cross-form rules X1-X13 of the trial reference (§8.3) with what implements each,
and the shared code lists.

Besides the Study it reads only the definition files the Study names (study.source, form.source) for
their comments, which the engine drops: the header comment of a form file, the comment lines directly
above an item or a check, the comments of the `parameters:` block. The output is deterministic: no
timestamps, no absolute paths, every set sorted.

Which X-rule a check or item implements (section 5 of the output) is found, in this order, from
- an `Xn` tag in the comment lines directly above its `- id:` line in the form file (`# X5: ...`),
- an `Xn` in a check's English message or an item's English help (`... (X12).`),
- a check whose rule scans a text for an e-mail address (`TEXT.matches('...@...')`): X12,
- a derived item whose derivation's trial.md section names an X-rule (`cumulative_dose_per_kg`: X4).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from .definitions import CheckDef, FormDef, GroupDef, ItemDef, Study
from .derivations import get_derivation, registered_derivations
from .reference import Ctcae, LabCriteria

GENERATOR_COMMAND = "flask edc forms doc"

# The cross-form derivations and edit checks of the trial reference (trial.md §8.3).
CROSS_FORM_RULES: dict[str, tuple[str, str]] = {
    "X1": ("Day-0 anchor = EXSTDTC of fraction 1; every visit date has a window check against it", "window"),
    "X2": ("LD last dose to Day 0 within the protocol range (default 2-7 days)", "hard/soft"),
    "X3": ("Fraction n+1 given only if the CRS check for fraction n+1 is \"no CRS\" (or protocol override with "
           "reason)", "hard"),
    "X4": ("Cumulative dose/kg <= target × 1.10", "soft"),
    "X5": ("MFG.COI = APH.COI = INF.COI", "hard"),
    "X6": ("Derived CRS/ICANS grade vs investigator grade", "query"),
    "X7": ("AE max grade for CRS/ICANS = max daily derived grade", "query"),
    "X8": ("Serious ⇔ at least one criterion; grade 5 ⇔ death ⇔ DD form", "hard"),
    "X9": ("SAE submission <= 24 h after awareness; SUSAR <= 7/15 days", "alert/metric"),
    "X10": ("CR needs BM + CSF + counts inside the window; CRi if counts are below thresholds", "derivation"),
    "X11": ("Age-driven switches: CAPD vs ICE; Lansky vs Karnofsky; SBP threshold; assent requirement", "derivation"),
    "X12": ("Free-text identifier scan (regex for e-mail, phone, long digit runs)", "soft"),
    "X13": ("No DOB day; birth year/month <= consent date; age within IE range", "hard"),
}
# Parts of a rule that no form implements (the service does).
CROSS_FORM_NOTES = {
    "X9": "The reporting clocks are kept by the service (safety-reporting clocks, `edc/services/safety.py`) "
          "from the AE and SAE review forms; params sae_report_hours, susar_fatal_days, susar_other_days.",
}
X_TAG = re.compile(r"\bX(1[0-3]|[1-9])\b")
_IDENTIFIER_SCAN = re.compile(r"\.matches\(\s*r?['\"][^'\"]*@")   # X12: a free-text scan for an e-mail address
SITE_STAFF = "site staff"


# ---------------------------------------------------------------- text helpers


def _flat(text: Any) -> str:
    """One line: runs of whitespace (newlines of folded YAML included) become one space."""
    return " ".join(str(text).split())


def _md(text: Any) -> str:
    """Free text from the definitions as Markdown text: one line, `<` that would open an HTML tag escaped."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", _flat(text))


def _en(labels: dict[str, str] | None) -> str:
    """The English text of a label, as Markdown text."""
    return _md((labels or {}).get("en", ""))


def _cell(text: Any) -> str:
    """A table cell: one line, pipes escaped (also inside code spans, as GitHub Markdown needs)."""
    return _flat(text).replace("|", "\\|")


def _code(text: Any) -> str:
    """An inline code span that survives backticks in its text."""
    text = _flat(text)
    if not text:
        return ""
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _value(value: Any) -> str:
    """A parameter or params value as YAML flow text: 12, 1.1, '5.0', [RELATED, POSSIBLE], true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _number(value: Any) -> str:
    return value.isoformat() if isinstance(value, (date, datetime)) else _value(value)


def _anchor(form_id: str) -> str:
    return f"form-{form_id.lower()}"


def _form_link(form_id: str) -> str:
    return f"[{form_id}](#{_anchor(form_id)})"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _x_tags(*texts: str) -> set[str]:
    return {f"X{number}" for text in texts for number in X_TAG.findall(text or "")}


def _x_sorted(tags: Iterable[str]) -> list[str]:
    return sorted(set(tags), key=lambda tag: int(tag[1:]))


# ---------------------------------------------------------------- the definition files' comments


class _SourceFile:
    """The lines of a definition file, for the comments the YAML loader drops (empty when unreadable)."""

    def __init__(self, path: str | Path):
        try:
            self.lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            self.lines = []

    def header(self) -> str:
        """The comment lines at the top of the file, joined."""
        texts = []
        for line in self.lines:
            if not line.strip().startswith("#"):
                break
            texts.append(line.strip().lstrip("#").strip())
        return _md(" ".join(texts))

    def comment_above(self, line: int) -> str:
        """The comment lines directly above 1-based `line` (no blank line between), joined."""
        texts: list[str] = []
        index = line - 2
        while 0 <= index < len(self.lines) and self.lines[index].strip().startswith("#"):
            texts.insert(0, self.lines[index].strip().lstrip("#").strip())
            index -= 1
        return _md(" ".join(texts))


@dataclass
class _ParameterBlock:
    """The parameters of study.yaml in file order, grouped under their comment headings."""

    groups: list[tuple[str, list[str]]] = field(default_factory=list)   # (heading, parameter names)
    comments: dict[str, str] = field(default_factory=dict)


_PARAMETER_LINE = re.compile(r"^\s+([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)$")


def _parameter_block(study_source: str | Path) -> _ParameterBlock:
    """A line-based read of study.yaml's `parameters:` block: `name: value  # comment` and `# heading` lines."""
    block = _ParameterBlock()
    heading, names, inside = "", [], False
    for line in _SourceFile(study_source).lines:
        if not inside:
            inside = line.startswith("parameters:")
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if not line[0].isspace():
            if stripped.startswith("#"):
                continue
            break                                          # the next top-level key
        if stripped.startswith("#"):
            if names or not heading:
                if names:
                    block.groups.append((heading, names))
                heading, names = "", []
            heading = _md(f"{heading} {stripped.lstrip('#').strip()}")
            continue
        match = _PARAMETER_LINE.match(line)
        if match is None:
            continue                                       # a continuation line of a block value
        name, rest = match.groups()
        comment = re.search(r"\s#\s?(.*)$", rest)
        names.append(name)
        if comment:
            block.comments[name] = _md(comment.group(1))
    if names:
        block.groups.append((heading, names))
    return block


def _raw_derived_params(form: FormDef) -> dict[str, Any]:
    """Item id -> the `params` of each derived item as written (before `{param: name}` is replaced)."""
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "derived" and isinstance(node.get("id"), str) and "params" in node:
                found[node["id"]] = node["params"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(yaml.safe_load(Path(form.source).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError):
        pass
    return found


def _params_text(raw: Any, resolved: Any) -> str:
    """Derivation params as written, a `{param: name}` shown as `params.name (= value)`."""
    if isinstance(raw, dict) and set(raw) == {"param"}:
        return f"params.{raw['param']} (= {_value(resolved)})"
    if isinstance(raw, dict) and isinstance(resolved, dict):
        return "{" + ", ".join(f"{k}: {_params_text(v, resolved.get(k))}" for k, v in raw.items()) + "}"
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return "[" + ", ".join(_params_text(r, v) for r, v in zip(raw, resolved)) + "]"
    return _value(resolved)


def _param_refs(raw: Any) -> set[str]:
    if isinstance(raw, dict) and set(raw) == {"param"}:
        return {str(raw["param"])}
    values = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else ()
    return set().union(*(_param_refs(value) for value in values)) if values else set()


# ---------------------------------------------------------------- derivation metadata


@dataclass(frozen=True)
class DerivationInfo:
    name: str
    rule: str
    section: str       # trial.md section(s)
    module: str


def _docstring_tables(doc: str) -> dict[str, dict[str, str]]:
    """Rows of the Markdown tables in a docstring whose first column is a `name`: name -> {header: text}.

    A row with an empty first cell continues the row above it (a rule written over two lines)."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    last: dict[str, str] | None = None
    for line in doc.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            header, last = None, None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        name = cells[0].strip("`")
        values = dict(zip(header[1:], cells[1:]))
        if not name and last is not None:
            for key, text in values.items():
                if text:
                    last[key] = _flat(f"{last.get(key, '')} {text}")
            continue
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            last = rows[name] = dict(values)
    return rows


def derivation_info(name: str) -> DerivationInfo | None:
    """The rule and trial.md section of a registered derivation, from its module's docstring table.

    Columns: `rule` (or `result`), `trial.md`, `reference data`. Without a table row, the first paragraph
    of the function's docstring is the rule; without a trial.md column, a `trial.md §...` in the first
    line of the module docstring is the section."""
    fn = get_derivation(name)
    if fn is None:
        return None
    module = sys.modules.get(fn.__module__)
    module_doc = (module.__doc__ if module else "") or ""
    row = _docstring_tables(module_doc).get(name, {})
    rule = row.get("rule") or row.get("result") or ""
    if not rule:
        rule = _flat(((fn.__doc__ or "").strip().split("\n\n") or [""])[0])
    if row.get("reference data"):
        rule = f"{rule} (reference data: {row['reference data']})"
    section = row.get("trial.md", "")
    if not section:
        first_line = module_doc.strip().splitlines()[0] if module_doc.strip() else ""
        match = re.search(r"trial\.md\s+(§[^)]*)", first_line)
        section = match.group(1).strip() if match else ""
    return DerivationInfo(name, _md(rule.replace("`", "")), _md(section), fn.__module__)


def _documented_derivations(used: Iterable[str]) -> list[str]:
    """The derivations the engine ships (registered by edc modules) and those the study uses, sorted."""
    names = set(used)
    for name in registered_derivations():
        fn = get_derivation(name)
        if fn is not None and fn.__module__.startswith("edc."):
            names.add(name)
    return sorted(names)


# ---------------------------------------------------------------- the study's cross references


@dataclass(frozen=True)
class _Implementation:
    form: str
    kind: str           # "check", "item" or "group"
    id: str


def _current_forms(study: Study) -> list[FormDef]:
    """The latest version of every form: in schedule order (events, logs, repeating forms), then the rest."""
    order: list[str] = []
    for event in study.events:
        order += [form_id for form_id in event.forms if form_id not in order]
    order += [form_id for form_id in [*study.subject_logs, *study.repeating_forms] if form_id not in order]
    order += sorted(form_id for form_id in study.all_forms if form_id not in order)
    return [study.form(form_id) for form_id in order if form_id in study.all_forms]


def _item_and_group_order(form: FormDef) -> list[ItemDef | GroupDef]:
    ordered: list[ItemDef | GroupDef] = []
    for section in form.sections:
        for member in section.items:
            if member in form.groups:
                group = form.groups[member]
                ordered.append(group)
                ordered += [form.items[item_id] for item_id in group.items if item_id in form.items]
            elif member in form.items:
                ordered.append(form.items[member])
    return ordered


def _expressions_of(form: FormDef) -> list[Any]:
    programs = []
    for node in _item_and_group_order(form):
        programs.append(node.show_if_program)
        if isinstance(node, ItemDef):
            programs.append(node.expression_program)
    programs += [check.program for check in form.checks]
    return [program for program in programs if program is not None]


def _parameter_users(study: Study, forms: list[FormDef]) -> dict[str, list[str]]:
    users: dict[str, set[str]] = {}
    for form in forms:
        for program in _expressions_of(form):
            for name in program.params:
                users.setdefault(name, set()).add(form.id)
        for raw in _raw_derived_params(form).values():
            for name in _param_refs(raw):
                users.setdefault(name, set()).add(form.id)
    order = {form.id: index for index, form in enumerate(forms)}
    return {name: sorted(ids, key=lambda f: order.get(f, len(order))) for name, ids in users.items()}


def _where_used(study: Study, form_id: str) -> str:
    places = [event.id for event in study.events if form_id in event.forms]
    if form_id in study.subject_logs:
        places.append("subject log")
    if form_id in study.repeating_forms:
        spec = study.repeating_forms[form_id]
        places.append(f"repeating dated form, {spec['anchor']} day {spec['from_day']} to {spec['to_day']}, "
                      f"dated by {spec['date_item']}")
    return ", ".join(places) or "—"


def _entered_by(study: Study, form_id: str) -> str:
    roles = sorted(study.form_roles.get(form_id, ()))
    if form_id in study.exclusive_forms:
        return ", ".join(roles) + " only"
    return ", ".join([SITE_STAFF, *roles])


def _sdv(study: Study, form_id: str) -> str:
    requirement = study.sdv_requirement(form_id)
    if isinstance(requirement, tuple):
        return "critical items " + ", ".join(requirement)
    return {"all": "all items", "none": "none"}[requirement]


# ---------------------------------------------------------------- rendering


INTRO = """\
This document is **generated** from the study definitions in `{root}/` (`study.yaml`, `codelists.yaml`,
`<form>/<version>.yaml`) and from the derivations registered in the eCRF engine (`edc/ecrf/`), by

```
{command}
```

Do not edit it by hand: change the definitions (or a derivation's docstring table) and run the command
again. `{command} --check` exits with status 1 when this file is not what the command would write, and a
test (`tests/ecrf/test_trialdoc.py`) fails in the same case, so the document always describes the forms
the service runs. The form language is described in `docs/forms.md`.

Reading guide:

- Days count from the event's anchor: `registration` (the enrolment date), `planned_infusion` (the planned
  infusion date of the apheresis form) or `day0` (the first ARI-0001 fraction). A window is the number of
  days allowed before / after the scheduled day.
- Protocol parameters are the values marked [P] in the trial reference: rules read them as `params.<name>`,
  derived items as `{{param: <name>}}`. No threshold lives in Python.
- A check with severity `error` refuses the save (values impossible within one form); a `warning` saves the
  data and opens an automatic query. `critical` marks product identity, dosing and seriousness rules.
  `subject` scope: the rule reads other forms (`forms.<form>.<item>`, `entries.<form>`) or subject facts
  (`subject.<fact>`) and is re-run when they change.
- Computed items are calculated by the server, from a CEL expression or a registered derivation (section 4).
- {site_staff} are the investigators and coordinators of the subject's site.
- Notes and sources are the comments written in the definition files next to each form, item, check and
  parameter.
"""


class _Renderer:
    def __init__(self, study: Study):
        self.study = study
        self.study_path = Path(study.source)
        self.root_name = self.study_path.parent.name or "forms"
        self.forms = _current_forms(study)
        self.form_order = {form.id: index for index, form in enumerate(self.forms)}
        self.sources = {form.id: _SourceFile(form.source) for form in self.forms}
        self.raw_params = {form.id: _raw_derived_params(form) for form in self.forms}
        self.derivation_names = _documented_derivations(
            item.derivation for form in self.forms for item in form.items.values() if item.derivation)
        self.derivations = {name: derivation_info(name) for name in self.derivation_names}
        self.implementations = self._implementations()
        self.out: list[str] = []

    # -- helpers

    def emit(self, *lines: str) -> None:
        self.out.extend(lines)

    def rel_source(self, form: FormDef) -> str:
        try:
            return f"{self.root_name}/{Path(form.source).relative_to(self.study_path.parent).as_posix()}"
        except ValueError:
            return f"{self.root_name}/{form.id}/{form.version}.yaml"

    def _implementations(self) -> dict[str, list[_Implementation]]:
        found: dict[str, list[_Implementation]] = {}

        def add(tags: Iterable[str], impl: _Implementation) -> None:
            for tag in tags:
                if tag in CROSS_FORM_RULES:
                    found.setdefault(tag, []).append(impl)

        for form in self.forms:
            source = self.sources[form.id]
            for check in form.checks:
                tags = _x_tags(source.comment_above(check.line), _en(check.message))
                if _IDENTIFIER_SCAN.search(check.expression):
                    tags.add("X12")
                add(tags, _Implementation(form.id, "check", check.id))
            for node in _item_and_group_order(form):
                tags = _x_tags(source.comment_above(node.line), _en(node.help))
                if isinstance(node, ItemDef) and node.derivation and self.derivations.get(node.derivation):
                    tags |= _x_tags(self.derivations[node.derivation].section)
                kind = "group" if isinstance(node, GroupDef) else "item"
                add(tags, _Implementation(form.id, kind, self._item_ref(form, node)))
        return found

    @staticmethod
    def _item_ref(form: FormDef, node: ItemDef | GroupDef) -> str:
        if isinstance(node, ItemDef) and node.group:
            return f"{node.group}/{node.id}"
        return node.id

    # -- document

    def render(self) -> str:
        study = self.study
        self.emit(f"# {_en(study.title)}", "",
                  f"Study `{study.id}`: schedule, protocol parameters, forms, derivations and cross-form rules.", "",
                  INTRO.format(root=self.root_name, command=GENERATOR_COMMAND, site_staff=SITE_STAFF.capitalize()),
                  "Contents:", "",
                  "1. [Schedule](#1-schedule)",
                  "2. [Protocol parameters](#2-protocol-parameters)",
                  "3. [Forms](#3-forms)",
                  "4. [Derivations](#4-derivations)",
                  "5. [Cross-form rules X1-X13](#5-cross-form-rules-x1-x13)",
                  "6. [Shared code lists](#6-shared-code-lists)",
                  "7. [Data protection](#7-data-protection)",
                  "8. [CTCAE laboratory grades](#8-ctcae-laboratory-grades)", "")
        self.schedule()
        self.parameters()
        self.form_sections()
        self.derivation_table()
        self.cross_form_index()
        self.code_lists()
        self.data_protection()
        self.lab_grades()
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + "\n"

    def schedule(self) -> None:
        study = self.study
        self.emit("## 1. Schedule", "", "### Events", "")
        rows = []
        for event in study.events:
            window = (f"{-event.window_before} / +{event.window_after}"
                      if event.anchor is not None and event.day is not None else "—")
            notes = []
            if event.repeatable:
                notes.append("repeatable (each visit a new instance)")
            if event.optional:
                notes.append("optional or event-driven, never overdue")
            rows.append([f"`{event.id}`", _en(event.label), event.anchor or "—",
                         "—" if event.day is None else event.day, window,
                         ", ".join(_form_link(f) for f in event.forms), "; ".join(notes)])
        self.emit(*_table(["Event", "Label", "Anchor", "Day", "Window (days)", "Forms", "Notes"], rows), "")
        self.emit("### Subject logs", "",
                  "Any number of entries per subject, at no visit.", "")
        if study.subject_logs:
            self.emit(*_table(["Form", "Title"],
                              [[_form_link(f), self._title(f)] for f in study.subject_logs]), "")
        else:
            self.emit("None.", "")
        self.emit("### Repeating dated forms", "",
                  "Any number of entries, each dated by its date item, expected from the first to the last day "
                  "after the anchor.", "")
        if study.repeating_forms:
            rows = [[_form_link(f), self._title(f), spec["anchor"], spec["from_day"], spec["to_day"],
                     f"`{spec['date_item']}`"] for f, spec in sorted(study.repeating_forms.items())]
            self.emit(*_table(["Form", "Title", "Anchor", "From day", "To day", "Date item"], rows), "")
        else:
            self.emit("None.", "")
        self.emit("### Schedule anchors", "",
                  "`registration` is the subject's enrolment date. The others are set by a date item; saving it "
                  "moves the anchor (audited) and re-runs the rules that read it.", "")
        rows = [[f"`{name}`", _form_link(spec["form"]), f"`{spec['item']}`", spec.get("event") or "any"]
                for name, spec in sorted(study.anchors.items())]
        self.emit(*_table(["Anchor", "Form", "Item", "Entry at event"], rows), "")

    def _title(self, form_id: str) -> str:
        return _en(self.study.form(form_id).title) if form_id in self.study.all_forms else ""

    def parameters(self) -> None:
        study = self.study
        block = _parameter_block(self.study_path)
        users = _parameter_users(study, self.forms)
        listed = {name for _, names in block.groups for name in names}
        groups = [(heading, [n for n in names if n in study.parameters]) for heading, names in block.groups]
        rest = sorted(name for name in study.parameters if name not in listed)
        if rest:
            groups.append(("Other parameters", rest))
        self.emit("## 2. Protocol parameters", "",
                  f"From the `parameters:` block of `{self.root_name}/study.yaml`, in file order; the comment is the "
                  "one written next to the parameter ([P]: a proposal of the trial reference, to be confirmed by "
                  "the protocol). \"Read by\" lists the forms whose rules or derived items read the parameter; "
                  "— means no form does (the service may: the safety-reporting clocks read their own).", "")
        for heading, names in groups:
            if not names:
                continue
            if heading:
                self.emit(f"**{heading}**", "")
            rows = [[f"`{name}`", _code(_value(study.parameters[name])), block.comments.get(name, ""),
                     ", ".join(users.get(name, [])) or "—"] for name in names]
            self.emit(*_table(["Parameter", "Value", "Comment in study.yaml", "Read by"], rows), "")
        self.emit("**Missing-data codes**", "")
        self.emit(*_table(["Code", "Meaning"],
                          [[f"`{code}`", _en(labels)] for code, labels in study.missing_code_labels.items()]), "")
        self.emit("**Settings**", "")
        self.emit(*_table(["Setting", "Value"],
                          [[f"`{name}`", _code(_value(value))] for name, value in sorted(study.settings.items())]),
                  "")

    # -- forms

    def form_sections(self) -> None:
        self.emit("## 3. Forms", "")
        rows = [[_form_link(form.id), _en(form.title), form.version, _where_used(self.study, form.id),
                 _entered_by(self.study, form.id)] for form in self.forms]
        self.emit(*_table(["Form", "Title", "Version", "Used at", "Entered by"], rows), "")
        for form in self.forms:
            self.form_section(form)

    def form_section(self, form: FormDef) -> None:
        study = self.study
        source = self.sources[form.id]
        self.emit(f'<a id="{_anchor(form.id)}"></a>', "", f"### {form.id} — {_en(form.title)}", "")
        versions = study.versions(form.id)
        facts = [f"Version {form.version} ({'released' if form.released else 'not released'})",
                 f"file `{self.rel_source(form)}`", f"content hash `{form.content_hash[:12]}`"]
        if len(versions) > 1:
            facts.append("earlier versions " + ", ".join(v for v in versions if v != form.version))
        self.emit("; ".join(facts) + ".", "")
        lines = [f"- Used at: {_where_used(study, form.id)}",
                 f"- Entered by: {_entered_by(study, form.id)}",
                 f"- Source data verification: {_sdv(study, form.id)}",
                 f"- Entries: {'several per event instance or subject (repeating)' if form.repeating else 'one per event instance'}",
                 f"- Missing-data codes: {', '.join(form.missing_codes) or 'none'}"]
        anchors = [f"`{name}` ({spec['item']}" + (f", entry at {spec['event']})" if spec.get("event") else ")")
                   for name, spec in sorted(study.anchors.items()) if spec["form"] == form.id]
        if anchors:
            lines.append("- Sets the schedule anchor " + ", ".join(anchors))
        self.emit(*lines, "")
        if _en(form.description):
            self.emit(_en(form.description), "")
        header = source.header()
        if header:
            self.emit(f"> {header}", "")
        for section in form.sections:
            self.section(form, section)
        self.checks(form)

    def section(self, form: FormDef, section: Any) -> None:
        source = self.sources[form.id]
        self.emit(f"#### Section `{section.id}` — {_en(section.title)}", "")
        comment = source.comment_above(section.line)
        if comment:
            self.emit(comment, "")
        rows, notes = [], []
        for member in section.items:
            nodes: list[ItemDef | GroupDef] = []
            if member in form.groups:
                group = form.groups[member]
                nodes = [group, *(form.items[i] for i in group.items if i in form.items)]
            elif member in form.items:
                nodes = [form.items[member]]
            for node in nodes:
                ref = self._item_ref(form, node)
                rows.append(self.group_row(form, node) if isinstance(node, GroupDef) else self.item_row(form, node))
                comment = source.comment_above(node.line)
                if comment:
                    notes.append(f"- `{ref}`: {comment}")
        self.emit(*_table(["Item", "Label", "Type", "Unit", "Values", "Req.", "Computed / condition / notes"],
                          rows), "")
        if notes:
            self.emit("Notes from the form file:", "", *notes, "")

    def group_row(self, form: FormDef, group: GroupDef) -> list[str]:
        details = []
        if group.show_if:
            details.append(f"shown if {_code(group.show_if)}")
        if group.missing_codes != form.missing_codes:
            details.append("missing-data codes: " + (", ".join(group.missing_codes) or "none"))
        return [f"`{group.id}`", _en(group.label), "repeating group", "",
                f"up to {group.max_rows} rows" if group.max_rows else "", "yes" if group.required else "",
                "; ".join(details)]

    def item_row(self, form: FormDef, item: ItemDef) -> list[str]:
        kind = item.type
        if item.computed:
            kind = f"{item.type} ({item.value_type})"
        elif item.partial:
            kind = f"{item.type} (partial: {item.partial})"
        unit = item.unit_display or item.unit or ""
        if item.unit_display and item.unit and item.unit_display != item.unit:
            unit = f"{item.unit_display} ({item.unit})"
        values = []
        if item.min is not None or item.max is not None:
            low = "" if item.min is None else _number(item.min)
            high = "" if item.max is None else _number(item.max)
            values.append(f"{low} to {high}" if low and high else f">= {low}" if low else f"<= {high}")
        if item.soft_min is not None or item.soft_max is not None:
            low = "" if item.soft_min is None else _number(item.soft_min)
            high = "" if item.soft_max is None else _number(item.soft_max)
            values.append("expected " + (f"{low} to {high}" if low and high else f">= {low}" if low else f"<= {high}"))
        if item.precision is not None:
            values.append(f"{item.precision} decimal{'s' if item.precision != 1 else ''}")
        if item.code_list:
            codes = ", ".join(item.code_list)
            shared = item.code_list_name if item.code_list_name in self.study.code_lists else None
            values.append(f"{shared}: {codes}" if shared else codes)
        if item.pattern:
            values.append(f"pattern {_code(item.pattern)}")
        if item.max_length is not None:
            values.append(f"<= {item.max_length} characters")
        if item.not_future:
            values.append("not in the future")
        details = []
        if item.type == "calculated" and item.expression:
            details.append(f"= {_code(item.expression)}")
        if item.type == "derived" and item.derivation:
            raw = self.raw_params[form.id].get(item.id)
            own = {k: v for k, v in item.params.items() if k != "reference"}
            params = _params_text(raw, own) if raw is not None else _value(own)
            text = f"derivation [`{item.derivation}`](#derivation-{item.derivation.replace('_', '-')}) {_code(params)}"
            references = sorted((item.params.get("reference") or {}))
            if references:
                text += " with reference data " + ", ".join(references)
            details.append(text)
        if item.show_if:
            details.append(f"shown if {_code(item.show_if)}")
        if not item.computed and item.missing_codes != form.missing_codes:
            details.append("missing-data codes: " + (", ".join(item.missing_codes) or "none"))
        protection = _protection(item)
        if protection:
            details.append(protection[0] + (f": {_md(item.encrypt_reason)}" if item.encrypt_reason else ""))
        return [f"`{self._item_ref(form, item)}`", _en(item.label), kind, unit, "; ".join(values),
                "yes" if item.required else "", "; ".join(details)]

    def checks(self, form: FormDef) -> None:
        source = self.sources[form.id]
        self.emit("#### Checks", "")
        if not form.checks:
            self.emit("None.", "")
            return
        for check in form.checks:
            self.emit(*self.check_lines(form, check, source))
        self.emit("")

    def check_lines(self, form: FormDef, check: CheckDef, source: _SourceFile) -> list[str]:
        meta = [check.severity]
        if check.critical:
            meta.append("critical")
        meta.append(f"scope {check.scope}")
        if check.group:
            meta.append(f"row check of `{check.group}`")
        meta.append("on " + ", ".join(f"`{i}`" for i in check.items))
        tags = [tag for tag, impls in self.implementations.items()
                if _Implementation(form.id, "check", check.id) in impls]
        rules = f" ({', '.join(_x_sorted(tags))})" if tags else ""
        lines = [f"- **`{check.id}`**{rules} — {', '.join(meta)}",
                 f"  - rule: {_code(check.expression)}",
                 f"  - message: {_en(check.message)}"]
        program = check.program
        if program is not None:
            reads = [f"forms.{f}.{i}" for f, i in program.form_refs]
            reads += [f"entries.{f}" for f in program.entry_refs]
            reads += [f"subject.{fact}" for fact in program.subject_facts]
            reads += [f"params.{name}" for name in program.params]
            if reads:
                lines.append("  - reads: " + ", ".join(f"`{r}`" for r in sorted(set(reads))))
        comment = source.comment_above(check.line)
        if comment:
            lines.append(f"  - note: {comment}")
        return lines

    # -- derivations, X-rules, code lists

    def derivation_table(self) -> None:
        used: dict[str, list[str]] = {}
        for form in self.forms:
            for node in _item_and_group_order(form):
                if isinstance(node, ItemDef) and node.derivation:
                    used.setdefault(node.derivation, []).append(f"{form.id}.{self._item_ref(form, node)}")
        self.emit("## 4. Derivations", "",
                  "The registered Python derivations that derived items call. The rule and the trial.md section "
                  "come from the table in the docstring of the module that registers each (`edc/ecrf/clinical.py`, "
                  "`edc/ecrf/labs.py`; built-ins in `edc/ecrf/derivations.py`); the thresholds come from the "
                  "item's params (section 3), protocol values from the parameters (section 2).", "")
        rows = []
        for name in self.derivation_names:
            info = self.derivations[name]
            module = info.module.replace(".", "/") + ".py" if info else ""
            rows.append([f'<a id="derivation-{name.replace("_", "-")}"></a>`{name}`',
                         info.rule if info else "", (info.section if info else "") or "engine built-in", f"`{module}`",
                         ", ".join(used.get(name, [])) or "— (no form uses it)"])
        self.emit(*_table(["Derivation", "Rule", "trial.md", "Module", "Used by"], rows), "")

    def cross_form_index(self) -> None:
        self.emit("## 5. Cross-form rules X1-X13", "",
                  "The cross-form derivations and edit checks of the trial reference (§8.3) and the checks and "
                  "items that implement them. A check or item is listed under a rule when the comment lines "
                  "directly above its `- id:` line in the form file name the rule (`# X5: ...`), when its English "
                  "message (check) or help (item) names it, when the check scans a text for an e-mail address (X12), or "
                  "when its derivation's trial.md section names the rule. \"Cited by\" lists the forms whose header comment names the rule.", "")
        rows = []
        for tag, (rule, kind) in CROSS_FORM_RULES.items():
            impls = self.implementations.get(tag, [])
            done = [f"[{i.form}.{i.id}](#{_anchor(i.form)})" + ("" if i.kind == "check" else f" ({i.kind})")
                    for i in sorted(set(impls), key=lambda i: (self.form_order[i.form], i.kind, i.id))]
            cited = [form.id for form in self.forms if tag in _x_tags(self.sources[form.id].header())]
            text = "<br>".join(done) if done else "— (no check or item names it)"
            if tag in CROSS_FORM_NOTES:
                text += "<br>" + CROSS_FORM_NOTES[tag]
            rows.append([tag, rule, kind, text, ", ".join(cited) or "—"])
        self.emit(*_table(["Rule", "§8.3", "Type", "Implemented by", "Cited by"], rows), "")

    def code_lists(self) -> None:
        self.emit("## 6. Shared code lists", "",
                  f"From `{self.root_name}/codelists.yaml`; values are stored and exported as the code. Form-local "
                  "lists are given with their items (section 3).", "")
        users: dict[str, list[str]] = {}
        for form in self.forms:
            for item in form.items.values():
                if item.code_list_name in self.study.code_lists and form.id not in users.get(item.code_list_name, []):
                    users.setdefault(item.code_list_name, []).append(form.id)
        if not self.study.code_lists:
            self.emit("None.", "")
        for name, codes in sorted(self.study.code_lists.items()):
            self.emit(f"**{name}** — used by {', '.join(users.get(name, [])) or 'no form'}", "")
            self.emit(*_table(["Code", "Label"], [[f"`{code}`", _en(labels)] for code, labels in codes.items()]), "")


    def data_protection(self) -> None:
        self.emit("## 7. Data protection", "",
                  "How each item is kept (`encrypt`, `identifying` and `encrypt_reason` in the form files; "
                  "docs/forms.md). **identifying**: stored encrypted, never exported, in any export or role (it "
                  "never leaves the site). **encrypted**: stored encrypted (entries and audit trail, AES-256-GCM), exported only "
                  "when study.yaml `exports: encrypted_items` names it. **plain**: free text declared not "
                  "encrypted, with the reason. Every other item is coded, numeric, a date or computed by the "
                  "server: stored as it is and exported.", "")
        released = ", ".join(f"`{form_id}.{item_id}`" for form_id, items in sorted(self.study.exported_encrypted.items())
                             for item_id in sorted(items))
        self.emit(f"Encrypted items the exports carry: {released or 'none'}.", "")
        rows = []
        others = 0
        for form in self.forms:
            for item in _item_and_group_order(form):
                if isinstance(item, GroupDef):
                    continue
                protection = _protection(item)
                if protection is None:
                    others += 1
                    continue
                rows.append([_form_link(form.id), f"`{self._item_ref(form, item)}`", _en(item.label), protection[1],
                             _md(item.encrypt_reason)])
        if rows:
            self.emit(*_table(["Form", "Item", "Label", "Class", "Reason"], rows), "")
        self.emit(f"The other {others} items are coded, numeric, dates or computed: plain.", "")


    def lab_grades(self) -> None:
        """Every CTCAE term whose grade a derived item computes, with the CTCAE wording, and the laboratory terms
        that are not derived, with the reason (reference data `ctcae` and the `ctcae_lab_grade` items)."""
        ctcae = next((data for data in self.study.reference.values() if isinstance(data, Ctcae)), None)
        self.emit("## 8. CTCAE laboratory grades", "",
                  "The CTCAE grade of a laboratory value is derived by `ctcae_lab_grade` from the CTCAE wording below "
                  "(thresholds in the reference data, section 4), and `ctcae_lab_basis` records what decided it: "
                  "`ULN` or `LLN` (a multiple of the limit of the range in force), `BASELINE` (relative to the subject's "
                  "baseline value), `ABSOLUTE` (an absolute value), `NONE` (grade 0). CTCAE's bounds are strict "
                  "(\">1.5 - 3.0 x ULN\": 1.5 x ULN itself is grade 1) except where CTCAE writes a closed range "
                  "(\"1.5 - 3.0 x baseline\"); values and limits are compared as the decimals entered. Without a "
                  "reference range in force the absolute criteria still grade; where a criterion on the missing range "
                  "could change the grade, none is derived and an automatic query asks for the range (\"no reference "
                  "range for <lab> at <site> on <date>\"). Only the value is graded: criteria that need symptoms, an "
                  "intervention or anticoagulation are the investigator's, on the AE form.", "")
        rule = self.study.lab_baseline
        if rule is not None:
            self.emit(f"Baseline (study.yaml `lab_baseline`): the last value of the analyte on `{rule['form']}` "
                      f"(sample date `{rule['date']}`) sampled before the first day of treatment (the earliest "
                      f"`{rule['before']['date']}` of `{rule['before']['form']}`), or the value of the "
                      f"`{rule['fallback_event']}` visit if there is none. \"Baseline abnormal\" means beyond the limit "
                      "of normal on the term's side in the range in force on the baseline's date. A sample on or before "
                      "its baseline's date is graded on the range alone.", "")
        if ctcae is None:
            self.emit("No CTCAE reference data.", "")
            return
        graded: dict[str, list[str]] = {}
        for form in self.forms:
            for item in form.items.values():
                if item.derivation == "ctcae_lab_grade":
                    for name in item.params.get("terms") or ():
                        graded.setdefault(name, []).append(f"`{form.id}.{item.id}`")
        rows = []
        for name, term in ctcae.terms.items():
            if name not in graded:
                continue
            wording = "<br>".join(f"G{grade}: {_md(text)}" for grade, text in term.grades.items() if text and grade < 5)
            criteria = "<br>".join(_criteria_text(criteria) for criteria in term.labs)
            if term.note:
                criteria += f"<br>Note: {_md(term.note)}"
            rows.append([_md(name), ", ".join(graded[name]), wording, criteria])
        self.emit(*_table(["CTCAE v5.0 term", "Derived by", "CTCAE v5.0 wording", "Laboratory criteria derived"], rows), "")
        skipped = [[_md(term.name), f"`{term.analyte}`", _md(term.note)] for term in ctcae.terms.values()
                   if term.analyte and not term.labs]
        if skipped:
            self.emit("Laboratory terms whose CTCAE v5.0 grade depends on clinical consequences or interventions: "
                      "no grade is derived (the range flag still is).", "")
            self.emit(*_table(["CTCAE v5.0 term", "Analyte", "Why not derived"], skipped), "")


def _criteria_text(criteria: LabCriteria) -> str:
    sign = "<" if criteria.direction == "low" else ">"

    def table(thresholds) -> str:
        return "; ".join(f"G{grade} {' or '.join(_threshold_text(t, sign) for t in alternatives)}"
                         for grade, alternatives in thresholds.items())
    text = f"`{criteria.analyte}` ({criteria.unit}): {table(criteria.thresholds)}"
    if criteria.abnormal_baseline:
        text += f"; baseline abnormal: {table(criteria.abnormal_baseline)}"
    return text


def _threshold_text(threshold, sign: str) -> str:
    return f"{sign}= {threshold}".replace(" (inclusive)", "") if threshold.inclusive else f"{sign} {threshold}"


def _protection(item: ItemDef) -> tuple[str, str] | None:
    """How the item is kept: (its form-table note, its class), or None for an undeclared non-text item."""
    if item.identifying:
        return "identifying (stored encrypted, never exported)", "identifying"
    if item.encrypt:
        return "stored encrypted", "encrypted"
    if item.type == "text" and item.encrypt_reason:
        return "not encrypted", "plain"
    return None


def render_trial_doc(study: Study) -> str:
    """Return docs/trial.md for `study` (Markdown, deterministic)."""
    return _Renderer(study).render()
