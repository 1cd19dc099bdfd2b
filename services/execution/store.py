"""Execution tables and their mapping to API messages."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from services.runtime.timeutil import to_timestamp


def _columns(names: str) -> list[sa.ColumnClause[object]]:
    return [sa.column(n, sa.String) for n in names.split()]


def _times() -> list[sa.ColumnClause[object]]:
    return [sa.column("created_at", sa.DateTime), sa.column("updated_at", sa.DateTime)]


deployments = sa.table(
    "execution_deployments",
    *_columns(
        "deployment_id tenant_id strategy_id account_id instruments capital_allocation mode "
        "state policy_version"
    ),
    sa.column("degraded", sa.Boolean),
    *_times(),
)
orders = sa.table(
    "execution_orders",
    *_columns(
        "order_id tenant_id deployment_id account_id instrument side type quantity limit_price "
        "filled_quantity average_fill_price status client_order_id outcome reject_reason"
    ),
    sa.column("reduce_only", sa.Boolean),
    *_times(),
)
marks = sa.table(
    "execution_marks",
    *_columns("tenant_id instrument price"),
    sa.column("at", sa.DateTime),
)


def _set_times(
    msg: execution_pb2.Deployment | execution_pb2.Order, created: datetime, updated: datetime
) -> None:
    for field, value in (("created_at", created), ("updated_at", updated)):
        ts = to_timestamp(value)
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)


def deployment_message(row: sa.Row[tuple[object, ...]]) -> execution_pb2.Deployment:
    m = row._mapping
    msg = execution_pb2.Deployment(
        deployment_id=m["deployment_id"],
        tenant_id=m["tenant_id"],
        strategy_id=m["strategy_id"],
        account_id=m["account_id"],
        instruments=json.loads(m["instruments"]),
        capital_allocation=m["capital_allocation"],
        mode=m["mode"],
        state=m["state"],
        policy_version=m["policy_version"],
        degraded=bool(m["degraded"]),
    )
    _set_times(msg, m["created_at"], m["updated_at"])
    return msg


def order_message(row: sa.Row[tuple[object, ...]]) -> execution_pb2.Order:
    m = row._mapping
    msg = execution_pb2.Order(
        **{
            k: m[k]
            for k in (
                "order_id",
                "tenant_id",
                "deployment_id",
                "account_id",
                "instrument",
                "side",
                "type",
                "quantity",
                "limit_price",
                "filled_quantity",
                "average_fill_price",
                "status",
                "client_order_id",
                "outcome",
                "reject_reason",
            )
        },
        reduce_only=bool(m["reduce_only"]),
    )
    _set_times(msg, m["created_at"], m["updated_at"])
    return msg


def get_deployment(
    conn: Connection, tenant_id: str, deployment_id: str
) -> execution_pb2.Deployment | None:
    row = conn.execute(
        sa.select(deployments).where(
            deployments.c.tenant_id == tenant_id, deployments.c.deployment_id == deployment_id
        )
    ).first()
    return deployment_message(row) if row is not None else None


def list_deployments(
    conn: Connection, tenant_id: str, account_id: str, state: str, after: str, limit: int
) -> list[execution_pb2.Deployment]:
    query = sa.select(deployments).where(deployments.c.tenant_id == tenant_id)
    if account_id:
        query = query.where(deployments.c.account_id == account_id)
    if state:
        query = query.where(deployments.c.state == state)
    if after:
        query = query.where(deployments.c.deployment_id > after)
    rows = conn.execute(query.order_by(deployments.c.deployment_id).limit(limit)).all()
    return [deployment_message(r) for r in rows]


def get_order(conn: Connection, tenant_id: str, order_id: str) -> execution_pb2.Order | None:
    row = conn.execute(
        sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.order_id == order_id)
    ).first()
    return order_message(row) if row is not None else None


def list_orders(
    conn: Connection, tenant_id: str, deployment_id: str, status: str, after: str, limit: int
) -> list[execution_pb2.Order]:
    query = sa.select(orders).where(orders.c.tenant_id == tenant_id)
    if deployment_id:
        query = query.where(orders.c.deployment_id == deployment_id)
    if status:
        query = query.where(orders.c.status == status)
    if after:
        query = query.where(orders.c.order_id > after)
    rows = conn.execute(query.order_by(orders.c.order_id).limit(limit)).all()
    return [order_message(r) for r in rows]


def upsert_mark(
    conn: Connection, tenant_id: str, instrument: str, price: str, at: datetime
) -> None:
    key = (marks.c.tenant_id == tenant_id) & (marks.c.instrument == instrument)
    updated = conn.execute(sa.update(marks).where(key).values(price=price, at=at)).rowcount
    if not updated:
        conn.execute(
            sa.insert(marks).values(tenant_id=tenant_id, instrument=instrument, price=price, at=at)
        )
