"""orders.py on both backends: applying venue reports (deduplicated by fill id), status
transitions, rejection, the open-order counts and the reduce-only guard."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.execution import orders, store
from services.execution.orders import Intent
from services.execution.unitofwork import Work
from services.execution.venue import ExecutionReport
from services.runtime import errors, outcomes
from services.runtime.storage import Database
from tests.execution.fakes import TENANT, Rig, make_rig
from tests.execution.rows import T0, deploy, filled, in_work, order, pending

Applied = tuple[execution_pb2.Order, list[risk_pb2.SettleOrderRequest]]


@pytest.fixture
def rig(db: Database) -> Rig:
    return make_rig(db)


def apply(rig: Rig, order_id: str, report: ExecutionReport) -> Applied:
    """apply_report in one transaction; the order and what risk would be told."""

    def op(work: Work) -> Applied:
        applied = orders.apply_report(work, TENANT, order_id, report, T0)
        return applied, work.settlements

    return in_work(rig.db, rig.box, op)


def position(rig: Rig, deployment_id: str) -> D:
    return rig.db.read_sync(lambda c: store.get_position(c, deployment_id, "BTC-USD")).quantity


def fill_ids(rig: Rig, order_id: str) -> list[str]:
    return rig.db.read_sync(
        lambda c: list(
            c.execute(
                sa.select(store.fills.c.fill_id)
                .where(store.fills.c.order_id == order_id)
                .order_by(store.fills.c.fill_id)
            ).scalars()
        )
    )


def test_a_report_applied_again_adds_no_fill_and_tells_no_one(rig: Rig) -> None:
    """Fills dedupe by fill id: a repeated report changes nothing, records no event and
    settles nothing; a later report adds only the fill not seen yet."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, quantity="3")
    partial = filled(order_id, "1", done=False)
    first, told = apply(rig, order_id, partial)
    assert (first.status, first.filled_quantity) == ("partially_filled", "1")
    assert [s.filled_quantity for s in told] == ["1"] and not told[0].closed
    events = rig.types()

    again, told_again = apply(rig, order_id, partial)
    assert again.status == "partially_filled" and told_again == []
    assert rig.types() == events  # nothing changed: no event
    assert fill_ids(rig, order_id) == [f"fill_{order_id}_0"]
    assert position(rig, dep) == D(1)

    done, told_done = apply(rig, order_id, filled(order_id, "1", "2"))
    assert (done.status, done.filled_quantity, len(done.fills)) == ("filled", "3", 2)
    assert fill_ids(rig, order_id) == [f"fill_{order_id}_0", f"fill_{order_id}_1"]
    assert position(rig, dep) == D(3)  # the first fill is not counted twice
    assert told_done[0].closed and told_done[0].position.quantity == "3"
    # The event of the last report lists only the fill it added.
    assert [f["fillId"] for f in rig.data("order.filled")[-1]["fills"]] == [f"fill_{order_id}_1"]


def test_a_resting_order_is_confirmed_then_cancelled(rig: Rig) -> None:
    """pending -> confirmed `accepted` (audited as resting, lease cleared) -> cancelled;
    the cancel closes the order for risk."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, type_="limit")
    resting, _ = apply(rig, order_id, ExecutionReport(order_id, "open"))
    assert resting.status == "accepted"
    row = rig.db.read_sync(lambda c: store.order_row(c, TENANT, order_id))
    assert row is not None
    assert (row["venue_state"], row["lease_until"]) == (orders.CONFIRMED, None)
    assert rig.types() == ["order.resting"]

    cancelled, told = apply(rig, order_id, ExecutionReport(order_id, "cancelled"))
    assert cancelled.status == "cancelled"
    assert rig.types() == ["order.resting", "order.cancelled"]
    assert told[0].closed and told[0].filled_quantity == "0"


def test_a_venue_rejection_records_its_reason_and_outcome(rig: Rig) -> None:
    """A report `rejected` closes the order with VENUE_REJECTED and the venue's reason."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep)
    rejected, told = apply(
        rig, order_id, ExecutionReport(order_id, "rejected", reason="instrument halted")
    )
    assert (rejected.status, rejected.outcome) == ("rejected", outcomes.VENUE_REJECTED)
    assert rejected.reject_reason == "instrument halted"
    assert told[0].closed and position(rig, dep) == 0


