"""One row per order: the decision risk holds for it and what that decision still reserves.

An order.submit decision writes its order's row in the decision's own transaction: `open`
when approved (the unfilled quantity is a reservation, exposure that counts as if it will
fill), `refused` otherwise. One row per order id makes "one decision per order"
structural: deciding an order again overwrites its row once the earlier decision is voided
(services.risk.pretrade). Settlements (services.risk.settlement) move an open row on:

- fills raise `filled_quantity` (cumulative and never lowered, since settlements may come
  twice or out of order); the filled part is then in the positions ledger, the rest stays
  reserved;
- `closed`: the order can fill no more, so nothing stays reserved;
- `not_executed`: execution refused the order after the approval and sent nothing.

The rows are also the order-rate window (services.risk.ratelimit). Every writer holds the
account's lock (services.risk.locks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.decimals import format_decimal, stored_decimal
from services.runtime.storage.conflicts import insert_new
from services.runtime.timeutil import as_utc

ZERO = Decimal(0)

OPEN = "open"
CLOSED = "closed"
NOT_EXECUTED = "not_executed"
REFUSED = "refused"
#: Decisions that let an order reach the venue: what the order-rate window counts.
APPROVED_STATES = (OPEN, CLOSED)

orders = sa.table(
    "risk_orders",
    sa.column("tenant_id", sa.String),
    sa.column("order_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("deployment_id", sa.String),
    sa.column("instrument", sa.String),
    sa.column("side", sa.String),
    sa.column("quantity", sa.String),
    sa.column("price", sa.String),
    sa.column("filled_quantity", sa.String),
    sa.column("decision_id", sa.String),
    sa.column("outcome", sa.String),
    sa.column("policy_version", sa.String),
    sa.column("state", sa.String),
    sa.column("decided_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
)


@dataclass(frozen=True)
class Reservation:
    tenant_id: str
    order_id: str
    account_id: str
    deployment_id: str
    instrument: str
    side: str
    quantity: Decimal
    #: What one unit was valued at when decided: the limit price, or the mark.
    price: Decimal | None
    filled: Decimal
    decision_id: str
    outcome: str
    policy_version: str
    state: str
    decided_at: datetime
    updated_at: datetime

    @property
    def remaining(self) -> Decimal:
        """What the order still reserves: its unfilled quantity while it is open."""
        return max(ZERO, self.quantity - self.filled) if self.state == OPEN else ZERO


def _reservation(row: sa.Row[tuple[object, ...]]) -> Reservation:
    m = row._mapping
    price = str(m["price"] or "")
    return Reservation(
        tenant_id=str(m["tenant_id"]),
        order_id=str(m["order_id"]),
        account_id=str(m["account_id"]),
        deployment_id=str(m["deployment_id"]),
        instrument=str(m["instrument"]),
        side=str(m["side"]),
        quantity=stored_decimal(m["quantity"]),
        price=Decimal(price) if price else None,
        filled=stored_decimal(m["filled_quantity"]),
        decision_id=str(m["decision_id"]),
        outcome=str(m["outcome"]),
        policy_version=str(m["policy_version"]),
        state=str(m["state"]),
        decided_at=as_utc(m["decided_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


def _key(tenant_id: str, order_id: str) -> tuple[Any, ...]:
    return (orders.c.tenant_id == tenant_id, orders.c.order_id == order_id)


def find(conn: Connection, tenant_id: str, order_id: str) -> Reservation | None:
    row = conn.execute(sa.select(orders).where(*_key(tenant_id, order_id))).first()
    return _reservation(row) if row is not None else None


def of_account(
    conn: Connection, tenant_id: str, account_id: str, *, decided_after: datetime
) -> list[Reservation]:
    """The account's rows a decision can count: open ones, and approved ones decided later
    than `decided_after` (the order-rate window)."""
    query = sa.select(orders).where(
        orders.c.tenant_id == tenant_id,
        orders.c.account_id == account_id,
        sa.or_(
            orders.c.state == OPEN,
            sa.and_(orders.c.state.in_(APPROVED_STATES), orders.c.decided_at > decided_after),
        ),
    )
    return [_reservation(r) for r in conn.execute(query).all()]


@dataclass(frozen=True)
class Decided:
    """An order.submit decision, as its row records it."""

    order_id: str
    account_id: str
    deployment_id: str
    instrument: str
    side: str
    quantity: Decimal
    price: Decimal | None
    decision_id: str
    outcome: str
    policy_version: str
    approved: bool


def _values(decided: Decided, now: datetime) -> dict[str, Any]:
    return {
        "account_id": decided.account_id,
        "deployment_id": decided.deployment_id,
        "instrument": decided.instrument,
        "side": decided.side,
        "quantity": format_decimal(decided.quantity),
        "price": format_decimal(decided.price) if decided.price is not None else "",
        "filled_quantity": "0",
        "decision_id": decided.decision_id,
        "outcome": decided.outcome,
        "policy_version": decided.policy_version,
        "state": OPEN if decided.approved else REFUSED,
        "decided_at": now,
        "updated_at": now,
    }


def record(conn: Connection, tenant_id: str, decided: Decided, now: datetime) -> Reservation | None:
    """Writes the order's row for its decision. An order decided before keeps one row:
    it is overwritten, which releases whatever the earlier decision reserved, and the
    earlier row is returned for the caller to void."""
    values = _values(decided, now)
    if insert_new(
        conn, orders, {"tenant_id": tenant_id, "order_id": decided.order_id, **values}, "order_id"
    ):
        return None
    previous = find(conn, tenant_id, decided.order_id)
    conn.execute(sa.update(orders).where(*_key(tenant_id, decided.order_id)).values(**values))
    return previous


def as_row(tenant_id: str, decided: Decided, now: datetime) -> Reservation:
    """The row `record` writes, as read back."""
    return Reservation(
        tenant_id=tenant_id,
        order_id=decided.order_id,
        account_id=decided.account_id,
        deployment_id=decided.deployment_id,
        instrument=decided.instrument,
        side=decided.side,
        quantity=decided.quantity,
        price=decided.price,
        filled=ZERO,
        decision_id=decided.decision_id,
        outcome=decided.outcome,
        policy_version=decided.policy_version,
        state=OPEN if decided.approved else REFUSED,
        decided_at=as_utc(now),
        updated_at=as_utc(now),
    )


def advance(
    conn: Connection,
    held: Reservation,
    *,
    filled: Decimal,
    state: str,
    now: datetime,
) -> bool:
    """Moves an open row on (more filled, closed or not executed); False when it is no
    longer the open row of the same decision (a concurrent change got there first)."""
    result = conn.execute(
        sa.update(orders)
        .where(
            *_key(held.tenant_id, held.order_id),
            orders.c.decision_id == held.decision_id,
            orders.c.state == OPEN,
        )
        .values(
            filled_quantity=format_decimal(max(filled, held.filled)), state=state, updated_at=now
        )
    )
    return result.rowcount == 1


def stale(conn: Connection, updated_before: datetime, limit: int) -> list[Reservation]:
    """Open reservations of every tenant that nothing has settled since updated_before,
    oldest first."""
    rows = conn.execute(
        sa.select(orders)
        .where(orders.c.state == OPEN, orders.c.updated_at < updated_before)
        .order_by(orders.c.updated_at)
        .limit(limit)
    ).all()
    return [_reservation(r) for r in rows]


def prune(conn: Connection, before: datetime) -> int:
    """Forgets finished orders last changed before `before`; open ones are kept however old."""
    result = conn.execute(
        sa.delete(orders).where(orders.c.state != OPEN, orders.c.updated_at < before)
    )
    return int(result.rowcount or 0)
