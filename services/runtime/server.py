"""Runs one gRPC service: telemetry, interceptors, health, storage and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.runtime import eventloop
from services.runtime.config import Settings, get_settings
from services.runtime.identity import CallerIdentifier, server_credentials
from services.runtime.interceptors import ServerInterceptor
from services.runtime.metrics import start_metrics_server
from services.runtime.production import UnsafeConfiguration
from services.runtime.telemetry import setup_telemetry, shutdown_telemetry

log = logging.getLogger("gate4.server")


class ServiceApp(Protocol):
    """What a service plugs into the runner."""

    name: str
    #: Fully qualified gRPC service names, reported SERVING by the health service.
    service_names: tuple[str, ...]

    async def start(self, server: grpc.aio.Server) -> None:
        """Opens storage, registers servicers and starts background tasks."""

    async def stop(self) -> None:
        """Stops background tasks and closes storage after in-flight calls drained."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Connection limits of a service's server (README.md, "Configuration": GATE4_GRPC_*).

    Each connection is closed after its maximum age (calls in flight get the grace), so
    clients balancing with round_robin resolve the name again and spread over new replicas.
    Keepalive pings from idle clients, at the interval they are configured with, are
    accepted rather than answered with GOAWAY too_many_pings."""
    keepalive_ms = round(settings.grpc_keepalive_time_seconds * 1000)
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", round(settings.grpc_max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            round(settings.grpc_max_connection_age_grace_seconds * 1000),
        ),
        ("grpc.keepalive_permit_without_calls", 1),
        # Pings closer together than half the clients' interval count as abuse.
        ("grpc.http2.min_ping_interval_without_data_ms", max(1, keepalive_ms // 2)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


async def serve(app: ServiceApp, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    settings.check_production_safety(app.name)
    setup_telemetry(app.name, settings)
    server = grpc.aio.server(
        interceptors=[
            aio_server_interceptor(),  # type: ignore[no-untyped-call]
            ServerInterceptor(CallerIdentifier(settings)),
        ],
        options=server_options(settings),
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    metrics_server = start_metrics_server(settings, app)
    await app.start(server)
    addr = settings.service_addr(app.name)
    credentials = server_credentials(settings, app.name)
    if credentials is None:
        server.add_insecure_port(addr)
    else:
        server.add_secure_port(addr, credentials)
    await server.start()
    for name in ("", *app.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"addr": addr, "service": app.name, "tls": settings.tls})

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()

    log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    # An app with long-lived streams ends them now (optional `async drain()`): otherwise they
    # hold the whole grace period and are then killed mid-call, logging an unhandled error.
    drain = getattr(app, "drain", None)
    if drain is not None:
        await drain()
    # New calls are refused at once; in-flight calls get the grace period to finish.
    await server.stop(settings.shutdown_grace_seconds)
    await app.stop()
    if metrics_server is not None:
        metrics_server.close()
    log.info("stopped")
    shutdown_telemetry()


def run(app: ServiceApp) -> None:
    try:
        eventloop.run(serve(app))
    except UnsafeConfiguration as exc:
        # Refused before logging is set up: the reasons go to stderr, and the exit fails.
        sys.exit(f"gate4: {exc}")
