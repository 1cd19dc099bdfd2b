"""Deployment commands with in-memory risk and venue: create, and stop with its flatten."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gate4.execution.v1 import execution_pb2
from services.execution.idempotency import Progress
from services.runtime import errors, outcomes
from services.runtime.resilience import ManualClock
from services.runtime.storage import Database
from tests.execution import rows
from tests.execution.fakes import Rig, acting, make_rig
from tests.execution.rows import T0
from tests.execution.test_placement import deploy, intent, place


@pytest.fixture
def rig(db: Database) -> Rig:
    return make_rig(db)


def stop(rig: Rig, deployment_id: str, *, flatten: bool) -> Any:
    async def go() -> Any:
        with acting():
            return await rig.flows.deployments.stop(
                execution_pb2.StopDeploymentRequest(
                    deployment_id=deployment_id, flatten=flatten, reason="done for today"
                ),
                None,
                Progress(),
            )

    return asyncio.run(go())


def test_create_runs_at_once_and_is_audited(rig: Rig) -> None:
    async def go() -> execution_pb2.Deployment:
        with acting():
            return await rig.flows.deployments.create(
                execution_pb2.CreateDeploymentRequest(
                    strategy_id="s1",
                    account_id="acc-1",
                    instruments=["BTC-USD"],
                    capital_allocation="1000",
                ),
                "dep_new",
                None,
                Progress(),
            )

    created = asyncio.run(go())
    assert (created.state, created.mode, created.equity) == ("running", "paper", "1000")
    assert rig.types() == ["deployment.created", "deployment.started"]


def test_stop_cancels_open_orders_and_flattens(rig: Rig) -> None:
    dep = deploy(rig)
    place(rig, intent(dep, qty="3"))
    resting = place(rig, intent(dep, qty="1", type="limit", limit="90"))
    stopped = stop(rig, dep, flatten=True)
    assert stopped.state == "stopped"
    assert stopped.positions[0].quantity == "0"
    (ended,) = rig.data("deployment.stopped")
    assert ended["cancelledOrderIds"] == [resting.order_id]
    assert len(ended["flattenOrderIds"]) == 1
    # Risk hears of the cancel (released) and of the flatten's fill (position flat).
    closed = {s.order_id for s in rig.risk.settlements if s.closed}
    assert resting.order_id in closed
    assert rig.risk.settlements[-1].position.quantity == "0"


def test_stop_proceeds_when_risk_cannot_answer(rig: Rig) -> None:
    dep = deploy(rig)
    place(rig, intent(dep, qty="2"))
    rig.risk.down = True
    stopped = stop(rig, dep, flatten=True)
    assert stopped.state == "stopped" and stopped.positions[0].quantity == "0"
    (stopping,) = [e for e in rig.events() if e.type == "deployment.stopping"]
    assert stopping.outcome == "RISK_UNAVAILABLE"


def test_a_stopped_deployment_takes_no_orders(rig: Rig) -> None:
    dep = deploy(rig)
    stop(rig, dep, flatten=False)
    with pytest.raises(errors.StateConflict, match="orders need a running deployment"):
        place(rig, intent(dep))
    assert rig.risk.intents == []


def test_a_stop_waits_for_an_order_in_flight_on_the_clock_then_settles_it(db: Database) -> None:
    """A stop polls for in-flight orders' venue answers on the flows' clock, for one command
    lease: past it, it settles them by client order id itself and finishes (no real wait)."""
    clock = ManualClock(T0)
    rig = make_rig(db, clock=clock)
    lease = rig.flows.settings.command_lease
    dep = rows.deploy(db)
    in_flight = rows.pending(db, dep, lease_until=T0 + lease)

    async def scenario() -> execution_pb2.Deployment:
        with acting():
            stopping = asyncio.create_task(
                rig.flows.deployments.stop(
                    execution_pb2.StopDeploymentRequest(deployment_id=dep, reason="done"),
                    None,
                    Progress(),
                )
            )
        await clock.sleeping()
        clock.advance(lease)  # the whole lease, not past it: the stop still waits
        await clock.sleeping()
        assert not stopping.done()
        clock.advance(0.05)  # the next poll is past the lease
        return await stopping

    stopped = asyncio.run(scenario())
    assert stopped.state == "stopped"
    settled = rows.order(db, in_flight)
    assert (settled.status, settled.outcome) == ("rejected", outcomes.VENUE_NOT_RECEIVED)
    assert rig.venue.submitted == []
