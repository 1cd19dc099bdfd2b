"""JSON <-> protobuf for the public API, and JSON <-> bytes for every gateway answer.

protobuf's JSON mapping gives lowerCamelCase names, RFC 3339 timestamps and free-form
objects for Struct; the one change we make is 64-bit integers, which the mapping writes
as strings and our API documents as JSON integers.

Bodies are encoded and decoded with orjson, several times faster than the standard
library on the gateway's hot path; where the two differ, the standard library's answer is
kept (see `dumps` and `loads`), so what a client sends and gets back does not change.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.runtime.errors import FieldError, ValidationFailed

M = TypeVar("M", bound=Message)

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_WELL_KNOWN = {"google.protobuf.Struct", "google.protobuf.Timestamp", "google.protobuf.Value"}
#: 19 digits in a row: a JSON integer that may not fit in 64 bits (orjson would read a float).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_DIGITS = b"0123456789"


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON.

    orjson writes what `json.dumps(data, separators=(",", ":"), ensure_ascii=False)` writes,
    but for the exponent of floats below 1e-4 (`1e-7`, not `1e-07`: the same number). What
    it refuses is written by the standard library, ASCII-escaped, as problems always were:
    a lone surrogate (a detail can quote one a client sent), an integer beyond 64 bits or a
    non-string key. Answers built from protobuf hold none of those (int64/uint64 fit, map
    keys are strings, strings are valid UTF-8), so for them orjson always answers.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":")).encode()


def loads(raw: bytes) -> Any:
    """Parses a request body to what `json.loads(raw)` gives, or raises what it raises,
    but for NaN, Infinity and numbers beyond a double, which no command could store or
    answer with: they are refused like malformed JSON.

    orjson takes strict RFC 8259 UTF-8 only, and reads an integer beyond 64 bits as a float.
    So a body it refuses (UTF-16/32, a BOM, a lone surrogate, or malformed) or with a long
    run of digits is parsed again by the standard library: the same values are accepted as
    before, and malformed JSON fails with the standard library's message.
    """
    # Counting digits first costs a tenth of the search, and most bodies have few.
    digits = len(raw) - len(raw.translate(None, _DIGITS))
    if digits < 19 or _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, parse_constant=_not_json, parse_float=_finite)


def _not_json(constant: str) -> Any:
    raise json.JSONDecodeError(f"{constant} is not a JSON value (RFC 8259)", constant, 0)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise json.JSONDecodeError(f"{text} is not a JSON value a double can hold", text, 0)
    return value


def to_json(message: Message) -> dict[str, Any]:
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    _ints(data, message.DESCRIPTOR)  # type: ignore[arg-type]
    return data


def _ints(data: dict[str, Any], descriptor: Descriptor) -> None:
    for field in descriptor.fields:
        if field.json_name not in data:
            continue
        value = data[field.json_name]
        if field.type in _INT64:
            data[field.json_name] = (
                [int(v) for v in value] if isinstance(value, list) else int(value)
            )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            nested = field.message_type
            if nested is not None and nested.full_name == "google.protobuf.Struct":
                # Struct is a protobuf map: its order is not stable across a stored copy, so
                # objects are written with sorted keys and a replay is byte for byte the same.
                data[field.json_name] = (
                    [_sorted(v) for v in value] if isinstance(value, list) else _sorted(value)
                )
                continue
            if nested is None or nested.full_name in _WELL_KNOWN or nested.GetOptions().map_entry:
                continue
            for item in value if isinstance(value, list) else [value]:
                _ints(item, nested)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def from_json(data: dict[str, Any], message: M) -> M:
    """Fills message from JSON already validated against the OpenAPI schema."""
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise ValidationFailed(
            "request does not match the API contract", field_errors=[FieldError("", str(exc))]
        ) from exc
