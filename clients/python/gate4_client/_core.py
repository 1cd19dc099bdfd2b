"""The part of the client that does no I/O, shared by `Gate4Client` and `AsyncGate4Client`.

A `Call` names one Platform API operation (by its OpenAPI operationId) with its path
parameters, query, body and Idempotency-Key. `ClientCore` turns a call into an HTTP request
(credentials, correlation and channel headers), an HTTP response into the parsed document or
a typed `ApiError`, and decides whether and when a failed attempt is retried. The two clients
only add the transport loop: send, maybe sleep, send again with the *same* request.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from gate4_client.errors import ApiError, ConfigurationError, error_class

T = TypeVar("T")

DEFAULT_API_BASE = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_SECONDS = 10.0
USER_AGENT = "gate4-client/0.1"

#: The environment variables `from_env` reads (the names `var/dev-credentials.env` exports).
ENV_API_BASE = "GATE4_API_BASE"
ENV_TOKEN = "GATE4_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_API_KEY = "GATE4_API_KEY"
ENV_TENANT_ID = "GATE4_TENANT_ID"
ENV_USER_ID = "GATE4_USER_ID"
ENV_CHANNEL = "GATE4_CHANNEL"

#: Every operation of the Platform API: operationId -> (HTTP method, path template).
ROUTES: dict[str, tuple[str, str]] = {
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "metrics": ("GET", "/metrics"),
    "openapiDocument": ("GET", "/openapi.yaml"),
    "openapiDocumentJson": ("GET", "/openapi.json"),
    "createSession": ("POST", "/v2/conversations/sessions"),
    "getSession": ("GET", "/v2/conversations/sessions/{sessionId}"),
    "createTurn": ("POST", "/v2/conversations/sessions/{sessionId}/turns"),
    "listNotifications": ("GET", "/v2/conversations/sessions/{sessionId}/notifications"),
    "createDeployment": ("POST", "/v1/deployments"),
    "listDeployments": ("GET", "/v1/deployments"),
    "getDeployment": ("GET", "/v1/deployments/{deploymentId}"),
    "stopDeployment": ("POST", "/v1/deployments/{deploymentId}/actions/stop"),
    "submitOrder": ("POST", "/v1/orders"),
    "listOrders": ("GET", "/v1/orders"),
    "getOrder": ("GET", "/v1/orders/{orderId}"),
    "cancelOrder": ("POST", "/v1/orders/{orderId}/actions/cancel"),
    "feedMarks": ("POST", "/v1/sandbox/marks"),
    "getPolicy": ("GET", "/v1/risk/policy"),
    "putPolicy": ("PUT", "/v1/risk/policy"),
    "validatePolicy": ("POST", "/v1/risk/policy/validate"),
    "listPolicyVersions": ("GET", "/v1/risk/policy/versions"),
    "listKillSwitches": ("GET", "/v1/risk/kill-switches"),
    "getKillSwitch": ("GET", "/v1/risk/kill-switches/{scope}/{scopeId}"),
    "engageKillSwitch": ("POST", "/v1/risk/kill-switches/{scope}/{scopeId}/actions/engage"),
    "releaseKillSwitch": ("POST", "/v1/risk/kill-switches/{scope}/{scopeId}/actions/release"),
    "queryAuditEvents": ("GET", "/v1/audit/events"),
    "verifyAuditChain": ("GET", "/v1/audit/chain/verify"),
}

#: Operations with no side effect although they are not GETs: safe to retry like a read.
SAFE_OPERATIONS = frozenset({"validatePolicy"})

#: Statuses after which the contract guarantees nothing was executed: any call may retry.
NOTHING_EXECUTED = frozenset({429, 503})
#: Statuses after which the outcome is unknown: only reads and keyed commands retry.
OUTCOME_UNKNOWN = frozenset({502, 504})


#: How a client waits between attempts (tests pass one that records instead). Two names, since
#: token replacement cannot drop `Awaitable[...]`: unasync turns `AsyncSleep` in aio.py into
#: `SyncSleep` in the generated client.py.
AsyncSleep: TypeAlias = Callable[[float], Awaitable[None]]
SyncSleep: TypeAlias = Callable[[float], None]


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What every /v1 and /v2 call carries. The token and the key never appear in a repr.

    `api_base` is the gateway they were issued for: a client refuses to send them anywhere
    else (`config_from_env` sets it to GATE4_API_BASE). None: credentials given explicitly
    with the client's own base URL.
    """

    token: str = field(repr=False)
    api_key: str = field(repr=False)
    tenant_id: str
    user_id: str
    api_base: str | None = None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_api_base(a: str, b: str) -> bool:
    """Whether two API base URLs name the same gateway: scheme, host, port and path prefix,
    compared the way a browser compares origins (case-insensitive host, default ports)."""

    def key(url: str) -> tuple[str, str, int | None, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")

    return key(a) == key(b)


def credentials_refusal(credentials: Credentials, base_url: str) -> str | None:
    """Why the credentials may not go to base_url (a message without secrets), or None."""
    if credentials.api_base is None or same_api_base(credentials.api_base, base_url):
        return None
    return (
        f"refusing to send the credentials issued for {credentials.api_base} to {base_url}: "
        "credentials go only to the API base they were issued for; give that gateway's own "
        "credentials explicitly to use it"
    )


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter; `Retry-After` wins when the gateway sends one.

    A retry resends the same request: same body, same `X-Request-Id`, same
    `Idempotency-Key`, so the platform runs a keyed command at most once.
    """

    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    #: The longest `Retry-After` the client waits for; a longer one is cut to this.
    retry_after_max: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_retries=0)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One operation to perform; T is the type of the document it returns."""

    operation_id: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str | int | bool | None] = field(default_factory=dict)
    body: Any = None
    idempotency_key: str | None = None
    result: Literal["json", "text"] = "json"
    #: Non-2xx statuses whose body is still the result (readyz answers 503 with its report).
    also_ok: frozenset[int] = frozenset()

    @property
    def method(self) -> str:
        return ROUTES[self.operation_id][0]

    @property
    def path(self) -> str:
        template = ROUTES[self.operation_id][1]
        return template.format(**{k: quote(v, safe="") for k, v in self.path_params.items()})

    @property
    def authenticated(self) -> bool:
        return self.path.startswith(("/v1/", "/v2/"))

    @property
    def retry_safe(self) -> bool:
        """A read, a command without side effects, or a command with an Idempotency-Key."""
        return (
            self.method == "GET"
            or self.operation_id in SAFE_OPERATIONS
            or self.idempotency_key is not None
        )


