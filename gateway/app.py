"""The Starlette application: public routes onto the four gRPC services."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp

from gate4.audit.v1 import audit_pb2_grpc
from gate4.conversation.v1 import conversation_pb2_grpc
from gate4.execution.v1 import execution_pb2_grpc
from gate4.risk.v1 import risk_pb2_grpc
from gateway import codec, metrics
from gateway.apikeys import ApiKeyStore, open_database
from gateway.authn import Authenticator, authorize
from gateway.middleware import CorrelationMiddleware
from gateway.openapi import ApiContract
from gateway.operations import OPERATIONS, Operation
from gateway.problems import problem_response
from services.runtime import correlation, errors
from services.runtime.auth import TokenCache, TokenVerifier
from services.runtime.clients import channel
from services.runtime.config import SERVICES, Settings, get_settings
from services.runtime.metadata import MD_ACCEPTED, MD_IDEMPOTENT_REPLAYED, flagged
from services.runtime.telemetry import setup_telemetry
from services.runtime.validation import IDEMPOTENCY_KEY_RE

MAX_BODY_BYTES = 1 << 20
#: Who the gateway is when it calls services (services/runtime/callers.py).
GATEWAY_IDENTITY = "gateway"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: Seconds a client waits before reading an accepted command's resource again.
ACCEPTED_RETRY_AFTER = 1
CHANNEL_HEADER = "X-Channel"

_STUBS: dict[str, Any] = {
    "audit": audit_pb2_grpc.AuditServiceStub,
    "risk": risk_pb2_grpc.RiskServiceStub,
    "execution": execution_pb2_grpc.ExecutionServiceStub,
    "conversation": conversation_pb2_grpc.ConversationServiceStub,
}


@dataclass
class Upstreams:
    channels: dict[str, grpc.aio.Channel]
    stubs: dict[str, Any]
    health: dict[str, health_pb2_grpc.HealthStub]

    @classmethod
    def connect(cls, settings: Settings) -> Upstreams:
        channels = {name: channel(settings, name, identity=GATEWAY_IDENTITY) for name in SERVICES}
        return cls(
            channels=channels,
            stubs={name: _STUBS[name](ch) for name, ch in channels.items()},
            health={name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()},
        )

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()))


class Gateway:
    def __init__(self, settings: Settings, contract: ApiContract) -> None:
        self.settings = settings
        self.contract = contract
        self.db = open_database(settings)
        self.keys = ApiKeyStore(
            self.db, settings.api_key_cache_seconds, settings.api_key_negative_cache_seconds
        )
        self.auth = Authenticator(
            TokenCache(TokenVerifier(settings), settings.token_cache_size), self.keys
        )
        self.upstreams: Upstreams | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.db.start()
        self.upstreams = Upstreams.connect(self.settings)
        try:
            yield
        finally:
            await self.upstreams.close()
            self.db.close()

    # -- the public operations -------------------------------------------------------------

    def endpoint(self, op: Operation) -> Any:
        async def handle(request: Request) -> Response:
            return await self.call(op, request)

        handle.__name__ = op.operation_id
        return handle

    async def call(self, op: Operation, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers)
        authorize(principal, op.role)
        corr = correlation.current().with_changes(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            roles=principal.roles,
            channel=_channel(request),
        )
        correlation.set_current(corr)
        trace.get_current_span().set_attributes(corr.span_attributes())

        path = self.contract.parse_parameters(op.operation_id, "path", request.path_params)
        query = self.contract.parse_parameters(
            op.operation_id,
            "query",
            request.query_params,
            {k: request.query_params.getlist(k) for k in request.query_params},
        )
        body = await self._body(op, request)
        data: dict[str, Any] = {**body, **query, **path}
        key = _idempotency_key(op, request)
        if key:
            data["idempotencyKey"] = key
        message = codec.from_json(op.build(data) if op.build else data, op.request())

        assert self.upstreams is not None
        rpc = getattr(self.upstreams.stubs[op.service], op.rpc)
        call = rpc(message)
        try:
            reply = await call
            initial = await call.initial_metadata()
        except grpc.aio.AioRpcError as exc:
            metrics.UPSTREAM_FAILURES.labels(op.service, exc.code().name).inc()
            error = errors.from_peer(op.service, exc)
            if flagged(exc.initial_metadata(), MD_IDEMPOTENT_REPLAYED):
                # A stored refusal replayed under its Idempotency-Key says so, like a success.
                metrics.ERRORS.labels(error.error_code()).inc()
                return problem_response(error, headers={REPLAYED_HEADER: "true"})
            raise error from None
        headers = {REPLAYED_HEADER: "true"} if flagged(initial, MD_IDEMPOTENT_REPLAYED) else {}
        status = op.status
        if flagged(initial, MD_ACCEPTED):
            # Begun and still running: where to follow it, and when to look.
            status = 202
            headers["Retry-After"] = str(ACCEPTED_RETRY_AFTER)
            if op.poll:
                headers["Location"] = op.poll.format(**request.path_params)
        return _json(codec.to_json(reply), status, headers)

    async def _body(self, op: Operation, request: Request) -> dict[str, Any]:
        contract = self.contract.operations[op.operation_id]
        if contract.body_validator is None:
            return {}
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise errors.PayloadTooLarge(f"request body exceeds {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise errors.PayloadTooLarge(f"request body exceeds {MAX_BODY_BYTES} bytes")
        if not raw.strip():
            if contract.body_required:
                raise errors.ValidationFailed(
                    "request body is required",
                    field_errors=[errors.FieldError("(body)", "a JSON object is required")],
                )
            return {}
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise errors.UnsupportedMediaType("send the request body as application/json")
        try:
            body = codec.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.ValidationFailed(
                "request body is not valid JSON",
                field_errors=[errors.FieldError("(body)", str(exc))],
            ) from None
        self.contract.validate_body(op.operation_id, body)
        assert isinstance(body, dict)
        return body

    # -- operations endpoints --------------------------------------------------------------

    async def healthz(self, _request: Request) -> Response:
        return _json({"status": "ok"}, 200)

    async def readyz(self, request: Request) -> Response:
        """Every service SERVING (200) or not (503, naming each service's state).

        `?scope=gateway` answers for this process alone, with the same body: ready while it
        can serve at all (its own database answers), whichever services are down, since a
        route whose service is down answers 503 on its own. Orchestrators route traffic on
        it, so one service down does not take every gateway, and the routes that still work,
        out of rotation."""
        scope = request.query_params.get("scope", "all")
        if scope not in ("all", "gateway"):
            raise errors.ValidationFailed(
                "scope is all (every service SERVING) or gateway (this gateway can serve)",
                field_errors=[errors.FieldError("scope", "must be all or gateway")],
            )
        assert self.upstreams is not None
        names = list(self.upstreams.health)
        database, *results = await asyncio.gather(
            self._database_up(), *(self._health(n) for n in names)
        )
        services = dict(zip(names, results, strict=True))
        body: dict[str, Any] = {"services": services}
        if scope == "gateway":
            ready = database
            body |= {"scope": "gateway", "database": "UP" if database else "DOWN"}
        else:
            ready = all(v == "SERVING" for v in services.values())
        return _json({"status": "ready" if ready else "unavailable", **body}, 200 if ready else 503)

    async def _database_up(self) -> bool:
        try:
            await self.db.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
        except sa.exc.SQLAlchemyError:
            return False
        return True

    async def _health(self, name: str) -> str:
        assert self.upstreams is not None
        try:
            reply = await self.upstreams.health[name].Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def openapi_yaml(self, _request: Request) -> Response:
        return Response(self.contract.yaml_bytes, media_type="application/yaml")

    async def openapi_json(self, _request: Request) -> Response:
        return Response(self.contract.json_bytes, media_type="application/json")


def _json(data: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        codec.dumps(data),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _channel(request: Request) -> str:
    value = request.headers.get(CHANNEL_HEADER, "api")
    if not correlation.TENANT_ID_RE.match(value):
        raise errors.ValidationFailed(
            f"malformed {CHANNEL_HEADER} header",
            field_errors=[
                errors.FieldError(CHANNEL_HEADER, "1-64 characters of A-Z a-z 0-9 . _ -")
            ],
        )
    return value


def _idempotency_key(op: Operation, request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if op.idempotency == "none":
        return ""
    if key is None:  # absent; sent empty, it is malformed (below)
        if op.idempotency == "required":
            raise errors.IdempotencyKeyRequired(
                f"this operation needs an {IDEMPOTENCY_HEADER} header: a unique key per intended "
                "command, reused only to retry the same command"
            )
        return ""
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise errors.ValidationFailed(
            f"malformed {IDEMPOTENCY_HEADER} header",
            field_errors=[
                errors.FieldError(IDEMPOTENCY_HEADER, "8-255 characters of A-Z a-z 0-9 . _ : -")
            ],
        )
    return key


async def _problem(request: Request, exc: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Gate4Error):
        error = exc
    elif isinstance(exc, HTTPException) and exc.status_code == 405:
        error = errors.MethodNotAllowed("this route does not accept that method")
        headers["Allow"] = _allowed_methods(request)
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        error = errors.RouteNotFound("no such route; see /openapi.yaml for the Platform API")
    else:
        error = errors.ValidationFailed(str(getattr(exc, "detail", "bad request")))
    metrics.ERRORS.labels(error.error_code()).inc()
    return problem_response(error, headers=headers)


def _allowed_methods(request: Request) -> str:
    """RFC 9110 `Allow`: every method the path serves, not only those of the first route.

    Each operation is its own route, so Starlette's own 405 names one route's methods.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def create_app(settings: Settings | None = None, contract: ApiContract | None = None) -> ASGIApp:
    settings = settings or get_settings()
    settings.check_production_safety(GATEWAY_IDENTITY)
    setup_telemetry("gateway", settings)
    contract = contract or ApiContract()
    gateway = Gateway(settings, contract)
    routes = [
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics, methods=["GET"]),
        Route("/openapi.yaml", gateway.openapi_yaml, methods=["GET"]),
        Route("/openapi.json", gateway.openapi_json, methods=["GET"]),
    ]
    for op in OPERATIONS:
        spec = contract.operations[op.operation_id]
        routes.append(Route(spec.path, gateway.endpoint(op), methods=[spec.method]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(CorrelationMiddleware)],
        exception_handlers={errors.Gate4Error: _problem, HTTPException: _problem},
        lifespan=gateway.lifespan,
    )
    app.state.gateway = gateway
    # Spans for each request, without the per-chunk receive/send spans that cost ~30%.
    return OpenTelemetryMiddleware(
        app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"]
    )
