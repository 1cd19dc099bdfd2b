"""Incidents the runbook tests and the incident-tooling tests induce on a live platform.

Each works in a tenant of its own, so it can share the session's platform: a drawdown trip
(the runbook's "kill switch tripped with valid breach evidence"), a manual engagement without
a breach, a policy replaced after a trip, and a burst of pre-trade rejections.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from gate4_client import KillSwitchEngagedError, RiskRejectedError
from tests.support.live import DEMO_POLICY, Tenant, ready_to_trade
from tests.support.stack import LiveStack, wait_for


def short() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Trip:
    """A deployment whose drawdown tripped the kill switch (tenant, account, deployment)."""

    deployment_id: str
    account_id: str
    #: The marks request that confirmed the breach and tripped the switch.
    trip_request_id: str
    #: An order refused with 423 after the trip.
    blocked_request_id: str


def audit_events(tenant: Tenant, **filters: str) -> list[dict[str, Any]]:
    with tenant.client() as gate4:
        page = gate4.query_audit_events(filters, limit=500)  # type: ignore[arg-type]
    return [dict(e) for e in page["events"]]


def trip_drawdown(tenant: Tenant) -> Trip:
    """The demo policy (10% drawdown confirmed 3 times trips and flattens), a long BTC-USD
    position, then marks falling 20%, 22%, 24%, 26%: the third breach trips every scope."""
    ready_to_trade(tenant)
    account = f"acc-{short()}"
    tag = short()
    with tenant.client() as gate4:
        deployment = gate4.create_deployment(
            strategy_id="runbook-drill",
            account_id=account,
            instruments=["BTC-USD"],
            capital_allocation="50000",
            idempotency_key=f"dep-{tag}",
        )["deploymentId"]
        gate4.submit_order(
            deployment_id=deployment,
            instrument="BTC-USD",
            side="buy",
            type="market",
            quantity="1",
            idempotency_key=f"buy-{tag}",
        )
        for step, price in enumerate(("40000", "39000", "38000", "37000")):
            gate4.feed_marks(
                [{"instrument": "BTC-USD", "price": price}], request_id=f"req-mark-{tag}-{step}"
            )

        def enforced() -> bool:
            switch = gate4.get_kill_switch("tenant", tenant.tenant_id)
            return bool(switch["engaged"]) and switch.get("enforcement") == "enforced"

        wait_for(enforced, timeout=20)
        blocked = f"req-blocked-{tag}"
        with pytest.raises(KillSwitchEngagedError):
            gate4.submit_order(
                deployment_id=deployment,
                instrument="BTC-USD",
                side="buy",
                type="market",
                quantity="1",
                idempotency_key=f"blocked-{tag}",
                request_id=blocked,
            )
    recorded = {"risk.decision", "order.rejected"}
    wait_for(
        lambda: recorded <= {e["type"] for e in audit_events(tenant, requestId=blocked)},
        timeout=20,
    )
    trip = next(
        e["requestId"]
        for e in audit_events(tenant, type="killswitch.tripped")
        if e["data"]["scope"] == "tenant"
    )
    return Trip(deployment, account, trip, blocked)


def engage_without_breach(tenant: Tenant, reason: str = "drill: halt by hand") -> None:
    """A risk-officer engages the tenant switch by hand while nothing is in drawdown."""
    ready_to_trade(tenant)
    with tenant.client() as gate4:
        gate4.engage_kill_switch("tenant", tenant.tenant_id, reason=reason)
    wait_for(lambda: audit_events(tenant, type="killswitch.engaged"), timeout=20)


def replace_policy(tenant: Tenant, max_drawdown_pct: str = "20") -> None:
    """Puts a new policy version with another drawdown threshold (the trip's version is no
    longer the active one)."""
    policy = json.loads(DEMO_POLICY.read_text())
    policy["killSwitch"]["maxDrawdownPct"] = max_drawdown_pct
    with tenant.client() as gate4:
        gate4.put_policy(policy, reason="drill: threshold changed after the trip")


def reject_orders(tenant: Tenant, count: int = 4) -> list[str]:
    """Orders of 11 units against maxOrderQuantity 10: each a 422 ORDER_QUANTITY_LIMIT."""
    ready_to_trade(tenant)
    tag = short()
    with tenant.client() as gate4:
        deployment = gate4.create_deployment(
            strategy_id="runbook-drill",
            account_id=f"acc-{tag}",
            instruments=["BTC-USD"],
            capital_allocation="1000000",
            idempotency_key=f"dep-{tag}",
        )["deploymentId"]
        request_ids = []
        for index in range(count):
            request_id = f"req-rejected-{tag}-{index}"
            with pytest.raises(RiskRejectedError):
                gate4.submit_order(
                    deployment_id=deployment,
                    instrument="BTC-USD",
                    side="buy",
                    type="market",
                    quantity="11",
                    idempotency_key=f"rej-{tag}-{index}",
                    request_id=request_id,
                )
            request_ids.append(request_id)
    wait_for(lambda: audit_events(tenant, requestId=request_ids[-1]), timeout=20)
    return request_ids


def spans_exported(live: LiveStack, request_id: str) -> None:
    """Waits until the gateway's span of the request is in the local trace files."""

    def found() -> bool:
        return any(
            s.get("attributes", {}).get("gate4.request_id") == request_id
            and s.get("resource", {}).get("attributes", {}).get("service.name") == "gate4-gateway"
            for s in live.spans()
        )

    wait_for(found, timeout=20)
