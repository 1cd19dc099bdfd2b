"""One error hierarchy: every failure of a Platform API call is a `Gate4ClientError`.

An `ApiError` is the gateway's answer: an RFC 9457 problem document turned into an exception
that carries its `status`, `code`, `requestId`, `traceId` and, on risk and kill-switch
refusals, the pre-trade `outcome`. Branch on the class or on `code`, never on `detail`.
A `TransportError` means no answer came back (connection refused, timeout); it still carries
the `requestId` the client sent, so the attempt can be found in the gateway's logs.

The base is not called `Gate4Error`: that is the services' hierarchy (services/runtime/errors.py),
whose errors reach a client only as problem documents, i.e. as `ApiError`s. Nor `ApiError`, which
names the answers alone, not the missing setting or the missing answer.
"""

from __future__ import annotations

from typing import Any


class Gate4ClientError(Exception):
    """Base class of every error raised by gate4_client."""


class ConfigurationError(Gate4ClientError):
    """The client is missing a setting (base URL, token, API key, tenant or user)."""


class TransportError(Gate4ClientError):
    """No HTTP answer: the gateway was unreachable or did not answer in time."""

    def __init__(self, message: str, *, request_id: str, method: str, url: str) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.method = method
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} (requestId {self.request_id})"


class ApiError(Gate4ClientError):
    """The gateway answered with an error status (a problem document, as a rule)."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        request_id: str,
        detail: str = "",
        title: str = "",
        type: str = "",
        trace_id: str = "",
        outcome: str = "",
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(detail or title or code)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.detail = detail
        self.title = title
        self.type = type
        self.trace_id = trace_id
        self.outcome = outcome
        self.errors = list(errors or [])
        #: The problem document as received (or as rebuilt when the body was not one).
        self.problem: dict[str, Any] = dict(problem or {})
        #: The Idempotency-Key the command was sent with: retry with the same key.
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        text = f"{self.status} {self.code}"
        if self.detail:
            text += f": {self.detail}"
        extras = [f"requestId {self.request_id}"]
        if self.outcome:
            extras.append(f"outcome {self.outcome}")
        return f"{text} ({', '.join(extras)})"


class BadRequestError(ApiError):
    """400: VALIDATION_FAILED, IDEMPOTENCY_KEY_REQUIRED, RISK_POLICY_INVALID, ..."""


class AuthenticationError(ApiError):
    """401 UNAUTHENTICATED: missing, expired or invalid token or API key."""


class PermissionDeniedError(ApiError):
    """403: TENANT_MISMATCH, USER_MISMATCH, FORBIDDEN (a role is missing)."""


class NotFoundError(ApiError):
    """404 NOT_FOUND: unknown id, and any other tenant's id."""


class ConflictError(ApiError):
    """409: IDEMPOTENCY_IN_PROGRESS, STATE_CONFLICT."""


class UnprocessableError(ApiError):
    """422: the command was understood and refused."""


class RiskRejectedError(UnprocessableError):
    """422 RISK_LIMIT_BREACHED: the pre-trade risk gate said no; `outcome` names the check."""


class IdempotencyKeyReusedError(UnprocessableError):
    """422 IDEMPOTENCY_KEY_REUSED: the key was already used with another payload."""


class KillSwitchEngagedError(ApiError):
    """423 KILL_SWITCH_ENGAGED: a kill switch holds the scope; side effects are blocked."""


class RateLimitedError(ApiError):
    """429 RATE_LIMITED."""


class ServerError(ApiError):
    """5xx not covered below (500 INTERNAL, ...)."""


class NotImplementedByPlatformError(ServerError):
    """501 NOT_IMPLEMENTED: in the contract, not served by this platform release."""


class ServiceUnavailableError(ServerError):
    """503: RISK_UNAVAILABLE, DEPENDENCY_UNAVAILABLE; fail closed, nothing was executed."""


class GatewayTimeoutError(ServerError):
    """504 DEADLINE_EXCEEDED: the outcome is unknown; retry with the same Idempotency-Key."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    423: KillSwitchEngagedError,
    429: RateLimitedError,
    501: NotImplementedByPlatformError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}

_BY_CODE: dict[str, type[ApiError]] = {
    "RISK_LIMIT_BREACHED": RiskRejectedError,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReusedError,
}


def error_class(status: int, code: str) -> type[ApiError]:
    """The exception class for a status and code (the code wins where it is more precise)."""
    by_code = _BY_CODE.get(code)
    if by_code is not None and issubclass(by_code, _BY_STATUS.get(status, ApiError)):
        return by_code
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError
