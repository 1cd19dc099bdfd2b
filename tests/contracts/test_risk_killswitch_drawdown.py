"""The drawdown kill switch: trips after N confirmations and not before, latches, blocks
new risk with 423 while stop, cancel and reduce-only pass, flattens on the correct side,
releases only for a risk-officer, and replays deterministically from the same reports.

RPC-level tests call the real risk process of the shared platform (`risk_rig`); when a switch
engages, risk asks the real execution service to enforce it, and the tests check what
execution did: open orders cancelled, positions flattened on the reducing side, audited.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from services.risk import drawdown
from tests.support import rpc
from tests.support.problems import assert_problem
from tests.support.risk_rig import RiskRig, new_tenant, policy_doc, resting_buys
from tests.support.stack import LiveStack, wait_for

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def at(step: int) -> datetime:
    return T0 + timedelta(seconds=step)


def armed(rig: RiskRig, **overrides: Any) -> str:
    """A tenant whose policy trips at more than 10% drawdown after 3 confirmations."""
    tenant = new_tenant("ks")
    rig.put_policy(tenant, policy_doc(**overrides))
    return tenant


def trips(response: Any) -> list[str]:
    return sorted(f"{s.scope}:{s.scope_id}" for s in response.tripped)


# -- drawdown -----------------------------------------------------------------------------


def test_drawdown_trips_after_n_confirmations_and_not_before(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig, killSwitch_scopes=["deployment"])
    first = risk_rig.report(tenant, "10000", at=at(0))
    assert trips(first) == [] and first.states[0].drawdown == "0"
    one = risk_rig.report(tenant, "8900", at=at(1))  # 11% below the peak: breach 1 of 3
    two = risk_rig.report(tenant, "8800", at=at(2))  # breach 2 of 3
    assert trips(one) == trips(two) == []
    assert (two.states[0].confirmations, two.states[0].required_confirmations) == (2, 3)
    assert not risk_rig.switch(tenant, "deployment", "dep-1").engaged
    three = risk_rig.report(tenant, "8800", at=at(3))
    assert trips(three) == ["deployment:dep-1"]
    switch = risk_rig.switch(tenant, "deployment", "dep-1")
    assert switch.engaged and switch.trigger == "drawdown" and switch.engaged_by == "risk"
    evidence = switch.evidence
    assert (evidence.peak_equity, evidence.equity, evidence.drawdown, evidence.threshold) == (
        "10000",
        "8800",
        "12",
        "10",
    )
    assert (evidence.confirmations, evidence.policy_version) == (3, "risk-policy.v1@1")
    assert evidence.at.ToDatetime(tzinfo=UTC) == at(3)
    assert "exceeded maxDrawdownPct 10 on 3 consecutive equity reports" in switch.reason


def test_one_bad_tick_does_not_trip(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig, killSwitch_scopes=["deployment"])
    equities = ["10000", "8000", "8000", "9500", "8000", "8000", "10000", "9001"]
    for step, equity in enumerate(equities):
        assert trips(risk_rig.report(tenant, equity, at=at(step))) == [], step
    assert not risk_rig.switch(tenant, "deployment", "dep-1").engaged
    # Exactly at the threshold (10%) is not past it.
    assert trips(risk_rig.report(tenant, "9000", at=at(20))) == []
    assert trips(risk_rig.report(tenant, "9000", at=at(21))) == []
    assert trips(risk_rig.report(tenant, "9000", at=at(22))) == []


def test_equity_includes_unrealised_pnl_and_capital_is_not_a_gain(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig, killSwitch_scopes=["account"], killSwitch_confirmations=1)
    risk_rig.report(tenant, "10000", at=at(0), deployment="dep-a")
    # A second deployment's capital raises the account's equity and peak together.
    joined = risk_rig.report(tenant, "20000", at=at(1), deployment="dep-b", capital="20000")
    account = next(s for s in joined.states if s.scope == "account")
    assert (account.equity, account.peak_equity, account.drawdown) == ("30000", "30000", "0")
    # dep-a loses 3500 unrealised: 11.67% of the account's 30000, so the account trips.
    tripped = risk_rig.report(tenant, "6500", at=at(2), deployment="dep-a")
    assert trips(tripped) == ["account:acc-1"]
    assert tripped.tripped[0].evidence.drawdown == "11.6667"


def test_a_first_report_below_capital_is_already_drawdown() -> None:
    track, breached = drawdown.advance(None, Decimal("8500"), Decimal("10000"), Decimal("10"))
    assert (track.peak, track.drawdown_pct, breached) == (Decimal("10000"), Decimal("15"), True)


def test_a_stale_report_is_ignored(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig)
    risk_rig.report(tenant, "10000", at=at(5))
    late = risk_rig.report(tenant, "1", at=at(4))
    assert late.applied is False and trips(late) == []


def test_the_switch_latches_until_released(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig, killSwitch_confirmations=1, killSwitch_scopes=["deployment"])
    risk_rig.report(tenant, "10000", at=at(0))
    assert trips(risk_rig.report(tenant, "8000", at=at(1))) == ["deployment:dep-1"]
    recovered = risk_rig.report(tenant, "12000", at=at(2))
    assert trips(recovered) == []
    assert risk_rig.switch(tenant, "deployment", "dep-1").engaged
    assert risk_rig.check_order(tenant, deployment_id="dep-1").outcome == "KILL_SWITCH_ENGAGED"

    released = risk_rig.release(tenant, "deployment", "dep-1")
    assert not released.engaged and released.released_by == "olga"
    assert released.release_reason == "breach reviewed"
    # The peak restarts at the equity it was released at: no immediate re-trip.
    assert trips(risk_rig.report(tenant, "11500", at=at(3))) == []
    assert risk_rig.check_order(tenant, deployment_id="dep-1").approved


# -- what the switch blocks and lets through -------------------------------------------------


def test_engaged_blocks_new_orders_and_deployments_but_not_stop_cancel_or_reduce_only(
    risk_rig: RiskRig,
) -> None:
    tenant = armed(risk_rig)
    risk_rig.engage(tenant, "account", "acc-1")
    order = risk_rig.check_order(tenant)
    deployment = risk_rig.check_deployment(tenant)
    for decision in (order, deployment):
        assert (decision.approved, decision.outcome) == (False, "KILL_SWITCH_ENGAGED")
        assert "kill switch engaged for account acc-1" in decision.reason
    assert risk_rig.check_order(tenant, action="cancel").approved
    assert risk_rig.check_deployment(tenant, action="stop").approved
    # Another account of the tenant is not held.
    assert risk_rig.check_order(tenant, account_id="acc-2").approved


@pytest.mark.parametrize(
    "position,side,outcome",
    [
        ("2", "sell", "APPROVED"),  # long: sells reduce
        ("-2", "buy", "APPROVED"),  # short: buys reduce
        ("2", "buy", "KILL_SWITCH_ENGAGED"),  # adds to a long
        ("-2", "sell", "KILL_SWITCH_ENGAGED"),
        ("0", "sell", "KILL_SWITCH_ENGAGED"),  # nothing to reduce
    ],
)
def test_flatten_side_reduce_only_passes_only_on_the_reducing_side(
    risk_rig: RiskRig, position: str, side: str, outcome: str
) -> None:
    tenant = armed(risk_rig)
    risk_rig.engage(tenant, "deployment", "dep-1")
    decision = risk_rig.check_order(
        tenant, reduce_only=True, side=side, position_quantity=position, quantity="2"
    )
    assert decision.outcome == outcome, decision.reason


@pytest.mark.parametrize("flatten", [True, False])
def test_a_trip_asks_execution_to_cancel_and_flatten_when_the_policy_says_so(
    risk_rig: RiskRig, flatten: bool
) -> None:
    tenant = armed(
        risk_rig,
        killSwitch_confirmations=1,
        killSwitch_flattenOnTrip=flatten,
        killSwitch_scopes=["deployment"],
    )
    with risk_rig.trader(tenant) as trader:
        trader.mark("BTC-USD", "1000")
        dep_id = trader.deploy("acc-1", capital="10000")["deploymentId"]
        trader.filled(dep_id, "buy", "2")
        resting = resting_buys(trader, dep_id, "990", "980")
        # The test makes the equity reports here (the RPC execution makes after marks and
        # fills), so the only enforcement is the one risk asks execution for.
        now = datetime.now(UTC)
        risk_rig.report(tenant, "10000", at=now + timedelta(seconds=1), deployment=dep_id)
        tripped = risk_rig.report(tenant, "5000", at=now + timedelta(seconds=2), deployment=dep_id)
        assert trips(tripped) == [f"deployment:{dep_id}"]

        switch = risk_rig.wait_enforcement(tenant, "deployment", dep_id, "enforced")
        assert switch.flatten is flatten
        assert switch.enforcement_detail.startswith("execution cancelled 2 open order(s)")
        orders = {o["orderId"]: o for o in trader.orders(dep_id)}
        assert [orders[i]["status"] for i in resting] == ["cancelled", "cancelled"]
        flattened = [
            (o["side"], o["quantity"], o["status"]) for o in orders.values() if o["reduceOnly"]
        ]
        assert flattened == ([("sell", "2", "filled")] if flatten else [])
        assert trader.position(dep_id)["quantity"] == ("0" if flatten else "2")
        (enforced,) = risk_rig.enforced_by_execution(trader, dep_id)
        data = enforced["data"]
        assert (data["scope"], data["scopeId"], data["flatten"]) == ("deployment", dep_id, flatten)
        assert sorted(data["cancelledOrderIds"]) == sorted(resting)
        assert enforced["outcome"] == "ENFORCED" and enforced["source"] == "execution"


@pytest.mark.parametrize("flatten", [False, True])
def test_a_manual_engage_halts_new_risk_and_flattens_only_when_asked(
    risk_rig: RiskRig, flatten: bool
) -> None:
    # The policy flattens on a drawdown trip; a manual engage does not follow it.
    tenant = armed(risk_rig, killSwitch_flattenOnTrip=True)
    with risk_rig.trader(tenant) as trader:
        trader.mark("BTC-USD", "1000")
        dep_id = trader.deploy("acc-1", capital="10000")["deploymentId"]
        trader.filled(dep_id, "buy", "2")
        (resting,) = resting_buys(trader, dep_id, "990")
        body: dict[str, Any] = {"reason": "incident: policy validity uncertain"}
        if flatten:
            body["flatten"] = True
        engaged = trader.client.post(
            f"/v1/risk/kill-switches/deployment/{dep_id}/actions/engage", json=body
        )
        assert engaged.status_code == 200, engaged.text
        assert (engaged.json()["trigger"], engaged.json()["flatten"]) == ("manual", flatten)

        switch = risk_rig.wait_enforcement(tenant, "deployment", dep_id, "enforced")
        assert switch.flatten is flatten
        orders = {o["orderId"]: o for o in trader.orders(dep_id)}
        assert orders[resting]["status"] == "cancelled"
        flattened = [(o["side"], o["quantity"]) for o in orders.values() if o["reduceOnly"]]
        assert flattened == ([("sell", "2")] if flatten else [])
        assert trader.position(dep_id)["quantity"] == ("0" if flatten else "2")
        # New risk is halted either way.
        refused = trader.order(dep_id, "buy", "1")
        assert_problem(refused, 423, "KILL_SWITCH_ENGAGED")
        (event,) = risk_rig.wait_events(tenant, type="killswitch.engaged")
        assert event["data"]["flatten"] is flatten


def test_execution_down_is_audited_and_the_switch_stays_engaged(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig)
    with risk_rig.trader(tenant) as trader:
        trader.mark("BTC-USD", "1000")
        dep_id = trader.deploy("acc-1")["deploymentId"]
        (resting,) = resting_buys(trader, dep_id, "990")
        with risk_rig.platform.execution_down():
            switch = risk_rig.engage(tenant, "tenant", tenant)
            assert switch.engaged and switch.enforcement == "failed"
            detail = switch.enforcement_detail
            assert "UNAVAILABLE" in detail or "DEPENDENCY" in detail
            failed = risk_rig.wait_events(tenant, type="killswitch.enforcement")
            assert failed[0]["outcome"] == "ENFORCEMENT_FAILED"
        # Risk retries until execution, back again, enforces it.
        retried = risk_rig.wait_enforcement(tenant, "tenant", tenant, "enforced", timeout=15)
        assert retried.engaged
        outcomes = [
            e["outcome"] for e in risk_rig.wait_events(tenant, 2, type="killswitch.enforcement")
        ]
        assert outcomes == ["ENFORCEMENT_FAILED", "ENFORCED"]
        # The order that survived the outage is cancelled now.
        order = trader.client.get(f"/v1/orders/{resting}").json()
        assert order["status"] == "cancelled"


def test_engaging_an_engaged_switch_changes_nothing(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig)
    with risk_rig.trader(tenant) as trader:
        dep_id = trader.deploy("acc-1")["deploymentId"]
        first = risk_rig.engage(tenant, "deployment", dep_id)
        again = risk_rig.engage(tenant, "deployment", dep_id)
        assert again.engaged_at == first.engaged_at and again.reason == first.reason
        # Execution was asked to enforce once.
        assert len(risk_rig.enforced_by_execution(trader, dep_id)) == 1


def test_release_needs_a_risk_officer_and_an_engaged_switch(risk_rig: RiskRig) -> None:
    tenant = armed(risk_rig)
    risk_rig.engage(tenant, "deployment", "dep-1")
    with pytest.raises(grpc.RpcError) as excinfo:
        risk_rig.release(tenant, "deployment", "dep-1", roles=("trader",))
    assert rpc.rpc_error(excinfo)[1].error_code() == "FORBIDDEN"
    assert risk_rig.switch(tenant, "deployment", "dep-1").engaged
    risk_rig.release(tenant, "deployment", "dep-1")
    with pytest.raises(grpc.RpcError) as conflict:
        risk_rig.release(tenant, "deployment", "dep-1")
    assert rpc.rpc_error(conflict)[1].error_code() == "STATE_CONFLICT"


# -- determinism ------------------------------------------------------------------------------

SEQUENCE = [
    ("dep-a", "10000"),
    ("dep-b", "10000"),
    ("dep-a", "10400"),
    ("dep-a", "9000"),
    ("dep-b", "9800"),
    ("dep-a", "8900"),
    ("dep-a", "9100"),
    ("dep-b", "9000"),
    ("dep-a", "8000"),
    ("dep-a", "7900"),
    ("dep-b", "7000"),
    ("dep-a", "7800"),
]


def replay(rig: RiskRig) -> list[Any]:
    tenant = armed(rig, killSwitch_confirmations=2)
    transcript: list[Any] = []
    for step, (deployment, equity) in enumerate(SEQUENCE):
        reply = rig.report(tenant, equity, at=at(step), deployment=deployment)
        states = [
            (
                s.scope,
                s.scope_id.replace(tenant, "T"),
                s.equity,
                s.peak_equity,
                s.drawdown,
                s.confirmations,
                s.engaged,
            )
            for s in reply.states
        ]
        tripped = [
            (
                s.scope,
                s.scope_id.replace(tenant, "T"),
                s.reason,
                json.dumps(_evidence(s), sort_keys=True),
            )
            for s in reply.tripped
        ]
        transcript.append((step, states, tripped))
    return transcript


def _evidence(switch: Any) -> dict[str, Any]:
    e = switch.evidence
    return {
        "peak": e.peak_equity,
        "equity": e.equity,
        "drawdown": e.drawdown,
        "confirmations": e.confirmations,
        "policy": e.policy_version,
        "at": e.at.ToJsonString(),
    }


def test_replaying_the_same_reports_reproduces_the_same_transitions(risk_rig: RiskRig) -> None:
    first, second = replay(risk_rig), replay(risk_rig)
    assert first == second
    tripped_at = [(step, [t[0] for t in tripped]) for step, _, tripped in first if tripped]
    # Each scope counts its own consecutive reports: dep-a breaches at steps 3 and 5 (step 4
    # is dep-b's), so it trips at 5; the sums (account, tenant) breach at 7 and 8; dep-b's
    # single breach at step 10 is not confirmed.
    assert tripped_at == [(5, ["deployment"]), (8, ["account", "tenant"])]


# -- through the gateway ---------------------------------------------------------------------------


@pytest.fixture
def tenant_api(live_stack: LiveStack):
    tenant = new_tenant("ksg")

    def client(*roles: str) -> Any:
        return live_stack.client(
            live_stack.headers(tenant=tenant, user="u-" + "-".join(roles), roles=list(roles))
        )

    return tenant, client


DEPLOYMENT = {
    "strategyId": "trend-1",
    "accountId": "acc-g",
    "instruments": ["BTC-USD"],
    "capitalAllocation": "10000",
    "mode": "paper",
}


def test_gateway_engage_and_release_roles(tenant_api) -> None:
    _, client = tenant_api
    ref = "/v1/risk/kill-switches/account/acc-g"
    with client("risk-officer") as officer, client("trader", "viewer") as trader:
        officer.put("/v1/risk/policy", json={"policy": policy_doc(), "reason": "limits"})
        assert_problem(trader.post(f"{ref}/actions/engage", json={"reason": "x"}), 403, "FORBIDDEN")
        engaged = officer.post(f"{ref}/actions/engage", json={"reason": "incident 42"})
        assert engaged.status_code == 200, engaged.text
        body = engaged.json()
        assert (body["engaged"], body["trigger"], body["reason"]) == (True, "manual", "incident 42")
        assert body["engagedBy"] == "u-risk-officer"
        assert body["evidence"]["policyVersion"] == "risk-policy.v1@1"
        assert trader.get(ref).json()["engaged"] is True

        response = trader.post(
            "/v1/deployments",
            json=DEPLOYMENT,
            headers={"Idempotency-Key": f"ks-{uuid.uuid4().hex}"},
        )
        assert assert_problem(response, 423, "KILL_SWITCH_ENGAGED")["outcome"] == (
            "KILL_SWITCH_ENGAGED"
        )

        assert_problem(
            trader.post(f"{ref}/actions/release", json={"reason": "mine"}), 403, "FORBIDDEN"
        )
        assert trader.get(ref).json()["engaged"] is True
        released = officer.post(f"{ref}/actions/release", json={"reason": "reviewed"})
        assert released.status_code == 200, released.text
        assert released.json()["engaged"] is False
        assert released.json()["releasedBy"] == "u-risk-officer"
        assert_problem(
            officer.post(f"{ref}/actions/release", json={"reason": "again"}), 409, "STATE_CONFLICT"
        )
        listing = officer.get("/v1/risk/kill-switches", params={"engagedOnly": "true"}).json()
        assert listing == {"killSwitches": []}


def test_done_when_through_the_gateway(tenant_api) -> None:
    """The issue's acceptance scenario, end to end through execution: a small max order
    notional rejects a larger order with 422; marks push drawdown past the limit and trip the
    switch; a new order is 423 while stop succeeds; a trader cannot release and a
    risk-officer can; an invalid policy is refused and the previous one stays; the audit
    trail shows all of it. Needs execution's deployments, orders, fills and equity reports."""
    tenant, client = tenant_api
    with client("trader", "viewer") as trader, client("risk-officer", "sre") as officer:
        doc = policy_doc(maxOrderNotional="6000", killSwitch_flattenOnTrip=False)
        put = officer.put("/v1/risk/policy", json={"policy": doc, "reason": "e2e"})
        assert put.status_code == 200, put.text
        trader.post(
            "/v1/sandbox/marks", json={"marks": [{"instrument": "BTC-USD", "price": "1000"}]}
        )
        created = trader.post(
            "/v1/deployments",
            json=DEPLOYMENT,
            headers={"Idempotency-Key": f"ks-dep-{uuid.uuid4().hex}"},
        )
        assert created.status_code == 201, created.text
        deployment_id = created.json()["deploymentId"]

        def order(quantity: str, **extra: Any) -> Any:
            body = {
                "deploymentId": deployment_id,
                "instrument": "BTC-USD",
                "side": "buy",
                "type": "market",
                "quantity": quantity,
                **extra,
            }
            return trader.post(
                "/v1/orders", json=body, headers={"Idempotency-Key": f"ks-ord-{uuid.uuid4().hex}"}
            )

        too_big = assert_problem(order("7"), 422, "RISK_LIMIT_BREACHED")
        assert too_big["outcome"] == "ORDER_NOTIONAL_LIMIT"
        assert "order notional 7000 exceeds maxOrderNotional 6000" in too_big["detail"]
        filled = order("5")
        assert filled.status_code == 201, filled.text

        # Long 5 at 1000 on 10000 of capital: a mark of 700 is equity 8500, 15% below the
        # peak; the third such report confirms the breach.
        for _ in range(3):
            trader.post(
                "/v1/sandbox/marks", json={"marks": [{"instrument": "BTC-USD", "price": "700"}]}
            )
        ref = f"/v1/risk/kill-switches/deployment/{deployment_id}"
        switch = wait_for(lambda: (body := trader.get(ref).json())["engaged"] and body)
        assert switch["trigger"] == "drawdown" and switch["flatten"] is False
        evidence = switch["evidence"]
        assert (evidence["peakEquity"], evidence["equity"], evidence["drawdown"]) == (
            "10000",
            "8500",
            "15",
        )
        assert (evidence["threshold"], evidence["confirmations"]) == ("10", 3)

        blocked = assert_problem(order("1"), 423, "KILL_SWITCH_ENGAGED")
        assert blocked["outcome"] == "KILL_SWITCH_ENGAGED"
        # Reduce-only passes the same gate (this policy does not flatten, so the long is there).
        reduce = order("1", side="sell", reduceOnly=True)
        assert reduce.status_code == 201, reduce.text
        stop = trader.post(
            f"/v1/deployments/{deployment_id}/actions/stop", json={"reason": "halted by drawdown"}
        )
        assert stop.status_code == 200, stop.text

        assert_problem(
            trader.post(f"{ref}/actions/release", json={"reason": "mine"}), 403, "FORBIDDEN"
        )
        for scope, scope_id in (
            ("deployment", deployment_id),
            ("account", "acc-g"),
            ("tenant", tenant),
        ):
            released = officer.post(
                f"/v1/risk/kill-switches/{scope}/{scope_id}/actions/release",
                json={"reason": "breach reviewed"},
            )
            assert released.status_code == 200, released.text

        bad = officer.put(
            "/v1/risk/policy",
            json={"policy": {**policy_doc(), "schema": "risk-policy.v2"}, "reason": "typo"},
        )
        assert_problem(bad, 400, "RISK_POLICY_INVALID")
        assert officer.get("/v1/risk/policy").json()["version"] == 1

        wanted = {
            ("risk.decision", "APPROVED"),
            ("risk.decision", "ORDER_NOTIONAL_LIMIT"),
            ("risk.drawdown", "DRAWDOWN_BREACH"),
            ("killswitch.tripped", "KILL_SWITCH_TRIPPED"),
            ("killswitch.enforcement", "ENFORCED"),
            ("risk.decision", "KILL_SWITCH_ENGAGED"),
            ("killswitch.released", "RELEASED"),
        }

        def trail() -> list[dict[str, Any]] | None:
            events: list[dict[str, Any]] = officer.get(
                "/v1/audit/events", params={"deploymentId": deployment_id, "limit": "500"}
            ).json()["events"]
            return events if wanted <= {(e["type"], e["outcome"]) for e in events} else None

        events = wait_for(trail)
        decisions = [e for e in events if e["type"] == "risk.decision"]
        assert all(e["policyVersion"] == "risk-policy.v1@1" for e in decisions)
        assert all(e["requestId"] and len(e["traceId"]) == 32 for e in decisions)
        commands = {(e["data"]["command"], e["outcome"]) for e in decisions}
        assert {
            ("deployment.create", "APPROVED"),
            ("order.submit", "ORDER_NOTIONAL_LIMIT"),
            ("order.submit", "KILL_SWITCH_ENGAGED"),
            ("deployment.stop", "APPROVED"),
        } <= commands
