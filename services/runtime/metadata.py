"""gRPC metadata keys the platform's hops exchange (lower case, as gRPC requires).

Correlation ids and the service token travel with every call (services/runtime/
correlation.py, interceptors.py), the caller's deadline too (deadlines.py); services answer
a command with flags in its initial metadata that the gateway turns into HTTP headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# -- on every call ----------------------------------------------------------------------------
MD_REQUEST_ID = "x-request-id"
MD_TENANT_ID = "x-tenant-id"
MD_USER_ID = "x-user-id"
MD_CHANNEL = "x-channel"
MD_ROLES = "x-roles"
MD_SERVICE_TOKEN = "x-gate4-service-token"  # noqa: S105 - a header name, not a secret
#: The caller's absolute deadline (Unix time in seconds).
MD_DEADLINE = "x-gate4-deadline"

# -- flags in a command's answer (initial metadata, value "true") ---------------------------
#: Answered from the stored result of an earlier call with the same Idempotency-Key.
MD_IDEMPOTENT_REPLAYED = "x-idempotent-replayed"
#: Accepted and still running (a stop past its deadline): the gateway answers 202.
MD_ACCEPTED = "x-gate4-accepted"

REPLAYED_FLAG = ((MD_IDEMPOTENT_REPLAYED, "true"),)
ACCEPTED_FLAG = ((MD_ACCEPTED, "true"),)


def flagged(metadata: Iterable[Any] | None, key: str) -> bool:
    """Whether a call's metadata sets the flag `key`."""
    return any(k == key and v == "true" for k, v in metadata or ())
