"""Calling services from tests over the sync gRPC API, the way an internal caller does."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
import pytest

from services.runtime import errors
from services.runtime.config import Settings
from services.runtime.correlation import new_request_id
from services.runtime.metadata import MD_REQUEST_ID, MD_ROLES, MD_SERVICE_TOKEN, MD_TENANT_ID

Metadata = tuple[tuple[str, str | bytes], ...]


def metadata(
    tenant: str = "t1",
    *,
    request_id: str | None = None,
    roles: Iterable[str] = (),
    caller: str = "gateway",
) -> Metadata:
    """The service token of `caller` (the internal identity the test stands in for: the
    gateway by default; services/runtime/callers.py says who may call what), tenant and
    request id; roles only when given."""
    md: list[tuple[str, str | bytes]] = [
        (MD_SERVICE_TOKEN, Settings().service_token_of(caller)),
        (MD_TENANT_ID, tenant),
        (MD_REQUEST_ID, request_id or new_request_id()),
    ]
    if roles:
        md.append((MD_ROLES, ",".join(sorted(roles))))
    return tuple(md)


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def rpc_error(
    excinfo: pytest.ExceptionInfo[grpc.RpcError],
) -> tuple[grpc.StatusCode, errors.Gate4Error]:
    """The gRPC status code of a failed call and the domain error its rich status carries."""
    err = excinfo.value
    return err.code(), errors.from_rpc_error(err)
