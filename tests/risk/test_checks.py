"""The pre-trade checks as pure functions: what open orders reserve, and the deployment's
instruments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.risk import checks, policy
from services.risk.checks import OrderContext, worst_case
from tests.risk.conftest import T0, intent, snapshot
from tests.support.risk_rig import policy_doc

D = Decimal


def context(**overrides: Any) -> OrderContext:
    """A market buy of 1 BTC-USD at mark 100, nothing held or reserved."""
    values: dict[str, Any] = {
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": D(1),
        "limit_price": None,
        "reduce_only": False,
        "position": D(0),
        "account_position": D(0),
        "account_open_orders": 0,
        "capital_allocation": None,
        "deployment_gross_exposure": D(0),
        "mark_price": D(100),
        "mark_time": T0,
    }
    values.update(overrides)
    return OrderContext(**values)


def breaches(order: OrderContext, **limits: Any) -> list[str]:
    doc = policy_doc(markMaxAgeSeconds=3600, **limits)
    found = checks.order_breaches(
        policy.parse(doc), order, now=T0, orders_in_window=0, daily_loss=D(0)
    )
    return [b.outcome for b in found]


def test_worst_case_is_the_larger_of_all_buys_and_all_sells_filling() -> None:
    assert worst_case(D(0), D(0), D(0)) == 0
    assert worst_case(D(2), D(3), D(1)) == 5
    assert worst_case(D(2), D(1), D(6)) == 4
    assert worst_case(D(-2), D(1), D(1)) == 3


@pytest.mark.parametrize(
    "reserved,quantity,passes",
    [("3", "2", True), ("4", "1", True), ("4", "2", False), ("5", "1", False)],
)
def test_position_notional_counts_open_orders_on_the_orders_side(
    reserved: str, quantity: str, passes: bool
) -> None:
    # maxPositionNotional 500 at mark 100: five units, counting what open buys reserve.
    order = context(open_buys=D(reserved), quantity=D(quantity))
    limits = {"maxPositionNotional": "500", "maxOrderNotional": "500"}
    outcome = breaches(order, **limits)
    assert (outcome == []) is passes, outcome
    if not passes:
        (found,) = checks.order_breaches(
            policy.parse(policy_doc(markMaxAgeSeconds=3600, **limits)),
            order,
            now=T0,
            orders_in_window=0,
            daily_loss=D(0),
        )
        assert f"counting {reserved} reserved by open buy orders" in found.detail


def test_open_orders_of_the_other_side_do_not_add_to_a_position() -> None:
    limits = {"maxPositionNotional": "500", "maxOrderNotional": "500"}
    # Long 4 with 10 reserved by open sells: a buy of 1 takes it to 5, at the limit.
    assert breaches(context(account_position=D(4), open_sells=D(10)), **limits) == []
    # Sells count open sells: short 3 with 1 more reserved leaves room for one unit.
    short = context(side="sell", account_position=D(-3), open_sells=D(1), open_buys=D(9))
    assert breaches(short, **limits) == []
    assert breaches(context(side="sell", account_position=D(-3), open_sells=D(2)), **limits) == [
        "POSITION_NOTIONAL_LIMIT"
    ]


@pytest.mark.parametrize(
    "side,quantity,passes",
    [("buy", "2", True), ("buy", "3", False), ("sell", "3", True), ("sell", "5", True)],
)
def test_deployment_capital_counts_the_worst_case_of_open_orders(
    side: str, quantity: str, passes: bool
) -> None:
    # Flat, 3 reserved by open buys valued at 1000: the worst case is already 3000.
    order = context(
        side=side,
        quantity=D(quantity),
        mark_price=D(1000),
        capital_allocation=D(5000),
        deployment_gross_exposure=D(3000),
        deployment_open_buys=D(3),
    )
    found = breaches(order, maxOrderNotional="100000", maxPositionNotional="100000")
    # Buys add to the worst case; sells only once they exceed the open buys (5 - 3 = 2).
    assert ("DEPLOYMENT_CAPITAL_LIMIT" not in found) is passes, found


def test_without_reservations_the_checks_read_as_before() -> None:
    # The intent's own figures, nothing reserved: a buy of 2 on a long of 3 is 5 units.
    limits = {"maxPositionNotional": "500", "maxOrderNotional": "500"}
    assert breaches(context(account_position=D(3), quantity=D(2)), **limits) == []
    assert breaches(context(account_position=D(3), quantity=D(3)), **limits) == [
        "POSITION_NOTIONAL_LIMIT"
    ]


def test_an_instrument_the_deployment_does_not_trade_is_refused_first() -> None:
    order = context(instrument="DOGE-USD", deployment_instruments=("BTC-USD", "ETH-USD"))
    doc = {"instruments_restricted": ["DOGE-USD"]}
    found = breaches(order, **doc)
    assert found[:2] == ["DEPLOYMENT_INSTRUMENT_NOT_ALLOWED", "INSTRUMENT_RESTRICTED"]
    breach = checks.deployment_instrument_breach(order)
    assert breach is not None
    assert (breach.limit, breach.value, breach.threshold) == (
        "deployment.instruments",
        "DOGE-USD",
        "BTC-USD,ETH-USD",
    )
    assert "not one the deployment trades" in breach.detail
    # An empty list (an older caller) says nothing.
    assert checks.deployment_instrument_breach(context()) is None
    assert checks.deployment_instrument_breach(context(deployment_instruments=("BTC-USD",))) is None


def test_intent_positions_and_instruments_are_parsed_and_checked() -> None:
    message = intent(
        "ord_1",
        positions=[snapshot("2.5", 7, price="101"), snapshot("-1", 2, instrument="ETH-USD")],
        deployment_instruments=["BTC-USD", "ETH-USD"],
    )
    order = checks.order_context(message)
    assert order.deployment_instruments == ("BTC-USD", "ETH-USD")
    assert [(p.instrument, p.quantity, p.version, p.price) for p in order.positions] == [
        ("BTC-USD", D("2.5"), 7, D(101)),
        ("ETH-USD", D(-1), 2, D(100)),
    ]
    for bad, words in (
        ({"positions": [snapshot(deployment="dep-2")]}, "deployment 'dep-2'"),
        ({"positions": [snapshot("lots")]}, "not a decimal"),
        ({"positions": [snapshot(version=-1)]}, "negative version"),
        ({"deployment_instruments": ["btc"]}, "not an instrument symbol"),
        ({"order_id": ""}, "order id"),
    ):
        fields: dict[str, Any] = {"order_id": "ord_1", **bad}
        with pytest.raises(checks.Undecidable, match=words):
            checks.order_context(intent(**fields))
