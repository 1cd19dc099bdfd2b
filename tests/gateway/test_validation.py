"""Bad input gets a clear, canonical 400 and changes nothing."""

from __future__ import annotations

import pytest

from tests.support.problems import assert_problem
from tests.support.stack import LiveStack

SESSION = {
    "channel": "openclaw",
    "topic": "incident-triage",
    "metadata": {"notificationsOptIn": True},
}


@pytest.fixture
def client(live_stack: LiveStack):
    with live_stack.client(live_stack.headers(tenant="validation")) as c:
        yield c


def test_runbook_repro_creates_an_openclaw_session(client) -> None:
    response = client.post("/v2/conversations/sessions", json=SESSION)
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["sessionId"].startswith("ses_")
    assert session["channel"] == "openclaw"
    assert session["metadata"] == {"notificationsOptIn": True}
    assert session["contextMemory"]["preferences"] == {"notificationsOptIn": True}
    assert session["contextMemorySnapshot"]["version"] == 0
    assert session["contextMemorySnapshot"]["content"] == session["contextMemory"]
    again = client.get(f"/v2/conversations/sessions/{session['sessionId']}")
    assert again.json() == session


def test_another_tenant_cannot_see_a_session(live_stack: LiveStack, client) -> None:
    session_id = client.post("/v2/conversations/sessions", json=SESSION).json()["sessionId"]
    with live_stack.client(live_stack.headers(tenant="intruder")) as other:
        assert_problem(other.get(f"/v2/conversations/sessions/{session_id}"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body,field",
    [
        ({**SESSION, "channel": "carrier-pigeon"}, "channel"),
        ({"topic": "x"}, "channel"),
        ({**SESSION, "extra": 1}, "extra"),
        ({**SESSION, "metadata": {"notificationsOptIn": "yes"}}, "metadata.notificationsOptIn"),
        ({**SESSION, "topic": ""}, "topic"),
    ],
)
def test_invalid_session_payloads_name_the_field(client, body, field) -> None:
    problem = assert_problem(
        client.post("/v2/conversations/sessions", json=body), 400, "VALIDATION_FAILED"
    )
    assert field in [e["field"] for e in problem["errors"]]


def test_malformed_json_and_wrong_media_type(client) -> None:
    bad_json = client.post(
        "/v2/conversations/sessions",
        content=b'{"channel": ',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(bad_json, 400, "VALIDATION_FAILED")
    form = client.post("/v2/conversations/sessions", content=b"channel=openclaw",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert_problem(form, 415, "UNSUPPORTED_MEDIA_TYPE")
    missing = client.post("/v2/conversations/sessions")
    assert_problem(missing, 400, "VALIDATION_FAILED")


def test_oversized_body_is_413(client) -> None:
    body = {**SESSION, "topic": "x" * (1 << 20)}
    assert_problem(client.post("/v2/conversations/sessions", json=body), 413, "PAYLOAD_TOO_LARGE")


def test_idempotency_key_required_on_orders_and_deployments(client) -> None:
    order = {
        "deploymentId": "dep_x",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "1",
    }
    assert_problem(client.post("/v1/orders", json=order), 400, "IDEMPOTENCY_KEY_REQUIRED")
    deployment = {
        "strategyId": "s",
        "accountId": "a",
        "instruments": ["BTC-USD"],
        "capitalAllocation": "10",
    }
    assert_problem(client.post("/v1/deployments", json=deployment), 400, "IDEMPOTENCY_KEY_REQUIRED")
    bad_key = client.post("/v1/orders", json=order, headers={"Idempotency-Key": "short"})
    assert_problem(bad_key, 400, "VALIDATION_FAILED")


def test_a_zero_quantity_is_refused_as_the_document_says(client) -> None:
    # The document's PositiveDecimal refuses "0" as the execution service does (which checks
    # again, for callers that reach it without the gateway).
    order = {
        "deploymentId": "dep_x",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "0",
    }
    problem = assert_problem(
        client.post("/v1/orders", json=order, headers={"Idempotency-Key": "zero-qty-0001"}),
        400,
        "VALIDATION_FAILED",
    )
    assert [error["field"] for error in problem["errors"]] == ["quantity"]


def test_query_parameters_are_validated(client) -> None:
    assert_problem(client.get("/v1/deployments", params={"limit": "0"}), 400, "VALIDATION_FAILED")
    assert_problem(
        client.get("/v1/deployments", params={"limit": "many"}), 400, "VALIDATION_FAILED"
    )
    unknown = assert_problem(
        client.get("/v1/deployments", params={"colour": "red"}), 400, "VALIDATION_FAILED"
    )
    assert unknown["errors"] == [{"field": "colour", "message": "unknown query parameter"}]
    listing = client.get("/v1/deployments", params={"limit": "5", "state": "running"})
    assert listing.status_code == 200
    assert listing.json() == {"deployments": [], "nextCursor": ""}


def test_empty_store_reads(client) -> None:
    assert_problem(client.get("/v1/orders/ord_missing"), 404, "NOT_FOUND")
    assert_problem(client.get("/v1/risk/policy"), 404, "NOT_FOUND")
    assert client.get("/v1/risk/kill-switches").json() == {"killSwitches": []}
    switch = client.get("/v1/risk/kill-switches/account/acc-1").json()
    assert switch["engaged"] is False and switch["scope"] == "account"
    assert_problem(client.get("/v1/risk/kill-switches/tenant/someone-else"), 404, "NOT_FOUND")
    assert_problem(client.get("/v1/risk/kill-switches/planet/earth"), 400, "VALIDATION_FAILED")
    verify = client.get("/v1/audit/chain/verify").json()
    assert verify["valid"] is True and verify["tenantId"] == "validation"
