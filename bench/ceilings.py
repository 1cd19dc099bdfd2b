"""Ceilings for `make bench`: what this stack allows when the platform does nothing at all.

Bench-only programs, never part of the public API. They use the libraries and settings the
platform uses (uvicorn serving a Starlette app, grpc.aio with the platform's server
options), so the platform's figures can be read as a fraction of what its own stack can do
on the same cores in the same run:

    python -m bench.ceilings service --port P
        a grpc.aio server whose one unary method does nothing (the gRPC health check)
    python -m bench.ceilings route --port P [--hop HOST:PORT ...]
        a JSON POST route that parses the body, calls each hop in sequence, and echoes it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROUTE = "/echo"
CALL_TIMEOUT_SECONDS = 5.0


async def serve_noop(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def route_app(hops: Sequence[str]) -> Starlette:
    stubs: list[health_pb2_grpc.HealthStub] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        channels = [grpc.aio.insecure_channel(hop) for hop in hops]
        stubs.extend(health_pb2_grpc.HealthStub(channel) for channel in channels)
        yield
        for channel in channels:
            await channel.close()

    async def echo(request: Request) -> JSONResponse:
        body = await request.json()
        for stub in stubs:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS)
        return JSONResponse(body)

    return Starlette(routes=[Route(ROUTE, echo, methods=["POST"])], lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    service = sub.add_parser("service", help="a no-op grpc.aio server")
    service.add_argument("--port", type=int, required=True)
    route = sub.add_parser("route", help="a JSON POST route calling no-op hops in sequence")
    route.add_argument("--port", type=int, required=True)
    route.add_argument("--hop", action="append", default=[], metavar="HOST:PORT")
    args = parser.parse_args(argv)
    if args.kind == "service":
        asyncio.run(serve_noop(args.port))
        return
    # The gateway's own uvicorn settings (gateway/__main__.py).
    uvicorn.run(
        route_app(args.hop),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
