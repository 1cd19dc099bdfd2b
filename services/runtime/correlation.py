"""Correlation ids of the request being served: requestId, tenant, user, channel and roles.

The gateway sets them from HTTP headers; each service's interceptor sets them from gRPC
metadata; the client interceptor writes them into outgoing metadata and W3C baggage. Logs,
spans, errors and audit events all read them from here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from services.runtime.metadata import MD_CHANNEL, MD_REQUEST_ID, MD_ROLES, MD_TENANT_ID, MD_USER_ID

# W3C baggage keys.
BAGGAGE_KEYS = {
    "request_id": "gate4.request_id",
    "tenant_id": "gate4.tenant_id",
    "user_id": "gate4.user_id",
    "channel": "gate4.channel",
}

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Correlation:
    request_id: str = ""
    tenant_id: str = ""
    user_id: str = ""
    channel: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)

    def with_changes(self, **changes: object) -> Correlation:
        return replace(self, **changes)  # type: ignore[arg-type]

    def span_attributes(self) -> dict[str, str]:
        attrs = {
            "gate4.request_id": self.request_id,
            "gate4.tenant_id": self.tenant_id,
            "gate4.user_id": self.user_id,
            "gate4.channel": self.channel,
        }
        return {k: v for k, v in attrs.items() if v}

    def metadata(self) -> list[tuple[str, str]]:
        pairs = [
            (MD_REQUEST_ID, self.request_id),
            (MD_TENANT_ID, self.tenant_id),
            (MD_USER_ID, self.user_id),
            (MD_CHANNEL, self.channel),
            (MD_ROLES, ",".join(sorted(self.roles))),
        ]
        return [(k, v) for k, v in pairs if v]


# Correlation is frozen, so a shared default instance is safe.
_current: ContextVar[Correlation] = ContextVar("gate4_correlation", default=Correlation())  # noqa: B039


def current() -> Correlation:
    return _current.get()


def set_current(value: Correlation) -> None:
    _current.set(value)


@contextmanager
def bound(value: Correlation) -> Iterator[Correlation]:
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def valid_request_id(value: str) -> bool:
    return bool(REQUEST_ID_RE.match(value))


def from_metadata(metadata: dict[str, str]) -> Correlation:
    roles = frozenset(r for r in metadata.get(MD_ROLES, "").split(",") if r)
    return Correlation(
        request_id=metadata.get(MD_REQUEST_ID, ""),
        tenant_id=metadata.get(MD_TENANT_ID, ""),
        user_id=metadata.get(MD_USER_ID, ""),
        channel=metadata.get(MD_CHANNEL, ""),
        roles=roles,
    )
