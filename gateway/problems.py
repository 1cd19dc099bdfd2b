"""problem+json (RFC 9457) responses: the gateway's only way of answering with an error."""

from __future__ import annotations

from opentelemetry import trace
from starlette.responses import Response

from gateway.codec import dumps
from services.runtime import correlation
from services.runtime.errors import Gate4Error
from services.runtime.telemetry import current_trace_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: `Retry-After` seconds on 503 (nothing was executed: retry, with the same key) and 429.
RETRY_AFTER_SECONDS = {503: 2, 429: 1}


def problem_type(code: str) -> str:
    return f"urn:gate4:problem:{code.lower().replace('_', '-')}"


def problem_body(error: Gate4Error, request_id: str, trace_id: str) -> dict[str, object]:
    body: dict[str, object] = {
        "type": problem_type(error.error_code()),
        "title": error.title_text(),
        "status": error.status_for_http(),
        "detail": error.detail,
        "code": error.error_code(),
        "requestId": request_id,
        "traceId": trace_id,
    }
    if error.outcome:
        body["outcome"] = error.outcome
    if error.field_errors:
        body["errors"] = [{"field": f.field, "message": f.message} for f in error.field_errors]
    return body


def problem_response(
    error: Gate4Error, request_id: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    rid = request_id or correlation.current().request_id
    trace.get_current_span().set_attribute("gate4.error_code", error.error_code())
    body = problem_body(error, rid, current_trace_id())
    headers = {**(headers or {}), "X-Request-Id": rid}
    retry_after = RETRY_AFTER_SECONDS.get(error.status_for_http())
    if retry_after is not None:
        headers.setdefault("Retry-After", str(retry_after))
    if error.status_for_http() == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gate4"'
    return Response(
        dumps(body),
        status_code=error.status_for_http(),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )
