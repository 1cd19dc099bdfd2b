"""Deadline budgets: each hop passes on what is left of its caller's deadline, less a margin,
and a call whose caller already gave up is refused before it starts."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.runtime import deadlines, errors
from services.runtime.config import Settings
from services.runtime.identity import CallerIdentifier
from services.runtime.interceptors import ServerInterceptor, client_interceptors
from services.runtime.metadata import MD_DEADLINE, MD_REQUEST_ID, MD_SERVICE_TOKEN, MD_TENANT_ID

OUTER = "/gate4.test.v1.Budget/Outer"
INNER = "/gate4.test.v1.Budget/Inner"
MARGIN = 0.5


def test_an_outgoing_call_gets_the_budget_less_the_margin() -> None:
    assert deadlines.outgoing(2.0, MARGIN) == 2.0  # no caller: its own timeout
    with deadlines.bound(5.0):
        assert deadlines.outgoing(2.0, MARGIN) == 2.0  # its own timeout is shorter
        assert 4.4 < (deadlines.outgoing(30.0, MARGIN) or 0) <= 4.5
        assert 4.4 < (deadlines.outgoing(None, MARGIN) or 0) <= 4.5
    with deadlines.bound(0.2):
        # Spent: the call fails at once instead of outliving its caller.
        assert deadlines.outgoing(2.0, MARGIN) == deadlines.SPENT


def test_work_that_outlives_its_caller_detaches_from_the_budget() -> None:
    async def scenario() -> tuple[float | None, float | None]:
        with deadlines.bound(5.0) as budget:
            with deadlines.unbounded():
                background = asyncio.create_task(_remaining_later())
            inherited = asyncio.create_task(_remaining_later())
            budget.detach()
            return await background, await inherited

    background, inherited = asyncio.run(scenario())
    assert background is None  # started unbounded
    assert inherited is None  # shared the budget, which was detached


async def _remaining_later() -> float | None:
    await asyncio.sleep(0)
    return deadlines.remaining()


def test_the_stamped_absolute_deadline_wins_when_it_is_earlier() -> None:
    assert deadlines.incoming(None, "") is None
    assert deadlines.incoming(3.0, "") == 3.0
    soon = deadlines.incoming(3.0, f"{time.time() + 1.0:.3f}")
    assert soon is not None and 0.9 < soon <= 1.01
    past = deadlines.incoming(3.0, f"{time.time() - 1.0:.3f}")
    assert past is not None and past < 0
    assert deadlines.incoming(3.0, "not-a-time") == 3.0


class _Servicer:
    """Outer calls Inner through the platform's client interceptors; both record the
    budget they were served under."""

    def __init__(self, port: int, token: str) -> None:
        self.seen: dict[str, float | None] = {}
        self.port = port
        self.token = token
        self.inner_calls = 0

    async def Outer(self, request: Any, context: Any) -> Any:
        self.seen["outer"] = deadlines.remaining()
        interceptors = client_interceptors(self.token, 30.0, MARGIN)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}", interceptors=interceptors
        ) as channel:
            inner = channel.unary_unary(
                INNER,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            return await inner(request)

    async def Inner(self, request: Any, context: Any) -> Any:
        self.inner_calls += 1
        self.seen["inner"] = deadlines.remaining()
        return health_pb2.HealthCheckResponse()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _hops() -> tuple[_Servicer, grpc.aio.AioRpcError]:
    settings = Settings()
    token = settings.service_token_of("gateway")
    callers = {OUTER: frozenset({"gateway"}), INNER: frozenset({"gateway"})}
    server = grpc.aio.server(interceptors=[ServerInterceptor(CallerIdentifier(settings), callers)])
    port = _free_port()
    servicer = _Servicer(port, token)

    def method(behaviour: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "gate4.test.v1.Budget",
                {"Outer": method(servicer.Outer), "Inner": method(servicer.Inner)},
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            metadata = [
                (MD_SERVICE_TOKEN, token),
                (MD_TENANT_ID, "acme"),
                (MD_REQUEST_ID, "req_deadlines"),
            ]

            def call(path: str) -> Any:
                return channel.unary_unary(
                    path,
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )

            await call(OUTER)(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=4.0)
            # A call that waited (in a paused process's socket, say) past the deadline its
            # caller stamped is refused before anything runs.
            stale = [*metadata, (MD_DEADLINE, f"{time.time() - 0.5:.3f}")]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(INNER)(health_pb2.HealthCheckRequest(), metadata=stale, timeout=4.0)
    finally:
        await server.stop(None)
    return servicer, refused.value


def test_each_hop_gets_less_than_its_caller_and_a_stale_call_never_starts() -> None:
    servicer, refused = asyncio.run(_hops())
    outer, inner = servicer.seen["outer"], servicer.seen["inner"]
    assert outer is not None and inner is not None
    # gRPC sends the timeout rounded up to its wire units, so allow a little over 4 s.
    assert outer <= 4.05
    # The inner hop's deadline is its caller's remaining time less the margin, not the 30 s
    # its channel would otherwise give it.
    assert inner <= outer - MARGIN + 0.05
    assert servicer.inner_calls == 1
    error = errors.from_rpc_error(refused)
    assert isinstance(error, errors.DeadlineExceeded)
    assert "nothing was done" in error.detail
