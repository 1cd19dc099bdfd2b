"""gRPC interceptors shared by every service.

Server side: identifies the calling service (token or certificate, services/runtime/identity.py)
and checks that it may call the method (services/runtime/callers.py), requires a tenant on
every RPC, binds the correlation ids for the call, and maps `Gate4Error` (or any unexpected
exception) to a rich gRPC status. Each call it ends is logged once, and counted and timed in
the RPC metrics (services/runtime/metrics.py) at the same point: no interceptor layer of its
own, which would cost every call another wrapper. Client side: writes the current
correlation ids into metadata and W3C baggage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import Token
from typing import Any

import grpc
from opentelemetry import baggage, context, trace
from opentelemetry.context import Context

from services.runtime import correlation, deadlines, errors, metrics
from services.runtime.callers import ALLOWED_CALLERS, authorize_caller
from services.runtime.identity import CallerIdentifier
from services.runtime.metadata import MD_DEADLINE, MD_SERVICE_TOKEN

log = logging.getLogger("gate4.rpc")

# Health checks and reflection carry no tenant and need no identity.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_EXPIRED = "the caller's deadline passed before this call began; nothing was done"


def _metadata_dict(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        identifier: CallerIdentifier,
        callers: Mapping[str, frozenset[str]] = ALLOWED_CALLERS,
    ) -> None:
        self._identifier = identifier
        self._callers = callers

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = _metadata_dict(handler_call_details.invocation_metadata)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _admit(
        self, method: str, metadata: dict[str, str], ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> correlation.Correlation:
        caller = self._identifier.caller(metadata, ctx.auth_context())
        authorize_caller(method, caller, self._callers)
        corr = correlation.from_metadata(metadata)
        if not corr.tenant_id or not correlation.TENANT_ID_RE.match(corr.tenant_id):
            raise errors.Unauthenticated("every call must name its tenant in x-tenant-id")
        if not corr.request_id:
            corr = corr.with_changes(request_id=correlation.new_request_id())
        return corr

    def _wrap_unary(
        self, method: str, metadata: dict[str, str], behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def wrapper(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            corr = self._admit_or_fail(method, metadata, ctx, started)
            if corr is None:
                return None
            budget = deadlines.incoming(ctx.time_remaining(), metadata.get(MD_DEADLINE, ""))
            if budget is not None and budget <= 0:
                # Queued while this process was paused: the caller gave up before it began.
                expired = errors.DeadlineExceeded(_EXPIRED)
                _log_call(method, started, expired)
                _fail(ctx, expired)
                return None
            # Until the behaviour returns or fails: what else ends it is a cancellation.
            status = grpc.StatusCode.CANCELLED
            error: errors.Gate4Error | None = None
            with correlation.bound(corr), deadlines.bound(budget):
                trace.get_current_span().set_attributes(corr.span_attributes())
                try:
                    reply = await behavior(request, ctx)
                    status = grpc.StatusCode.OK
                    return reply
                except Exception as exc:
                    error = _as_error(exc)
                    _fail(ctx, error)
                    return None
                finally:
                    _log_call(method, started, error, status)

        return wrapper

    def _wrap_stream(
        self, method: str, metadata: dict[str, str], behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        async def wrapper(
            request: Any, ctx: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            corr = self._admit_or_fail(method, metadata, ctx, started)
            if corr is None:
                return
            status = grpc.StatusCode.CANCELLED
            error: errors.Gate4Error | None = None
            budget = deadlines.incoming(ctx.time_remaining(), metadata.get(MD_DEADLINE, ""))
            with correlation.bound(corr), deadlines.bound(budget):
                trace.get_current_span().set_attributes(corr.span_attributes())
                try:
                    async for item in behavior(request, ctx):
                        yield item
                    status = grpc.StatusCode.OK
                except Exception as exc:
                    error = _as_error(exc)
                    _fail(ctx, error)
                finally:
                    _log_call(method, started, error, status)

        return wrapper

    def _admit_or_fail(
        self,
        method: str,
        metadata: dict[str, str],
        ctx: grpc.aio.ServicerContext[Any, Any],
        started: float,
    ) -> correlation.Correlation | None:
        try:
            return self._admit(method, metadata, ctx)
        except errors.Gate4Error as exc:
            _log_call(method, started, exc)
            _fail(ctx, exc)
            return None


def _as_error(exc: Exception) -> errors.Gate4Error:
    """The error to report; cancellation and aborts already under way propagate as they are."""
    if isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):
        raise exc
    if isinstance(exc, errors.Gate4Error):
        return exc
    log.exception("unhandled error in RPC")
    return errors.InternalError(
        f"internal error; quote requestId {correlation.current().request_id}"
    )


def _fail(ctx: grpc.aio.ServicerContext[Any, Any], error: errors.Gate4Error) -> None:
    """Ends the call with the error's rich status (ErrorInfo, BadRequest).

    The status is set rather than raised (`abort`): an expected refusal such as NOT_FOUND
    is an answer, not a crash, and raising made the tracing interceptor attach two stack
    traces to every such span. Unexpected exceptions are logged with their traceback.
    """
    # The domain code on the span lets `gate4 trace` show why a hop failed, not just that it did.
    trace.get_current_span().set_attribute("gate4.error_code", error.error_code())
    ctx.set_code(error.status_for_grpc())
    ctx.set_details(error.detail)
    ctx.set_trailing_metadata(errors.trailing_metadata(error))


def _log_call(
    method: str,
    started: float,
    error: errors.Gate4Error | None,
    status: grpc.StatusCode = grpc.StatusCode.OK,
) -> None:
    """The call's one log line and its metrics. An error the caller gets is logged here,
    once, without a traceback: a refusal at INFO, a failure of the platform's own (5xx) at
    WARNING. `status` is the call's gRPC status when it ended without an error (OK, or
    CANCELLED when the caller went away)."""
    seconds = time.perf_counter() - started
    if error is not None:
        code, status = error.error_code(), error.status_for_grpc()
    else:
        code = status.name
    metrics.observe_rpc(method, status, code, seconds)
    extra: dict[str, Any] = {
        "rpc.method": method,
        "rpc.code": code,
        "duration_ms": round(seconds * 1000, 2),
    }
    if error is not None:
        extra["rpc.detail"] = error.detail
    level = (
        logging.WARNING if error is not None and error.status_for_http() >= 500 else logging.INFO
    )
    log.log(level, "rpc", extra=extra)


class _CorrelationClient:
    """Adds the service token and the caller's correlation ids to every outgoing call, and
    gives a unary call what is left of the caller's deadline (services/runtime/deadlines.py)."""

    def __init__(self, service_token: str, default_timeout: float, margin: float) -> None:
        self._token = service_token
        self._timeout = default_timeout
        self._margin = margin

    def _details(
        self, details: grpc.aio.ClientCallDetails, unary: bool
    ) -> tuple[grpc.aio.ClientCallDetails, Token[Context]]:
        corr = correlation.current()
        metadata = grpc.aio.Metadata()
        for key, value in details.metadata or ():
            metadata.add(key, value)
        existing = {k for k, _ in metadata}
        for key, value in corr.metadata():
            if key not in existing:
                metadata.add(key, value)
        if self._token:  # none with mtls: the certificate says who is calling
            metadata.add(MD_SERVICE_TOKEN, self._token)
        ctx = context.get_current()
        for attr, key in correlation.BAGGAGE_KEYS.items():
            value = getattr(corr, attr)
            if value:
                ctx = baggage.set_baggage(key, value, ctx)
        # Streams (subscriptions) are long-lived: only unary calls get a deadline.
        timeout = details.timeout
        if unary:
            timeout = deadlines.outgoing(timeout or self._timeout, self._margin)
        if timeout is not None:
            metadata.add(MD_DEADLINE, deadlines.stamp(timeout))
        new = grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )
        return new, context.attach(ctx)


class UnaryClientInterceptor(_CorrelationClient, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details, token = self._details(client_call_details, unary=True)
        try:
            return await continuation(details, request)
        finally:
            context.detach(token)


# A separate class: grpc.aio files each interceptor under the first call kind it implements.
class StreamClientInterceptor(_CorrelationClient, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details, token = self._details(client_call_details, unary=False)
        try:
            return await continuation(details, request)
        finally:
            context.detach(token)


def client_interceptors(
    service_token: str, default_timeout: float, margin: float = 0.0
) -> list[Any]:
    return [
        UnaryClientInterceptor(service_token, default_timeout, margin),
        StreamClientInterceptor(service_token, default_timeout, margin),
    ]
