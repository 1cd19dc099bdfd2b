"""A drawdown trip is enforced once, by one enforcer, and recorded as it happened.

The policy trips a deployment's kill switch after 3 consecutive equity reports more than 10%
below its peak, and flattens on trip. The deployment (capital 350) buys 2 BTC-USD at 100;
each mark at 80 makes execution report equity 310 or less. After the trip the position must
be closed by exactly one flatten order, and what the switch and the audit trail say about
the enforcement must be exactly that order: the switch's enforcementDetail, the
`killswitch.enforcement` event's flattenOrderIds, and no refused order under the trip's
requestId (a second enforcer racing the first shows up there as a refused reduce-only order).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.orderpath.conftest import (
    all_orders,
    audit_events,
    deploy,
    execution_barrier,
    position,
    put_policy,
    risk_barrier,
    roomy_policy,
    trading,
)
from tests.support.replicas import DatabaseStack
from tests.support.stack import wait_for
from tests.support.trader import Trader

CONFIRMATIONS = 3


def _trip(trader: Trader, dep_id: str) -> list[str]:
    """Feeds marks at 80 until the deployment's switch engages; the marks' request ids."""
    request_ids: list[str] = []
    for _ in range(CONFIRMATIONS + 3):
        request_id = f"req-op-drawdown-{uuid.uuid4().hex[:12]}"
        marks = {"marks": [{"instrument": "BTC-USD", "price": "80"}]}
        fed = trader.post("/v1/sandbox/marks", marks, **{"X-Request-Id": request_id})
        assert fed.status_code == 200, fed.text
        request_ids.append(request_id)
        if trader.kill_switch("deployment", dep_id)["engaged"]:
            return request_ids
    raise AssertionError(f"no trip after {len(request_ids)} marks 20% below the entry")


def test_a_drawdown_trip_records_exactly_the_flatten_it_placed(platform: DatabaseStack) -> None:
    with trading(platform, "drawdown") as trader:
        put_policy(
            trader,
            roomy_policy(
                killSwitch_maxDrawdownPct="10",
                killSwitch_confirmations=CONFIRMATIONS,
                killSwitch_flattenOnTrip=True,
                killSwitch_scopes=["deployment"],
            ),
        )
        dep_id = deploy(trader, "acc-drawdown", ["BTC-USD"], capital="350")
        trader.mark("BTC-USD", "100")
        trader.filled(dep_id, "buy", "2")

        marks = _trip(trader, dep_id)

        def enforced() -> dict[str, Any] | None:
            switch = trader.kill_switch("deployment", dep_id)
            return switch if switch["enforcement"] == "enforced" else None

        switch = wait_for(enforced, timeout=20, interval=0.1)
        assert switch["trigger"] == "drawdown" and switch["flatten"] is True, switch
        execution_barrier(trader)
        risk_barrier(trader)

        orders = all_orders(trader.client, dep_id)
        flatten = [o for o in orders if o["reduceOnly"]]
        filled_ids = sorted(o["orderId"] for o in flatten if o["status"] == "filled")
        tripped = audit_events(trader.client, deploymentId=dep_id, type="killswitch.tripped")
        enforcement = [
            e
            for e in audit_events(trader.client, deploymentId=dep_id, type="killswitch.enforcement")
            if e["outcome"] == "ENFORCED"
        ]
        placed = re.search(r"placed (\d+) flatten order", switch["enforcementDetail"])

        problems: list[str] = []
        if len(flatten) != 1 or len(filled_ids) != 1:
            problems.append(
                "flatten orders: "
                + ", ".join(f"{o['orderId']} {o['side']} {o['status']}" for o in flatten)
            )
        if placed is None or placed.group(1) != "1":
            problems.append(f"enforcementDetail says {switch['enforcementDetail']!r}")
        if len(enforcement) != 1:
            problems.append(f"{len(enforcement)} ENFORCED killswitch.enforcement events")
        for event in enforcement:
            recorded = sorted(event["data"].get("flattenOrderIds", []))
            if recorded != filled_ids:
                problems.append(f"killswitch.enforcement flattenOrderIds {recorded}")
        held = position(trader.client, dep_id, "BTC-USD")
        if held != 0:
            problems.append(f"position {held} after the flatten")
        if len(tripped) != 1:
            problems.append(f"{len(tripped)} killswitch.tripped events")
        for trip in tripped:
            assert trip["requestId"] in marks, (trip["requestId"], marks)
            under_trip = audit_events(trader.client, requestId=trip["requestId"])
            problems.extend(
                f"{e['type']} {e['outcome']} {e.get('orderId', '')}: {e['reason']}"
                for e in under_trip
                if e["type"] == "order.rejected"
            )
        assert not problems, f"flatten orders that filled: {filled_ids}\n" + "\n".join(problems)
