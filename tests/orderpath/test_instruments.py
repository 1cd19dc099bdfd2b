"""An order may only trade what its deployment was created for.

The policy allows ETH-USD and the venue has a fresh ETH-USD mark, but the deployment was
created for BTC-USD only: risk refuses the order with `DEPLOYMENT_INSTRUMENT_NOT_ALLOWED`
and nothing reaches the venue.
"""

from __future__ import annotations

from tests.orderpath.conftest import (
    all_orders,
    audit_events,
    deploy,
    execution_barrier,
    position,
    put_policy,
    roomy_policy,
    trading,
)
from tests.support.problems import assert_problem
from tests.support.replicas import DatabaseStack
from tests.support.trader import new_key


def test_an_order_outside_the_deployments_instruments_is_refused(platform: DatabaseStack) -> None:
    with trading(platform, "instrument") as trader:
        put_policy(trader, roomy_policy(instruments_allowed=["BTC-USD", "ETH-USD"]))
        dep_id = deploy(trader, "acc-instrument", ["BTC-USD"])
        trader.mark("BTC-USD", "100")
        trader.mark("ETH-USD", "2000")

        body = trader.order_body(dep_id, "buy", "1", instrument="ETH-USD")
        refused = trader.post("/v1/orders", body, new_key("op"))

        problem = assert_problem(refused, 422, "RISK_LIMIT_BREACHED")
        assert problem["outcome"] == "DEPLOYMENT_INSTRUMENT_NOT_ALLOWED", problem
        orders = all_orders(trader.client, dep_id)
        assert not [o for o in orders if o.get("fills")], orders
        assert position(trader.client, dep_id, "ETH-USD") == 0
        execution_barrier(trader)
        filled = audit_events(trader.client, deploymentId=dep_id, type="order.filled")
        assert filled == [], filled
