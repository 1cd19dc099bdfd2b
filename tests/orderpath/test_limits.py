"""Pre-trade limits hold under concurrent orders (DESIGN.md section 5, "Under concurrency").

A limit must be decided in the same transaction as what it limits, with approved but not yet
filled orders counted as reservations: twenty orders arriving at once may not all be checked
against the same empty account. Each test sends its orders at the same moment, each under its
own Idempotency-Key, against an account policy whose other limits are far away, so the limit
under test is the only one that can refuse.
"""

from __future__ import annotations

from decimal import Decimal

from tests.orderpath.conftest import (
    all_orders,
    assert_no_server_errors,
    burst,
    deploy,
    position,
    put_policy,
    refusal_outcomes,
    roomy_policy,
    signed_fills,
    trading,
)
from tests.support.replicas import DatabaseStack
from tests.support.trader import Trader

ORDERS = 20
MARK = "100"
OPEN = ("accepted", "partially_filled")


def _headers(trader: Trader) -> dict[str, str]:
    return dict(trader.client.headers)


def test_concurrent_orders_never_fill_past_the_position_notional_limit(
    platform: DatabaseStack,
) -> None:
    """maxPositionNotional 500 at a mark of 100 allows 5 units; 20 buys of 1 arrive at once."""
    with trading(platform, "notional") as trader:
        account = "acc-notional"
        put_policy(trader, roomy_policy())
        put_policy(trader, roomy_policy(maxPositionNotional="500", maxOrderNotional="500"), account)
        dep_id = deploy(trader, account, ["BTC-USD"])
        trader.mark("BTC-USD", MARK)

        sent = burst(
            [platform.url],
            _headers(trader),
            [trader.order_body(dep_id, "buy", "1") for _ in range(ORDERS)],
        )

        assert_no_server_errors(sent)
        assert {s.status for s in sent} <= {201, 422}, [s.describe() for s in sent]
        assert set(refusal_outcomes(sent)) <= {"POSITION_NOTIONAL_LIMIT"}, refusal_outcomes(sent)
        accepted = [s.response.json() for s in sent if s.response is not None and s.status == 201]
        assert accepted, "no order was accepted at all"
        assert all(o["status"] == "filled" for o in accepted), accepted

        orders = all_orders(trader.client, dep_id)
        filled = sum((signed_fills(o) for o in orders), Decimal(0))
        held = position(trader.client, dep_id, "BTC-USD")
        assert filled <= 5, f"{filled} units filled against a limit of 5: {len(orders)} orders"
        assert held == filled, f"position {held}, fills {filled}"


def test_concurrent_resting_orders_never_pass_the_open_orders_limit(
    platform: DatabaseStack,
) -> None:
    """maxOpenOrders 3; 10 limit buys 3% below the mark (inside the 5% collar) arrive at once
    and rest, since no mark crosses them."""
    with trading(platform, "open") as trader:
        account = "acc-open-orders"
        put_policy(trader, roomy_policy())
        put_policy(trader, roomy_policy(maxOpenOrders=3), account)
        dep_id = deploy(trader, account, ["BTC-USD"])
        trader.mark("BTC-USD", MARK)
        body = trader.order_body(dep_id, "buy", "1", type="limit", limitPrice="97")

        sent = burst([platform.url], _headers(trader), [dict(body) for _ in range(10)])

        assert_no_server_errors(sent)
        assert {s.status for s in sent} <= {201, 422}, [s.describe() for s in sent]
        assert set(refusal_outcomes(sent)) <= {"OPEN_ORDERS_LIMIT"}, refusal_outcomes(sent)
        accepted = [s.response.json() for s in sent if s.response is not None and s.status == 201]
        assert accepted, "no order was accepted at all"
        assert all(o["status"] == "accepted" for o in accepted), accepted

        orders = all_orders(trader.client, dep_id)
        resting = [o for o in orders if o["status"] in OPEN]
        assert len(resting) <= 3, f"{len(resting)} open orders against a limit of 3"
        assert position(trader.client, dep_id, "BTC-USD") == 0
        # Leave nothing resting behind (the platform is shared by the package's tests).
        for order in resting:
            trader.post(f"/v1/orders/{order['orderId']}/actions/cancel", {"reason": "cleanup"})
