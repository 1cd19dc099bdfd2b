"""A minimal service on the real runner (`services.runtime.server.serve`), for drain tests.

`python -m tests.support.slowservice` listens on GATE4_AUDIT_ADDR and serves one unary method,
`/gate4.test.v1.Slow/Wait`, whose request is the number of milliseconds to hold the call, as
ASCII digits. The runner's health service, interceptors and SIGTERM handling are the real ones.
"""

from __future__ import annotations

import asyncio

import grpc

from services.runtime.callers import ALLOWED_CALLERS, GATEWAY
from services.runtime.server import run

SERVICE = "gate4.test.v1.Slow"


async def _wait(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.sleep(int(request.decode()) / 1000)
    return b"done"


class SlowApp:
    name = "audit"
    service_names: tuple[str, ...] = (SERVICE,)

    async def start(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Wait": grpc.unary_unary_rpc_method_handler(_wait)}
        )
        server.add_generic_rpc_handlers((handler,))

    async def stop(self) -> None:
        return None


if __name__ == "__main__":
    # The test method joins the callers table like any platform RPC: the gateway may call it.
    ALLOWED_CALLERS[f"/{SERVICE}/Wait"] = frozenset({GATEWAY})
    run(SlowApp())
