"""The event loop every process runs on: uvloop, for the gateway and for every service.

The gateway's uvicorn server and the services' grpc.aio servers and clients run on the same
loop implementation (and so do the benchmark's ceilings, bench/ceilings.py), so what is
measured or debugged in one process holds for the others. grpc.aio runs on any asyncio
loop: its completion queue is polled on its own thread either way
(tests/gateway/test_serving.py checks a server and a client on this one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` to completion on a new uvloop event loop, like `asyncio.run`."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
