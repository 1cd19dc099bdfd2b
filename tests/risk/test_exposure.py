"""Exposure decided in the decision's transaction: the positions ledger plus the reservations
of orders approved and not filled, on both backends, also under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from google.protobuf import json_format

from gate4.risk.v1 import risk_pb2
from services.risk import ledger, reservations, settlement
from services.risk.enforcement import Enforcer
from services.risk.servicer import RiskServicer
from services.runtime import correlation
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow
from tests.risk.conftest import T0, RiskStore, intent, snapshot

D = Decimal
# Five units of BTC-USD at mark 100; every other limit out of the way.
FIVE_UNITS: dict[str, Any] = {
    "maxPositionNotional": "500",
    "maxOrderNotional": "500",
    "maxOpenOrders": 1000,
    "orderRate": {"maxOrders": 1000, "windowSeconds": 60},
    "markMaxAgeSeconds": 3600,
}


def counted(decision: risk_pb2.RiskDecision) -> dict[str, Any]:
    """What the decision counted as exposure (its evidence)."""
    found: dict[str, Any] = json_format.MessageToDict(decision.evidence)["exposure"]
    return found


def outcomes(decisions: list[risk_pb2.RiskDecision]) -> list[str]:
    return [d.outcome for d in decisions]


def test_approved_orders_reserve_until_they_fill(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    decided = [store.check(intent(f"o{i}")) for i in range(6)]
    assert outcomes(decided) == ["APPROVED"] * 5 + ["POSITION_NOTIONAL_LIMIT"]
    assert "counting 5 reserved by open buy orders" in decided[5].reason
    held = store.open_orders()
    assert sorted(r.order_id for r in held) == [f"o{i}" for i in range(5)]
    assert {(r.quantity, r.price, r.state) for r in held} == {(D(1), D(100), "open")}
    # The refused order reserves nothing.
    refused = store.run(lambda c: reservations.find(c, "t1", "o5"))
    assert (refused.state, refused.remaining) == ("refused", 0)
    # What was counted is in the decision's record.
    assert counted(decided[5])["openBuys"] == "5"


def test_a_sell_is_not_held_back_by_reserved_buys(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    for i in range(5):
        assert store.check(intent(f"b{i}")).approved
    assert store.check(intent("s1", side="sell")).approved


def test_open_reservations_count_as_open_orders(store: RiskStore) -> None:
    store.put_policy(**{**FIVE_UNITS, "maxOpenOrders": 3, "priceCollarPct": "50"})
    resting: dict[str, Any] = {"type": "limit", "limit_price": "90", "account_open_orders": 0}
    decided = [store.check(intent(f"l{i}", **resting)) for i in range(5)]
    assert outcomes(decided) == ["APPROVED"] * 3 + ["OPEN_ORDERS_LIMIT"] * 2
    assert "would have 4 open orders" in decided[3].reason
    # One closes (cancelled): its place is free again.
    store.run(
        lambda c: settlement.apply(
            c,
            store.outbox,
            store.books,
            "t1",
            settlement.Settlement("l0", "acc-1", "dep-1", D(0), True, None, "", ""),
            T0,
        )
    )
    assert store.check(intent("l5", **resting)).approved
    # The caller's own count wins when it is larger (orders risk never decided on).
    assert store.check(intent("l6", **{**resting, "account_open_orders": 5})).outcome == (
        "OPEN_ORDERS_LIMIT"
    )


def test_deployment_capital_counts_reservations_at_their_worst_case(store: RiskStore) -> None:
    store.put_policy(
        maxOrderNotional="100000", maxPositionNotional="100000", markMaxAgeSeconds=3600
    )
    capital: dict[str, Any] = {"capital_allocation": "500"}
    approved = [store.check(intent(f"c{i}", **capital)).outcome for i in range(6)]
    assert approved == ["APPROVED"] * 5 + ["DEPLOYMENT_CAPITAL_LIMIT"]
    # Another tenant, whose deployment is also long 1 ETH-USD at 100: 400 are left.
    positions = [snapshot("0", 0), snapshot("1", 1, instrument="ETH-USD", price="100")]
    store.put_policy(
        tenant="t2",
        maxOrderNotional="100000",
        maxPositionNotional="100000",
        markMaxAgeSeconds=3600,
    )
    results = [
        store.check(intent(f"e{i}", positions=positions, **capital), tenant="t2").outcome
        for i in range(5)
    ]
    assert results == ["APPROVED"] * 4 + ["DEPLOYMENT_CAPITAL_LIMIT"]


def test_positions_come_from_the_ledger_and_count_across_deployments(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    # dep-2 of the same account is long 4 (its own intent says so; a sell reserves no buy).
    dep2 = [snapshot("4", 3, deployment="dep-2")]
    assert store.check(intent("d2", deployment_id="dep-2", side="sell", positions=dep2)).approved
    # dep-1's intents do not carry dep-2's position; the account's position still counts it.
    decided = [store.check(intent(f"d1-{i}")) for i in range(2)]
    assert outcomes(decided) == ["APPROVED", "POSITION_NOTIONAL_LIMIT"]
    assert counted(decided[1])["accountPosition"] == "4"


def test_an_intent_without_snapshots_uses_its_own_figures(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    plain: dict[str, Any] = {"positions": [], "account_position_quantity": "3"}
    # Nothing reserved is added: the caller's own figures, as older callers sent them.
    decided = [store.check(intent(f"p{i}", quantity="2", **plain)) for i in range(3)]
    assert outcomes(decided) == ["APPROVED"] * 3
    assert counted(decided[0])["source"] == "intent"
    # Its approvals still reserve for callers that do send snapshots.
    assert store.check(intent("n1")).outcome == "POSITION_NOTIONAL_LIMIT"


def test_an_instrument_outside_the_deployment_is_refused(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    decided = store.check(
        intent("x1", instrument="ETH-USD", deployment_instruments=["BTC-USD"], positions=[])
    )
    assert decided.outcome == "DEPLOYMENT_INSTRUMENT_NOT_ALLOWED"
    assert decided.breaches[0].limit == "deployment.instruments"
    assert store.check(intent("x2", deployment_instruments=["BTC-USD"])).approved


# -- concurrency -----------------------------------------------------------------------------


async def _race(urls: list[str], orders: list[risk_pb2.OrderIntent]) -> list[str]:
    """CheckOrder for every order at once, spread over one risk servicer per database
    handle (each its own writer, as separate risk processes are)."""
    databases = [Database(url, name="risk") for url in urls]
    servicers = []
    for db in databases:
        db.start()
        box = Outbox(db, "risk", 10_000)
        servicers.append(RiskServicer(db, box, Enforcer(db, box, cast(Any, None))))

    async def ask(i: int, order: risk_pb2.OrderIntent) -> str:
        corr = correlation.Correlation(request_id=f"req_race_{i:04d}", tenant_id="t1")
        with correlation.bound(corr):
            decision = await servicers[i % len(servicers)].CheckOrder(
                risk_pb2.CheckOrderRequest(order=order), cast(Any, None)
            )
        return decision.outcome

    try:
        return list(await asyncio.gather(*(ask(i, o) for i, o in enumerate(orders))))
    finally:
        for db in databases:
            db.close()


def test_concurrent_orders_never_approve_past_the_position_limit(
    store: RiskStore, database_url: str
) -> None:
    store.put_policy(**FIVE_UNITS)
    # Marks as fresh as the servicer's clock: over RPC the checks run at the current time.
    orders = [intent(f"r{i:02d}", at=utcnow()) for i in range(20)]
    results = Counter(asyncio.run(_race([database_url, database_url], orders)))
    assert results["APPROVED"] == 5, results
    assert set(results) <= {"APPROVED", "POSITION_NOTIONAL_LIMIT", "RISK_UNDECIDED"}
    held = store.open_orders()
    assert sum(r.remaining for r in held) == 5


def test_concurrent_resting_orders_never_exceed_max_open_orders(
    store: RiskStore, database_url: str
) -> None:
    store.put_policy(**{**FIVE_UNITS, "maxOpenOrders": 3, "priceCollarPct": "50"})
    orders = [intent(f"q{i}", type="limit", limit_price="90", at=utcnow()) for i in range(10)]
    results = Counter(asyncio.run(_race([database_url, database_url], orders)))
    assert results["APPROVED"] == 3, results
    assert len(store.open_orders()) == 3


def test_the_ledger_is_merged_in_the_decision(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    store.check(intent("m1", positions=[snapshot("2", 4)]))
    held = store.run(lambda c: ledger.get(c, "t1", "dep-1", "BTC-USD"))
    assert (held.quantity, held.version, held.price) == (D(2), 4, D(100))
    # A later intent with an older snapshot does not move it back.
    decided = store.check(intent("m2", positions=[snapshot("0", 3)]), T0 + timedelta(seconds=1))
    assert counted(decided)["position"] == "2"
    assert store.run(lambda c: ledger.get(c, "t1", "dep-1", "BTC-USD")).version == 4
