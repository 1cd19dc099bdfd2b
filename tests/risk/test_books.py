"""Books: decisions from state held in memory, trusted only while the stamps match.

Each `Books` stands for one risk process; two of them on one database are two replicas.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from google.protobuf import json_format
from prometheus_client import REGISTRY

from gate4.risk.v1 import risk_pb2
from services.risk import drawdown, killswitch, pretrade, ratelimit, reservations, settlement
from services.risk.books import Books
from services.risk.checks import Position
from services.risk.drawdown import EquityReport
from services.risk.reservations import Reservation
from tests.risk.conftest import T0, RiskStore, intent, snapshot, submit


def decide(store: RiskStore, books: Books, order_id: str, **fields: Any) -> risk_pb2.RiskDecision:
    """order_id's decision by the process whose books these are, at T0."""
    command = submit(intent(order_id, **fields))
    return store.run(lambda c: pretrade.decide(c, store.outbox, books, command, T0))  # type: ignore[no-any-return]


def settle(
    store: RiskStore,
    books: Books,
    order_id: str,
    *,
    filled: str = "0",
    closed: bool = False,
    position: Position | None = None,
) -> None:
    done = settlement.Settlement(order_id, "acc-1", "dep-1", D(filled), closed, position, "", "")
    store.run(lambda c: settlement.apply(c, store.outbox, books, "t1", done, T0))


def outcome(decision: risk_pb2.RiskDecision) -> str:
    return str(decision.outcome)


def exposure(decision: risk_pb2.RiskDecision) -> dict[str, Any]:
    figures: dict[str, Any] = json_format.MessageToDict(decision.evidence)["exposure"]
    return figures


def _counted(result: str) -> float:
    value = REGISTRY.get_sample_value("gate4_risk_book_decisions_total", {"result": result})
    return value or 0.0


def test_a_current_book_decides_without_loading_again(store: RiskStore) -> None:
    store.put_policy()
    books = Books()
    before = {r: _counted(r) for r in ("trusted", "loaded", "stale")}
    decided = [decide(store, books, f"o{i}") for i in range(3)]
    assert [outcome(d) for d in decided] == ["APPROVED"] * 3
    assert (books.loads, books.hits) == (1, 2)
    assert {r: _counted(r) - before[r] for r in before} == {"trusted": 2, "loaded": 1, "stale": 0}
    # ...and still counts what the earlier decisions reserved.
    assert exposure(decided[2])["openOrders"] == 2
    assert exposure(decided[2])["openBuys"] == "2"


def test_another_process_decision_makes_the_book_load_again(store: RiskStore) -> None:
    """Two replicas take turns on one account: each decision counts the other's."""
    store.put_policy(maxOpenOrders=3)
    first, second = Books(), Books()
    assert outcome(decide(store, first, "o1")) == "APPROVED"
    assert outcome(decide(store, second, "o2")) == "APPROVED"
    assert outcome(decide(store, first, "o3")) == "APPROVED"
    refused = decide(store, second, "o4")
    assert outcome(refused) == "OPEN_ORDERS_LIMIT", refused.reason
    assert first.loads == 2 and second.loads == 2


def test_another_process_settlement_is_counted(store: RiskStore) -> None:
    store.put_policy(maxOpenOrders=1)
    first, second = Books(), Books()
    assert outcome(decide(store, first, "o1")) == "APPROVED"
    assert outcome(decide(store, first, "o2")) == "OPEN_ORDERS_LIMIT"
    settle(store, second, "o1", closed=True)
    assert outcome(decide(store, first, "o3")) == "APPROVED"
    assert first.loads == 2


def test_a_settlement_of_this_process_updates_the_book_in_place(store: RiskStore) -> None:
    store.put_policy()
    books = Books()
    assert outcome(decide(store, books, "o1")) == "APPROVED"
    filled = Position("dep-1", "BTC-USD", D(1), 1, D(100))
    settle(store, books, "o1", filled="1", closed=True, position=filled)
    second = decide(store, books, "o2", positions=[snapshot("1", 1)])
    assert outcome(second) == "APPROVED"
    assert (books.loads, books.hits) == (1, 1)
    figures = exposure(second)
    assert (figures["position"], figures["openBuys"], figures["openOrders"]) == ("1", "0", 0)


