"""Form files are parsed with libyaml's C parser where PyYAML has it, and read exactly as the pure-Python parser
reads them: the same values, the same line numbers, the same errors' lines, so the same content hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import DEMO_FORMS, TRIAL_FORMS
from edc.ecrf import load_study, source
from edc.ecrf.source import LOADER, PURE_LOADER, YamlSyntaxError, content_hash, read_yaml

FORM_FILES = sorted([*TRIAL_FORMS.rglob("*.yaml"), *DEMO_FORMS.rglob("*.yaml")])


def test_the_c_parser_is_used_where_pyyaml_has_it():
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the pinned wheel ships it"
    assert issubclass(LOADER, yaml.CSafeLoader)


def with_lines(node):
    """The parsed value with every line number the loader recorded."""
    if isinstance(node, dict):
        return ("map", node.line, sorted(node.key_lines.items()), node.duplicate_keys,
                {key: with_lines(value) for key, value in node.items()})
    if isinstance(node, list):
        return ("seq", node.line, node.item_lines, [with_lines(value) for value in node])
    return node


@pytest.mark.parametrize("path", FORM_FILES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_every_form_file_reads_the_same_with_either_parser(path: Path):
    fast, pure = read_yaml(path), read_yaml(path, PURE_LOADER)
    assert with_lines(fast) == with_lines(pure)
    assert content_hash(fast) == content_hash(pure)


@pytest.mark.parametrize("folder", [TRIAL_FORMS, DEMO_FORMS], ids=["trial", "demo"])
def test_the_studies_content_hashes_are_those_of_the_pure_parser(folder, monkeypatch):
    fast = load_study(folder).content_hashes()
    monkeypatch.setattr(source, "LOADER", PURE_LOADER)
    assert load_study(folder).content_hashes() == fast
    assert len(fast) > 5


@pytest.mark.parametrize("text", ["a: [1, 2\nb: 3\n", "a: 1\n  b: 2\n", "a: 1\nb: {c\n", "- 1\n- : : :\n\tx"])
def test_a_syntax_error_is_reported_on_the_same_line_by_either_parser(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlSyntaxError) as fast:
        read_yaml(path)
    with pytest.raises(YamlSyntaxError) as pure:
        read_yaml(path, PURE_LOADER)
    assert fast.value.line == pure.value.line
