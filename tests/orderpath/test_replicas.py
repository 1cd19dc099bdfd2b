"""Two replicas of gateway, execution and risk on one PostgreSQL database.

A deployment's position is a shared counter: both execution processes fill orders for it,
so each fill must update the position atomically, never read-modify-write. The busy test
sends 30 orders at once, alternating between the two gateways, for ONE deployment: every
fill of both processes lands on the same position row, which is where a lost update shows
(two deployments would each mostly see one process and hide it). Limits are far away, so
every order should be approved and filled.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.execution.client import Trader, new_key
from tests.orderpath.conftest import (
    all_orders,
    assert_no_server_errors,
    burst,
    deploy,
    new_tenant,
    position,
    put_policy,
    roomy_policy,
    signed_fills,
)
from tests.support.replicas import ReplicaStack

pytestmark = pytest.mark.postgres

ORDERS = 30


@pytest.fixture
def traders(replicas: ReplicaStack) -> Iterator[list[Trader]]:
    """One user of a new tenant, on gateway 1 and on gateway 2 (one API key for both)."""
    tenant = new_tenant("replicas")
    headers = replicas.headers(tenant=tenant)
    lanes = [Trader(replicas.client(lane, headers), tenant) for lane in range(2)]
    try:
        yield lanes
    finally:
        for trader in lanes:
            trader.close()


def test_each_lane_serves_orders_the_other_lane_reads(traders: list[Trader]) -> None:
    """The harness: both gateways take orders for one deployment and read the same book."""
    first, second = traders
    put_policy(first, roomy_policy())
    dep_id = deploy(second, "acc-lanes", ["BTC-USD"])
    first.mark("BTC-USD", "100")
    placed = [
        trader.post("/v1/orders", trader.order_body(dep_id, "buy", "1"), new_key("op"))
        for trader in traders
    ]
    assert [p.status_code for p in placed] == [201, 201], [p.text for p in placed]
    assert [p.json()["status"] for p in placed] == ["filled", "filled"]
    ids = sorted(p.json()["orderId"] for p in placed)
    for trader in traders:
        assert sorted(o["orderId"] for o in all_orders(trader.client, dep_id)) == ids
        assert position(trader.client, dep_id, "BTC-USD") == 2


def test_concurrent_fills_on_both_replicas_all_reach_the_position(
    traders: list[Trader],
) -> None:
    first, second = traders
    put_policy(first, roomy_policy())
    dep_id = deploy(first, "acc-busy", ["BTC-USD"])
    first.mark("BTC-USD", "100")
    # Buys and sells of 1 and 2 units, so the position is a real signed sum of the fills.
    bodies = [
        first.order_body(dep_id, "sell" if i % 3 == 2 else "buy", str(1 + i % 2))
        for i in range(ORDERS)
    ]

    sent = burst(
        [str(first.client.base_url), str(second.client.base_url)],
        dict(first.client.headers),
        bodies,
    )

    assert_no_server_errors(sent)
    orders = all_orders(first.client, dep_id)
    fills = sum((signed_fills(o) for o in orders), Decimal(0))
    for lane, trader in enumerate(traders, start=1):
        held = position(trader.client, dep_id, "BTC-USD")
        assert held == fills, f"gateway {lane}: position {held}, its orders filled {fills}"
    # Nothing was in the way, so every order was placed once and filled in full.
    assert {s.status for s in sent} == {201}, [s.describe() for s in sent if s.status != 201]
    assert len(orders) == ORDERS, f"{len(orders)} orders recorded for {ORDERS} keys"
    expected = sum(
        (Decimal(b["quantity"]) * (1 if b["side"] == "buy" else -1) for b in bodies), Decimal(0)
    )
    assert fills == expected, f"fills sum to {fills}, the orders asked for {expected}"
