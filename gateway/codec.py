"""JSON <-> protobuf for the public API.

protobuf's JSON mapping gives lowerCamelCase names, RFC 3339 timestamps and free-form
objects for Struct; the one change we make is 64-bit integers, which the mapping writes
as strings and our API documents as JSON integers.
"""

from __future__ import annotations

from typing import Any, TypeVar

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
