"""The fuzzer's own checks fail what they should, and only the listed artefacts are dropped."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from schemathesis import Response

from tests.fuzz import hooks

NOBODY: Any = cast(Any, None)  # neither check reads the context, the case or the request


def response(status: int, body: dict[str, Any] | None = None, **headers: str) -> Response:
    content = json.dumps(body).encode() if body is not None else b""
    return Response(
        status_code=status,
        headers={name.replace("_", "-"): [value] for name, value in headers.items()},
        content=content,
        request=NOBODY,
        elapsed=0.01,
        verify=True,
    )


def problem(status: int, code: str, request_id: str, detail: str = "") -> Response:
    body = {"status": status, "code": code, "requestId": request_id, "detail": detail}
    return response(status, body, X_Request_Id=request_id, Content_Type="application/problem+json")


def test_every_response_must_carry_a_well_formed_request_id() -> None:
    hooks.request_id_on_every_response(
        NOBODY, response(200, {}, X_Request_Id="req-12345678"), NOBODY
    )
    for bad in (response(200, {}), response(200, {}, X_Request_Id="short")):
        with pytest.raises(AssertionError):
            hooks.request_id_on_every_response(NOBODY, bad, NOBODY)


def test_every_error_must_be_a_problem_naming_the_same_request() -> None:
    hooks.request_id_in_every_problem(NOBODY, problem(404, "NOT_FOUND", "req-12345678"), NOBODY)
    hooks.request_id_in_every_problem(NOBODY, response(200, {"ok": True}), NOBODY)
    mismatched = problem(404, "NOT_FOUND", "req-12345678")
    mismatched.headers["x-request-id"] = ["req-87654321"]
    plain = response(500, None, X_Request_Id="req-12345678", Content_Type="text/plain")
    for bad in (mismatched, plain):
        with pytest.raises(AssertionError):
            hooks.request_id_in_every_problem(NOBODY, bad, NOBODY)


def test_only_a_listed_artefact_is_dropped() -> None:
    refusal = problem(422, "RISK_LIMIT_BREACHED", "req-12345678")
    assert hooks.known_artefact("submitOrder", "ST202", refusal) is not None
    # The same answer elsewhere, for another failure, or with another code is a finding.
    assert hooks.known_artefact("getOrder", "ST202", refusal) is None
    assert hooks.known_artefact("submitOrder", "ST108", refusal) is None
    other = problem(422, "SOMETHING_ELSE", "req-12345678")
    assert hooks.known_artefact("submitOrder", "ST202", other) is None
    window = problem(400, "VALIDATION_FAILED", "req-12345678", "until: must be later than since")
    assert hooks.known_artefact("queryAuditEvents", "ST202", window) is not None
    limit = problem(400, "VALIDATION_FAILED", "req-12345678", "limit: between 1 and 500")
    assert hooks.known_artefact("queryAuditEvents", "ST202", limit) is None
    assert all(artefact.reason for artefact in hooks.KNOWN_ARTEFACTS)