@dataclass(frozen=True)
class ClientConfig:
    base_url: str = DEFAULT_API_BASE
    credentials: Credentials | None = None
    channel: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        # Before any request exists: a client pointed elsewhere never holds usable credentials.
        refusal = credentials_refusal(self.credentials, self.base_url) if self.credentials else None
        if refusal:
            raise ConfigurationError(refusal)


def config_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
    """Reads GATE4_API_BASE, GATE4_TOKEN, GATE4_API_KEY, GATE4_TENANT_ID, GATE4_USER_ID and
    GATE4_CHANNEL; keyword arguments (base_url, credentials, channel, timeout, retry) win.
    Credentials are left unset unless all four variables are present; they are bound to
    GATE4_API_BASE, so a `base_url` naming another gateway needs `credentials` of its own
    (ConfigurationError otherwise)."""
    env = os.environ if env is None else env
    api_base = env.get(ENV_API_BASE) or DEFAULT_API_BASE
    values: dict[str, Any] = {"base_url": api_base}
    names = (ENV_TOKEN, ENV_API_KEY, ENV_TENANT_ID, ENV_USER_ID)
    if all(env.get(name) for name in names):
        values["credentials"] = Credentials(
            token=env[ENV_TOKEN],
            api_key=env[ENV_API_KEY],
            tenant_id=env[ENV_TENANT_ID],
            user_id=env[ENV_USER_ID],
            api_base=api_base,
        )
    if env.get(ENV_CHANNEL):
        values["channel"] = env[ENV_CHANNEL]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ClientConfig(**values)


def missing_credentials(env: Mapping[str, str] | None = None) -> list[str]:
    """The credential variables that are unset or empty (names only, never values)."""
    env = os.environ if env is None else env
    return [n for n in (ENV_TOKEN, ENV_API_KEY, ENV_TENANT_ID, ENV_USER_ID) if not env.get(n)]


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    content: bytes | None


