"""What an order's decision counts as exposure: the positions ledger plus open reservations.

Execution snapshots positions and open orders without a lock, so concurrent orders all see
the same "before" and each would pass on its own. Risk decides from its own books instead,
in the decision's transaction and under the account's lock (services.risk.locks), as the
account's book holds them (services.risk.books):

1. The intent's position snapshots are merged into the ledger (services.risk.ledger):
   newer versions only.
2. From the ledger: the deployment's position in the instrument, and the account's (the
   sum over its deployments).
3. From the account's open reservations (services.risk.reservations: orders approved and
   not yet filled, other than this one): what is reserved on each side of the instrument,
   by the account and by the deployment; the open-order count, the larger of the
   reservations and the intent's own count (orders placed before the ledger existed, or
   without a decision, still count); and the deployment's gross exposure, each instrument
   valued at its worst case max(|position + open buys|, |position - open sells|) x price
   (the snapshot's price, else the last one stored, else the price an order was valued at).

The checks (services.risk.checks) then add the order itself on top.

An intent without position snapshots comes from an older caller, which neither versions
positions nor settles its orders: risk cannot tell which reservations the caller's figures
already include, so the intent's own position, account position, open-order count and
gross exposure are used as they are, and nothing reserved is added.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from services.risk import ledger, reservations
from services.risk.checks import OrderContext, worst_case
from services.runtime.decimals import format_decimal

if TYPE_CHECKING:
    from services.risk.books import Book

ZERO = Decimal(0)


def assess(
    conn: Connection,
    book: Book,
    deployment_id: str,
    order_id: str,
    order: OrderContext,
    now: datetime,
) -> OrderContext:
    """The order with risk's own figures in place of the caller's (see the module doc),
    from the account's book; the intent's newer snapshots are written to the ledger."""
    if not order.positions:
        return order
    newer = book.newer(order.positions)
    if newer:
        ledger.merge(conn, book.tenant_id, book.account_id, newer, now)
        book.merged(newer)
    held = book.held_of(deployment_id)
    reserved = book.reserved(besides=order_id)

    def sums(instrument: str, deployment: str = "") -> tuple[Decimal, Decimal]:
        mine = [
            r
            for r in reserved
            if r.instrument == instrument and deployment in ("", r.deployment_id)
        ]
        buys = sum((r.remaining for r in mine if r.side == "buy"), ZERO)
        sells = sum((r.remaining for r in mine if r.side == "sell"), ZERO)
        return buys, sells

    snapshot_prices = {p.instrument: p.price for p in order.positions if p.price is not None}
    instruments = set(held) | {r.instrument for r in reserved if r.deployment_id == deployment_id}
    gross = ZERO
    for instrument in instruments:
        position = held[instrument].quantity if instrument in held else ZERO
        buys, sells = sums(instrument, deployment_id)
        price = _price(instrument, snapshot_prices, held, reserved, order)
        gross += worst_case(position, buys, sells) * price

    open_buys, open_sells = sums(order.instrument)
    deployment_buys, deployment_sells = sums(order.instrument, deployment_id)
    own = held.get(order.instrument)
    return replace(
        order,
        position=own.quantity if own is not None else ZERO,
        account_position=book.account_position(order.instrument),
        account_open_orders=max(order.account_open_orders, len(reserved)),
        deployment_gross_exposure=gross,
        open_buys=open_buys,
        open_sells=open_sells,
        deployment_open_buys=deployment_buys,
        deployment_open_sells=deployment_sells,
    )


def _price(
    instrument: str,
    snapshots: dict[str, Decimal],
    held: dict[str, ledger.Held],
    reserved: list[reservations.Reservation],
    order: OrderContext,
) -> Decimal:
    """What one unit of the instrument is worth, from the freshest source that knows."""
    fresh = snapshots.get(instrument)
    if fresh is not None:
        return fresh
    stored = held[instrument].price if instrument in held else None
    if stored is not None:
        return stored
    if instrument == order.instrument and order.mark_price is not None:
        return order.mark_price
    # Only orders know a price: take the highest, so the exposure is not understated.
    prices = [r.price for r in reserved if r.instrument == instrument and r.price is not None]
    return max(prices, default=ZERO)


def evidence(order: OrderContext) -> dict[str, Any]:
    """The figures a decision counted, for its audit record."""
    return {
        "source": "ledger" if order.positions else "intent",
        "position": format_decimal(order.position),
        "accountPosition": format_decimal(order.account_position),
        "openBuys": format_decimal(order.open_buys),
        "openSells": format_decimal(order.open_sells),
        "openOrders": order.account_open_orders,
        "deploymentExposure": format_decimal(order.deployment_gross_exposure),
    }
