"""Decisions in the database: the order-rate window with explicit clocks, and the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from services.risk import checks, pretrade, versions
from tests.risk.conftest import RiskStore, intent
from tests.support.risk_rig import policy_doc

T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)


def order(order_id: str, **fields: Any) -> pretrade.Command:
    context = checks.OrderContext(
        instrument="BTC-USD",
        side="buy",
        type="market",
        quantity=Decimal(1),
        limit_price=None,
        reduce_only=False,
        position=Decimal(0),
        account_position=Decimal(0),
        account_open_orders=0,
        capital_allocation=None,
        deployment_gross_exposure=Decimal(0),
        mark_price=Decimal(1000),
        mark_time=fields.pop("mark_time", T0),
    )
    return pretrade.Command(
        kind=pretrade.ORDER_SUBMIT,
        tenant_id="t1",
        account_id="acc-1",
        deployment_id="dep-1",
        order_id=order_id,
        order=context,
    )


def put(store: RiskStore, **limits: Any) -> None:
    doc = policy_doc(**limits)
    store.run(
        lambda c: versions.put_version(
            c, tenant_id="t1", account_id="", document=doc, author="olga", reason="r", now=T0
        )
    )


def decide(store: RiskStore, command: pretrade.Command, now: datetime) -> str:
    decision = store.run(lambda c: pretrade.decide(c, store.outbox, store.books, command, now))
    return str(decision.outcome)


def test_the_order_rate_window_slides(store: RiskStore) -> None:
    put(store, orderRate={"maxOrders": 2, "windowSeconds": 10}, markMaxAgeSeconds=3600)
    times = [0, 1, 2, 9.999, 10, 10.5, 11.5]
    outcomes = [
        decide(store, order(f"o{i}"), T0 + timedelta(seconds=s)) for i, s in enumerate(times)
    ]
    # Approved at 0 and 1; refused until the first leaves the window at 10; then 11.5 waits
    # for the one at 1... which left at 11: approved.
    assert outcomes == [
        "APPROVED",
        "APPROVED",
        "ORDER_RATE_LIMIT",
        "ORDER_RATE_LIMIT",
        "APPROVED",
        "ORDER_RATE_LIMIT",
        "APPROVED",
    ]


def test_each_decision_is_one_audit_event_in_the_same_transaction(store: RiskStore) -> None:
    assert decide(store, order("o1"), T0) == "POLICY_INVALID"
    put(store)
    assert decide(store, order("o2", mark_time=T0 - timedelta(hours=1)), T0) == "MARK_STALE"
    events = [e for e in store.events() if e.type == "risk.decision"]
    assert [(e.order_id, e.outcome, e.policy_version) for e in events] == [
        ("o1", "POLICY_INVALID", ""),
        ("o2", "MARK_STALE", "risk-policy.v1@1"),
    ]
    assert all(e.tenant_id == "t1" and e.request_id for e in events)


# -- one decision per order ----------------------------------------------------------------


def test_deciding_an_order_again_voids_the_earlier_decision(store: RiskStore) -> None:
    store.put_policy(maxPositionNotional="500", maxOrderNotional="500", markMaxAgeSeconds=3600)
    first = store.check(intent("ord_again", quantity="3"))
    # Execution resumed the command after a crash and asks again for the same order.
    second = store.check(intent("ord_again", quantity="3"), T0 + timedelta(seconds=40))
    assert first.approved and second.approved
    assert first.decision_id != second.decision_id
    # One reservation (the second's): 2 more units fit under the 5 the limit allows, 3 not.
    held = store.open_orders()
    assert [(r.order_id, r.decision_id, r.remaining) for r in held] == [
        ("ord_again", second.decision_id, Decimal(3))
    ]
    assert store.check(intent("ord_3", quantity="3")).outcome == "POSITION_NOTIONAL_LIMIT"
    assert store.check(intent("ord_2", quantity="2")).approved

    trail = [
        (e.type, e.outcome, e.order_id)
        for e in store.events("risk.decision", "risk.decision.voided")
        if e.order_id == "ord_again"
    ]
    assert trail == [
        ("risk.decision", "APPROVED", "ord_again"),
        ("risk.decision.voided", "VOIDED", "ord_again"),
        ("risk.decision", "APPROVED", "ord_again"),
    ]
    (voided,) = store.events("risk.decision.voided")
    data = json_format.MessageToDict(voided.data)
    assert data["decisionId"] == first.decision_id
    assert data["supersededBy"] == second.decision_id
    assert (data["previousOutcome"], data["releasedQuantity"]) == ("APPROVED", "3")
    assert "asked about again" in voided.reason and voided.policy_version == "risk-policy.v1@1"


def test_a_refused_decision_is_voided_too_and_the_rate_counts_the_order_once(
    store: RiskStore,
) -> None:
    store.put_policy(orderRate={"maxOrders": 1, "windowSeconds": 60}, markMaxAgeSeconds=3600)
    refused = store.check(intent("ord_x", mark=""))
    assert refused.outcome == "MARK_MISSING"
    approved = store.check(intent("ord_x"))
    again = store.check(intent("ord_x"))
    assert approved.approved and again.approved
    assert store.check(intent("ord_y")).outcome == "ORDER_RATE_LIMIT"
    voided = store.events("risk.decision.voided")
    assert [json_format.MessageToDict(e.data)["decisionId"] for e in voided] == [
        refused.decision_id,
        approved.decision_id,
    ]
    # Every decision but the last is voided: exactly one stands for the order.
    decided = [
        json_format.MessageToDict(e.data)["decisionId"]
        for e in store.events("risk.decision")
        if e.order_id == "ord_x"
    ]
    standing = set(decided) - {json_format.MessageToDict(e.data)["decisionId"] for e in voided}
    assert standing == {again.decision_id}
