"""The auth matrix: every credential failure is a canonical problem carrying its requestId."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from tests.support.problems import assert_problem
from tests.support.stack import LiveStack

ROUTE = "/v1/deployments/dep_missing"


def test_valid_credentials_reach_the_service(live_stack: LiveStack) -> None:
    with live_stack.client(live_stack.headers()) as client:
        assert_problem(client.get(ROUTE), 404, "NOT_FOUND")


def test_missing_token_is_401(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    del headers["Authorization"]
    with live_stack.client(headers) as client:
        response = client.get(ROUTE)
    body = assert_problem(response, 401, "UNAUTHENTICATED")
    assert "Bearer" in str(body["detail"])
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_bad_signature_is_401(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    forged = jwt.encode(
        {"sub": "alice", "tenant": "acme", "roles": ["trader"], "exp": int(time.time()) + 60,
         "iss": "gate4-dev", "aud": "gate4-platform"},
        "not-the-platform-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )  # fmt: skip
    headers["Authorization"] = f"Bearer {forged}"
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 401, "UNAUTHENTICATED")


def test_unsigned_and_tampered_tokens_are_401(live_stack: LiveStack) -> None:
    headers = live_stack.headers(tenant="acme", roles=["viewer"])
    genuine = headers["Authorization"].removeprefix("Bearer ")
    header, _, signature = genuine.split(".")
    claims = jwt.decode(genuine, options={"verify_signature": False})
    unsigned = jwt.encode({**claims, "roles": ["risk-officer"]}, "", algorithm="none")
    raised = jwt.encode({**claims, "roles": ["risk-officer"]}, "x" * 40, algorithm="HS256")
    tampered = ".".join([header, raised.split(".")[1], signature])
    for token in (unsigned, unsigned.rstrip(".") + ".", tampered):
        with live_stack.client({**headers, "Authorization": f"Bearer {token}"}) as client:
            assert_problem(client.get(ROUTE), 401, "UNAUTHENTICATED")


def test_expired_token_is_401(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    headers["Authorization"] = f"Bearer {live_stack.token('acme', 'alice', ['viewer'], ttl=-120)}"
    with live_stack.client(headers) as client:
        body = assert_problem(client.get(ROUTE), 401, "UNAUTHENTICATED")
    assert "expired" in str(body["detail"])


@pytest.mark.parametrize("key", ["g4k_000000000000_wrong", "not-a-key"])
def test_wrong_api_key_is_401(live_stack: LiveStack, key: str) -> None:
    headers = live_stack.headers()
    headers["X-API-Key"] = key
    with live_stack.client(headers) as client:
        body = assert_problem(client.get(ROUTE), 401, "UNAUTHENTICATED")
    assert key not in httpx.Response(200, json=body).text


def test_missing_api_key_is_401(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    del headers["X-API-Key"]
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 401, "UNAUTHENTICATED")


def test_token_for_another_tenant_is_403(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    headers["Authorization"] = f"Bearer {live_stack.token('globex', 'alice', ['viewer'])}"
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 403, "TENANT_MISMATCH")


def test_api_key_of_another_tenant_is_403(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    headers["X-API-Key"] = live_stack.api_key("globex")
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 403, "TENANT_MISMATCH")


def test_header_tenant_differs_from_credentials_is_403(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    headers["X-Tenant-Id"] = "globex"
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 403, "TENANT_MISMATCH")


def test_header_user_differs_from_token_is_403(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    headers["X-User-Id"] = "mallory"
    with live_stack.client(headers) as client:
        assert_problem(client.get(ROUTE), 403, "USER_MISMATCH")


def test_missing_tenant_header_is_400_with_field(live_stack: LiveStack) -> None:
    headers = live_stack.headers()
    del headers["X-Tenant-Id"]
    with live_stack.client(headers) as client:
        body = assert_problem(client.get(ROUTE), 400, "VALIDATION_FAILED")
    assert body["errors"] == [{"field": "X-Tenant-Id", "message": "required header is missing"}]


def test_role_without_permission_is_403(live_stack: LiveStack) -> None:
    headers = live_stack.headers(roles=["viewer"])
    with live_stack.client(headers) as client:
        response = client.post(
            "/v1/sandbox/marks", json={"marks": [{"instrument": "BTC-USD", "price": "1"}]}
        )
        body = assert_problem(response, 403, "FORBIDDEN")
        assert "trader" in str(body["detail"])
        # Reads stay open to a viewer.
        assert_problem(client.get(ROUTE), 404, "NOT_FOUND")


def test_audit_needs_the_sre_role(live_stack: LiveStack) -> None:
    with live_stack.client(live_stack.headers(roles=["trader"])) as client:
        assert_problem(client.get("/v1/audit/events"), 403, "FORBIDDEN")
    with live_stack.client(live_stack.headers(roles=["sre"])) as client:
        assert client.get("/v1/audit/events").status_code == 200


def test_supplied_request_id_is_echoed(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        response = client.get(ROUTE, headers={"X-Request-Id": "incident-42:retry.1"})
    body = assert_problem(response, 401, "UNAUTHENTICATED")
    assert body["requestId"] == "incident-42:retry.1"


@pytest.mark.parametrize("bad", ["short", "has spaces in it", "x" * 129, "semi;colon-id"])
def test_malformed_request_id_is_400_with_a_fresh_id(live_stack: LiveStack, bad: str) -> None:
    with live_stack.client(live_stack.headers()) as client:
        response = client.get(ROUTE, headers={"X-Request-Id": bad})
    body = assert_problem(response, 400, "VALIDATION_FAILED")
    assert body["requestId"] != bad
    assert body["errors"] == [{"field": "X-Request-Id", "message": "malformed request id"}]


def test_ops_routes_need_no_credentials(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert "gate4_gateway_requests_total" in client.get("/metrics").text
        assert client.get("/openapi.yaml").text.startswith("openapi:")
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert client.get("/healthz").headers["x-request-id"].startswith("req_")


def test_unknown_route_and_method_are_problems(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        assert_problem(client.get("/v1/nothing-here"), 404, "ROUTE_NOT_FOUND")
        assert_problem(client.delete("/v1/orders"), 405, "METHOD_NOT_ALLOWED")
