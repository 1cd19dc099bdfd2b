"""Per-request correlation: one requestId for every response, span, log line and hop."""

from __future__ import annotations

import logging
import time

from opentelemetry import baggage, context, trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.problems import problem_response
from services.runtime import correlation, errors

log = logging.getLogger("gate4.gateway")

REQUEST_ID_HEADER = "X-Request-Id"


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        supplied = Headers(scope=scope).get(REQUEST_ID_HEADER)
        valid = supplied is not None and correlation.valid_request_id(supplied)
        request_id = supplied if valid and supplied else correlation.new_request_id()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        otel_token = context.attach(
            baggage.set_baggage(correlation.BAGGAGE_KEYS["request_id"], request_id)
        )
        trace.get_current_span().set_attribute("gate4.request_id", request_id)
        try:
            with correlation.bound(correlation.Correlation(request_id=request_id)):
                if supplied is not None and not valid:
                    await problem_response(
                        errors.ValidationFailed(
                            "X-Request-Id must be 8-128 characters of A-Z a-z 0-9 . _ : -",
                            field_errors=[
                                errors.FieldError(REQUEST_ID_HEADER, "malformed request id")
                            ],
                        ),
                        request_id,
                    )(scope, receive, send_with_id)
                    return
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    log.exception("unhandled error in gateway")
                    if response_started:
                        raise
                    await problem_response(
                        errors.InternalError(f"internal error; quote requestId {request_id}"),
                        request_id,
                    )(scope, receive, send_with_id)
        finally:
            context.detach(otel_token)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started_at
            metrics.REQUESTS.labels(scope["method"], template, str(status)).inc()
            metrics.LATENCY.labels(scope["method"], template).observe(elapsed)
            log.info(
                "http",
                extra={
                    "http.method": scope["method"],
                    "http.route": template,
                    "http.status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                },
            )
