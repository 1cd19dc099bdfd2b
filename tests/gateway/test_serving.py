"""The gateway and the services run on one event loop (uvloop), and grpc.aio works on it."""

from __future__ import annotations

import asyncio

import grpc
import uvicorn
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette

from gateway import server
from services.runtime import eventloop


def test_eventloop_run_is_uvloop() -> None:
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert issubclass(eventloop.run(loop_type()), uvloop.Loop)


def test_grpc_aio_server_and_client_work_on_it() -> None:
    async def call() -> int:
        grpc_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpc_server)
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                replies = await asyncio.gather(
                    *(stub.Check(health_pb2.HealthCheckRequest(), timeout=5) for _ in range(20))
                )
            return sum(r.status == health_pb2.HealthCheckResponse.SERVING for r in replies)
        finally:
            await grpc_server.stop(None)

    assert eventloop.run(call()) == 20


def test_the_gateway_is_served_by_httptools_on_uvloop() -> None:
    config = server.uvicorn_config(Starlette(), "127.0.0.1", 0, graceful_seconds=10)
    assert (config.http, config.loop) == ("httptools", "uvloop")
    assert config.timeout_graceful_shutdown == 10
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert isinstance(config, uvicorn.Config)
