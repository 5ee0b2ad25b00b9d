"""Checked reading of YAML mappings: allowed keys, typed values, and file:line messages."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .source import YamlList, YamlMap

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
# Names that would clash with CEL or with the engine's own bindings.
RESERVED = frozenset({"forms", "entries", "subject", "params", "true", "false", "null", "in", "as", "break", "const", "continue",
                      "else", "for", "function", "if", "import", "let", "loop", "package", "namespace", "return",
                      "var", "void", "while", "int", "uint", "double", "bool", "string", "bytes", "list", "map",
                      "null_type", "type", "timestamp", "duration", "dyn", "has", "missing", "note"})


class BadValue(Exception):
    """A value of the wrong type or shape; the message says what was expected."""


@dataclass
class Problems:
    """The messages of one check run, each "file:line: message"."""

    entries: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, file: str, line: int, message: str) -> None:
        """Record one problem."""
        self.entries.append((file, line, message))

    def messages(self) -> list[str]:
        """Return the messages sorted by file and line."""
        ordered = sorted(dict.fromkeys(self.entries), key=lambda entry: (entry[0], entry[1]))
        return [f"{file}:{line}: {message}" for file, line, message in ordered]


@dataclass
class FileReader:
    """Problems found in one file."""

    file: str
    problems: Problems
    languages: tuple[str, ...] = ("en",)

    def error(self, line: int, message: str) -> None:
        """Record a problem at `line` of this file."""
        self.problems.add(self.file, line, message)

    def mapping(self, value: Any, line: int, what: str) -> YamlMap | None:
        """Return `value` if it is a mapping, else report it."""
        if isinstance(value, YamlMap):
            return value
        self.error(line, f"{what} must be a mapping")
        return None

    def sequence(self, value: Any, line: int, what: str) -> YamlList | None:
        """Return `value` if it is a list, else report it."""
        if isinstance(value, YamlList):
            return value
        self.error(line, f"{what} must be a list")
        return None

    def fields(self, node: YamlMap, what: str, allowed: Iterable[str], required: Iterable[str] = ()) -> Fields:
        """Check `node`'s keys against `allowed` and `required` and return a reader of its values."""
        allowed = set(allowed)
        for key, line in node.duplicate_keys:
            self.error(line, f"duplicate key {key!r} in {what}")
        for key in node:
            if key not in allowed:
                self.error(node.key_line(key), f"unknown key {key!r} in {what}")
        for key in required:
            if key not in node:
                self.error(node.line, f"{what} needs {key!r}")
        return Fields(self, node, what)

    def labels(self, value: Any) -> dict[str, str]:
        """Parse a label: a string (English) or a mapping language -> text that includes English."""
        if isinstance(value, str) and value.strip():
            return {"en": value}
        if not isinstance(value, dict) or not value:
            raise BadValue("must be text or a mapping of language to text")
        for language, text in value.items():
            if not isinstance(language, str) or not LANGUAGE.fullmatch(language):
                raise BadValue(f"{language!r} is not a language code")
            if language not in self.languages:
                raise BadValue(f"language {language!r} is not among the study's languages {list(self.languages)}")
            if isinstance(text, bool):
                raise BadValue(f"the {language} text is read by YAML as {text}: quote it")
            if not isinstance(text, str) or not text.strip():
                raise BadValue(f"the {language} text must be a non-empty string")
        if "en" not in value:
            raise BadValue("needs an English ('en') text")
        return dict(value)


@dataclass
class Fields:
    """Typed access to one checked mapping; a bad value is reported at its key's line."""

    reader: FileReader
    node: YamlMap
    what: str

    def line(self, key: str | None = None) -> int:
        """Return the line of `key` (or of the mapping)."""
        return self.node.line if key is None else self.node.key_line(key)

    def has(self, key: str) -> bool:
        """Whether the mapping has `key`."""
        return key in self.node

    def get(self, key: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        """Return the parsed value of `key`, or `default` when absent or bad (bad values are reported)."""
        if key not in self.node:
            return default
        try:
            return parse(self.node[key])
        except BadValue as exc:
            self.reader.error(self.line(key), f"{key}: {exc}")
            return default

    def error(self, key: str | None, message: str) -> None:
        """Report a problem at `key`'s line."""
        self.reader.error(self.line(key), message)


def identifier(value: Any) -> str:
    """Parse an identifier: a letter, then letters, digits or underscores."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise BadValue(f"{value!r} is not an identifier (a letter, then letters, digits or _)")
    if value in RESERVED:
        raise BadValue(f"{value!r} is a reserved name")
    return value


def boolean(value: Any) -> bool:
    """Parse true/false."""
    if not isinstance(value, bool):
        raise BadValue("must be true or false")
    return value


def integer(value: Any) -> int:
    """Parse an integer."""
    if type(value) is not int:
        raise BadValue("must be an integer")
    return value


def non_negative(value: Any) -> int:
    """Parse an integer >= 0."""
    if integer(value) < 0:
        raise BadValue("must not be negative")
    return value


def positive(value: Any) -> int:
    """Parse an integer >= 1."""
    if integer(value) < 1:
        raise BadValue("must be at least 1")
    return value


def number(value: Any) -> int | float:
    """Parse a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue("must be a number")
    return value


def text(value: Any) -> str:
    """Parse a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise BadValue("must be a non-empty string")
    return value


def iso_date(value: Any) -> date:
    """Parse a date (YAML date or "YYYY-MM-DD")."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadValue("must be a date YYYY-MM-DD")


def one_of(*choices: str) -> Callable[[Any], str]:
    """Return a parser accepting only `choices`."""
    def parse(value: Any) -> str:
        if value not in choices:
            raise BadValue(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return parse


def identifiers(value: Any) -> tuple[str, ...]:
    """Parse a list of distinct identifiers."""
    if not isinstance(value, list):
        raise BadValue("must be a list of identifiers")
    parsed = tuple(identifier(entry) for entry in value)
    duplicates = sorted({entry for entry in parsed if parsed.count(entry) > 1})
    if duplicates:
        raise BadValue(f"repeats {', '.join(duplicates)}")
    return parsed


def version(value: Any) -> str:
    """Parse a form version: an integer or a dotted string such as "1.1"."""
    if type(value) is int and value >= 0:
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
        return value
    if isinstance(value, float):
        raise BadValue(f"write a dotted version as a string ({str(value)!r} in quotes)")
    raise BadValue("must be a version number such as 1, 2 or '1.1'")


def version_key(value: str) -> tuple[int, ...]:
    """Return the ordering key of a version string."""
    return tuple(int(part) for part in value.split("."))
