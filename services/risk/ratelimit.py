"""The order-rate window: approved orders per account, counted from their decisions' rows.

Each order has one row (services.risk.reservations) holding the time of the decision that
stands for it, so an order asked about twice counts once. Counting happens in the
decision's own transaction, under the account's lock (services.risk.locks), so the count
is exact across several risk processes sharing one PostgreSQL database. Orders approved
but never executed, and refused ones, sent nothing to the venue and do not count.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.risk.reservations import APPROVED_STATES, orders


def count(
    conn: Connection, tenant_id: str, account_id: str, after: datetime, *, besides: str = ""
) -> int:
    """Approved orders of the account decided later than `after` (an order exactly one
    window old has left the window), other than order `besides`."""
    query = (
        sa.select(sa.func.count())
        .select_from(orders)
        .where(
            orders.c.tenant_id == tenant_id,
            orders.c.account_id == account_id,
            orders.c.state.in_(APPROVED_STATES),
            orders.c.decided_at > after,
        )
    )
    if besides:
        query = query.where(orders.c.order_id != besides)
    return int(conn.execute(query).scalar_one())
