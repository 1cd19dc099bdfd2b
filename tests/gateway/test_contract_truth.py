"""Where the document, the docs and the behaviour once disagreed, they now say the same.

Each test pins one of the findings of the contract review: the `Allow` of a 405, the 413 and
415 the gateway answers, lists newest first with a cursor that pages, the bounds of limits,
cursors and decimals, and what a replayed refusal replays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import MAX_BODY_BYTES
from gateway.openapi import HTTP_METHODS, ApiContract
from services.runtime import outcomes
from tests.support.stack import LiveStack

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ApiContract()
DEMO_POLICY = json.loads((ROOT / "cli" / "demo-risk-policy.json").read_text())
UNDECLARED = ("PATCH", "DELETE", "PUT", "POST", "GET")


def _key() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def client(live_stack: LiveStack) -> Iterator[httpx.Client]:
    """A tenant of the test's own, under the demo policy, with marks for its instruments."""
    tenant = f"truth-{uuid.uuid4().hex[:8]}"
    with live_stack.client(live_stack.headers(tenant=tenant)) as client:
        put = client.put("/v1/risk/policy", json={"policy": DEMO_POLICY, "reason": "test"})
        assert put.status_code == 200, put.text
        marks = [{"instrument": "BTC-USD", "price": "100"}]
        assert client.post("/v1/sandbox/marks", json={"marks": marks}).status_code == 200
        yield client


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["requestId"] == response.headers["x-request-id"]
    return body


def _deploy(client: httpx.Client, account: str = "acc-truth") -> dict[str, Any]:
    body = {
        "strategyId": "s",
        "accountId": account,
        "instruments": ["BTC-USD"],
        "capitalAllocation": "10000",
    }
    created = client.post("/v1/deployments", json=body, headers={"Idempotency-Key": _key()})
    assert created.status_code == 201, created.text
    deployment: dict[str, Any] = created.json()
    return deployment


# -- 405 and Allow ----------------------------------------------------------------------------


def test_a_405_names_every_method_of_its_path_in_allow(live_stack: LiveStack) -> None:
    with live_stack.client() as client:
        for path, item in CONTRACT.document["paths"].items():
            declared = {m.upper() for m in item if m in HTTP_METHODS}
            method = next(m for m in UNDECLARED if m not in declared)
            url = path.replace("{", "x").replace("}", "")  # any value fills a path parameter
            answer = client.request(method, url)
            _problem(answer, 405, "METHOD_NOT_ALLOWED")
            allowed = {m.strip() for m in answer.headers["allow"].split(",")}
            # HEAD is served wherever GET is (RFC 9110 9.3.2), documented or not.
            assert allowed - {"HEAD"} == declared, (path, allowed)


# -- 413 and 415 ------------------------------------------------------------------------------


def test_every_operation_with_a_body_documents_413_and_415() -> None:
    for path, item in CONTRACT.document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and "requestBody" in operation:
                for status in ("413", "415"):
                    assert status in operation["responses"], f"{method} {path} lacks {status}"


def test_the_gateway_answers_413_and_415_as_documented(client: httpx.Client) -> None:
    url = "/v2/conversations/sessions"
    plain = client.post(url, content=b"channel=openclaw", headers={"Content-Type": "text/plain"})
    _problem(plain, 415, "UNSUPPORTED_MEDIA_TYPE")
    huge = json.dumps({"channel": "api", "topic": "x" * MAX_BODY_BYTES}).encode()
    big = client.post(url, content=huge, headers={"Content-Type": "application/json"})
    _problem(big, 413, "PAYLOAD_TOO_LARGE")


# -- newest first, with a cursor that pages ---------------------------------------------------


def _pages(client: httpx.Client, url: str, key: str, params: dict[str, str]) -> list[str]:
    """The ids of every page of a list, one item per page, following nextCursor."""
    seen: list[str] = []
    cursor = ""
    while True:
        page = client.get(url, params={**params, "limit": "1", "cursor": cursor})
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item[key] for item in body[url.rsplit("/", 1)[-1]]]
        cursor = body["nextCursor"]
        if not cursor:
            return seen
        assert len(seen) < 50, "the cursor does not advance"


