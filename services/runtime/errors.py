"""The platform's one error hierarchy and its two mappings.

A service raises a `Gate4Error`; the server interceptor turns it into a gRPC status whose
`google.rpc.ErrorInfo.reason` is the error's `code` (and `google.rpc.BadRequest` for field
errors); the gateway turns that status back into the same error and renders problem+json.
The HTTP status comes from the code when the code is known, else from the canonical
gRPC -> HTTP table, so 422 and 423 survive a hop that gRPC itself cannot express.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "gate4.platform"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: The peer whose silence is a refusal (from_peer fails closed for it).
RISK_SERVICE = "risk"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


# Canonical gRPC -> (HTTP status, default code) table, used when a status carries no known code.
CANONICAL: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.CANCELLED: (499, "CANCELLED"),
    grpc.StatusCode.UNKNOWN: (500, "INTERNAL"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "VALIDATION_FAILED"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "DEADLINE_EXCEEDED"),
    grpc.StatusCode.NOT_FOUND: (404, "NOT_FOUND"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "ALREADY_EXISTS"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "FORBIDDEN"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "RATE_LIMITED"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "FAILED_PRECONDITION"),
    grpc.StatusCode.ABORTED: (409, "CONFLICT"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "OUT_OF_RANGE"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "NOT_IMPLEMENTED"),
    grpc.StatusCode.INTERNAL: (500, "INTERNAL"),
    grpc.StatusCode.UNAVAILABLE: (503, "DEPENDENCY_UNAVAILABLE"),
    grpc.StatusCode.DATA_LOSS: (500, "DATA_LOSS"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "UNAUTHENTICATED"),
}

_BY_CODE: dict[str, type[Gate4Error]] = {}
_GRPC_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


class Gate4Error(Exception):
    """Base of every error the platform reports to a caller."""

    code: ClassVar[str] = "INTERNAL"
    title: ClassVar[str] = "Internal error"
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code in _BY_CODE and _BY_CODE[cls.code] is not cls:
            raise TypeError(f"error code {cls.code} is defined twice")
        _BY_CODE[cls.code] = cls

    def __init__(
        self,
        detail: str,
        *,
        field_errors: Sequence[FieldError] = (),
        outcome: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field_errors = list(field_errors)
        self.outcome = outcome
        self.metadata = dict(metadata or {})

    # Instances rebuilt from an unknown status carry their own code and statuses.
    def error_code(self) -> str:
        return self.code

    def status_for_http(self) -> int:
        return self.http_status

    def status_for_grpc(self) -> grpc.StatusCode:
        return self.grpc_code

    def title_text(self) -> str:
        return self.title

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_code()}: {self.detail!r})"


class ValidationFailed(Gate4Error):
    code = "VALIDATION_FAILED"
    title = "Request validation failed"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class IdempotencyKeyRequired(Gate4Error):
    code = "IDEMPOTENCY_KEY_REQUIRED"
    title = "Idempotency-Key header required"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class RiskPolicyInvalid(Gate4Error):
    code = "RISK_POLICY_INVALID"
    title = "Risk policy invalid"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(Gate4Error):
    code = "PAYLOAD_TOO_LARGE"
    title = "Request body too large"
    http_status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class UnsupportedMediaType(Gate4Error):
    code = "UNSUPPORTED_MEDIA_TYPE"
    title = "Unsupported media type"
    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class RouteNotFound(Gate4Error):
    code = "ROUTE_NOT_FOUND"
    title = "No such route"
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class MethodNotAllowed(Gate4Error):
    code = "METHOD_NOT_ALLOWED"
    title = "Method not allowed"
    http_status = 405
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Unauthenticated(Gate4Error):
    code = "UNAUTHENTICATED"
    title = "Authentication required"
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(Gate4Error):
    code = "FORBIDDEN"
    title = "Permission denied"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class TenantMismatch(Gate4Error):
    code = "TENANT_MISMATCH"
    title = "Tenant mismatch"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class UserMismatch(Gate4Error):
    code = "USER_MISMATCH"
    title = "User mismatch"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(Gate4Error):
    code = "NOT_FOUND"
    title = "Not found"
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class StateConflict(Gate4Error):
    code = "STATE_CONFLICT"
    title = "State conflict"
    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class IdempotencyInProgress(Gate4Error):
    code = "IDEMPOTENCY_IN_PROGRESS"
    title = "Request with this Idempotency-Key is still running"
    http_status = 409
    grpc_code = grpc.StatusCode.ABORTED


class IdempotencyKeyReused(Gate4Error):
    code = "IDEMPOTENCY_KEY_REUSED"
    title = "Idempotency-Key reused with another payload"
    http_status = 422
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class RiskLimitBreached(Gate4Error):
    code = "RISK_LIMIT_BREACHED"
    title = "Refused by pre-trade risk checks"
    http_status = 422
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class KillSwitchEngaged(Gate4Error):
    code = "KILL_SWITCH_ENGAGED"
    title = "Kill switch engaged"
    http_status = 423
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(Gate4Error):
    code = "RATE_LIMITED"
    title = "Too many requests"
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotImplementedYet(Gate4Error):
    code = "NOT_IMPLEMENTED"
    title = "Not implemented"
    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class RiskUnavailable(Gate4Error):
    code = "RISK_UNAVAILABLE"
    title = "Risk controls unavailable; command refused"
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DependencyUnavailable(Gate4Error):
    code = "DEPENDENCY_UNAVAILABLE"
    title = "Dependency unavailable"
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(Gate4Error):
    code = "DEADLINE_EXCEEDED"
    title = "Deadline exceeded"
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class InternalError(Gate4Error):
    code = "INTERNAL"
    title = "Internal error"
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class UnmappedError(Gate4Error):
    """A status from a peer that named no code we know; keeps the peer's gRPC status."""

    code = "UNMAPPED"

    def __init__(self, grpc_code: grpc.StatusCode, detail: str, reason: str = "") -> None:
        super().__init__(detail)
        self._grpc_code = grpc_code
        self._http_status, default_code = CANONICAL.get(grpc_code, (500, "INTERNAL"))
        self._code = reason or default_code

    def error_code(self) -> str:
        return self._code

    def status_for_http(self) -> int:
        return self._http_status

    def status_for_grpc(self) -> grpc.StatusCode:
        return self._grpc_code

    def title_text(self) -> str:
        return self._code.replace("_", " ").capitalize()