def test_reject_closes_an_order_the_venue_never_had(rig: Rig) -> None:
    """reject() records the given outcome and reason, clears the lease, audits
    order.rejected and tells risk the order closed unfilled."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep)

    def op(work: Work) -> Applied:
        done = orders.reject(
            work,
            TENANT,
            order_id,
            T0,
            outcome=outcomes.VENUE_NOT_RECEIVED,
            reason="never sent",
            attempts=2,
        )
        return done, work.settlements

    rejected, told = in_work(rig.db, rig.box, op)
    assert (rejected.status, rejected.outcome, rejected.reject_reason) == (
        "rejected",
        outcomes.VENUE_NOT_RECEIVED,
        "never sent",
    )
    assert rejected.venue_attempts == 2
    assert order(rig.db, order_id).status == "rejected"
    (event,) = rig.events()
    assert (event.type, event.outcome, event.order_id) == (
        "order.rejected",
        outcomes.VENUE_NOT_RECEIVED,
        order_id,
    )
    assert told[0].closed and told[0].filled_quantity == "0"


def test_a_report_for_an_unknown_order_is_not_found(rig: Rig) -> None:
    """A report for an order this tenant does not have is NOT_FOUND, nothing written."""
    with pytest.raises(errors.NotFound):
        apply(rig, "ord_missing", ExecutionReport("ord_missing", "open"))


def test_open_counts_count_the_deployment_and_its_account(rig: Rig) -> None:
    """(open orders of the deployment, open orders of its account): closed orders and
    other accounts do not count."""
    dep = deploy(rig.db)
    sibling = deploy(rig.db)
    elsewhere = deploy(rig.db, account="acc-2")
    pending(rig.db, dep)
    pending(rig.db, dep, type_="limit")
    pending(rig.db, sibling)
    closed = pending(rig.db, sibling)
    apply(rig, closed, filled(closed, "1"))
    pending(rig.db, elsewhere)

    def counts(deployment_id: str, account_id: str) -> tuple[int, int]:
        return rig.db.read_sync(lambda c: orders.open_counts(c, TENANT, account_id, deployment_id))

    assert counts(dep, "acc-1") == (2, 3)
    assert counts(sibling, "acc-1") == (1, 3)
    assert counts(elsewhere, "acc-2") == (1, 1)
    assert rig.db.read_sync(lambda c: orders.open_counts(c, "t2", "acc-1", dep)) == (0, 0)


def reduce(side: str, quantity: str, deployment_id: str) -> Intent:
    return Intent(deployment_id, "BTC-USD", side, "market", D(quantity), reduce_only=True)


def refused(rig: Rig, deployment_id: str, intent: Intent) -> str:
    """The reduce-only guard's refusal of `intent`, as its message."""
    with pytest.raises(errors.RiskLimitBreached) as refusal:
        rig.db.read_sync(lambda c: orders.check_reduce_only(c, TENANT, deployment_id, intent))
    assert refusal.value.outcome == outcomes.REDUCE_ONLY_VIOLATION
    return refusal.value.detail


def test_reduce_only_needs_a_position_the_reducing_side_and_what_is_left(rig: Rig) -> None:
    """No position, the wrong side, or more than is left once other open reduce-only
    orders are counted is refused; the rest passes."""
    dep = deploy(rig.db)
    assert "no position left" in refused(rig, dep, reduce("sell", "1", dep))
    bought = pending(rig.db, dep, quantity="2")
    apply(rig, bought, filled(bought, "2"))

    assert "would increase" in refused(rig, dep, reduce("buy", "1", dep))
    assert "would flip" in refused(rig, dep, reduce("sell", "3", dep))
    rig.db.read_sync(lambda c: orders.check_reduce_only(c, TENANT, dep, reduce("sell", "2", dep)))

    # An open reduce-only sell of 1.5 reserves that much: only 0.5 is left to reduce.
    pending(rig.db, dep, side="sell", quantity="1.5", reduce_only=True)
    assert rig.db.read_sync(lambda c: orders.reducible(c, TENANT, dep, "BTC-USD")) == D("0.5")
    assert "exceeds the 0.5 left" in refused(rig, dep, reduce("sell", "1", dep))
    rig.db.read_sync(lambda c: orders.check_reduce_only(c, TENANT, dep, reduce("sell", "0.5", dep)))
