"""What risk is told about positions and approved orders, so its exposure ledger holds.

Risk reserves exposure for every order it approves and counts filled positions from what
execution reports. Two messages carry that:

- the position snapshots in every OrderIntent: each of the deployment's positions with its
  version (one more per change of quantity), so risk keeps the newest and never moves back;
- a settlement after every change of an approved order (fills, closed, or refused here
  after the approval), sent after the commit by the unit of work; and on request
  (GetSettlements) for reservations risk held so long that it suspects a lost message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.execution import store
from services.execution.positions import Position
from services.runtime.decimals import format_decimal


def _price(position: Position, marks: Mapping[str, Decimal]) -> str:
    mark = marks.get(position.instrument)
    if mark is not None:
        return format_decimal(mark)
    return format_decimal(position.average_price) if position.quantity else ""


def _snapshot(
    deployment_id: str, position: Position, version: int, marks: Mapping[str, Decimal]
) -> risk_pb2.PositionSnapshot:
    return risk_pb2.PositionSnapshot(
        deployment_id=deployment_id,
        instrument=position.instrument,
        quantity=format_decimal(position.quantity),
        version=version,
        price=_price(position, marks),
    )


def snapshots(
    book: store.Book, deployment_id: str, also: Iterable[str] = ()
) -> list[risk_pb2.PositionSnapshot]:
    """Every position of the deployment, plus the instruments in `also` even when flat."""
    held = {p.instrument: p for p in book.positions}
    for instrument in also:
        held.setdefault(instrument, Position(instrument))
    return [
        _snapshot(deployment_id, held[i], book.versions.get(i, 0), book.marks) for i in sorted(held)
    ]


def for_order(
    conn: Connection,
    row: Mapping[Any, Any],
    *,
    closed: bool,
    held: tuple[Position, int] | None = None,
) -> risk_pb2.SettleOrderRequest:
    """Where the order stands now, with its deployment's position in the instrument;
    `closed`: it can fill no more. `held`: that position and its version, when the caller
    just wrote them (else they are read)."""
    tenant_id, deployment_id = str(row["tenant_id"]), str(row["deployment_id"])
    instrument = str(row["instrument"])
    if held is None:
        book = store.book(conn, tenant_id, deployment_id)
        position, version, marks = (
            book.position(instrument),
            book.versions.get(instrument, 0),
            book.marks,
        )
    else:
        (position, version), marks = held, store.marks_of(conn, tenant_id)
    return risk_pb2.SettleOrderRequest(
        order_id=str(row["order_id"]),
        account_id=str(row["account_id"]),
        deployment_id=deployment_id,
        filled_quantity=str(row["filled_quantity"]) or "0",
        closed=closed,
        position=_snapshot(deployment_id, position, version, marks),
        decision_id=str(row["decision_id"]),
    )


def not_executed(
    order_id: str, account_id: str, deployment_id: str, decision_id: str, reason: str
) -> risk_pb2.SettleOrderRequest:
    """An approved order refused here before anything was sent: release all it reserved."""
    return risk_pb2.SettleOrderRequest(
        order_id=order_id,
        account_id=account_id,
        deployment_id=deployment_id,
        filled_quantity="0",
        closed=True,
        not_executed_reason=reason,
        decision_id=decision_id,
    )
