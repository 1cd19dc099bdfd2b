"""Pre-trade checks: each with its own outcome code, below, at and above its limit.

At the RPC level (CheckOrder / CheckDeployment on a real risk process, the way execution
asks) every case is deterministic; the gateway cases show the 422 a client sees. A value
equal to its limit passes; only a value above it breaches.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.risk import checks, policy
from tests.support.problems import assert_problem
from tests.support.risk_rig import RiskRig, new_tenant, policy_doc
from tests.support.stack import LiveStack

# Generous limits, so each case breaches only the limit it is about.
WIDE = {
    "maxOrderNotional": "1000000",
    "maxOrderQuantity": "1000",
    "maxPositionNotional": "10000000",
    "maxOpenOrders": 1000,
    "orderRate": {"maxOrders": 1000, "windowSeconds": 60},
    "priceCollarPct": "50",
    "markMaxAgeSeconds": 300,
    "maxCapitalAllocation": "10000000",
    "dailyLossLimit": "1000000",
}


def with_limits(**overrides: Any) -> dict[str, Any]:
    return policy_doc(**{**WIDE, **overrides})


def fresh(rig: RiskRig, **overrides: Any) -> str:
    tenant = new_tenant("pt")
    rig.put_policy(tenant, with_limits(**overrides))
    return tenant


def assert_outcome(decision: Any, outcome: str, *words: str) -> None:
    assert decision.outcome == outcome, decision
    assert decision.approved == (outcome == "APPROVED")
    assert decision.policy_version.startswith("risk-policy.v1@")
    if outcome != "APPROVED":
        assert decision.breaches[0].outcome == outcome
        for word in words:
            assert word in decision.reason, decision.reason


# -- one case per check: below, at, above -------------------------------------------------------

# (check, policy overrides, order fields below / at / above, words the refusal names)
ORDER_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], tuple[str, ...]]] = [
    (
        "ORDER_NOTIONAL_LIMIT",
        {"maxOrderNotional": "5000"},
        [{"quantity": "4.999"}, {"quantity": "5"}, {"quantity": "5.001"}],  # x mark 1000
        ("maxOrderNotional 5000", "order notional 5001"),
    ),
    (
        "ORDER_QUANTITY_LIMIT",
        {"maxOrderQuantity": "2"},
        [{"quantity": "1.99"}, {"quantity": "2"}, {"quantity": "2.01"}],
        ("maxOrderQuantity 2", "order quantity 2.01"),
    ),
    (
        "POSITION_NOTIONAL_LIMIT",
        {"maxPositionNotional": "5000", "maxOrderNotional": "5000"},
        [
            {"account_position_quantity": "3", "quantity": "1"},
            {"account_position_quantity": "3", "quantity": "2"},
            {"account_position_quantity": "3", "quantity": "3"},
        ],
        ("maxPositionNotional 5000", "6000"),
    ),
    (
        "OPEN_ORDERS_LIMIT",
        {"maxOpenOrders": 5},
        [{"account_open_orders": 3}, {"account_open_orders": 4}, {"account_open_orders": 5}],
        ("maxOpenOrders 5", "6 open orders"),
    ),
    (
        "PRICE_COLLAR",
        {"priceCollarPct": "5"},
        [
            {"type": "limit", "limit_price": "1049.99"},
            {"type": "limit", "limit_price": "950"},
            {"type": "limit", "limit_price": "1050.01"},
        ],
        ("priceCollarPct 5", "mark 1000"),
    ),
    (
        "DEPLOYMENT_CAPITAL_LIMIT",
        {},
        [
            {"capital_allocation": "5000", "deployment_gross_exposure": "3000", "quantity": "1"},
            {"capital_allocation": "5000", "deployment_gross_exposure": "3000", "quantity": "2"},
            {"capital_allocation": "5000", "deployment_gross_exposure": "3000", "quantity": "3"},
        ],
        ("capital allocation 5000", "6000"),
    ),
    (
        "MARK_STALE",
        {"markMaxAgeSeconds": 60},
        # "At" is the pure check's exact boundary (below); over RPC the clock moves on.
        [{"mark_age": 0}, {"mark_age": 55}, {"mark_age": 61}],
        ("markMaxAgeSeconds 60",),
    ),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_order_check_below_at_and_above_its_limit(risk_rig: RiskRig, case: Any) -> None:
    outcome, overrides, (below, at, above), words = case
    tenant = fresh(risk_rig, **overrides)
    assert_outcome(risk_rig.check_order(tenant, **below), "APPROVED")
    assert_outcome(risk_rig.check_order(tenant, **at), "APPROVED")
    assert_outcome(risk_rig.check_order(tenant, **above), outcome, *words)


def test_order_rate_below_at_and_above_per_account(risk_rig: RiskRig) -> None:
    # The window sliding is domain time: tests/risk/test_ratelimit.py moves a ManualClock
    # through the servicer instead of this test sleeping through a window.
    tenant = fresh(risk_rig, orderRate={"maxOrders": 3, "windowSeconds": 60})
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")  # 1: below
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")  # 2: below
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")  # 3: at
    assert_outcome(risk_rig.check_order(tenant), "ORDER_RATE_LIMIT", "orderRate.maxOrders 3")
    # Per account: another account of the tenant has its own window.
    assert_outcome(risk_rig.check_order(tenant, account_id="acc-2"), "APPROVED")


def test_a_repeated_check_of_the_same_order_counts_once(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig, orderRate={"maxOrders": 1, "windowSeconds": 60})
    first = risk_rig.check_order(tenant, order_id="ord_same")
    again = risk_rig.check_order(tenant, order_id="ord_same")
    assert first.approved and again.approved
    assert_outcome(risk_rig.check_order(tenant), "ORDER_RATE_LIMIT")


def test_market_orders_are_valued_at_the_mark_and_limit_orders_at_their_price(
    risk_rig: RiskRig,
) -> None:
    tenant = fresh(risk_rig, maxOrderNotional="1000", priceCollarPct="10")
    assert_outcome(risk_rig.check_order(tenant, quantity="1"), "APPROVED")
    limit = risk_rig.check_order(tenant, quantity="1", type="limit", limit_price="1001")
    assert_outcome(limit, "ORDER_NOTIONAL_LIMIT", "order notional 1001")


def test_an_order_that_shrinks_a_position_over_its_limit_passes(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig, maxPositionNotional="8000", maxOrderNotional="8000")
    decision = risk_rig.check_order(tenant, account_position_quantity="9", side="sell")
    assert_outcome(decision, "APPROVED")
    flipped = risk_rig.check_order(
        tenant, account_position_quantity="1", side="sell", quantity="10"
    )
    assert "POSITION_NOTIONAL_LIMIT" in [b.outcome for b in flipped.breaches]


def test_a_missing_mark_refuses(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig)
    missing = risk_rig.check_order(tenant, mark_price="")
    assert_outcome(missing, "MARK_MISSING", "no mark for BTC-USD")
    undated = risk_rig.check_order(tenant, mark_age=None)
    assert_outcome(undated, "MARK_STALE", "undated")


def test_mark_age_exactly_at_the_limit_passes() -> None:
    doc = with_limits(markMaxAgeSeconds=60)
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def at_age(seconds: float) -> list[str]:
        order = order_context(mark_time=now - timedelta(seconds=seconds))
        found = checks.order_breaches(
            policy.parse(doc), order, now=now, orders_in_window=0, daily_loss=checks.ZERO
        )
        return [b.outcome for b in found]

    assert at_age(59.999) == []
    assert at_age(60) == []
    assert at_age(60.001) == ["MARK_STALE"]


def order_context(**overrides: Any) -> checks.OrderContext:
    values: dict[str, Any] = {
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": Decimal("1"),
        "limit_price": None,
        "reduce_only": False,
        "position": checks.ZERO,
        "account_position": checks.ZERO,
        "account_open_orders": 0,
        "capital_allocation": None,
        "deployment_gross_exposure": checks.ZERO,
        "mark_price": Decimal("1000"),
        "mark_time": None,
    }
    values.update(overrides)
    return checks.OrderContext(**values)


@pytest.mark.parametrize(
    "instruments,symbol,outcome",
    [
        ({"allowed": ["BTC-USD"], "restricted": []}, "BTC-USD", "APPROVED"),
        ({"allowed": ["BTC-USD"], "restricted": []}, "ETH-USD", "INSTRUMENT_NOT_ALLOWED"),
        ({"allowed": [], "restricted": ["DOGE-USD"]}, "ETH-USD", "APPROVED"),
        ({"allowed": [], "restricted": ["DOGE-USD"]}, "DOGE-USD", "INSTRUMENT_RESTRICTED"),
        ({"restricted": ["DOGE-USD"]}, "SOL-USD", "APPROVED"),
    ],
)
def test_restricted_and_non_allowed_instruments(
    risk_rig: RiskRig, instruments: dict[str, Any], symbol: str, outcome: str
) -> None:
    doc = with_limits()
    doc["instruments"] = instruments
    tenant = new_tenant("pt")
    risk_rig.put_policy(tenant, doc)
    assert_outcome(risk_rig.check_order(tenant, instrument=symbol), outcome, symbol)
    deployment = risk_rig.check_deployment(tenant, instruments=["BTC-USD", symbol])
    assert_outcome(deployment, outcome, symbol)


def test_deployment_capital_allocation_below_at_and_above(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig, maxCapitalAllocation="10000")
    for capital, outcome in (
        ("9999.99", "APPROVED"),
        ("10000", "APPROVED"),
        ("10000.01", "CAPITAL_ALLOCATION_LIMIT"),
    ):
        decision = risk_rig.check_deployment(tenant, capital_allocation=capital)
        assert_outcome(decision, outcome, "maxCapitalAllocation 10000", capital)


def test_daily_loss_below_at_and_above(risk_rig: RiskRig) -> None:
    # Equity includes unrealised P&L: the loss is capital 10000 minus the reported equity.
    tenant = fresh(risk_rig, dailyLossLimit="1000", killSwitch_maxDrawdownPct="90")
    now = datetime.now(UTC)
    for step, (equity, outcome) in enumerate(
        [("9500", "APPROVED"), ("9000", "APPROVED"), ("8999.99", "DAILY_LOSS_LIMIT")]
    ):
        risk_rig.report(tenant, equity, at=now + timedelta(milliseconds=step))
        assert_outcome(risk_rig.check_order(tenant), outcome, "dailyLossLimit 1000", "1000.01")
        assert_outcome(risk_rig.check_deployment(tenant), outcome, "dailyLossLimit 1000")
    # Losses net across the account's deployments; another account is not affected.
    risk_rig.report(
        tenant, "10600", at=now + timedelta(milliseconds=5), deployment="dep-2", capital="10000"
    )
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")
    assert_outcome(risk_rig.check_order(tenant, account_id="acc-2"), "APPROVED")


def test_daily_loss_counts_from_the_start_of_the_utc_day(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig, dailyLossLimit="1000", killSwitch_maxDrawdownPct="90")
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    risk_rig.report(tenant, "8000", at=yesterday)  # yesterday's loss of 2000
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")
    risk_rig.report(tenant, "7500", at=today)  # today: 500 below where the day began
    assert_outcome(risk_rig.check_order(tenant), "APPROVED")
    risk_rig.report(tenant, "6999", at=today + timedelta(milliseconds=1))
    assert_outcome(risk_rig.check_order(tenant), "DAILY_LOSS_LIMIT", "lost 1001")


def test_every_breach_is_listed_and_the_first_is_the_outcome(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig, maxOrderQuantity="1", maxOrderNotional="1000", maxOpenOrders=1)
    decision = risk_rig.check_order(tenant, quantity="2", account_open_orders=1)
    assert [b.outcome for b in decision.breaches] == [
        "ORDER_QUANTITY_LIMIT",
        "ORDER_NOTIONAL_LIMIT",
        "OPEN_ORDERS_LIMIT",
    ]
    assert decision.outcome == "ORDER_QUANTITY_LIMIT"
    notional = decision.breaches[1]
    assert (notional.limit, notional.value, notional.threshold) == (
        "limits.maxOrderNotional",
        "2000",
        "1000",
    )
    assert "also ORDER_NOTIONAL_LIMIT, OPEN_ORDERS_LIMIT" in decision.reason


def test_cancel_stop_and_reduce_only_always_pass(risk_rig: RiskRig) -> None:
    tenant = new_tenant("pt")  # no policy at all
    assert risk_rig.check_order(tenant, action="cancel").approved
    assert risk_rig.check_deployment(tenant, action="stop").approved
    reduce = risk_rig.check_order(tenant, reduce_only=True, side="sell", position_quantity="2")
    assert reduce.approved and reduce.outcome == "APPROVED"
    not_reducing = risk_rig.check_order(tenant, reduce_only=True, side="buy", position_quantity="2")
    assert not_reducing.outcome == "REDUCE_ONLY_VIOLATION"
    too_big = risk_rig.check_order(
        tenant, reduce_only=True, side="sell", position_quantity="2", quantity="3"
    )
    assert too_big.outcome == "REDUCE_ONLY_VIOLATION" and "open the other side" in too_big.reason


def test_risk_cannot_decide_means_no(risk_rig: RiskRig) -> None:
    tenant = fresh(risk_rig)
    for fields in (
        {"quantity": "lots"},
        {"side": "sideways"},
        {"type": "limit"},
        {"type": ""},
        {"mark_price": "-3"},
        {"account_id": ""},
        {"deployment_id": ""},
    ):
        decision = risk_rig.check_order(tenant, **fields)
        assert (decision.approved, decision.outcome) == (False, "RISK_UNDECIDED"), fields
    bad_deployments: list[dict[str, Any]] = [
        {"capital_allocation": ""},
        {"account_id": ""},
        {"instruments": []},
    ]
    for changes in bad_deployments:
        deployment = risk_rig.check_deployment(tenant, **changes)
        assert deployment.outcome == "RISK_UNDECIDED", changes


def test_a_stored_policy_that_no_longer_validates_fails_closed() -> None:
    from services.risk import versions

    record = versions.PolicyRecord(
        tenant_id="t",
        account_id="",
        version=1,
        digest="",
        author="",
        reason="",
        document_json='{"schema": "risk-policy.v1"}',
        active=True,
        created_at=datetime.now(UTC),
    )
    assert isinstance(record.parsed(), policy.PolicyProblems)


# -- through the gateway ---------------------------------------------------------------------------


@pytest.fixture
def trading(live_stack: LiveStack):
    tenant = new_tenant("ptg")
    with live_stack.client(live_stack.headers(tenant=tenant)) as client:
        yield client


DEPLOYMENT = {
    "strategyId": "trend-1",
    "accountId": "acc-1",
    "instruments": ["BTC-USD"],
    "capitalAllocation": "5000",
    "mode": "paper",
}


def test_gateway_refuses_a_deployment_over_the_allocation_with_422_and_outcome(trading) -> None:
    trading.put(
        "/v1/risk/policy",
        json={"policy": with_limits(maxCapitalAllocation="1000"), "reason": "small"},
    )
    response = trading.post(
        "/v1/deployments", json=DEPLOYMENT, headers={"Idempotency-Key": "pt-capital-0001"}
    )
    problem = assert_problem(response, 422, "RISK_LIMIT_BREACHED")
    assert problem["outcome"] == "CAPITAL_ALLOCATION_LIMIT"
    assert "capital allocation 5000 exceeds maxCapitalAllocation 1000" in problem["detail"]
    restricted = with_limits()
    restricted["instruments"] = {"restricted": ["BTC-USD"]}
    trading.put("/v1/risk/policy", json={"policy": restricted, "reason": "no btc"})
    again = trading.post(
        "/v1/deployments", json=DEPLOYMENT, headers={"Idempotency-Key": "pt-restricted-0001"}
    )
    assert assert_problem(again, 422, "RISK_LIMIT_BREACHED")["outcome"] == "INSTRUMENT_RESTRICTED"


def test_gateway_without_a_policy_refuses_with_policy_invalid(trading) -> None:
    response = trading.post(
        "/v1/deployments", json=DEPLOYMENT, headers={"Idempotency-Key": "pt-nopolicy-0001"}
    )
    assert assert_problem(response, 422, "RISK_LIMIT_BREACHED")["outcome"] == "POLICY_INVALID"


def test_gateway_order_over_max_notional_is_422_with_outcome(trading) -> None:
    """Waits on execution: needs a running deployment, a mark and order submission."""
    trading.put(
        "/v1/risk/policy",
        json={"policy": with_limits(maxOrderNotional="1000"), "reason": "small orders"},
    )
    marks = trading.post(
        "/v1/sandbox/marks", json={"marks": [{"instrument": "BTC-USD", "price": "500"}]}
    )
    assert marks.status_code == 200, marks.text
    created = trading.post(
        "/v1/deployments", json=DEPLOYMENT, headers={"Idempotency-Key": "pt-notional-dep-1"}
    )
    assert created.status_code == 201, created.text
    deployment_id = created.json()["deploymentId"]
    order = {
        "deploymentId": deployment_id,
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "2",
    }
    ok = trading.post("/v1/orders", json=order, headers={"Idempotency-Key": "pt-notional-ok-1"})
    assert ok.status_code == 201, ok.text
    big = trading.post(
        "/v1/orders",
        json={**order, "quantity": "3"},
        headers={"Idempotency-Key": "pt-notional-big-1"},
    )
    problem = assert_problem(big, 422, "RISK_LIMIT_BREACHED")
    assert problem["outcome"] == "ORDER_NOTIONAL_LIMIT"
    assert "order notional 1500 exceeds maxOrderNotional 1000" in problem["detail"]
