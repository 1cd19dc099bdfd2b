"""The order-rate window: approved orders per account, counted from their decisions' rows.

Each order has one row (services.risk.reservations) holding the time of the decision that
stands for it, so an order asked about twice counts once. Orders approved but never
executed, and refused ones, sent nothing to the venue and do not count.

The window is counted in memory, from the account's book (services.risk.books): loaded with
the rows decided within it, then kept current by the decisions and settlements that change
those rows, all under the account's lock, so the count is exact across several risk
processes sharing one PostgreSQL database (a book another process's write made stale loads
again first).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.risk.reservations import APPROVED_STATES, Reservation


class Window:
    """The account's approved orders by decision time, oldest first."""

    def __init__(self, rows: Iterable[Reservation] = (), *, after: datetime | None = None) -> None:
        counted = sorted(
            (
                r
                for r in rows
                if r.state in APPROVED_STATES and (after is None or r.decided_at > after)
            ),
            key=lambda r: r.decided_at,
        )
        self._at = {r.order_id: r.decided_at for r in counted}

    def count(self, after: datetime, *, besides: str = "") -> int:
        """Approved orders decided later than `after` (an order exactly one window old has
        left it), other than order `besides`. Forgets what left: `after` only moves on."""
        while self._at:
            oldest = next(iter(self._at))
            if self._at[oldest] > after:
                break
            del self._at[oldest]
        return len(self._at) - (1 if besides in self._at else 0)

    def moved(self, row: Reservation) -> None:
        """The order's row changed: it counts from its decision while approved."""
        self._at.pop(row.order_id, None)
        if row.state in APPROVED_STATES:
            self._at[row.order_id] = row.decided_at

    def __len__(self) -> int:
        return len(self._at)
