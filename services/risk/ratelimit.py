"""The order-rate window: approved orders per account, counted in the database.

Counting happens in the decision's own transaction, under the account's lock
(services.risk.locks), so the count is exact across several risk processes sharing one
PostgreSQL database. A repeated CheckOrder for the same order id counts once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# The longest window a policy may set (orderRate.windowSeconds <= 86400): older rows can go.
KEEP = timedelta(seconds=86400)

orders = sa.table(
    "risk_order_rate",
    sa.column("tenant_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("order_id", sa.String),
    sa.column("at", sa.DateTime),
)


def _account(tenant_id: str, account_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (orders.c.tenant_id == tenant_id, orders.c.account_id == account_id)


def count(
    conn: Connection, tenant_id: str, account_id: str, after: datetime, *, besides: str = ""
) -> int:
    """Approved orders of the account later than `after` (an order exactly one window old
    has left the window), other than order `besides`."""
    query = (
        sa.select(sa.func.count())
        .select_from(orders)
        .where(*_account(tenant_id, account_id), orders.c.at > after)
    )
    if besides:
        query = query.where(orders.c.order_id != besides)
    return int(conn.execute(query).scalar_one())


def record(conn: Connection, tenant_id: str, account_id: str, order_id: str, at: datetime) -> None:
    """Counts an approved order (once per order id) and forgets what no window can reach."""
    conn.execute(sa.delete(orders).where(*_account(tenant_id, account_id), orders.c.at < at - KEEP))
    if order_id:
        seen = conn.execute(
            sa.select(orders.c.order_id).where(
                *_account(tenant_id, account_id), orders.c.order_id == order_id
            )
        ).first()
        if seen is not None:
            return
    conn.execute(
        sa.insert(orders).values(
            tenant_id=tenant_id, account_id=account_id, order_id=order_id, at=at
        )
    )
