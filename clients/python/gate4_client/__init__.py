"""gate4_client: the Python client of the Gate4 Platform API.

    from gate4_client import Gate4Client

    with Gate4Client.from_env() as gate4:          # GATE4_API_BASE, GATE4_TOKEN, ...
        session = gate4.create_session(topic="incident-triage",
                                       metadata={"notificationsOptIn": True})
        print(session["sessionId"])

`AsyncGate4Client` (aio.py) has the same methods as coroutines; `Gate4Client` (client.py) is
generated from it by clients/python/generate_sync.py. Credentials from the environment go
only to GATE4_API_BASE: another `base_url` needs its own `credentials=`. Both speak only to
the gateway's Platform API routes (gateway/platform-api.openapi.yaml),
retry with backoff while resending the same `X-Request-Id` and `Idempotency-Key`, and
raise the canonical problem documents as typed `ApiError`s carrying `request_id`, `code`
and `outcome`. Every error they raise is a `Gate4ClientError`.
"""

from gate4_client._core import (
    DEFAULT_API_BASE,
    NO_RETRY,
    ROUTES,
    Call,
    ClientConfig,
    Credentials,
    RetryPolicy,
    config_from_env,
    missing_credentials,
    new_idempotency_key,
    new_request_id,
    same_api_base,
)
from gate4_client.aio import AsyncGate4Client
from gate4_client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    Gate4ClientError,
    GatewayTimeoutError,
    IdempotencyKeyReusedError,
    KillSwitchEngagedError,
    NotFoundError,
    NotImplementedByPlatformError,
    PermissionDeniedError,
    RateLimitedError,
    RiskRejectedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableError,
)
from gate4_client.generated.client import Gate4Client

__all__ = [
    "DEFAULT_API_BASE",
    "NO_RETRY",
    "ROUTES",
    "ApiError",
    "AsyncGate4Client",
    "AuthenticationError",
    "BadRequestError",
    "Call",
    "ClientConfig",
    "ConfigurationError",
    "ConflictError",
    "Credentials",
    "Gate4Client",
    "Gate4ClientError",
    "GatewayTimeoutError",
    "IdempotencyKeyReusedError",
    "KillSwitchEngagedError",
    "NotFoundError",
    "NotImplementedByPlatformError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RetryPolicy",
    "RiskRejectedError",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "UnprocessableError",
    "config_from_env",
    "missing_credentials",
    "new_idempotency_key",
    "new_request_id",
    "same_api_base",
]