def error_class(code: str) -> type[Gate4Error] | None:
    return _BY_CODE.get(code)


def public_errors() -> list[type[Gate4Error]]:
    """Every error a caller can be answered with, by HTTP status: the API's list of codes.

    The OpenAPI document's error table and the quickstart's list these and only these.
    """
    public = [cls for cls in _BY_CODE.values() if cls is not UnmappedError]
    return sorted(public, key=lambda cls: (cls.http_status, cls.code))


def to_rpc_status(error: Gate4Error) -> status_pb2.Status:
    """Builds the rich google.rpc.Status for an error (ErrorInfo, BadRequest)."""
    info = error_details_pb2.ErrorInfo(reason=error.error_code(), domain=ERROR_DOMAIN)
    if error.outcome:
        info.metadata["outcome"] = error.outcome
    for key, value in error.metadata.items():
        info.metadata[key] = value
    details = [_pack(info)]
    if error.field_errors:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f.field, description=f.message)
                for f in error.field_errors
            ]
        )
        details.append(_pack(bad))
    return status_pb2.Status(
        code=error.status_for_grpc().value[0], message=error.detail, details=details
    )


def trailing_metadata(error: Gate4Error) -> tuple[tuple[str, bytes], ...]:
    return ((STATUS_DETAILS_KEY, to_rpc_status(error).SerializeToString()),)


def from_rpc(
    code: grpc.StatusCode | None,
    details: str | None,
    metadata: Sequence[tuple[str, str | bytes]] | Sequence[Any] | None,
) -> Gate4Error:
    """Rebuilds the domain error from a gRPC status (code, message, trailing metadata)."""
    grpc_code = code or grpc.StatusCode.UNKNOWN
    detail = details or grpc_code.name.lower().replace("_", " ")
    status = _status_from_metadata(metadata)
    info: error_details_pb2.ErrorInfo | None = None
    field_errors: list[FieldError] = []
    if status is not None:
        grpc_code = _GRPC_BY_NUMBER.get(status.code, grpc_code)
        detail = status.message or detail
        for any_msg in status.details:
            if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_msg.Unpack(info)
            elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_msg.Unpack(bad)
                field_errors = [FieldError(v.field, v.description) for v in bad.field_violations]
    if info is not None and info.domain == ERROR_DOMAIN:
        cls = error_class(info.reason)
        meta = dict(info.metadata)
        outcome = meta.pop("outcome", "")
        if cls is not None and cls is not UnmappedError:
            return cls(detail, field_errors=field_errors, outcome=outcome, metadata=meta)
        err: Gate4Error = UnmappedError(grpc_code, detail, info.reason)
        err.outcome, err.metadata, err.field_errors = outcome, meta, field_errors
        return err
    return UnmappedError(grpc_code, detail)


def from_rpc_error(error: grpc.RpcError) -> Gate4Error:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return from_rpc(code, details, metadata)


def from_peer(
    service: str,
    exc: grpc.RpcError,
    *,
    meaning: Callable[[Gate4Error], Gate4Error] | None = None,
) -> Gate4Error:
    """What a failed call to a peer service means for the caller: the one mapping.

    The peer's domain error (it answered with a code we know) passes through unchanged.
    Otherwise the peer itself failed: UNAVAILABLE is DependencyUnavailable (the call never
    ran, so nothing was executed) and DEADLINE_EXCEEDED is DeadlineExceeded, except for risk,
    which decides nothing it could not answer in time: fail closed, as if it were down.
    `meaning` lets a caller say what the failure means for its own command (the order path
    turns every risk failure into RiskUnavailable); it receives the mapped error.
    """
    error = from_rpc_error(exc)
    code = exc.code() if hasattr(exc, "code") else None
    if isinstance(error, UnmappedError):
        if code == grpc.StatusCode.UNAVAILABLE:
            error = DependencyUnavailable(
                f"the {service} service is unavailable; nothing was executed"
            )
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED and service == RISK_SERVICE:
            error = RiskUnavailable(
                "the risk service did not answer within the request's deadline; "
                "risk controls are unavailable"
            )
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            error = DeadlineExceeded(f"the {service} service did not answer in time")
    return meaning(error) if meaning is not None else error


def _status_from_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | Sequence[Any] | None,
) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


__all__ = [
    "CANONICAL",
    "FieldError",
    "Gate4Error",
    "error_class",
    "from_peer",
    "from_rpc",
    "from_rpc_error",
    "public_errors",
    "to_rpc_status",
    "trailing_metadata",
]
