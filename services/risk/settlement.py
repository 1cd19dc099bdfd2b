"""What became of an approved order: execution's settlements convert or release reservations.

Execution settles an order after every change of it (fills, cancel, reject) and when it
refuses an order risk approved; risk's reaper (services.risk.reaper) asks for settlements
that seem lost. A settlement may arrive twice or out of order, so applying one is
idempotent and only ever moves forward:

- the position snapshot goes to the ledger under the version rule (services.risk.ledger),
  also for an order risk does not know;
- the order's filled quantity only grows; what filled is then in the position, the rest
  stays reserved until the order is `closed`;
- `not_executed_reason` marks the decision as not executed (nothing reached the venue),
  releases the reservation and audits `risk.decision.unexecuted`;
- a settlement naming another decision than the one risk holds (the order was decided
  again meanwhile), or for an order that is no longer open, changes nothing else.

Every change happens under the account's lock, as decisions do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import ledger, locks, reservations
from services.risk.checks import Position
from services.risk.reservations import Reservation
from services.runtime import outbox, outcomes
from services.runtime.decimals import format_decimal
from services.runtime.outbox import Outbox
from services.runtime.validation import Checker

if TYPE_CHECKING:
    from services.risk.books import Book, Books

ZERO = Decimal(0)
REASON_MAX = 500


@dataclass(frozen=True)
class Applied:
    #: Risk holds a decision for the order.
    known: bool
    #: The order's row changed (more filled, closed, or not executed).
    changed: bool = False


@dataclass(frozen=True)
class Settlement:
    order_id: str
    account_id: str
    deployment_id: str
    filled: Decimal
    closed: bool
    position: Position | None
    not_executed_reason: str
    decision_id: str


def parse(request: risk_pb2.SettleOrderRequest) -> Settlement:
    """Checks a settlement; raises ValidationFailed naming every bad field."""
    check = Checker()
    check.id("orderId", request.order_id)
    check.id("accountId", request.account_id)
    check.id("deploymentId", request.deployment_id, required=False)
    check.id("decisionId", request.decision_id, required=False)
    filled = check.decimal(
        "filledQuantity", request.filled_quantity, positive=False, required=False
    )
    if filled is not None and filled < 0:
        check.fail("filledQuantity", "cannot be negative")
    check.text("notExecutedReason", request.not_executed_reason, max_length=REASON_MAX)
    position = None
    if request.HasField("position"):
        snapshot = request.position
        deployment = snapshot.deployment_id or request.deployment_id
        check.id("position.deploymentId", deployment)
        check.instrument("position.instrument", snapshot.instrument)
        quantity = check.decimal(
            "position.quantity", snapshot.quantity, positive=False, required=False
        )
        price = check.decimal("position.price", snapshot.price, positive=False, required=False)
        if snapshot.version < 0:
            check.fail("position.version", "cannot be negative")
        position = Position(
            deployment_id=deployment,
            instrument=snapshot.instrument,
            quantity=quantity or ZERO,
            version=snapshot.version,
            price=price if price else None,
        )
    check.done("invalid settlement")
    return Settlement(
        order_id=request.order_id,
        account_id=request.account_id,
        deployment_id=request.deployment_id,
        filled=filled or ZERO,
        closed=request.closed,
        position=position,
        not_executed_reason=request.not_executed_reason.strip(),
        decision_id=request.decision_id,
    )


def apply(
    conn: Connection,
    box: Outbox,
    books: Books,
    tenant_id: str,
    settlement: Settlement,
    now: datetime,
    *,
    decided_before: datetime | None = None,
) -> Applied:
    """Applies one settlement inside a write op, and to the account's book.
    `decided_before` (the reaper's release) only acts on a decision at least that old."""
    locks.hold(conn, locks.account_key(tenant_id, settlement.account_id))
    held = reservations.find(conn, tenant_id, settlement.order_id)
    account_id = settlement.account_id
    if held is not None and held.account_id != account_id:
        # The row says whose order it is; its account's lock is the one that counts.
        account_id = held.account_id
        locks.hold(conn, locks.account_key(tenant_id, account_id))
        held = reservations.find(conn, tenant_id, settlement.order_id)
    changes: list[Callable[[Book], None]] = []
    applied = _apply(conn, box, held, settlement, now, decided_before, changes)
    if settlement.position is not None:
        ledger.merge(conn, tenant_id, account_id, [settlement.position], now)
        position = settlement.position
        changes.append(lambda book: book.merged([position]))
    if changes:

        def change_all(book: Book) -> None:
            for change in changes:
                change(book)

        books.changed(conn, tenant_id, account_id, change_all)
    return applied


def _apply(
    conn: Connection,
    box: Outbox,
    held: Reservation | None,
    settlement: Settlement,
    now: datetime,
    decided_before: datetime | None,
    changes: list[Callable[[Book], None]],
) -> Applied:
    """The order's row moved on, if it should; each change to a book goes on `changes`."""
    if held is None:
        return Applied(known=False)
    recent = decided_before is not None and held.decided_at >= decided_before
    other = settlement.decision_id not in ("", held.decision_id)
    if held.state != reservations.OPEN or recent or other:
        return Applied(known=True)
    if settlement.not_executed_reason:
        # Bookkeeping of what happened (an approval that was never executed) reduces
        # reserved exposure: it may use the reserve.
        box.ensure_capacity(conn, outbox.Headroom.RESERVE)
        state = reservations.NOT_EXECUTED
    elif settlement.closed or settlement.filled > held.filled:
        state = reservations.CLOSED if settlement.closed else reservations.OPEN
    else:
        return Applied(known=True)
    filled = settlement.filled
    changed = reservations.advance(conn, held, filled=filled, state=state, now=now)
    if changed:
        changes.append(lambda book: book.advanced(held, filled=filled, state=state, now=now))
        if state == reservations.NOT_EXECUTED:
            _audit_unexecuted(conn, box, held, settlement.not_executed_reason)
    return Applied(known=True, changed=changed)


def _audit_unexecuted(conn: Connection, box: Outbox, held: Reservation, reason: str) -> None:
    box.add(
        conn,
        outbox.event(
            "risk.decision.unexecuted",
            source="risk",
            outcome=outcomes.NOT_EXECUTED,
            reason=reason,
            policy_version=held.policy_version,
            account_id=held.account_id,
            deployment_id=held.deployment_id,
            order_id=held.order_id,
            data={
                "decisionId": held.decision_id,
                "instrument": held.instrument,
                "side": held.side,
                "quantity": format_decimal(held.quantity),
                "releasedQuantity": format_decimal(held.remaining),
            },
        ),
    )
