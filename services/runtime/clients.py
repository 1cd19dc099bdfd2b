"""Channels and stubs for calling other services, with correlation and tracing attached."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from services.runtime.config import Settings
from services.runtime.identity import channel_credentials, outgoing_token
from services.runtime.interceptors import client_interceptors


def channel(
    settings: Settings, service: str, timeout: float | None = None, *, identity: str
) -> grpc.aio.Channel:
    """A channel to `service` on which `identity` calls (its token, or with mtls its
    certificate; services/runtime/identity.py), TLS when GATE4_TLS says so. Our interceptor
    runs outside OTel's so baggage is set.

    A unary call's deadline is `timeout` (default GATE4_RPC_TIMEOUT_SECONDS), capped by the
    budget of the request being served (services/runtime/deadlines.py)."""
    interceptors: list[Any] = [
        *client_interceptors(
            outgoing_token(settings, identity),
            timeout or settings.rpc_timeout_seconds,
            settings.deadline_margin_seconds,
        ),
        *aio_client_interceptors(),  # type: ignore[no-untyped-call]
    ]
    addr = settings.service_addr(service)
    credentials = channel_credentials(settings, identity)
    if credentials is None:
        return grpc.aio.insecure_channel(addr, interceptors=interceptors)
    return grpc.aio.secure_channel(addr, credentials, interceptors=interceptors)
