"""Placing orders with in-memory risk and venue: what is recorded, and what risk is told."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import pytest
import sqlalchemy as sa

from gate4.risk.v1 import risk_pb2
from services.execution import idempotency, store
from services.execution.app import ExecutionService
from services.execution.idempotency import ROUTE_SUBMIT, Progress
from services.execution.orders import Intent
from services.execution.unitofwork import new_id
from services.runtime import errors
from services.runtime.idempotency import KeyPolicy
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from services.runtime.timeutil import utcnow
from tests.execution import rows
from tests.execution.fakes import TENANT, Rig, acting, make_rig


def deploy(rig: Rig, instruments: tuple[str, ...] = ("BTC-USD",)) -> str:
    """A running deployment created now, with a fresh BTC-USD mark to trade at."""
    now = utcnow()
    deployment_id = rows.deploy(rig.db, at=now, instruments=instruments)
    rig.db.write_sync(lambda c: store.upsert_mark(c, TENANT, "BTC-USD", "100", now))
    return deployment_id


def intent(deployment_id: str, side: str = "buy", qty: str = "1", **kw: Any) -> Intent:
    return Intent(
        deployment_id=deployment_id,
        instrument=kw.get("instrument", "BTC-USD"),
        side=side,
        type=kw.get("type", "market"),
        quantity=D(qty),
        limit_price=D(kw["limit"]) if "limit" in kw else None,
        reduce_only=kw.get("reduce_only", False),
    )


def place(rig: Rig, order: Intent, **kw: Any) -> Any:
    async def run() -> Any:
        with acting():
            return await rig.flows.orders.place(order, new_id("ord"), None, Progress(), **kw)

    return asyncio.run(run())


@pytest.fixture
def rig(db: Database) -> Rig:
    return make_rig(db)


def test_a_filled_order_versions_the_position_and_settles_with_risk(rig: Rig) -> None:
    dep = deploy(rig)
    first = place(rig, intent(dep, qty="2"))
    second = place(rig, intent(dep, qty="1"))
    assert (first.status, second.status) == ("filled", "filled")
    position = rig.db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD"))
    assert position.quantity == D(3)
    assert rig.db.read_sync(lambda c: store.position_versions(c, dep)) == {"BTC-USD": 2}
    # Risk is told each order closed, with the position (and its version) after the fill.
    told = {s.order_id: s for s in rig.risk.settlements}
    assert told[first.order_id].closed and told[first.order_id].filled_quantity == "2"
    assert told[first.order_id].position.quantity == "2"
    assert told[first.order_id].position.version == 1
    assert told[second.order_id].position.version == 2
    assert told[second.order_id].decision_id.startswith("dec_")


def test_the_intent_carries_versioned_positions_and_the_deployment_instruments(rig: Rig) -> None:
    dep = deploy(rig, ("BTC-USD", "ETH-USD"))
    place(rig, intent(dep, qty="2"))
    place(rig, intent(dep, side="sell", qty="1"))
    asked = rig.risk.intents[-1]
    assert list(asked.deployment_instruments) == ["BTC-USD", "ETH-USD"]
    (snapshot,) = asked.positions
    assert (snapshot.instrument, snapshot.quantity, snapshot.version) == ("BTC-USD", "2", 1)
    assert snapshot.price == "100"


def test_an_order_refused_after_approval_is_recorded_and_not_executed(rig: Rig) -> None:
    dep = deploy(rig)

    async def stop_meanwhile(asked: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        # The deployment stops between risk's approval and the order's record.
        await rig.db.write(
            lambda c: c.execute(
                sa.update(store.deployments)
                .where(store.deployments.c.deployment_id == dep)
                .values(state="stopping")
            )
        )
        return rig.risk.approve()

    rig.risk.decide = stop_meanwhile
    with pytest.raises(errors.StateConflict):
        place(rig, intent(dep))
    assert rig.db.read_sync(lambda c: c.execute(sa.select(store.orders)).all()) == []
    (rejected,) = rig.data("order.rejected")
    assert rejected["decisionId"].startswith("dec_") and rejected["notExecuted"] is True
    (told,) = rig.risk.settlements
    assert told.closed and told.not_executed_reason and told.filled_quantity == "0"
    assert told.decision_id == rejected["decisionId"]
    assert rig.venue.submitted == []


def test_a_risk_refusal_is_audited_and_sends_nothing(rig: Rig) -> None:
    dep = deploy(rig)

    async def refuse(asked: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        return risk_pb2.RiskDecision(
            approved=False, outcome="POSITION_NOTIONAL_LIMIT", reason="too big", decision_id="d"
        )

    rig.risk.decide = refuse
    with pytest.raises(errors.RiskLimitBreached) as refused:
        place(rig, intent(dep))
    assert refused.value.outcome == "POSITION_NOTIONAL_LIMIT"
    assert rig.types() == ["order.rejected"]
    assert rig.venue.submitted == [] and rig.risk.settlements == []


def test_an_attempt_whose_key_was_taken_over_records_nothing(rig: Rig) -> None:
    dep = deploy(rig)
    order_id = new_id("ord")
    now = utcnow()

    def claim(owner_lease: float) -> Any:
        return rig.db.write_sync(
            lambda c: idempotency.claim(
                c,
                tenant_id=TENANT,
                route=ROUTE_SUBMIT,
                key="key-takeover",
                digest="d",
                resource_id=order_id,
                now=now,
                policy=KeyPolicy(owner_lease, 86400),
            )
        )

    first = claim(-1)  # its lease has already lapsed
    second = claim(30)  # so this attempt takes the key over
    assert isinstance(first, idempotency.Claim) and isinstance(second, idempotency.Claim)
    assert second.resumed

    async def run() -> None:
        with acting():
            await rig.flows.orders.place(intent(dep), order_id, first, Progress())

    with pytest.raises(errors.IdempotencyInProgress):
        asyncio.run(run())
    assert rig.db.read_sync(lambda c: store.order_row(c, TENANT, order_id)) is None
    assert rig.venue.submitted == [] and rig.risk.settlements == []


def test_a_flatten_proceeds_without_risk_and_settles_nothing_it_was_not_decided(
    rig: Rig,
) -> None:
    dep = deploy(rig)
    place(rig, intent(dep, qty="2"))
    rig.risk.down = True
    rig.risk.settlements.clear()
    order = place(rig, intent(dep, side="sell", qty="2", reduce_only=True), flatten="stop")
    assert order.status == "filled" and order.outcome == "RISK_UNAVAILABLE"
    assert rig.db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD")).quantity == 0
    # Risk still hears the position went flat (its ledger must not keep the old one).
    (told,) = rig.risk.settlements
    assert told.decision_id == "" and told.position.quantity == "0"


def test_concurrent_fills_of_one_deployment_lose_no_update(rig: Rig) -> None:
    dep = deploy(rig)

    async def run() -> None:
        with acting():
            await asyncio.gather(
                *(
                    rig.flows.orders.place(intent(dep), new_id("ord"), None, Progress())
                    for _ in range(20)
                )
            )

    asyncio.run(run())
    position = rig.db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD"))
    assert position.quantity == D(20)
    assert rig.db.read_sync(lambda c: store.position_versions(c, dep)) == {"BTC-USD": 20}


@pytest.mark.postgres
def test_two_processes_filling_one_deployment_lose_no_update(postgres_url: str) -> None:
    """Two execution processes on one PostgreSQL database: each its own writer and pool."""
    first, second = (Database(postgres_url, name=f"execution-{i}") for i in (1, 2))
    migrate(first, ExecutionService.migrations, "execution")
    rigs = []
    try:
        for database in (first, second):
            database.start()
            rigs.append(make_rig(database))
        dep = deploy(rigs[0])

        async def run() -> None:
            with acting():
                await asyncio.gather(
                    *(
                        rigs[i % 2].flows.orders.place(
                            intent(dep, side="buy" if i % 3 else "sell"),
                            new_id("ord"),
                            None,
                            Progress(),
                        )
                        for i in range(30)
                    )
                )

        asyncio.run(run())
        fills = first.read_sync(
            lambda c: c.execute(
                sa.select(store.fills.c.side, store.fills.c.quantity).where(
                    store.fills.c.deployment_id == dep
                )
            ).all()
        )
        signed = sum(D(q) if side == "buy" else -D(q) for side, q in fills)
        assert len(fills) == 30
        position = first.read_sync(lambda c: store.get_position(c, dep, "BTC-USD"))
        assert position.quantity == signed == D(10)
        assert first.read_sync(lambda c: store.position_versions(c, dep)) == {"BTC-USD": 30}
    finally:
        first.close()
        second.close()
