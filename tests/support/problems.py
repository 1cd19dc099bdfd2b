"""The canonical problem+json error, as every route answers it."""

from __future__ import annotations

from typing import Any

import httpx


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the problem+json error `code` with `status`, carrying its requestId
    (the same as the X-Request-Id header) and traceId, and no stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["requestId"] == response.headers["x-request-id"]
    assert set(body) >= {"type", "title", "status", "detail", "code", "requestId", "traceId"}
    assert len(str(body["traceId"])) == 32
    assert "Traceback" not in response.text
    return body
