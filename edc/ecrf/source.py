"""YAML reading that remembers line numbers, and the canonical content hash of a definition."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml


class YamlMap(dict):
    """A YAML mapping that knows its own line, each key's line and the keys it repeated."""

    __slots__ = ("duplicate_keys", "key_lines", "line")

    def key_line(self, key: str) -> int:
        """Return the line of `key`, or of the mapping when the key is absent."""
        return self.key_lines.get(key, self.line)


class YamlList(list):
    """A YAML sequence that knows its own line and each element's line."""

    __slots__ = ("item_lines", "line")

    def item_line(self, index: int) -> int:
        """Return the line of element `index`."""
        return self.item_lines[index]


class YamlSyntaxError(Exception):
    """A file that is not valid YAML; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    mapping = YamlMap()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    mapping.duplicate_keys = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            message = "a mapping key must be a plain value"
            raise yaml.constructor.ConstructorError(None, None, message, key_node.start_mark) from None
        if key in mapping:
            mapping.duplicate_keys.append((key, line))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> YamlList:
    sequence = YamlList(loader.construct_object(child, deep=True) for child in node.value)
    sequence.line = node.start_mark.line + 1
    sequence.item_lines = [child.start_mark.line + 1 for child in node.value]
    return sequence


def line_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """A safe loader on `base` whose mappings and sequences carry line numbers (safe_load semantics otherwise)."""
    loader = type(f"Line{base.__name__}", (base,), {})
    loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
    loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
    return loader


# libyaml's parser (about 4x faster on the trial's forms) where PyYAML was built with it; the same constructors
# run on either, so values, lines and content hashes are identical (tests/ecrf/test_yaml_source.py).
PURE_LOADER = line_loader(yaml.SafeLoader)
LOADER = line_loader(yaml.CSafeLoader) if getattr(yaml, "__with_libyaml__", False) else PURE_LOADER


def read_yaml(path: Path, loader: type[yaml.SafeLoader] | None = None) -> Any:
    """Parse one YAML file with line numbers; raise YamlSyntaxError when it is not valid YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(1, f"not UTF-8 text ({exc.reason})") from None
    try:
        return yaml.load(text, Loader=loader or LOADER)  # a SafeLoader subclass: safe_load semantics
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSyntaxError(line, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from None
    except ValueError as exc:  # PyYAML raises a bare ValueError for an impossible unquoted date (2026-02-30)
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from None


def plain(value: Any) -> Any:
    """Return `value` as plain JSON-able data (dates as ISO strings)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def content_hash(*parts: Any) -> str:
    """Return the sha256 of the canonical JSON of `parts` (key order, comments and layout do not count)."""
    canonical = json.dumps([plain(part) for part in parts], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
