"""Settlements convert or release reservations: idempotent, in any order, audited when an
approved order was never executed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from google.protobuf import json_format

from gate4.risk.v1 import risk_pb2
from services.risk import ledger, reservations, settlement
from services.risk.enforcement import Enforcer
from services.risk.servicer import RiskServicer
from services.runtime import correlation, errors
from tests.risk.conftest import T0, RiskStore, intent, snapshot

D = Decimal
FIVE_UNITS: dict[str, Any] = {
    "maxPositionNotional": "500",
    "maxOrderNotional": "500",
    "maxOrderQuantity": "10",
    "markMaxAgeSeconds": 3600,
}


def settle(store: RiskStore, order_id: str, **fields: Any) -> settlement.Applied:
    """SettleOrder as execution sends it (account acc-1, deployment dep-1)."""
    values: dict[str, Any] = {
        "order_id": order_id,
        "account_id": "acc-1",
        "deployment_id": "dep-1",
    }
    values.update(fields)
    parsed = settlement.parse(risk_pb2.SettleOrderRequest(**values))
    at = T0 + timedelta(seconds=1)
    return store.run(lambda c: settlement.apply(c, store.outbox, store.books, "t1", parsed, at))  # type: ignore[no-any-return]


def held(store: RiskStore, order_id: str) -> reservations.Reservation:
    found = store.run(lambda c: reservations.find(c, "t1", order_id))
    assert found is not None
    return found  # type: ignore[no-any-return]


def test_fills_convert_the_reservation_into_the_position(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    assert store.check(intent("big", quantity="4")).approved
    assert store.check(intent("more", quantity="2")).outcome == "POSITION_NOTIONAL_LIMIT"
    # Two units filled: the position is 2 and 2 stay reserved; still 4 counted.
    applied = settle(store, "big", filled_quantity="2", position=snapshot("2", 1))
    assert applied == settlement.Applied(known=True, changed=True)
    assert (held(store, "big").filled, held(store, "big").remaining) == (D(2), D(2))
    assert store.check(intent("more2", quantity="2", positions=[snapshot("2", 1)])).outcome == (
        "POSITION_NOTIONAL_LIMIT"
    )
    # Closed after 3 filled (the rest cancelled): position 3, nothing reserved.
    settle(store, "big", filled_quantity="3", closed=True, position=snapshot("3", 2))
    assert (held(store, "big").state, held(store, "big").remaining) == ("closed", D(0))
    assert store.check(intent("more3", quantity="2", positions=[snapshot("3", 2)])).approved


def test_settlements_are_idempotent_and_never_move_back(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    store.check(intent("o1", quantity="3"))
    settle(store, "o1", filled_quantity="2", position=snapshot("2", 2))
    # The same settlement again, then an older one that arrives late: nothing changes.
    assert settle(store, "o1", filled_quantity="2", position=snapshot("2", 2)).changed is False
    assert settle(store, "o1", filled_quantity="1", position=snapshot("1", 1)).changed is False
    assert held(store, "o1").filled == 2
    position = store.run(lambda c: ledger.get(c, "t1", "dep-1", "BTC-USD"))
    assert (position.quantity, position.version) == (D(2), 2)
    settle(store, "o1", filled_quantity="3", closed=True, position=snapshot("3", 3))
    # Settling a closed order is a no-op, whatever it says.
    assert settle(store, "o1", filled_quantity="0", not_executed_reason="late").changed is False
    assert held(store, "o1").state == "closed"
    assert store.events("risk.decision.unexecuted") == []


def test_an_order_execution_refused_is_released_and_audited(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    decision = store.check(intent("o2", quantity="5"))
    assert store.check(intent("o3")).outcome == "POSITION_NOTIONAL_LIMIT"
    settle(store, "o2", not_executed_reason="the deployment stopped before placement")
    assert (held(store, "o2").state, held(store, "o2").remaining) == ("not_executed", D(0))
    assert store.check(intent("o4")).approved
    (event,) = store.events("risk.decision.unexecuted")
    assert (event.outcome, event.reason) == (
        "NOT_EXECUTED",
        "the deployment stopped before placement",
    )
    assert (event.order_id, event.account_id, event.deployment_id) == ("o2", "acc-1", "dep-1")
    data = json_format.MessageToDict(event.data)
    assert data["decisionId"] == decision.decision_id and data["releasedQuantity"] == "5"
    assert event.policy_version == "risk-policy.v1@1"
    # A repeat is idempotent: one event.
    settle(store, "o2", not_executed_reason="the deployment stopped before placement")
    assert len(store.events("risk.decision.unexecuted")) == 1


def test_an_unknown_order_only_moves_the_position(store: RiskStore) -> None:
    applied = settle(store, "ord_flatten", filled_quantity="1", position=snapshot("-1", 5))
    assert applied == settlement.Applied(known=False)
    position = store.run(lambda c: ledger.get(c, "t1", "dep-1", "BTC-USD"))
    assert (position.quantity, position.version) == (D(-1), 5)


def test_a_settlement_for_another_decision_leaves_the_reservation(store: RiskStore) -> None:
    store.put_policy(**FIVE_UNITS)
    decision = store.check(intent("o5", quantity="2"))
    applied = settle(store, "o5", closed=True, decision_id="dec_older", position=snapshot("0", 1))
    assert applied == settlement.Applied(known=True)
    assert held(store, "o5").state == "open"
    settle(store, "o5", closed=True, decision_id=decision.decision_id)
    assert held(store, "o5").state == "closed"


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"order_id": ""}, "orderId"),
        ({"account_id": ""}, "accountId"),
        ({"filled_quantity": "-1"}, "filledQuantity"),
        ({"filled_quantity": "lots"}, "filledQuantity"),
        ({"position": risk_pb2.PositionSnapshot(instrument="btc")}, "position.instrument"),
        ({"position": snapshot(version=-2)}, "position.version"),
    ],
)
def test_a_malformed_settlement_is_refused(fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"order_id": "o1", "account_id": "acc-1", "deployment_id": "dep-1"}
    values.update(fields)
    with pytest.raises(errors.ValidationFailed) as excinfo:
        settlement.parse(risk_pb2.SettleOrderRequest(**values))
    assert field in [p.field for p in excinfo.value.field_errors]


def test_the_settle_order_rpc_answers_whether_risk_knows_the_order(running: RiskStore) -> None:
    running.put_policy(**FIVE_UNITS)
    running.check(intent("o9", quantity="2"))
    servicer = RiskServicer(
        running.db, running.outbox, Enforcer(running.db, running.outbox, cast(Any, None))
    )

    async def settle_rpc(order_id: str, **fields: Any) -> risk_pb2.SettleOrderResponse:
        request = risk_pb2.SettleOrderRequest(
            order_id=order_id, account_id="acc-1", deployment_id="dep-1", **fields
        )
        with correlation.bound(correlation.Correlation(request_id="req_settle", tenant_id="t1")):
            return await servicer.SettleOrder(request, cast(Any, None))

    assert asyncio.run(settle_rpc("o9", filled_quantity="2", closed=True)).known is True
    assert held(running, "o9").state == "closed"
    assert asyncio.run(settle_rpc("nobody", position=snapshot("1", 9))).known is False
    with pytest.raises(errors.ValidationFailed):
        asyncio.run(settle_rpc("o9", filled_quantity="-2"))
