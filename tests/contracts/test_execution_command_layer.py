"""Runbook B, execution side: deployments, orders, fills, positions, stop, risk gate, orchestrator.

Every test runs against the real platform (`execution_stack`: audit, risk, execution and the
gateway, shared by the session) in a tenant of its own, under a real `risk-policy.v1`
(`TRADING_POLICY`). Refusals come from policies the order breaches, a held kill switch from
an engagement or a drawdown trip, and "risk is down" from killing the risk process.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from gate4.execution.v1 import execution_pb2
from tests.contracts.conftest import (
    POLICY,
    POLICY_VERSION,
    TRADING_POLICY,
    audit_events,
    new_tenant,
    policy,
)
from tests.support.execution_stack import ExecutionStack, metadata
from tests.support.problems import assert_problem
from tests.support.stack import LiveStack, wait_for
from tests.support.trader import Trader, new_key


@pytest.fixture
def trader(execution_stack: ExecutionStack) -> Iterator[Trader]:
    """A tenant of the test's own, under the trading policy (version 1)."""
    trader = Trader.open(execution_stack, new_tenant())
    trader.put_policy(TRADING_POLICY)
    yield trader
    trader.close()


def _types(events: list[dict[str, Any]]) -> set[str]:
    return {e["type"] for e in events}


# -- deployment lifecycle ------------------------------------------------------------------------


def test_deployment_lifecycle_and_illegal_transitions(trader: Trader) -> None:
    created = trader.post(
        "/v1/deployments",
        {
            "strategyId": "trend-1",
            "accountId": "acc-life",
            "instruments": ["BTC-USD"],
            "capitalAllocation": "10000",
        },
        new_key(),
        **{"X-Request-Id": "req-life-create-1"},
    )
    assert created.status_code == 201, created.text
    dep = created.json()
    assert dep["state"] == "running" and dep["mode"] == "paper"
    assert dep["equity"] == dep["peakEquity"] == "10000" and dep["drawdown"] == "0"
    assert dep["policyVersion"] == POLICY_VERSION and dep["killSwitch"]["engaged"] is False
    assert trader.deployment(dep["deploymentId"])["state"] == "running"

    stopped = trader.stop(dep["deploymentId"], key=None)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped"
    # stopped is final: stopping again, or trading on it, is a state conflict.
    assert_problem(trader.stop(dep["deploymentId"]), 409, "STATE_CONFLICT")
    assert_problem(trader.order(dep["deploymentId"], "buy", "1"), 409, "STATE_CONFLICT")
    assert_problem(trader.stop("dep_missing"), 404, "NOT_FOUND")

    events = audit_events(
        trader.client,
        {"risk.decision", "deployment.created", "deployment.started"},
        requestId="req-life-create-1",
    )
    # Risk was asked once, to create this deployment.
    (asked,) = [e for e in events if e["type"] == "risk.decision"]
    assert asked["data"]["command"] == "deployment.create" and asked["outcome"] == "APPROVED"
    assert asked["deploymentId"] == dep["deploymentId"] and asked["source"] == "risk"
    created_event = next(e for e in events if e["type"] == "deployment.created")
    assert created_event["outcome"] == "APPROVED"
    assert created_event["policyVersion"] == POLICY_VERSION
    assert created_event["deploymentId"] == dep["deploymentId"]
    audit_events(
        trader.client,
        {"deployment.stopping", "deployment.stopped"},
        deploymentId=dep["deploymentId"],
    )


