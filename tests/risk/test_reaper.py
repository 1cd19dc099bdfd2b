"""The reservation reaper asks execution about reservations nothing has settled: it applies
what execution reports, releases what execution never recorded, keeps everything when
execution cannot answer. One pass at a time, with explicit clocks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
from google.protobuf import json_format

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.risk import reservations
from services.risk.reaper import NEVER_RECORDED, Pass, Reaper
from services.runtime import correlation
from tests.risk.conftest import T0, RiskStore, intent, snapshot

POLICY: dict[str, Any] = {"maxOpenOrders": 100, "markMaxAgeSeconds": 3600}


class FakeExecution:
    """GetSettlements as execution answers it: what it knows of each order, by tenant."""

    def __init__(self) -> None:
        self.known: dict[str, risk_pb2.SettleOrderRequest] = {}
        self.asked: list[tuple[str, list[str]]] = []
        self.down = False

    async def GetSettlements(
        self, request: execution_pb2.GetSettlementsRequest, **options: Any
    ) -> execution_pb2.GetSettlementsResponse:
        self.asked.append((correlation.current().tenant_id, sorted(request.order_ids)))
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="connection refused",
            )
        reply = execution_pb2.GetSettlementsResponse()
        for order_id in request.order_ids:
            if order_id in self.known:
                reply.settlements.append(self.known[order_id])
            else:
                reply.unknown_order_ids.append(order_id)
        return reply


@pytest.fixture
def execution() -> FakeExecution:
    return FakeExecution()


@pytest.fixture
def reaper(running: RiskStore, execution: FakeExecution) -> Reaper:
    return Reaper(
        running.db,
        running.outbox,
        cast(Any, execution),
        check_after=timedelta(seconds=30),
        release_after=timedelta(seconds=60),
    )


def reap(reaper: Reaper, seconds: float) -> Pass:
    return asyncio.run(reaper.reap_once(T0 + timedelta(seconds=seconds)))


def state(store: RiskStore, order_id: str, tenant: str = "t1") -> str:
    held = store.run(lambda c: reservations.find(c, tenant, order_id))
    return str(held.state)


def test_the_reaper_settles_releases_and_keeps(
    running: RiskStore, reaper: Reaper, execution: FakeExecution
) -> None:
    store = running
    store.put_policy(**POLICY)
    store.put_policy(tenant="t2", **POLICY)
    filled = store.check(intent("filled", quantity="2"))
    lost = store.check(intent("lost"))
    store.check(intent("young"), T0 + timedelta(seconds=40))
    store.check(intent("theirs"), tenant="t2")
    execution.known["filled"] = risk_pb2.SettleOrderRequest(
        order_id="filled",
        filled_quantity="2",
        closed=True,
        position=snapshot("2", 1),
        decision_id=filled.decision_id,
    )

    # Nothing is due before it went unsettled for 30 s.
    assert reap(reaper, 10) == Pass()
    assert execution.asked == []

    first = reap(reaper, 45)
    # One call per tenant, as that tenant; the young order is not due yet.
    assert sorted(execution.asked) == [("t1", ["filled", "lost"]), ("t2", ["theirs"])]
    assert (first.settled, first.released) == (1, 0)
    assert state(store, "filled") == "closed"
    # Execution does not know "lost", but its approval is only 45 s old: kept.
    assert state(store, "lost") == "open"

    execution.asked.clear()
    second = reap(reaper, 75)
    assert ("t1", ["lost", "young"]) in execution.asked
    assert second.released == 2  # "lost" and t2's "theirs"; "young" is 35 s old
    assert (state(store, "lost"), state(store, "young")) == ("not_executed", "open")
    assert state(store, "theirs", "t2") == "not_executed"
    events = [e for e in store.events("risk.decision.unexecuted") if e.order_id == "lost"]
    (event,) = events
    assert (event.outcome, event.reason, event.tenant_id) == ("NOT_EXECUTED", NEVER_RECORDED, "t1")
    assert json_format.MessageToDict(event.data)["decisionId"] == lost.decision_id


def test_execution_unreachable_keeps_every_reservation(
    running: RiskStore, reaper: Reaper, execution: FakeExecution
) -> None:
    running.put_policy(**POLICY)
    running.check(intent("o1"))
    execution.down = True
    result = reap(reaper, 3600)
    assert (result.asked, result.kept, result.released) == (1, 1, 0)
    assert state(running, "o1") == "open"
    assert running.events("risk.decision.unexecuted") == []
    # Back again: the next pass releases it.
    execution.down = False
    assert reap(reaper, 3601).released == 1


def test_a_re_decided_order_is_not_released_for_its_old_decision(
    running: RiskStore, reaper: Reaper, execution: FakeExecution
) -> None:
    running.put_policy(**POLICY)
    running.check(intent("o1"))
    # Asked again later (a resumed command): the row's decision is new, so it is not due.
    running.check(intent("o1"), T0 + timedelta(seconds=100))
    assert reap(reaper, 110).asked == 0
    assert reap(reaper, 140).released == 0  # due, unknown, but only 40 s old
    assert state(running, "o1") == "open"
