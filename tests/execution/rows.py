"""Execution rows written directly, for tests of one module: a running deployment, an order
recorded `pending` as placement leaves it before the venue answers, a venue report."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from services.execution import orders, store
from services.execution.orders import Intent
from services.execution.unitofwork import Work, new_id
from services.execution.venue import ExecutionReport, VenueFill
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from tests.execution.fakes import TENANT, acting

T = TypeVar("T")
#: A fixed instant: rows carry explicit times, so no test waits for a clock to move.
T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)


def deploy(
    db: Database,
    *,
    account: str = "acc-1",
    at: datetime = T0,
    instruments: tuple[str, ...] = ("BTC-USD",),
) -> str:
    """A running paper deployment (of BTC-USD unless `instruments` says); returns its id."""
    deployment_id = new_id("dep")
    db.write_sync(
        lambda c: c.execute(
            sa.insert(store.deployments).values(
                deployment_id=deployment_id,
                tenant_id=TENANT,
                strategy_id="s1",
                account_id=account,
                instruments=json.dumps(list(instruments)),
                capital_allocation="100000",
                mode="paper",
                state="running",
                policy_version="v1",
                degraded=False,
                peak_equity="100000",
                created_at=at,
                updated_at=at,
            )
        )
    )
    return deployment_id


def pending(
    db: Database,
    deployment_id: str,
    *,
    side: str = "buy",
    quantity: str = "1",
    type_: str = "market",
    reduce_only: bool = False,
    lease_until: datetime = T0,
    key: str = "",
    at: datetime = T0,
) -> str:
    """An approved order recorded `accepted`/`pending` with its lease; returns its id."""
    order_id = new_id("ord")
    intent = Intent(
        deployment_id=deployment_id,
        instrument="BTC-USD",
        side=side,
        type=type_,
        quantity=Decimal(quantity),
        limit_price=Decimal(100) if type_ == "limit" else None,
        reduce_only=reduce_only,
    )

    def insert(conn: sa.Connection) -> None:
        deployment = store.deployment_row(conn, TENANT, deployment_id)
        assert deployment is not None
        orders.insert_pending(
            conn,
            order_id=order_id,
            deployment=deployment,
            intent=intent,
            policy_version="v1",
            outcome="APPROVED",
            decision_id="dec_1",
            idempotency_key=key,
            request_id="req_pending_order",
            lease_until=lease_until,
            now=at,
        )

    db.write_sync(insert)
    return order_id


def filled(
    order_id: str, *quantities: str, price: str = "100", done: bool = True
) -> ExecutionReport:
    """The venue's report of the order with one fill per quantity, `fill_<order>_<n>`."""
    fills = tuple(
        VenueFill(f"fill_{order_id}_{n}", Decimal(q), Decimal(price), T0 + timedelta(seconds=n))
        for n, q in enumerate(quantities)
    )
    total = sum((f.quantity for f in fills), Decimal(0))
    return ExecutionReport(order_id, "filled" if done else "open", total, fills)


def in_work(db: Database, box: Outbox, op: Callable[[Work], T]) -> T:
    """op(work) in one transaction, as a request of the test tenant."""
    with acting():
        return db.write_sync(lambda conn: op(Work(conn, box)))


def order(db: Database, order_id: str) -> execution_pb2.Order:
    found = db.read_sync(lambda c: store.get_order(c, TENANT, order_id))
    assert found is not None
    return found
