"""Channels and stubs for calling other services, with correlation and tracing attached."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from services.runtime.config import Settings
from services.runtime.interceptors import client_interceptors


def channel(settings: Settings, service: str) -> grpc.aio.Channel:
    """An insecure channel on loopback; our interceptor runs outside OTel's so baggage is set."""
    interceptors: list[Any] = [
        *client_interceptors(settings.service_token, settings.rpc_timeout_seconds),
        *aio_client_interceptors(),  # type: ignore[no-untyped-call]
    ]
    return grpc.aio.insecure_channel(settings.service_addr(service), interceptors=interceptors)