def test_another_tenant_cannot_see_or_stop_a_deployment(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    dep = trader.deploy("acc-own")
    other = Trader.open(execution_stack, new_tenant("intruder"))
    try:
        assert_problem(other.client.get(f"/v1/deployments/{dep['deploymentId']}"), 404, "NOT_FOUND")
        assert_problem(other.stop(dep["deploymentId"]), 404, "NOT_FOUND")
    finally:
        other.close()


# -- orders, fills, positions and P&L ------------------------------------------------------------


def test_market_orders_fill_and_update_position_and_pnl(trader: Trader) -> None:
    dep = trader.deploy("acc-pnl", capital="100000")
    dep_id = dep["deploymentId"]
    trader.mark("BTC-USD", "100")
    buy = trader.filled(dep_id, "buy", "2")
    assert buy["filledQuantity"] == "2" and buy["averageFillPrice"] == "100"
    assert buy["outcome"] == "APPROVED" and buy["policyVersion"] == POLICY_VERSION
    assert len(buy["fills"]) == 1 and buy["venueAttempts"] == 1
    assert trader.client.get(f"/v1/orders/{buy['orderId']}").json() == buy

    trader.mark("BTC-USD", "110")
    position = trader.position(dep_id)
    assert position["quantity"] == "2" and position["averagePrice"] == "100"
    assert position["markPrice"] == "110" and position["unrealizedPnl"] == "20"
    assert trader.deployment(dep_id)["equity"] == "100020"

    sell = trader.filled(dep_id, "sell", "0.5")
    assert sell["averageFillPrice"] == "110"
    dep = trader.deployment(dep_id)
    assert dep["positions"][0]["quantity"] == "1.5"
    assert dep["realizedPnl"] == "5" and dep["unrealizedPnl"] == "15"
    assert dep["equity"] == dep["peakEquity"] == "100020"

    trader.mark("BTC-USD", "90")
    dep = trader.deployment(dep_id)
    assert dep["equity"] == "99990" and dep["peakEquity"] == "100020"
    assert Decimal(dep["drawdown"]) == (Decimal(30) / Decimal(100020)).quantize(Decimal("1e-10"))

    # The risk contract: every CheckOrder carries the context the checks need; risk records
    # what it was asked in its decision.
    events = audit_events(trader.client, {"risk.decision"}, orderId=sell["orderId"])
    (decision,) = [e for e in events if e["type"] == "risk.decision"]
    asked = decision["data"]
    assert decision["orderId"] == sell["orderId"] and asked["command"] == "order.submit"
    assert asked["markPrice"] == "110" and asked["markTime"]
    assert asked["positionQuantity"] == "2" and asked["accountPositionQuantity"] == "2"
    assert asked["deploymentGrossExposure"] == "220"
    assert asked["accountOpenOrders"] == 0
    # Execution reported the deployment's equity after the last mark: risk tracks 99990
    # against a peak of 100020 (a manual engagement shows the drawdown as it stands).
    evidence = trader.engage("deployment", dep_id, "read the tracked equity")["evidence"]
    assert (evidence["equity"], evidence["peakEquity"]) == ("99990", "100020")


def test_limit_orders_rest_until_a_mark_crosses_them_and_can_be_cancelled(trader: Trader) -> None:
    dep_id = trader.deploy("acc-limit")["deploymentId"]
    trader.mark("ETH-USD", "2000")
    body = trader.order_body(dep_id, "buy", "1", instrument="ETH-USD", type="limit")
    resting = trader.post("/v1/orders", {**body, "limitPrice": "1900"}, new_key()).json()
    assert resting["status"] == "accepted" and resting["fills"] == []
    other = trader.post("/v1/orders", {**body, "limitPrice": "1500"}, new_key()).json()

    assert trader.mark("ETH-USD", "1950")["fills"] == 0
    assert trader.mark("ETH-USD", "1890")["fills"] == 1
    filled = trader.client.get(f"/v1/orders/{resting['orderId']}").json()
    assert filled["status"] == "filled" and filled["averageFillPrice"] == "1890"
    assert trader.position(dep_id, "ETH-USD")["quantity"] == "1"

    cancel = trader.post(f"/v1/orders/{other['orderId']}/actions/cancel", {"reason": "test"})
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    again = trader.post(f"/v1/orders/{other['orderId']}/actions/cancel", None)
    assert_problem(again, 409, "STATE_CONFLICT")


# -- stop, flatten and the reducing side ---------------------------------------------------------


def test_stop_with_flatten_sells_a_long_position(trader: Trader) -> None:
    dep_id = trader.deploy("acc-flat-long")["deploymentId"]
    trader.mark("BTC-USD", "100")
    trader.filled(dep_id, "buy", "1.5")
    stopped = trader.stop(dep_id, flatten=True, key=new_key())
    assert stopped.status_code == 200, stopped.text
    dep = stopped.json()
    assert dep["state"] == "stopped" and dep["positions"][0]["quantity"] == "0"
    flatten = [o for o in trader.orders(dep_id) if o["reduceOnly"]]
    assert [(o["side"], o["quantity"], o["status"]) for o in flatten] == [("sell", "1.5", "filled")]


def test_stop_with_flatten_buys_back_a_short_position(trader: Trader) -> None:
    dep_id = trader.deploy("acc-flat-short")["deploymentId"]
    trader.mark("ETH-USD", "2000")
    trader.filled(dep_id, "sell", "3", instrument="ETH-USD")
    assert trader.position(dep_id, "ETH-USD")["quantity"] == "-3"
    dep = trader.stop(dep_id, flatten=True).json()
    assert dep["state"] == "stopped"
    flatten = [o for o in trader.orders(dep_id) if o["reduceOnly"]]
    assert [(o["side"], o["quantity"]) for o in flatten] == [("buy", "3")]
    assert trader.position(dep_id, "ETH-USD")["quantity"] == "0"


def test_stop_without_flatten_cancels_open_orders_and_keeps_positions(trader: Trader) -> None:
    dep_id = trader.deploy("acc-noflat")["deploymentId"]
    trader.mark("BTC-USD", "100")
    trader.filled(dep_id, "buy", "1")
    body = trader.order_body(dep_id, "buy", "1", type="limit", limitPrice="50")
    resting = trader.post("/v1/orders", body, new_key()).json()
    dep = trader.stop(dep_id).json()
    assert dep["state"] == "stopped" and dep["positions"][0]["quantity"] == "1"
    assert trader.client.get(f"/v1/orders/{resting['orderId']}").json()["status"] == "cancelled"
    assert not [o for o in trader.orders(dep_id) if o["reduceOnly"]]


def test_a_stop_whose_flatten_cannot_complete_fails_and_can_be_stopped_again(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    # Risk always lets a flatten through (it reduces), so what makes it fail is the venue:
    # acc-flaky's venue times out twice per order, and each retry spends one of the
    # deployment's 6 retry tokens. Three orders spend them all; the flatten then has none.
    dep_id = trader.deploy("acc-flaky")["deploymentId"]
    trader.mark("BTC-USD", "100")
    for quantity in ("0.25", "0.25", "0.5"):
        assert trader.filled(dep_id, "buy", quantity)["venueAttempts"] == 3
    failed = trader.stop(dep_id, flatten=True).json()
    assert failed["state"] == "failed" and "BTC-USD still 1" in failed["stateReason"]
    assert "retry budget" in failed["stateReason"]
    assert failed["positions"][0]["quantity"] == "1"
    assert_problem(trader.order(dep_id, "sell", "1", reduceOnly=True), 409, "STATE_CONFLICT")
    # The budget lives in the execution process: a fresh one has a full budget again.
    execution_stack.restart_execution()
    stopped = trader.stop(dep_id, flatten=True).json()
    assert stopped["state"] == "stopped" and stopped["positions"][0]["quantity"] == "0"
    audit_events(trader.client, {"deployment.failed", "deployment.stopped"}, deploymentId=dep_id)


@pytest.mark.parametrize("long", [True, False], ids=["long", "short"])
def test_reduce_only_orders_must_be_on_the_reducing_side(trader: Trader, long: bool) -> None:
    dep_id = trader.deploy(f"acc-ro-{long}")["deploymentId"]
    trader.mark("BTC-USD", "100")
    opening, reducing = ("buy", "sell") if long else ("sell", "buy")
    trader.filled(dep_id, opening, "2")
    wrong = trader.order(dep_id, opening, "1", reduceOnly=True)
    assert assert_problem(wrong, 422, "RISK_LIMIT_BREACHED")["outcome"] == "REDUCE_ONLY_VIOLATION"
    too_big = trader.order(dep_id, reducing, "3", reduceOnly=True)
    assert assert_problem(too_big, 422, "RISK_LIMIT_BREACHED")["outcome"] == "REDUCE_ONLY_VIOLATION"
    done = trader.filled(dep_id, reducing, "2", reduceOnly=True)
    assert done["side"] == reducing
    assert trader.position(dep_id)["quantity"] == "0"
    flat = trader.order(dep_id, reducing, "1", reduceOnly=True)
    assert_problem(flat, 422, "RISK_LIMIT_BREACHED")


# -- the risk gate -------------------------------------------------------------------------------


def test_risk_refusals_execute_nothing_and_are_audited(trader: Trader) -> None:
    dep_id = trader.deploy("acc-refused")["deploymentId"]
    trader.mark("BTC-USD", "100")
    # Version 2: orders up to 50 of notional; a buy of 1 at 100 breaches it.
    assert trader.put_policy(policy(maxOrderNotional="50"), "small orders") == 2
    refused = trader.order(dep_id, "buy", "1", headers={"X-Request-Id": "req-refused-0001"})
    problem = assert_problem(refused, 422, "RISK_LIMIT_BREACHED")
    assert problem["outcome"] == "ORDER_NOTIONAL_LIMIT"
    # A risk officer halts the account: its orders and new deployments are held (423).
    trader.engage("account", "acc-refused")
    held = trader.order(dep_id, "buy", "1")
    assert assert_problem(held, 423, "KILL_SWITCH_ENGAGED")["outcome"] == "KILL_SWITCH_ENGAGED"
    body = {"strategyId": "s", "accountId": "acc-refused", "instruments": ["BTC-USD"]}
    create = trader.post("/v1/deployments", {**body, "capitalAllocation": "1"}, new_key())
    assert_problem(create, 423, "KILL_SWITCH_ENGAGED")
    assert trader.orders(dep_id) == []
    # Stop still passes a held kill switch: it reduces risk.
    assert trader.stop(dep_id).json()["state"] == "stopped"
    events = audit_events(
        trader.client, {"risk.decision", "order.rejected"}, requestId="req-refused-0001"
    )
    (decision,) = [e for e in events if e["type"] == "risk.decision"]
    assert decision["outcome"] == "ORDER_NOTIONAL_LIMIT"
    (event,) = [e for e in events if e["type"] == "order.rejected"]
    assert event["outcome"] == "ORDER_NOTIONAL_LIMIT"
    assert event["policyVersion"] == "risk-policy.v1@2"


def test_risk_down_fails_closed_and_the_key_stays_usable(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    dep_id = trader.deploy("acc-down-risk")["deploymentId"]
    trader.mark("BTC-USD", "100")
    order_key, deploy_key = new_key(), new_key()
    with execution_stack.risk_down():
        assert_problem(trader.order(dep_id, "buy", "1", key=order_key), 503, "RISK_UNAVAILABLE")
        body = {"strategyId": "s", "accountId": "acc-x", "instruments": ["BTC-USD"]}
        create = trader.post("/v1/deployments", {**body, "capitalAllocation": "1"}, deploy_key)
        assert_problem(create, 503, "RISK_UNAVAILABLE")
        assert trader.orders(dep_id) == []
    # Nothing ran, so the same key runs the command once risk is back.
    retried = trader.order(dep_id, "buy", "1", key=order_key)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert len(trader.orders(dep_id)) == 1


def test_stop_and_flatten_proceed_when_risk_is_down(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    """Documented choice: reducing risk is never blocked by the risk service being down."""
    dep_id = trader.deploy("acc-stop-no-risk")["deploymentId"]
    trader.mark("BTC-USD", "100")
    trader.filled(dep_id, "buy", "1")
    with execution_stack.risk_down():
        stopped = trader.stop(dep_id, flatten=True, key=new_key())
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped"
    assert stopped.json()["positions"][0]["quantity"] == "0"
    flatten = [o for o in trader.orders(dep_id) if o["reduceOnly"]]
    assert [(o["side"], o["outcome"]) for o in flatten] == [("sell", "RISK_UNAVAILABLE")]
    events = audit_events(trader.client, {"deployment.stopping"}, deploymentId=dep_id)
    stopping = next(e for e in events if e["type"] == "deployment.stopping")
    assert stopping["outcome"] == "RISK_UNAVAILABLE" and stopping["data"]["riskDecided"] is False


def test_kill_switch_tripped_by_an_equity_report_is_enforced(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    # Version 2 tracks the deployment's drawdown only: more than 10% below the peak on 3
    # consecutive equity reports trips its switch, which flattens.
    trader.put_policy(
        {**TRADING_POLICY, "killSwitch": {**POLICY["killSwitch"], "scopes": ["deployment"]}}
    )
    dep_id = trader.deploy("acc-trip", capital="350")["deploymentId"]
    trader.mark("BTC-USD", "100")
    trader.filled(dep_id, "buy", "2")
    body = trader.order_body(dep_id, "buy", "1", type="limit", limitPrice="50")
    resting = trader.post("/v1/orders", body, new_key()).json()
    assert resting["status"] == "accepted", resting
    # Each mark makes execution report equity 310 (40 lost on 350): 11.4% below the peak.
    for _ in range(2):
        trader.mark("BTC-USD", "80")
        assert trader.kill_switch("deployment", dep_id)["engaged"] is False
    trader.mark("BTC-USD", "80")
    # Risk alone enforces the trip, in the background, once: it cancels and flattens.
    switch = wait_for(
        lambda: (s := trader.kill_switch("deployment", dep_id))["enforcement"] == "enforced" and s
    )
    assert trader.client.get(f"/v1/orders/{resting['orderId']}").json()["status"] == "cancelled"
    dep = trader.deployment(dep_id)
    assert dep["positions"][0]["quantity"] == "0" and dep["state"] == "running"
    held = dep["killSwitch"]
    assert (held["engaged"], held["scope"], held["scopeId"]) == (True, "deployment", dep_id)
    assert "exceeded maxDrawdownPct 10 on 3 consecutive equity reports" in held["reason"]
    assert switch["trigger"] == "drawdown" and switch["flatten"] is True
    flattens = [o for o in trader.orders(dep_id) if o["reduceOnly"]]
    assert [o["side"] for o in flattens] == ["sell"]
    # The switch records exactly the flatten that was placed.
    assert "placed 1 flatten order(s)" in switch["enforcementDetail"], switch
    assert trader.position(dep_id)["quantity"] == "0"
    audit_events(trader.client, {"killswitch.enforced"}, deploymentId=dep_id)
    # Enforcing again (another engagement) is harmless: nothing is left to cancel or reduce.
    again = execution_stack.stub().EnforceKillSwitch(
        execution_pb2.EnforceKillSwitchRequest(
            scope="deployment", scope_id=dep_id, flatten=True, reason="again", generation=999
        ),
        metadata=metadata(trader.tenant, caller="risk"),
    )
    assert list(again.cancelled_order_ids) == [] and list(again.flatten_order_ids) == []


# -- the orchestrator: retry budget and reconciliation ------------------------------------------


def test_venue_timeouts_are_retried_within_the_budget(trader: Trader) -> None:
    dep_id = trader.deploy("acc-flaky")["deploymentId"]
    trader.mark("BTC-USD", "100")
    order = trader.filled(dep_id, "buy", "1")
    assert order["venueAttempts"] == 3
    events = audit_events(
        trader.client, {"order.retried", "order.filled"}, orderId=order["orderId"]
    )
    assert [e["data"]["attempt"] for e in events if e["type"] == "order.retried"] == [1, 2]
    assert trader.deployment(dep_id)["degraded"] is False


def test_an_exhausted_retry_budget_rejects_the_order_and_degrades_the_deployment(
    trader: Trader,
) -> None:
    dep_id = trader.deploy("acc-down")["deploymentId"]
    trader.mark("BTC-USD", "100")
    response = trader.order(dep_id, "buy", "1")
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "rejected" and order["outcome"] == "VENUE_RETRY_BUDGET_EXHAUSTED"
    assert order["venueAttempts"] == 4 and order["rejectReason"]
    dep = trader.deployment(dep_id)
    assert dep["degraded"] is True and dep["degradedReason"]
    assert trader.position(dep_id)["quantity"] == "0"
    audit_events(trader.client, {"deployment.degraded"}, deploymentId=dep_id)


def test_venue_rejects_are_final_and_lost_answers_are_reconciled(trader: Trader) -> None:
    rejected_dep = trader.deploy("acc-reject")["deploymentId"]
    trader.mark("BTC-USD", "100")
    rejected = trader.order(rejected_dep, "buy", "1").json()
    assert (rejected["status"], rejected["outcome"]) == ("rejected", "VENUE_REJECTED")
    assert rejected["venueAttempts"] == 1

    lost_dep = trader.deploy("acc-lost-ack")["deploymentId"]
    order = trader.filled(lost_dep, "buy", "1")
    assert order["venueAttempts"] == 1  # looked up by client order id, not sent again
    assert trader.position(lost_dep)["quantity"] == "1"
    events = audit_events(trader.client, {"order.reconciled"}, orderId=order["orderId"])
    assert next(e for e in events if e["type"] == "order.reconciled")["outcome"] == "FOUND_AT_VENUE"


def test_in_flight_orders_are_reconciled_by_client_order_id_after_a_crash(
    execution_stack: ExecutionStack, trader: Trader
) -> None:
    dep_id = trader.deploy("acc-crash")["deploymentId"]
    trader.mark("BTC-USD", "100")
    execution_stack.restart_execution(GATE4_FAULT_CRASH_AFTER_VENUE="SubmitOrder")
    order_key = new_key()
    try:
        crashed = trader.order(dep_id, "buy", "1", key=order_key)
        assert crashed.status_code in (502, 503, 504), crashed.text
        # The process died mid-call (the reply can beat the exit status by a moment).
        assert execution_stack.execution.proc is not None
        assert execution_stack.execution.proc.wait(10) == 137
    finally:
        execution_stack.restart_execution(GATE4_FAULT_CRASH_AFTER_VENUE="")
    # The venue filled it; the restarted process adopts that once the lease lapses.
    (order,) = wait_for(lambda: [o for o in trader.orders(dep_id) if o["status"] == "filled"])
    assert order["venueAttempts"] <= 1 and trader.position(dep_id)["quantity"] == "1"
    retry = trader.order(dep_id, "buy", "1", key=order_key)
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["orderId"] == order["orderId"]
    assert len(trader.orders(dep_id)) == 1
    events = audit_events(trader.client, {"order.reconciled"}, orderId=order["orderId"])
    assert next(e for e in events if e["type"] == "order.reconciled")["outcome"] == "FOUND_AT_VENUE"


# -- through the real risk service ---------------------------------------------------------------


def _put_policy(trader: Trader) -> None:
    response = trader.client.put(
        "/v1/risk/policy", json={"policy": POLICY, "reason": "execution contract tests"}
    )
    assert response.status_code in (200, 201), response.text


def test_real_risk_runbook_flow(live_stack: LiveStack) -> None:
    """The issue's "done when", through the gateway with dev credentials and the real risk."""
    trader = Trader.open(live_stack, new_tenant("runbook"))
    try:
        _put_policy(trader)
        created = trader.post(
            "/v1/deployments",
            {
                "strategyId": "trend-1",
                "accountId": "acc-runbook",
                "instruments": ["BTC-USD"],
                "capitalAllocation": "100000",
            },
            new_key(),
            **{"X-Request-Id": "req-runbook-deploy"},
        )
        assert created.status_code == 201, created.text
        dep_id = created.json()["deploymentId"]
        assert trader.post(
            "/v1/sandbox/marks",
            {"marks": [{"instrument": "BTC-USD", "price": "64000"}]},
            **{"X-Request-Id": "req-runbook-marks"},
        ).is_success
        body = trader.order_body(dep_id, "buy", "0.5")
        order_key = new_key("runbook")
        first = trader.post("/v1/orders", body, order_key, **{"X-Request-Id": "req-runbook-order"})
        assert first.status_code == 201, first.text
        order = first.json()
        assert order["status"] == "filled" and order["outcome"] == "APPROVED"
        assert order["policyVersion"]
        read = trader.client.get(f"/v1/orders/{order['orderId']}")
        assert read.json()["status"] == "filled"
        assert trader.position(dep_id)["quantity"] == "0.5"

        replay = trader.post(
            "/v1/orders", body, order_key, **{"X-Request-Id": "req-runbook-replay"}
        )
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.content == first.content
        changed = trader.post(
            "/v1/orders",
            {**body, "quantity": "0.6"},
            order_key,
            **{"X-Request-Id": "req-runbook-changed"},
        )
        assert_problem(changed, 422, "IDEMPOTENCY_KEY_REUSED")

        stopped = trader.post(
            f"/v1/deployments/{dep_id}/actions/stop",
            {"flatten": True, "reason": "runbook"},
            **{"X-Request-Id": "req-runbook-stop"},
        )
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "stopped"
        flatten = [o for o in trader.orders(dep_id) if o["reduceOnly"]]
        assert [(o["side"], o["quantity"]) for o in flatten] == [("sell", "0.5")]

        for request_id, wanted in (
            ("req-runbook-deploy", {"risk.decision", "deployment.created"}),
            ("req-runbook-marks", {"sandbox.marks"}),
            ("req-runbook-order", {"risk.decision", "order.accepted", "order.filled"}),
            ("req-runbook-replay", {"command.replayed"}),
            ("req-runbook-changed", {"command.rejected"}),
            ("req-runbook-stop", {"deployment.stopping", "order.filled", "deployment.stopped"}),
        ):
            audit_events(trader.client, wanted, requestId=request_id)
    finally:
        trader.close()


def test_real_risk_down_fails_closed(execution_stack: ExecutionStack) -> None:
    trader = Trader.open(execution_stack, new_tenant("riskdown"))
    try:
        trader.put_policy(POLICY)
        with execution_stack.risk_down():
            body = {"strategyId": "s", "accountId": "acc-1", "instruments": ["BTC-USD"]}
            response = trader.post(
                "/v1/deployments", {**body, "capitalAllocation": "10"}, new_key()
            )
            assert_problem(response, 503, "RISK_UNAVAILABLE")
            listing = trader.client.get("/v1/deployments").json()
            assert listing["deployments"] == []
    finally:
        trader.close()


def test_enforce_kill_switch_rpc_checks_its_input(execution_stack: ExecutionStack) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        execution_stack.stub().EnforceKillSwitch(
            execution_pb2.EnforceKillSwitchRequest(scope="planet", scope_id="x"),
            metadata=metadata("t-enforce", caller="risk"),
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