def test_deployments_and_orders_come_newest_first_and_page_through(client: httpx.Client) -> None:
    account = f"acc-{uuid.uuid4().hex[:6]}"
    created = [_deploy(client, account)["deploymentId"] for _ in range(3)]
    listed = _pages(client, "/v1/deployments", "deploymentId", {"accountId": account})
    assert listed == created[::-1]

    deployment = created[0]
    placed = []
    for _ in range(3):
        order = {
            "deploymentId": deployment,
            "instrument": "BTC-USD",
            "side": "buy",
            "type": "market",
            "quantity": "1",
        }
        answer = client.post("/v1/orders", json=order, headers={"Idempotency-Key": _key()})
        assert answer.status_code == 201, answer.text
        placed.append(answer.json()["orderId"])
    assert _pages(client, "/v1/orders", "orderId", {"deploymentId": deployment}) == placed[::-1]
    whole = client.get("/v1/orders", params={"deploymentId": deployment}).json()
    stamps = [order["createdAt"] for order in whole["orders"]]
    assert stamps == sorted(stamps, reverse=True) and whole["nextCursor"] == ""


# -- documented bounds are the enforced ones --------------------------------------------------


def test_the_documented_bounds_of_limits_and_cursors_are_enforced(client: httpx.Client) -> None:
    limit = CONTRACT.document["components"]["parameters"]["Limit"]["schema"]
    assert client.get("/v1/risk/policy/versions", params={"limit": limit["maximum"]}).is_success
    too_many = client.get("/v1/risk/policy/versions", params={"limit": limit["maximum"] + 1})
    _problem(too_many, 400, "VALIDATION_FAILED")

    # Any cursor of the documented form is a place to continue from; another form is refused.
    far = f"{'9' * 17}.{'z' * 64}"
    assert client.get("/v1/orders", params={"cursor": far}).is_success
    assert client.get("/v1/deployments", params={"cursor": "1.dep_x"}).is_success
    assert client.get("/v1/audit/events", params={"cursor": "9" * 18}).is_success
    for url, cursor in (("/v1/orders", "abc"), ("/v1/audit/events", "p12")):
        _problem(client.get(url, params={"cursor": cursor}), 400, "VALIDATION_FAILED")


@pytest.mark.parametrize("quantity", ["0", "0.000", "00"])
def test_a_zero_decimal_is_refused_by_the_document_as_by_the_service(
    client: httpx.Client, quantity: str
) -> None:
    order = {
        "deploymentId": "dep_x",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": quantity,
    }
    refused = client.post("/v1/orders", json=order, headers={"Idempotency-Key": _key()})
    problem = _problem(refused, 400, "VALIDATION_FAILED")
    assert [e["field"] for e in problem["errors"]] == ["quantity"]


def test_a_limit_price_is_allowed_on_limit_orders_only(client: httpx.Client) -> None:
    order = {
        "deploymentId": "dep_x",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "1",
        "limitPrice": "100",
    }
    refused = client.post("/v1/orders", json=order, headers={"Idempotency-Key": _key()})
    problem = _problem(refused, 400, "VALIDATION_FAILED")
    assert problem["errors"] == [{"field": "limitPrice", "message": "not allowed in this request"}]


# -- what a replayed refusal replays ----------------------------------------------------------


def test_a_replayed_refusal_is_marked_and_names_the_retry(client: httpx.Client) -> None:
    deployment = _deploy(client)["deploymentId"]
    order = {
        "deploymentId": deployment,
        "instrument": "BTC-USD",
        "side": "sell",
        "type": "market",
        "quantity": "1",
        "reduceOnly": True,  # nothing to reduce: refused
    }
    key = _key()
    first = client.post("/v1/orders", json=order, headers={"Idempotency-Key": key})
    refused = _problem(first, 422, "RISK_LIMIT_BREACHED")
    assert refused["outcome"] == outcomes.REDUCE_ONLY_VIOLATION
    assert "idempotent-replayed" not in first.headers

    retry = client.post(
        "/v1/orders", json=order, headers={"Idempotency-Key": key, "X-Request-Id": f"req-{key}"}
    )
    replayed = _problem(retry, 422, "RISK_LIMIT_BREACHED")
    assert retry.headers["idempotent-replayed"] == "true"
    assert replayed["requestId"] == f"req-{key}" != refused["requestId"]
    same = ("type", "title", "status", "code", "detail", "outcome")
    assert {k: replayed[k] for k in same} == {k: refused[k] for k in same}
