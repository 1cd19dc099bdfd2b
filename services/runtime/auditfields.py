"""The audit event's fields, declared once: `EventContent` below.

Each field of the dataclass says what it is (`Kind`), who sets it (`Origin`) and how long a
string it may hold. Everything else derives from this one declaration: the audit table's
columns (services/audit/store.py; the migrations are history and stay as written), the limits
a written event is checked against, the canonical form the hash chain covers, the conversion
to and from the AuditEvent message (services/audit/servicer.py) and what a service may name
when it records an event (services/runtime/outbox.py). The proto declares the wire message;
tests/audit holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from services.runtime.canonical import canonical_json

#: Width of a stored timestamp: YYYY-MM-DDTHH:MM:SS.ffffffZ.
TIMESTAMP_WIDTH = 27


class Kind(Enum):
    TEXT = "text"  # a string of at most max_length characters
    LONG_TEXT = "long text"  # stored unbounded; max_length bounds what a writer may send
    SEQUENCE = "sequence"  # an integer
    TIMESTAMP = "timestamp"  # fixed-width RFC 3339 UTC text; a Timestamp on the wire
    JSON = "json"  # a JSON object; canonical JSON text in storage, a Struct on the wire


class Origin(Enum):
    STORE = "store"  # assigned by the audit store as it appends (tenant: the caller's)
    WRITER = "writer"  # identifies the event: set by whoever records it
    CORRELATION = "correlation"  # the recording request's correlation ids
    SUBJECT = "subject"  # what the event is about, named by the code that records it


@dataclass(frozen=True)
class AuditField:
    name: str
    kind: Kind
    origin: Origin
    max_length: int = 0

    @property
    def key(self) -> str:
        """The field's name in the canonical form (and the proto's JSON): camelCase."""
        first, *rest = self.name.split("_")
        return first + "".join(part.capitalize() for part in rest)

    @property
    def is_text(self) -> bool:
        return self.kind in (Kind.TEXT, Kind.LONG_TEXT)


_SPEC = "gate4.audit"


def _field(kind: Kind, origin: Origin, max_length: int = 0) -> Any:
    spec = {_SPEC: (kind, origin, max_length)}
    if kind is Kind.JSON:
        return field(default_factory=dict, metadata=spec)
    return field(default=0 if kind is Kind.SEQUENCE else "", metadata=spec)


@dataclass(frozen=True)
class EventContent:
    """The fields of an event that its hash covers, in the order of the AuditEvent message."""

    tenant_id: str = _field(Kind.TEXT, Origin.STORE, 64)
    sequence: int = _field(Kind.SEQUENCE, Origin.STORE)
    event_id: str = _field(Kind.TEXT, Origin.WRITER, 128)
    type: str = _field(Kind.TEXT, Origin.WRITER, 128)
    source: str = _field(Kind.TEXT, Origin.WRITER, 64)
    occurred_at: str = _field(Kind.TIMESTAMP, Origin.WRITER)
    recorded_at: str = _field(Kind.TIMESTAMP, Origin.STORE)
    request_id: str = _field(Kind.TEXT, Origin.CORRELATION, 128)
    trace_id: str = _field(Kind.TEXT, Origin.CORRELATION, 64)
    user_id: str = _field(Kind.TEXT, Origin.CORRELATION, 128)
    channel: str = _field(Kind.TEXT, Origin.CORRELATION, 64)
    account_id: str = _field(Kind.TEXT, Origin.SUBJECT, 128)
    deployment_id: str = _field(Kind.TEXT, Origin.SUBJECT, 128)
    order_id: str = _field(Kind.TEXT, Origin.SUBJECT, 128)
    session_id: str = _field(Kind.TEXT, Origin.SUBJECT, 128)
    outcome: str = _field(Kind.TEXT, Origin.SUBJECT, 64)
    policy_version: str = _field(Kind.TEXT, Origin.SUBJECT, 64)
    reason: str = _field(Kind.LONG_TEXT, Origin.SUBJECT, 4096)
    data: Mapping[str, Any] = _field(Kind.JSON, Origin.SUBJECT)

    def canonical_fields(self) -> dict[str, Any]:
        """Every field under its camelCase key; `data` as a plain dict (`{}` when unset)."""
        canonical = {f.key: getattr(self, f.name) for f in FIELDS}
        canonical["data"] = dict(self.data)
        return canonical

    def canonical(self) -> bytes:
        return canonical_json(self.canonical_fields())


FIELDS: tuple[AuditField, ...] = tuple(
    AuditField(f.name, *f.metadata[_SPEC]) for f in fields(EventContent)
)

#: Longest text each string field may hold (reason is stored unbounded, but bounded here so
#: one event cannot bloat the log).
FIELD_LIMITS: dict[str, int] = {f.name: f.max_length for f in FIELDS if f.is_text}

#: What the code recording an event names (besides its data): outbox.event's keywords.
SUBJECT_FIELDS = frozenset(f.name for f in FIELDS if f.origin is Origin.SUBJECT and f.is_text)