def test_a_policy_change_reaches_every_book(store: RiskStore) -> None:
    store.put_policy()
    books = Books()
    assert decide(store, books, "o1").policy_version == "risk-policy.v1@1"
    store.put_policy(maxOrderQuantity="0.5")
    refused = decide(store, books, "o2")
    assert (outcome(refused), refused.policy_version) == (
        "ORDER_QUANTITY_LIMIT",
        "risk-policy.v1@2",
    )
    assert books.loads == 2


def test_a_kill_switch_reaches_every_book(store: RiskStore) -> None:
    store.put_policy()
    books = Books()
    assert outcome(decide(store, books, "o1")) == "APPROVED"

    def engage(c: Any) -> None:
        killswitch.engage(
            c,
            store.outbox,
            "t1",
            "account",
            "acc-1",
            trigger=killswitch.MANUAL,
            reason="halt",
            by="olga",
            evidence=risk_pb2.BreachEvidence(),
            flatten=False,
            at=T0,
        )

    store.run(engage)
    assert outcome(decide(store, books, "o2")) == "KILL_SWITCH_ENGAGED"
    store.run(
        lambda c: killswitch.release(
            c, store.outbox, "t1", "account", "acc-1", by="olga", reason="ok", at=T0
        )
    )
    assert outcome(decide(store, books, "o3")) == "APPROVED"


def test_a_decision_rolled_back_is_not_counted(store: RiskStore) -> None:
    """The book changed with the op, but its stamp never committed: it loads again."""
    store.put_policy(maxOpenOrders=1)
    books = Books()

    class Abandoned(Exception):
        pass

    command = submit(intent("o1"))

    def abandoned(c: Any) -> None:
        assert pretrade.decide(c, store.outbox, books, command, T0).approved
        raise Abandoned

    with pytest.raises(Abandoned):
        store.run(abandoned)
    assert outcome(decide(store, books, "o2")) == "APPROVED"
    assert books.loads == 2
    assert [r.order_id for r in store.open_orders()] == ["o2"]


def test_equity_reports_update_the_daily_loss_in_place(store: RiskStore) -> None:
    store.put_policy(dailyLossLimit="100")
    books = Books()
    assert outcome(decide(store, books, "o1")) == "APPROVED"

    def report(equity: str, seconds: int) -> None:
        at = T0 + timedelta(seconds=seconds)
        sent = EquityReport("acc-1", "dep-1", D(equity), D(10000), at)
        store.run(lambda c: drawdown.record(c, store.outbox, books, "t1", sent))

    report("10000", 1)
    report("9850", 2)
    refused = decide(store, books, "o2")
    assert outcome(refused) == "DAILY_LOSS_LIMIT", refused.reason
    assert books.loads == 1


def test_books_keep_at_most_their_capacity(store: RiskStore) -> None:
    store.put_policy()
    books = Books(capacity=2)
    for account in ("acc-1", "acc-2", "acc-3"):
        assert outcome(decide(store, books, f"o-{account}", account_id=account)) == "APPROVED"
    assert len(books) == 2
    # The least recent one was dropped and loads again; the newest is still trusted.
    decide(store, books, "o-again", account_id="acc-3")
    assert (books.loads, books.hits) == (3, 1)
    decide(store, books, "o-back", account_id="acc-1")
    assert (books.loads, books.hits) == (4, 1)


def _row(order_id: str, seconds: float, state: str = reservations.OPEN) -> Reservation:
    at = T0 + timedelta(seconds=seconds)
    return Reservation(
        "t1", order_id, "acc-1", "dep-1", "BTC-USD", "buy", D(1), D(100), D(0), "dec", "APPROVED",
        "risk-policy.v1@1", state, at, at,
    )  # fmt: skip


def test_the_rate_window_counts_approved_orders_and_forgets_what_left() -> None:
    rows = [_row("a", 0), _row("b", 5, reservations.CLOSED), _row("c", 6, reservations.REFUSED)]
    window = ratelimit.Window(rows)
    assert window.count(T0 - timedelta(seconds=1)) == 2
    assert window.count(T0 - timedelta(seconds=1), besides="a") == 1
    # An order exactly one window old has left it, and is forgotten.
    assert window.count(T0) == 1 and len(window) == 1
    window.moved(_row("d", 7))
    assert window.count(T0) == 2
    window.moved(_row("d", 7, reservations.NOT_EXECUTED))
    assert window.count(T0) == 1
    assert len(ratelimit.Window(rows, after=T0 + timedelta(seconds=5))) == 0
