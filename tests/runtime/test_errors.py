"""Errors keep their code across a gRPC hop and map to HTTP by one table."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gateway.problems import problem_body
from services.runtime import errors
from services.runtime.config import Settings
from services.runtime.identity import CallerIdentifier
from services.runtime.interceptors import ServerInterceptor
from services.runtime.metadata import MD_REQUEST_ID, MD_SERVICE_TOKEN, MD_TENANT_ID

CANONICAL_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}

DOMAIN = [
    (errors.ValidationFailed, 400),
    (errors.IdempotencyKeyRequired, 400),
    (errors.RiskPolicyInvalid, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.TenantMismatch, 403),
    (errors.NotFound, 404),
    (errors.StateConflict, 409),
    (errors.IdempotencyInProgress, 409),
    (errors.IdempotencyKeyReused, 422),
    (errors.RiskLimitBreached, 422),
    (errors.KillSwitchEngaged, 423),
    (errors.RateLimited, 429),
    (errors.RiskUnavailable, 503),
    (errors.DependencyUnavailable, 503),
    (errors.DeadlineExceeded, 504),
    (errors.InternalError, 500),
]


@pytest.mark.parametrize("code,http", CANONICAL_HTTP.items(), ids=lambda v: str(v))
def test_status_without_details_maps_by_the_canonical_table(
    code: grpc.StatusCode, http: int
) -> None:
    error = errors.from_rpc(code, "peer said no", [])
    assert error.status_for_http() == http
    assert error.status_for_grpc() == code
    body = problem_body(error, "req_12345678", "0" * 32)
    assert body["status"] == http
    assert body["code"] == errors.CANONICAL[code][1]
    assert body["detail"] == "peer said no"
    assert str(body["type"]).startswith("urn:gate4:problem:")


def test_every_grpc_status_but_ok_is_in_the_table() -> None:
    assert set(errors.CANONICAL) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_unknown_reason_keeps_its_code_and_the_canonical_status() -> None:
    foreign = errors.UnmappedError(grpc.StatusCode.FAILED_PRECONDITION, "x", "MARKET_CLOSED")
    rebuilt = errors.from_rpc(
        grpc.StatusCode.FAILED_PRECONDITION, "x", errors.trailing_metadata(foreign)
    )
    assert rebuilt.error_code() == "MARKET_CLOSED"
    assert rebuilt.status_for_http() == 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Raiser:
    """A real servicer behind the platform's interceptor that raises what it is told to."""

    def __init__(self) -> None:
        self.error: Exception = errors.InternalError("unset")

    async def Check(self, request: Any, context: Any) -> Any:
        raise self.error


async def _round_trip(raised: list[Exception]) -> list[errors.Gate4Error]:
    settings = Settings()
    token = settings.service_token_of("gateway")
    callers = {"/gate4.test.v1.Raiser/Check": frozenset({"gateway"})}
    server = grpc.aio.server(interceptors=[ServerInterceptor(CallerIdentifier(settings), callers)])
    servicer = _Raiser()
    # Registered under another name so the interceptor treats it as a platform RPC.
    handler = grpc.method_handlers_generic_handler(
        "gate4.test.v1.Raiser",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                servicer.Check,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = _free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    out: list[errors.Gate4Error] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/gate4.test.v1.Raiser/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            metadata = [
                (MD_SERVICE_TOKEN, token),
                (MD_TENANT_ID, "acme"),
                (MD_REQUEST_ID, "req_roundtrip"),
            ]
            for exc in raised:
                servicer.error = exc
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(health_pb2.HealthCheckRequest(), metadata=metadata)
                out.append(errors.from_rpc_error(info.value))
            # Without the service token nothing reaches the servicer.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(health_pb2.HealthCheckRequest(), metadata=metadata[1:])
            out.append(errors.from_rpc_error(info.value))
    finally:
        await server.stop(None)
    return out


def test_domain_errors_survive_a_real_grpc_hop() -> None:
    raised: list[Exception] = [
        cls("detail of " + cls.code, outcome="MAX_ORDER_NOTIONAL") for cls, _ in DOMAIN
    ]
    raised.append(
        errors.ValidationFailed("bad", field_errors=[errors.FieldError("quantity", "must be > 0")])
    )
    raised.append(RuntimeError("secret connection string postgres://u:p@h/db"))
    rebuilt = asyncio.run(_round_trip(raised))

    for (cls, http), error in zip(DOMAIN, rebuilt, strict=False):
        assert type(error) is cls
        assert error.status_for_http() == http
        assert error.detail == "detail of " + cls.code
        assert error.outcome == "MAX_ORDER_NOTIONAL"
    field_error = rebuilt[len(DOMAIN)]
    assert field_error.field_errors == [errors.FieldError("quantity", "must be > 0")]
    internal = rebuilt[len(DOMAIN) + 1]
    assert isinstance(internal, errors.InternalError)
    assert "postgres://" not in internal.detail and "req_roundtrip" in internal.detail
    unauthenticated = rebuilt[-1]
    assert isinstance(unauthenticated, errors.Unauthenticated)


def test_problem_body_members() -> None:
    error = errors.RiskLimitBreached(
        "order notional 60000 exceeds 50000", outcome="MAX_ORDER_NOTIONAL"
    )
    body = problem_body(error, "req_abcdefgh", "f" * 32)
    assert body == {
        "type": "urn:gate4:problem:risk-limit-breached",
        "title": "Refused by pre-trade risk checks",
        "status": 422,
        "detail": "order notional 60000 exceeds 50000",
        "code": "RISK_LIMIT_BREACHED",
        "requestId": "req_abcdefgh",
        "traceId": "f" * 32,
        "outcome": "MAX_ORDER_NOTIONAL",
    }


def test_an_answered_error_is_logged_once_at_its_level_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.rpc"):
        asyncio.run(_round_trip([errors.StateConflict("busy"), errors.RiskUnavailable("down")]))
    conflict, unavailable, _unauthenticated = caplog.records
    assert [r.getMessage() for r in (conflict, unavailable)] == ["rpc", "rpc"]
    assert (conflict.levelno, conflict.exc_info) == (logging.INFO, None)
    assert conflict.__dict__["rpc.code"] == "STATE_CONFLICT"
    assert conflict.__dict__["rpc.detail"] == "busy"
    assert (unavailable.levelno, unavailable.exc_info) == (logging.WARNING, None)
