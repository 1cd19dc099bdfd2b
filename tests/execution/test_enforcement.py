"""Kill-switch enforcement: each engagement is enforced once, and its answer replayed."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from services.execution import store
from services.execution.servicer import ExecutionServicer
from services.runtime.config import Settings
from services.runtime.storage import Database
from tests.execution.fakes import acting, make_rig
from tests.execution.test_placement import deploy, intent, place


class FakeContext:
    def __init__(self) -> None:
        self.metadata: list[Any] = []

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.metadata.append(metadata)


def enforce(servicer: ExecutionServicer, request: Any, context: FakeContext) -> Any:
    async def go() -> Any:
        with acting():
            return await servicer.EnforceKillSwitch(request, context)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_one_engagement_is_enforced_once_and_repeats_get_its_answer(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)
    place(rig, intent(dep, qty="2"))
    resting = place(rig, intent(dep, qty="1", type="limit", limit="90"))
    servicer = ExecutionServicer(db, rig.flows, Settings())
    request = execution_pb2.EnforceKillSwitchRequest(
        scope="deployment", scope_id=dep, flatten=True, reason="drawdown", generation=1
    )
    first_context, second_context = FakeContext(), FakeContext()
    first = enforce(servicer, request, first_context)
    second = enforce(servicer, request, second_context)
    assert list(first.cancelled_order_ids) == [resting.order_id]
    assert len(first.flatten_order_ids) == 1
    assert second == first
    assert first_context.metadata == [] and second_context.metadata != []
    flattens = db.read_sync(
        lambda c: (
            c.execute(
                sa.select(store.orders.c.order_id).where(
                    store.orders.c.deployment_id == dep, store.orders.c.reduce_only.is_(True)
                )
            )
            .scalars()
            .all()
        )
    )
    assert flattens == list(first.flatten_order_ids)
    assert rig.types().count("killswitch.enforced") == 1
    assert db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD")).quantity == 0


def test_a_new_engagement_is_enforced_again(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)
    servicer = ExecutionServicer(db, rig.flows, Settings())
    for generation in (1, 2):
        enforce(
            servicer,
            execution_pb2.EnforceKillSwitchRequest(
                scope="deployment", scope_id=dep, reason="manual", generation=generation
            ),
            FakeContext(),
        )
    assert rig.types().count("killswitch.enforced") == 2
