"""The unit of work: one transaction per step, events with it, risk told only after commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from gate4.risk.v1 import risk_pb2
from services.execution.unitofwork import UnitOfWork, Work
from services.runtime import errors
from services.runtime.outbox import Headroom, Outbox
from services.runtime.storage import Database
from tests.execution.fakes import FakeRisk, acting


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _db_error(sqlstate: str) -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError("INSERT ...", {}, _Orig(sqlstate))


def run(uow: UnitOfWork, op: Any, **kw: Any) -> Any:
    async def go() -> Any:
        with acting():
            return await uow.run(op, **kw)

    return asyncio.run(go())


@pytest.fixture
def uow(db: Database) -> UnitOfWork:
    return UnitOfWork(db, Outbox(db, "execution", 3, reserve=2), FakeRisk())


def settlement(order_id: str) -> risk_pb2.SettleOrderRequest:
    return risk_pb2.SettleOrderRequest(order_id=order_id, closed=True)


def test_events_commit_with_the_step_and_risk_hears_after(uow: UnitOfWork) -> None:
    def op(work: Work) -> str:
        work.event("order.accepted", outcome="APPROVED")
        work.settle(settlement("ord_1"))
        return "done"

    assert run(uow, op) == "done"
    assert asyncio.run(uow.box.backlog()) == 1
    assert isinstance(uow.risk, FakeRisk)
    assert [s.order_id for s in uow.risk.settlements] == ["ord_1"]


def test_a_failed_step_records_nothing_and_tells_risk_nothing(uow: UnitOfWork) -> None:
    def op(work: Work) -> None:
        work.event("order.accepted", outcome="APPROVED")
        work.settle(settlement("ord_1"))
        raise errors.StateConflict("no")

    with pytest.raises(errors.StateConflict):
        run(uow, op)
    assert asyncio.run(uow.box.backlog()) == 0
    assert isinstance(uow.risk, FakeRisk) and uow.risk.settlements == []


def test_contention_victims_are_retried_and_only_the_committed_attempt_counts(
    uow: UnitOfWork,
) -> None:
    attempts: list[int] = []

    def op(work: Work) -> int:
        attempts.append(1)
        work.settle(settlement(f"ord_{len(attempts)}"))
        if len(attempts) < 3:
            raise _db_error("40P01" if len(attempts) == 1 else "23505")
        return len(attempts)

    assert run(uow, op) == 3
    assert isinstance(uow.risk, FakeRisk)
    assert [s.order_id for s in uow.risk.settlements] == ["ord_3"]


def test_other_database_errors_are_not_retried(uow: UnitOfWork) -> None:
    attempts: list[int] = []

    def op(work: Work) -> None:
        attempts.append(1)
        raise _db_error("23502")  # not_null_violation: running it again cannot help

    with pytest.raises(sa.exc.DBAPIError):
        run(uow, op)
    assert len(attempts) == 1


def test_a_guarded_step_fails_closed_at_the_audit_backlog_bound(uow: UnitOfWork) -> None:
    def fill(work: Work) -> None:
        for _ in range(3):
            work.event("sandbox.marks", outcome="ACCEPTED")

    run(uow, fill)
    with pytest.raises(errors.DependencyUnavailable, match="audit backlog is full"):
        run(uow, lambda w: w.event("order.accepted"), guard=Headroom.BOUND)
    # Unguarded steps (fills) are still recorded: a fill must never be lost.
    run(uow, lambda w: w.event("order.filled"))
    assert asyncio.run(uow.box.backlog()) == 4


def test_a_risk_reducing_step_uses_the_reserve_which_is_bounded_too(uow: UnitOfWork) -> None:
    run(uow, lambda w: [w.event("sandbox.marks") for _ in range(3)])
    # At the bound (3): a stop or a flatten still passes, into the reserve (2 more).
    run(uow, lambda w: w.event("deployment.stopping"), guard=Headroom.RESERVE)
    run(uow, lambda w: w.event("order.accepted"), guard=Headroom.RESERVE)
    with pytest.raises(errors.DependencyUnavailable, match="its reserve"):
        run(uow, lambda w: w.event("order.accepted"), guard=Headroom.RESERVE)
    assert asyncio.run(uow.box.backlog()) == 5


def test_answers_are_noted_only_below_the_bound(uow: UnitOfWork) -> None:
    # A refusal or a replay records an answer, not a change: it never eats the reserve.
    run(uow, lambda w: w.note("order.rejected", outcome="RISK_UNAVAILABLE"))
    run(uow, lambda w: [w.event("sandbox.marks") for _ in range(2)])
    assert asyncio.run(uow.box.backlog()) == 3  # at the bound
    run(uow, lambda w: w.note("order.rejected", outcome="RISK_UNAVAILABLE"))
    assert asyncio.run(uow.box.backlog()) == 3
