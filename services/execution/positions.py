"""Positions and P&L from fills, in Decimal arithmetic only (never floats).

A position is signed (positive long, negative short) with the average price of its open
quantity. Reducing fills realise (fill price - average price) x closed quantity, signed by
the position's direction; a fill larger than the position flips it, and the remainder
opens at the fill price. Unrealised P&L marks the open quantity to the last mark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

ZERO = Decimal(0)
#: Division results (average prices, drawdown) are kept to this many places.
PLACES = Decimal("1e-10")
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)


def signed(side: str, quantity: Decimal) -> Decimal:
    return quantity if side == "buy" else -quantity


def reducing_side(quantity: Decimal) -> str | None:
    """The side that reduces a position: sell a long, buy back a short; None when flat."""
    if quantity > 0:
        return "sell"
    if quantity < 0:
        return "buy"
    return None


@dataclass(frozen=True)
class Position:
    instrument: str
    quantity: Decimal = ZERO
    average_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def apply_fill(self, side: str, quantity: Decimal, price: Decimal) -> Position:
        with localcontext(_CONTEXT):
            delta = signed(side, quantity)
            before = self.quantity
            after = before + delta
            if before == 0 or (before > 0) == (delta > 0):
                # Opening or adding: the average moves towards the fill price.
                cost = abs(before) * self.average_price + quantity * price
                average = (cost / abs(after)).quantize(PLACES)
                return replace(self, quantity=after, average_price=average)
            closed = min(abs(delta), abs(before))
            direction = 1 if before > 0 else -1
            realized = self.realized_pnl + (price - self.average_price) * closed * direction
            if after == 0:
                average = ZERO
            elif (after > 0) != (before > 0):
                average = price  # flipped: what is left opened at this fill
            else:
                average = self.average_price
            return Position(self.instrument, after, average, realized)

    def unrealized_pnl(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.quantity == 0:
            return ZERO
        with localcontext(_CONTEXT):
            return (mark - self.average_price) * self.quantity

    def exposure(self, mark: Decimal | None) -> Decimal:
        """|quantity| x mark (the average price when there is no mark yet)."""
        with localcontext(_CONTEXT):
            return abs(self.quantity) * (mark if mark is not None else self.average_price)


@dataclass(frozen=True)
class Valuation:
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    peak_equity: Decimal
    drawdown: Decimal


def value(
    capital: Decimal,
    positions: Iterable[Position],
    marks: Mapping[str, Decimal],
    stored_peak: Decimal | None,
) -> Valuation:
    """Equity = capital + realised + unrealised; drawdown is a fraction of peak equity."""
    with localcontext(_CONTEXT):
        items = list(positions)
        realized = sum((p.realized_pnl for p in items), ZERO)
        unrealized = sum((p.unrealized_pnl(marks.get(p.instrument)) for p in items), ZERO)
        equity = capital + realized + unrealized
        peak = equity if stored_peak is None else max(stored_peak, equity)
        drawdown = ((peak - equity) / peak).quantize(PLACES) if peak > 0 else ZERO
        return Valuation(realized, unrealized, equity, peak, drawdown)


def gross_exposure(positions: Iterable[Position], marks: Mapping[str, Decimal]) -> Decimal:
    with localcontext(_CONTEXT):
        return sum((p.exposure(marks.get(p.instrument)) for p in positions), ZERO)
