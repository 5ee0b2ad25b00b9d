"""How a request's arguments are read, for every route at once: JSON with a depth limit, then the input rules
of edc.ecrf.inputs (text, dates, integers) on every field of the route's schema, before the schema loads it.

Every resource module makes its blueprint with this module's Blueprint, whose argument parser is InputParser;
create_app installs RequestJSONProvider (request bodies) and SafeStringConverter (path segments).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

import flask
import flask_smorest
from flask.json.provider import DefaultJSONProvider
from marshmallow import RAISE, Schema, ValidationError, fields
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.routing import BaseConverter

from edc.api.transaction import answered
from edc.ecrf.inputs import date_problem, integer_problem, surrogate_problem, text_problem

MAX_JSON_DEPTH = 32  # the deepest body the API reads is an entry: data / group / row / item / missing code
MULTILINE = "x-multiline"  # field metadata (shown in the OpenAPI document): tab, CR and LF allowed

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def multiline(**metadata: Any) -> dict[str, Any]:
    """Field metadata of a multi-line text field (free text, reasons, messages)."""
    return {**metadata, MULTILINE: True}


# ---------------------------------------------------------------- JSON bodies


class RequestJSONProvider(DefaultJSONProvider):
    """The app's JSON: request bodies nested deeper than MAX_JSON_DEPTH, numbers Python refuses to convert
    (over 4,300 digits) and NaN or Infinity (which JSON does not have) are invalid JSON (400), never a
    RecursionError, ValueError or OverflowError escaping as a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        text = s.decode(json.detect_encoding(s), "surrogatepass") if isinstance(s, (bytes, bytearray)) else s
        if _nesting_depth(text) > MAX_JSON_DEPTH:
            raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0)
        try:
            return json.loads(text, parse_constant=_no_constant, **kwargs)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError) as exc:  # ValueError: a number too long to convert
            raise json.JSONDecodeError(str(exc)[:100], text, 0) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting_depth(text: str) -> int:
    """How deep arrays and objects nest (strings left out), counted without recursion; stops past the limit."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        else:
            depth -= 1
    return deepest


# ---------------------------------------------------------------- every field of every schema


class InputParser(FlaskParser):
    """webargs' Flask parser, reading JSON through the app's provider and refusing, field by field (422 naming
    the field), what edc.ecrf.inputs refuses; the schema's own validation runs only on what passes.

    An unknown query parameter is a 422 too, as an unknown body field is: a misspelt filter must not silently
    return everything."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return flask.json.loads(req.get_data(cache=True))

    def pre_load(self, location_data: Mapping, *, schema: Schema, req: flask.Request, location: str) -> Mapping:
        if isinstance(location_data, Mapping):
            errors = schema_problems(schema, location_data)
            if errors:
                raise ValidationError(errors)
        return location_data


def schema_problems(schema: Schema, data: Mapping) -> dict[str, Any]:
    """Field name -> messages for every field whose raw value breaks an input rule."""
    errors: dict[str, Any] = {}
    declared = {field.data_key or name: field for name, field in schema.load_fields.items()}
    for key in data:
        field = declared.get(key)
        value = data.get(key)
        found = _field_problems(field, value) if field is not None else _surrogate_problems(value)
        if found:
            errors[str(key)] = found
    return errors


def _field_problems(field: fields.Field, value: Any) -> Any:
    if isinstance(field, fields.List) and isinstance(value, list):
        found = {index: problem for index, item in enumerate(value) if (problem := _field_problems(field.inner, item))}
        return found or None
    if isinstance(field, fields.Nested) and isinstance(value, Mapping) and isinstance(field.schema, Schema):
        return schema_problems(field.schema, value) or None
    if isinstance(field, fields.Dict):
        # Structured values checked downstream (an entry's item values: the eCRF engine); refuse here only
        # what nothing may hold: surrogates anywhere, control characters in keys.
        return _surrogate_problems(value) or _key_problems(value)
    problem = None
    if isinstance(value, str):
        problem = text_problem(value, multiline=bool(field.metadata.get(MULTILINE)))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return _surrogate_problems(value)
    if problem is None and isinstance(field, (fields.Date, fields.DateTime, fields.Integer)):
        problem = _typed_problem(field, value)
    return [problem] if problem else None


def _typed_problem(field: fields.Field, value: Any) -> str | None:
    """A date or integer the field reads but no column or clock can hold (year 1, 10**30)."""
    try:
        typed = field.deserialize(value)
    except ValidationError:
        return None  # the schema says what is wrong with it
    if isinstance(field, (fields.Date, fields.DateTime)):
        return date_problem(typed)
    return integer_problem(typed) if isinstance(typed, int) else None


def _surrogate_problems(value: Any) -> Any:
    """Where a JSON value holds a lone surrogate (keys included), which nothing can store; None if nowhere.
    Recursive: the body's depth is bounded by MAX_JSON_DEPTH."""
    if isinstance(value, str):
        problem = surrogate_problem(value)
        return [problem] if problem else None
    if isinstance(value, Mapping):
        found: dict[Any, Any] = {}
        for key, item in value.items():
            problem = surrogate_problem(key) if isinstance(key, str) else None
            if problem:
                return [f"a key {problem}"]
            if (inner := _surrogate_problems(item)) is not None:
                found[key] = inner
        return found or None
    if isinstance(value, list):
        return {index: inner for index, item in enumerate(value) if (inner := _surrogate_problems(item)) is not None} or None
    return None


def _key_problems(value: Any) -> list[str] | None:
    if not isinstance(value, Mapping):
        return None
    for key in value:
        problem = text_problem(key) if isinstance(key, str) else None
        if problem:
            return [f"a key {problem}"]
    return None


REQUEST_SCHEMAS: set[type[Schema]] = set()  # every schema a route reads a request with (the OpenAPI input rules)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose @arguments read requests with InputParser, and whose @response
    serialises the answer before the view's writes are committed (edc.api.transaction)."""

    ARGUMENTS_PARSER = InputParser()

    def response(self, *args: Any, **kwargs: Any):
        serialise = super().response(*args, **kwargs)

        def decorator(view):
            serialising_view = serialise(view)

            @functools.wraps(serialising_view)
            def answer_then_commit(*view_args: Any, **view_kwargs: Any):
                return answered(serialising_view(*view_args, **view_kwargs))

            return answer_then_commit

        return decorator

    def arguments(self, schema, *args: Any, **kwargs: Any):
        REQUEST_SCHEMAS.add(schema if isinstance(schema, type) else type(schema))
        return super().arguments(schema, *args, **kwargs)


# ---------------------------------------------------------------- path segments


class SafeStringConverter(BaseConverter):
    """The default path converter, refusing control characters: a path segment with one matches no route (404)."""

    regex = "[^/\x00-\x1f\x7f]+"
