"""Decisions in the database: the order-rate window with explicit clocks, and the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.risk import checks, pretrade, versions
from tests.risk.conftest import RiskStore
from tests.risk.rig import policy_doc

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
            c, tenant_id="t1", account_id="", document=doc, author="olga", reason="r"
        )
    )


def decide(store: RiskStore, command: pretrade.Command, now: datetime) -> str:
    decision = store.run(lambda c: pretrade.decide(c, store.outbox, command, now))
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
