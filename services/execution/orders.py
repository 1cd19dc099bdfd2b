"""Orders: recording them, applying what the venue reports, and the reduce-only guard.

An approved order is recorded `accepted` with venue_state `pending` (and a lease) before it is
sent, so an in-flight order is never invisible: it counts as open, reserves what it reduces,
and after a crash is reconciled with the venue by its client order id. The venue's report is
then applied in one write op: new fills (deduplicated by fill id), the position and its P&L,
the order's status, the audit events and, for a keyed command, the idempotency key.

Wrong-side execution is a SEV-1: a reduce-only order (and every flatten) must be on the side
that reduces the position and no larger than what is left to reduce once other open
reduce-only orders are counted. The check runs in the same transaction that records the
order, under the deployment's row lock, so two concurrent reducers cannot both take the
same quantity and flip the position.

Every write of a fill holds the deployment's row lock, taken first, so fills, positions
and the peak equity of one deployment change one transaction at a time, also across
processes; each change of an order is settled with risk after the commit (settlements.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from services.execution import settlements, store, venue
from services.execution.positions import PLACES, ZERO, Position, reducing_side
from services.execution.unitofwork import Work
from services.execution.venue import ExecutionReport
from services.runtime import errors, outcomes
from services.runtime.decimals import format_decimal, stored_decimal

ACCEPTED = "accepted"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"
STATUSES = (ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED)
OPEN_STATUSES = (ACCEPTED, PARTIALLY_FILLED)

PENDING = "pending"
CONFIRMED = "confirmed"

orders = store.orders


@dataclass(frozen=True)
class Intent:
    """A validated order: what the client (or a flatten) asks for."""

    deployment_id: str
    instrument: str
    side: str
    type: str
    quantity: Decimal
    limit_price: Decimal | None = None
    reduce_only: bool = False
    client_order_id: str = ""


def open_orders(
    conn: Connection, tenant_id: str, *, deployment_id: str = "", account_id: str = ""
) -> list[sa.RowMapping]:
    query = sa.select(orders).where(
        orders.c.tenant_id == tenant_id, orders.c.status.in_(OPEN_STATUSES)
    )
    if deployment_id:
        query = query.where(orders.c.deployment_id == deployment_id)
    if account_id:
        query = query.where(orders.c.account_id == account_id)
    return [r._mapping for r in conn.execute(query.order_by(orders.c.order_id)).all()]


_OPEN_COUNTS = sa.select(
    sa.func.count(),
    sa.func.coalesce(
        sa.func.sum(sa.case((orders.c.deployment_id == sa.bindparam("deployment_id"), 1), else_=0)),
        0,
    ),
).where(
    orders.c.tenant_id == sa.bindparam("tenant_id"),
    orders.c.account_id == sa.bindparam("account_id"),
    orders.c.status.in_(OPEN_STATUSES),
)


def open_counts(
    conn: Connection, tenant_id: str, account_id: str, deployment_id: str
) -> tuple[int, int]:
    """Open orders of the deployment and of its account, in one query (an index range:
    ix_execution_orders_open)."""
    params = {"tenant_id": tenant_id, "account_id": account_id, "deployment_id": deployment_id}
    row = conn.execute(_OPEN_COUNTS, params).one()
    return int(row[1]), int(row[0])


def pending_orders(
    conn: Connection, *, deployment_id: str = "", lapsed_by: datetime | None = None
) -> list[sa.RowMapping]:
    """Orders sent (or about to be sent) whose venue answer is not recorded yet; with
    `lapsed_by`, only those whose lease ended by then (it holds up to, not including, its
    end, as reconcile.settle_order and an idempotency key's lease read it)."""
    query = sa.select(orders).where(orders.c.venue_state == PENDING)
    if deployment_id:
        query = query.where(orders.c.deployment_id == deployment_id)
    if lapsed_by is not None:
        query = query.where(orders.c.lease_until <= lapsed_by)
    return [r._mapping for r in conn.execute(query.order_by(orders.c.order_id)).all()]


def remaining(row: sa.RowMapping) -> Decimal:
    return stored_decimal(str(row["quantity"])) - stored_decimal(str(row["filled_quantity"]))


def reducible(conn: Connection, tenant_id: str, deployment_id: str, instrument: str) -> Decimal:
    """Signed quantity still to reduce: the position less open reduce-only orders' remainders."""
    position = store.get_position(conn, deployment_id, instrument).quantity
    side = reducing_side(position)
    if side is None:
        return ZERO
    reserved = sum(
        (
            remaining(r)
            for r in open_orders(conn, tenant_id, deployment_id=deployment_id)
            if r["instrument"] == instrument and r["reduce_only"] and r["side"] == side
        ),
        ZERO,
    )
    left = abs(position) - reserved
    if left <= 0:
        return ZERO
    return left if position > 0 else -left


def check_reduce_only(conn: Connection, tenant_id: str, deployment_id: str, intent: Intent) -> None:
    """Refuses a reduce-only order on the wrong side or larger than what is left to reduce."""
    left = reducible(conn, tenant_id, deployment_id, intent.instrument)
    side = reducing_side(left)
    if side is None:
        raise errors.RiskLimitBreached(
            f"reduce-only {intent.side} of {intent.instrument}: the deployment has no position "
            "left to reduce",
            outcome=outcomes.REDUCE_ONLY_VIOLATION,
        )
    if intent.side != side:
        raise errors.RiskLimitBreached(
            f"reduce-only {intent.side} of {intent.instrument} would increase the position "
            f"{format_decimal(left)}; only a {side} reduces it",
            outcome=outcomes.REDUCE_ONLY_VIOLATION,
        )
    if intent.quantity > abs(left):
        raise errors.RiskLimitBreached(
            f"reduce-only {intent.side} of {format_decimal(intent.quantity)} {intent.instrument} "
            "exceeds the "
            f"{format_decimal(abs(left))} left to reduce and would flip the position",
            outcome=outcomes.REDUCE_ONLY_VIOLATION,
        )


def insert_pending(
    conn: Connection,
    *,
    order_id: str,
    deployment: sa.RowMapping,
    intent: Intent,
    policy_version: str,
    outcome: str,
    decision_id: str,
    idempotency_key: str,
    request_id: str,
    lease_until: datetime,
    now: datetime,
) -> None:
    conn.execute(
        sa.insert(orders).values(
            order_id=order_id,
            tenant_id=deployment["tenant_id"],
            deployment_id=deployment["deployment_id"],
            account_id=deployment["account_id"],
            instrument=intent.instrument,
            side=intent.side,
            type=intent.type,
            quantity=format_decimal(intent.quantity),
            limit_price=format_decimal(intent.limit_price)
            if intent.limit_price is not None
            else "",
            filled_quantity="0",
            average_fill_price="",
            status=ACCEPTED,
            reduce_only=intent.reduce_only,
            client_order_id=intent.client_order_id,
            outcome=outcome,
            reject_reason="",
            policy_version=policy_version,
            venue_attempts=0,
            venue_state=PENDING,
            lease_until=lease_until,
            idempotency_key=idempotency_key,
            request_id=request_id,
            decision_id=decision_id,
            created_at=now,
            updated_at=now,
        )
    )


def _order_event(
    work: Work,
    row: sa.RowMapping,
    type_: str,
    *,
    outcome: str,
    reason: str = "",
    data: Mapping[str, object] | None = None,
) -> None:
    work.event(
        type_,
        outcome=outcome,
        reason=reason,
        policy_version=str(row["policy_version"]),
        account_id=str(row["account_id"]),
        deployment_id=str(row["deployment_id"]),
        order_id=str(row["order_id"]),
        data={
            "instrument": row["instrument"],
            "side": row["side"],
            "type": row["type"],
            "quantity": row["quantity"],
            "reduceOnly": bool(row["reduce_only"]),
            **(data or {}),
        },
    )


def _locked(work: Work, tenant_id: str, order_id: str) -> sa.RowMapping:
    """The order's row, locked after its deployment's row (the one lock order every writer
    of fills and positions follows, so two processes cannot deadlock on them). SQLite's
    one writer already holds the database: the first read is the locked one."""
    row = store.order_row(work.conn, tenant_id, order_id)
    if row is None:
        raise errors.NotFound(f"order {order_id!r} not found")
    if work.conn.dialect.name == "sqlite":
        return row
    store.deployment_row(work.conn, tenant_id, str(row["deployment_id"]), for_update=True)
    locked = store.order_row(work.conn, tenant_id, order_id, for_update=True)
    assert locked is not None
    return locked


def _settled(
    work: Work,
    row: sa.RowMapping,
    values: Mapping[str, object],
    *,
    held: tuple[Position, int] | None = None,
    fills: Sequence[store.FillRow] | None = None,
) -> execution_pb2.Order:
    """The order as it now stands (its row with the values just written); risk hears of
    the change after the commit. `held` and `fills` spare reading back what was just
    written: the position with its version, and every fill of the order."""
    updated = {**row, **values}
    work.settle(
        settlements.for_order(
            work.conn, updated, closed=str(updated["status"]) not in OPEN_STATUSES, held=held
        )
    )
    return store.order_message(work.conn, updated, fills)


def apply_report(
    work: Work,
    tenant_id: str,
    order_id: str,
    report: ExecutionReport,
    now: datetime,
    *,
    attempts: int | None = None,
    event_data: Mapping[str, object] | None = None,
) -> execution_pb2.Order:
    """Brings the order up to what the venue reports; idempotent (fills dedupe by id)."""
    conn = work.conn
    row = _locked(work, tenant_id, order_id)
    known = set(
        conn.execute(
            sa.select(store.fills.c.fill_id).where(store.fills.c.order_id == order_id)
        ).scalars()
    )
    new = [f for f in report.fills if f.fill_id not in known]
    deployment_id, instrument = str(row["deployment_id"]), str(row["instrument"])
    held: tuple[Position, int] | None = None
    if new:
        position = store.get_position(conn, deployment_id, instrument)
        for fill in new:
            conn.execute(
                sa.insert(store.fills).values(
                    fill_id=fill.fill_id,
                    tenant_id=tenant_id,
                    order_id=order_id,
                    deployment_id=deployment_id,
                    instrument=instrument,
                    side=row["side"],
                    quantity=format_decimal(fill.quantity),
                    price=format_decimal(fill.price),
                    at=fill.at,
                )
            )
            position = position.apply_fill(str(row["side"]), fill.quantity, fill.price)
        version = store.save_position(
            conn, tenant_id, str(row["account_id"]), deployment_id, position, now
        )
        held = (position, version)

    filled = sum((f.quantity for f in report.fills), ZERO)
    notional = sum((f.quantity * f.price for f in report.fills), ZERO)
    status = _status(report, filled)
    values: dict[str, object] = {
        "filled_quantity": format_decimal(filled),
        "average_fill_price": format_decimal((notional / filled).quantize(PLACES))
        if filled
        else "",
        "status": status,
        "venue_state": CONFIRMED,
        "lease_until": None,
        "updated_at": now,
    }
    if attempts is not None:
        values["venue_attempts"] = attempts
    if status == REJECTED:
        values["outcome"] = outcomes.VENUE_REJECTED
        values["reject_reason"] = report.reason or "rejected by the venue"
    conn.execute(sa.update(orders).where(orders.c.order_id == order_id).values(**values))
    if not (new or status != row["status"] or row["venue_state"] == PENDING):
        return store.order_message(conn, row)  # nothing changed: nothing to tell anyone
    _order_event(
        work,
        row,
        # "order.accepted" is the risk-approved record; the venue taking it is "resting".
        "order.resting" if status == ACCEPTED else f"order.{status}",
        outcome=str(values.get("outcome", row["outcome"])),
        reason=report.reason,
        data={
            "status": status,
            "filledQuantity": format_decimal(filled),
            "fills": [
                {
                    "fillId": f.fill_id,
                    "quantity": format_decimal(f.quantity),
                    "price": format_decimal(f.price),
                }
                for f in new
            ],
            **(event_data or {}),
        },
    )
    # An order's first fills (a market order's only ones) need not be read back.
    written = None if known else [_fill_row(f) for f in new]
    return _settled(work, row, values, held=held, fills=written)


def _fill_row(fill: venue.VenueFill) -> store.FillRow:
    return store.FillRow(
        fill.fill_id, format_decimal(fill.quantity), format_decimal(fill.price), fill.at
    )


def _status(report: ExecutionReport, filled: Decimal) -> str:
    if report.status == venue.REJECTED:
        return REJECTED
    if report.status == venue.CANCELLED:
        return CANCELLED
    if report.status == venue.FILLED:
        return FILLED
    return PARTIALLY_FILLED if filled > 0 else ACCEPTED


def reject(
    work: Work,
    tenant_id: str,
    order_id: str,
    now: datetime,
    *,
    outcome: str,
    reason: str,
    attempts: int | None = None,
    event_data: Mapping[str, object] | None = None,
) -> execution_pb2.Order:
    """Rejects an order the venue does not have (never sent, or given up on)."""
    row = _locked(work, tenant_id, order_id)
    values: dict[str, object] = {
        "status": REJECTED,
        "outcome": outcome,
        "reject_reason": reason,
        "venue_state": CONFIRMED,
        "lease_until": None,
        "updated_at": now,
    }
    if attempts is not None:
        values["venue_attempts"] = attempts
    work.conn.execute(sa.update(orders).where(orders.c.order_id == order_id).values(**values))
    _order_event(work, row, "order.rejected", outcome=outcome, reason=reason, data=event_data)
    return _settled(work, row, values)


def settlements_for(
    conn: Connection, tenant_id: str, order_ids: list[str]
) -> execution_pb2.GetSettlementsResponse:
    """Where each order stands, for risk's reservations it never heard settled."""
    reply = execution_pb2.GetSettlementsResponse()
    for order_id in order_ids:
        row = store.order_row(conn, tenant_id, order_id)
        if row is None:
            reply.unknown_order_ids.append(order_id)
        else:
            reply.settlements.append(
                settlements.for_order(conn, row, closed=str(row["status"]) not in OPEN_STATUSES)
            )
    return reply
