"""Ceilings for `make bench`: what this stack allows when the platform does nothing at all.

Bench-only programs, never part of the public API. They use the libraries and settings the
platform uses (uvicorn served as the gateway is, gateway/server.py: httptools on uvloop;
orjson for the JSON; grpc.aio with the services' server options on the same uvloop loop,
services/runtime/eventloop.py), so the platform's figures can be read as a fraction of what
its own stack can do on the same cores in the same run:

    python -m bench.ceilings service --port P
        a grpc.aio server whose one unary method does nothing (the gRPC health check)
    python -m bench.ceilings route --port P [--hop HOST:PORT ...]
        a JSON POST route that parses the body, calls each hop in sequence, and echoes it
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import codec, server
from services.runtime import eventloop
from services.runtime.config import Settings
from services.runtime.server import server_options

ROUTE = "/echo"
CALL_TIMEOUT_SECONDS = 5.0


async def serve_noop(port: int) -> None:
    # The defaults, not this environment's GATE4_* values: the platform under test gets them
    # too (bench/platform.py, `isolate`).
    noop = grpc.aio.server(options=server_options(Settings.model_construct()))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), noop)
    noop.add_insecure_port(f"127.0.0.1:{port}")
    await noop.start()
    await noop.wait_for_termination()


def route_app(hops: Sequence[str]) -> Starlette:
    stubs: list[health_pb2_grpc.HealthStub] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        channels = [grpc.aio.insecure_channel(hop) for hop in hops]
        stubs.extend(health_pb2_grpc.HealthStub(channel) for channel in channels)
        yield
        for channel in channels:
            await channel.close()

    async def echo(request: Request) -> Response:
        body = codec.loads(await request.body())
        for stub in stubs:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS)
        return Response(codec.dumps(body), media_type="application/json")

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
        eventloop.run(serve_noop(args.port))
        return
    server.serve(server.uvicorn_config(route_app(args.hop), "127.0.0.1", args.port))


if __name__ == "__main__":
    main()