class ClientCore:
    """Request building, response parsing and retry decisions; no I/O."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    def prepare(self, call: Call[Any], request_id: str) -> PreparedRequest:
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": USER_AGENT,
            "X-Request-Id": request_id,
        }
        if call.authenticated:
            creds = self.config.credentials
            if creds is None:
                raise ConfigurationError(
                    "no credentials: set GATE4_TOKEN, GATE4_API_KEY, GATE4_TENANT_ID and "
                    "GATE4_USER_ID (e.g. `source var/dev-credentials.env`)"
                )
            headers.update(
                {
                    "Authorization": f"Bearer {creds.token}",
                    "X-API-Key": creds.api_key,
                    "X-Tenant-Id": creds.tenant_id,
                    "X-User-Id": creds.user_id,
                }
            )
        if self.config.channel:
            headers["X-Channel"] = self.config.channel
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        content = None
        if call.body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(call.body, separators=(",", ":")).encode()
        params = {k: _query_value(v) for k, v in call.query.items() if v is not None}
        return PreparedRequest(
            method=call.method,
            url=self.config.base_url.rstrip("/") + call.path,
            params=params,
            headers=headers,
            content=content,
        )

    def parse(self, call: Call[T], response: httpx.Response, request_id: str) -> T:
        """The result document, or raises the typed `ApiError` of an error answer."""
        if response.is_success or response.status_code in call.also_ok:
            if call.result == "text":
                return response.text  # type: ignore[return-value]
            return response.json()  # type: ignore[no-any-return]
        raise self.error(call, response, request_id)

    def error(self, call: Call[Any], response: httpx.Response, request_id: str) -> ApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        problem: dict[str, Any] = body if isinstance(body, dict) else {}
        code = str(problem.get("code") or f"HTTP_{status}")
        rid = str(problem.get("requestId") or response.headers.get("X-Request-Id") or request_id)
        if not problem:
            problem = {
                "type": "about:blank",
                "title": response.reason_phrase,
                "status": status,
                "detail": response.text[:200] if body is None else "",
                "code": code,
                "requestId": rid,
            }
        errors = problem.get("errors")
        return error_class(status, code)(
            status=status,
            code=code,
            request_id=rid,
            detail=str(problem.get("detail") or ""),
            title=str(problem.get("title") or ""),
            type=str(problem.get("type") or ""),
            trace_id=str(problem.get("traceId") or ""),
            outcome=str(problem.get("outcome") or ""),
            errors=errors if isinstance(errors, list) else None,
            problem=problem,
            idempotency_key=call.idempotency_key,
        )

    def retry_after_response(
        self, call: Call[Any], response: httpx.Response, attempt: int
    ) -> float | None:
        """Seconds to wait before resending after an error answer; None: do not retry."""
        if attempt >= self.config.retry.max_retries:
            return None
        status = response.status_code
        if response.is_success or status in call.also_ok:
            return None
        retry = status in NOTHING_EXECUTED or (status in OUTCOME_UNKNOWN and call.retry_safe)
        if status == 409 and call.idempotency_key is not None:
            retry = _problem_code(response) == "IDEMPOTENCY_IN_PROGRESS"
        if not retry:
            return None
        return self.config.retry.delay(attempt, response.headers.get("Retry-After"))

    def retry_after_exception(
        self, call: Call[Any], exc: httpx.TransportError, attempt: int
    ) -> float | None:
        """Seconds to wait before resending after a transport failure; None: give up.

        A request that never connected did nothing and may always be resent; one that may
        have reached the gateway is resent only when that is safe (see `Call.retry_safe`).
        """
        if attempt >= self.config.retry.max_retries:
            return None
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        if not (never_sent or call.retry_safe):
            return None
        return self.config.retry.delay(attempt)


def describe_transport_error(exc: httpx.TransportError, url: str) -> str:
    kind = {
        httpx.ConnectError: "cannot connect to",
        httpx.ConnectTimeout: "timed out connecting to",
        httpx.ReadTimeout: "no answer in time from",
        httpx.WriteTimeout: "timed out sending to",
        httpx.PoolTimeout: "no free connection to",
    }.get(type(exc), "connection failed with")
    reason = str(exc).strip() or type(exc).__name__
    return f"{kind} the Platform API at {url}: {reason}"


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
