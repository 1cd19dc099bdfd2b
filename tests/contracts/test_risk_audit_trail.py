"""Every risk decision, approved or blocked, and every kill-switch transition reaches the
audit trail (through the transactional outbox) with outcome code, policy version, breach
reason, requestId and trace id; queryable by requestId. If risk cannot decide, the answer
is no, and that is audited too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.risk_rig import RiskRig, new_tenant, policy_doc, resting_buys
from tests.support.stack import LiveStack, wait_for


def request_id(label: str) -> str:
    return f"req-{label}-{uuid.uuid4().hex[:12]}"


def only(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    matching = [e for e in events if e["type"] == type_]
    assert len(matching) == 1, events
    return matching[0]


def test_approved_and_blocked_decisions_are_both_recorded_by_request_id(
    risk_rig: RiskRig,
) -> None:
    tenant = new_tenant("au")
    risk_rig.put_policy(tenant, policy_doc(maxOrderNotional="1500"))
    approved_id, blocked_id = request_id("ok"), request_id("no")
    approved = risk_rig.check_order(tenant, request_id=approved_id, order_id="ord_small")
    blocked = risk_rig.check_order(tenant, request_id=blocked_id, order_id="ord_big", quantity="2")
    assert approved.approved and not blocked.approved

    ok = only(risk_rig.wait_events(tenant, request_id=approved_id), "risk.decision")
    no = only(risk_rig.wait_events(tenant, request_id=blocked_id), "risk.decision")
    assert (ok["outcome"], ok["policyVersion"], ok["orderId"]) == (
        "APPROVED",
        "risk-policy.v1@1",
        "ord_small",
    )
    assert (no["outcome"], no["policyVersion"], no["orderId"]) == (
        "ORDER_NOTIONAL_LIMIT",
        "risk-policy.v1@1",
        "ord_big",
    )
    assert no["reason"] == blocked.reason
    assert "order notional 2000 exceeds maxOrderNotional 1500" in no["reason"]
    assert no["data"]["breaches"][0]["limit"] == "limits.maxOrderNotional"
    assert no["data"]["decisionId"] == blocked.decision_id
    assert (no["accountId"], no["deploymentId"], no["source"]) == ("acc-1", "dep-1", "risk")
    # Queryable by outcome too: what a triage of rising 422s starts from.
    by_outcome = risk_rig.events(tenant, outcome="ORDER_NOTIONAL_LIMIT")
    assert [e["requestId"] for e in by_outcome] == [blocked_id]


def test_fail_closed_and_undecidable_refusals_are_audited(risk_rig: RiskRig) -> None:
    tenant = new_tenant("au")
    no_policy = request_id("nopolicy")
    risk_rig.check_deployment(tenant, request_id=no_policy)
    event = only(risk_rig.wait_events(tenant, request_id=no_policy), "risk.decision")
    assert (event["outcome"], event["policyVersion"]) == ("POLICY_INVALID", "")

    risk_rig.put_policy(tenant, policy_doc())
    garbled = request_id("garbled")
    risk_rig.check_order(tenant, request_id=garbled, quantity="a lot")
    event = only(risk_rig.wait_events(tenant, request_id=garbled), "risk.decision")
    assert event["outcome"] == "RISK_UNDECIDED"
    assert "quantity 'a lot' is not a decimal" in event["reason"]


def test_kill_switch_transitions_are_audited(risk_rig: RiskRig) -> None:
    tenant = new_tenant("au")
    risk_rig.put_policy(
        tenant, policy_doc(killSwitch_confirmations=2, killSwitch_scopes=["deployment"])
    )
    with risk_rig.trader(tenant) as trader:
        # A real deployment of acc-1 with two open orders; it has no position, so execution
        # never reports its equity: the reports below are the only ones.
        trader.mark("BTC-USD", "1000")
        dep_id = trader.deploy("acc-1", capital="10000")["deploymentId"]
        resting = resting_buys(trader, dep_id, "990", "980")
    t0 = datetime(2026, 4, 1, 12, tzinfo=UTC)
    for step, equity in enumerate(["10000", "8000", "8000"]):
        risk_rig.report(tenant, equity, at=t0 + timedelta(seconds=step), deployment=dep_id)
    risk_rig.release(tenant, "deployment", dep_id)
    risk_rig.engage(tenant, "account", "acc-1")

    wanted = {
        "risk.drawdown",
        "killswitch.tripped",
        "killswitch.enforcement",
        "killswitch.released",
    }
    events = risk_rig.wait_types(tenant, wanted, deployment_id=dep_id)
    breach = only(events, "risk.drawdown")
    assert (breach["outcome"], breach["data"]["confirmations"]) == ("DRAWDOWN_BREACH", 1)
    tripped = only(events, "killswitch.tripped")
    assert tripped["outcome"] == "KILL_SWITCH_TRIPPED"
    assert tripped["policyVersion"] == "risk-policy.v1@1"
    assert "drawdown 20% from peak 10000" in tripped["reason"]
    assert tripped["data"]["evidence"]["peakEquity"] == "10000"
    enforced = only(events, "killswitch.enforcement")
    assert enforced["outcome"] == "ENFORCED"
    # Execution cancelled the deployment's two open orders when risk asked it to.
    assert sorted(enforced["data"]["cancelledOrderIds"]) == sorted(resting)
    released = only(events, "killswitch.released")
    assert (released["outcome"], released["userId"], released["reason"]) == (
        "RELEASED",
        "olga",
        "breach reviewed",
    )
    account_events = risk_rig.wait_types(tenant, {"killswitch.engaged"}, account_id="acc-1")
    engaged = only(account_events, "killswitch.engaged")
    assert (engaged["outcome"], engaged["data"]["trigger"]) == ("ENGAGED", "manual")


def test_policy_changes_are_audited_with_author_reason_and_problems(risk_rig: RiskRig) -> None:
    tenant = new_tenant("au")
    risk_rig.put_policy(tenant, policy_doc())
    with pytest.raises(Exception):  # noqa: B017 - the refusal itself is another test's subject
        risk_rig.put_policy(tenant, {**policy_doc(), "schema": "risk-policy.v2"})
    events = risk_rig.wait_types(tenant, {"risk.policy.updated", "risk.policy.rejected"})
    updated = only(events, "risk.policy.updated")
    assert (updated["outcome"], updated["userId"], updated["reason"]) == (
        "POLICY_ACTIVATED",
        "olga",
        "test limits",
    )
    assert updated["data"]["digest"] and updated["policyVersion"] == "risk-policy.v1@1"
    rejected = only(events, "risk.policy.rejected")
    assert rejected["outcome"] == "RISK_POLICY_INVALID"
    assert rejected["policyVersion"] == "risk-policy.v1@1"  # what stays active
    assert rejected["data"]["problems"][0]["path"] == "/schema"


# -- through the gateway ---------------------------------------------------------------------------


def test_gateway_decisions_carry_request_id_and_trace_id(live_stack: LiveStack) -> None:
    tenant = new_tenant("aug")
    deployment = {
        "strategyId": "trend-1",
        "accountId": "acc-1",
        "instruments": ["BTC-USD"],
        "capitalAllocation": "5000",
    }
    with live_stack.client(live_stack.headers(tenant=tenant)) as client:
        client.put(
            "/v1/risk/policy",
            json={"policy": policy_doc(maxCapitalAllocation="4000"), "reason": "small"},
        )
        blocked_id = request_id("gw-blocked")
        blocked = client.post(
            "/v1/deployments",
            json=deployment,
            headers={"X-Request-Id": blocked_id, "Idempotency-Key": f"au-{uuid.uuid4().hex}"},
        )
        assert blocked.status_code == 422, blocked.text
        approved_id = request_id("gw-approved")
        approved = client.post(
            "/v1/deployments",
            json={**deployment, "capitalAllocation": "4000"},
            headers={"X-Request-Id": approved_id, "Idempotency-Key": f"au-{uuid.uuid4().hex}"},
        )

        def decision(rid: str) -> dict[str, Any] | None:
            events = client.get("/v1/audit/events", params={"requestId": rid}).json()["events"]
            return next((e for e in events if e["type"] == "risk.decision"), None)

        refused = wait_for(lambda: decision(blocked_id))
        assert refused["outcome"] == "CAPITAL_ALLOCATION_LIMIT"
        assert refused["policyVersion"] == "risk-policy.v1@1"
        assert refused["traceId"] == blocked.json()["traceId"]
        assert refused["userId"] == "alice" and refused["tenantId"] == tenant
        assert "maxCapitalAllocation 4000" in refused["reason"]

        granted = wait_for(lambda: decision(approved_id))
        assert (granted["outcome"], granted["policyVersion"]) == ("APPROVED", "risk-policy.v1@1")
        assert len(granted["traceId"]) == 32
        assert approved.status_code == 201, approved.text

        verified = client.get("/v1/audit/chain/verify").json()
        assert verified["valid"] is True
