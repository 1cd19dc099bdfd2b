"""The venue adapter interface and the paper venue behind it.

`VenueAdapter` is the only place an execution provider (a broker, an exchange) would be
called; clients never reach one. Every order is known to the venue by its client order id
(our order id, the FIX ClOrdID), and a venue refuses a client order id it already knows, so
asking again with the same id can never create a second order.

`PaperVenue` keeps its own book in the `execution_paper_venue_orders` table, written in its
own transactions like an external venue would, so a crash between the venue's fill and our
record of it leaves something to reconcile. Fills are deterministic: market orders fill at
the last mark moved against the taker by the configured slippage; limit orders fill when the
mark crosses them, never worse than their limit, and otherwise rest until a mark does.
`GATE4_PAPER_VENUE_MAX_FILL_QUANTITY` caps each fill (what is left rests, as partially filled).
Faults for tests come from `GATE4_PAPER_VENUE_FAULTS` (see `FaultPlan`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.execution import store
from services.execution.positions import ZERO
from services.runtime.decimals import format_decimal, stored_decimal
from services.runtime.resilience import SYSTEM, Clock
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc

PRICE_PLACES = Decimal("1e-8")
BPS = Decimal(10_000)

# Venue-side order states.
OPEN = "open"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"


@dataclass(frozen=True)
class VenueOrder:
    client_order_id: str
    tenant_id: str
    account_id: str
    instrument: str
    side: str
    type: str
    quantity: Decimal
    limit_price: Decimal | None = None


@dataclass(frozen=True)
class VenueFill:
    fill_id: str
    quantity: Decimal
    price: Decimal
    at: datetime


@dataclass(frozen=True)
class ExecutionReport:
    """What the venue knows about one order: its state and every fill so far."""

    client_order_id: str
    status: str
    filled_quantity: Decimal = ZERO
    fills: tuple[VenueFill, ...] = ()
    reason: str = ""


class VenueError(Exception):
    """The venue could not be asked."""


class VenueTimeout(VenueError):
    """No answer: the venue may or may not have the order; ask by client order id."""


class DuplicateClientOrderId(VenueError):
    """The venue already knows this client order id; `report` is what it has."""

    def __init__(self, report: ExecutionReport) -> None:
        super().__init__(f"client order id {report.client_order_id} already known")
        self.report = report


class VenueAdapter(Protocol):
    name: str

    async def submit(self, order: VenueOrder) -> ExecutionReport:
        """Sends a new order; raises VenueTimeout or DuplicateClientOrderId."""
        ...

    async def lookup(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        """What the venue has for the client order id; None when it never received it."""
        ...

    async def cancel(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        """Cancels what is left of an open order; None when the venue never received it."""
        ...

    async def on_mark(
        self, tenant_id: str, instrument: str, price: Decimal, at: datetime
    ) -> list[ExecutionReport]:
        """Paper venues only: a new mark; returns the reports of orders it filled."""
        ...


# -- faults ------------------------------------------------------------------------------------

FAULT_KINDS = ("ok", "timeout", "lost_ack", "reject")


@dataclass
class FaultPlan:
    """Simulated venue faults per account, for tests and incident reproduction.

    GATE4_PAPER_VENUE_FAULTS is a JSON object mapping an account id (or "*") to either one
    fault applied to every submission attempt, or a list applied to attempts 1, 2, ... of
    each order (attempts past the list succeed):

    - "timeout": the request never reaches the venue and no answer comes back;
    - "lost_ack": the venue takes (and fills) the order but the answer is lost;
    - "reject": the venue rejects the order.
    """

    rules: dict[str, str | list[str]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        if not text.strip():
            return cls()
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("GATE4_PAPER_VENUE_FAULTS must be a JSON object")
        rules: dict[str, str | list[str]] = {}
        for account, rule in raw.items():
            kinds = [rule] if isinstance(rule, str) else rule
            if not isinstance(kinds, list) or any(k not in FAULT_KINDS for k in kinds):
                raise ValueError(f"faults for {account!r}: one of {FAULT_KINDS} or a list of them")
            rules[str(account)] = rule
        return cls(rules)

    def next(self, order: VenueOrder) -> str:
        rule = self.rules.get(order.account_id, self.rules.get("*"))
        if rule is None:
            return "ok"
        attempt = self.attempts.get(order.client_order_id, 0) + 1
        self.attempts[order.client_order_id] = attempt
        if isinstance(rule, str):
            return rule
        return rule[attempt - 1] if attempt <= len(rule) else "ok"


# -- the paper venue ---------------------------------------------------------------------------

book = store.paper_venue_orders


def _fills_json(fills: tuple[VenueFill, ...]) -> str:
    return json.dumps(
        [
            {
                "fillId": f.fill_id,
                "quantity": format_decimal(f.quantity),
                "price": format_decimal(f.price),
                "at": f.at.isoformat(),
            }
            for f in fills
        ]
    )


def _report(row: sa.Row[tuple[object, ...]]) -> ExecutionReport:
    m = row._mapping
    fills = tuple(
        VenueFill(
            fill_id=f["fillId"],
            quantity=Decimal(f["quantity"]),
            price=Decimal(f["price"]),
            at=as_utc(datetime.fromisoformat(f["at"])),
        )
        for f in json.loads(str(m["fills"]))
    )
    return ExecutionReport(
        client_order_id=str(m["client_order_id"]),
        status=str(m["status"]),
        filled_quantity=stored_decimal(str(m["filled_quantity"])),
        fills=fills,
        reason=str(m["reason"]),
    )


class PaperVenue:
    name = "paper"

    def __init__(
        self,
        db: Database,
        *,
        slippage_bps: Decimal = ZERO,
        max_fill_quantity: Decimal = ZERO,
        faults: FaultPlan | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.db = db
        #: The venue's own time: its book's times and market fills' times.
        self.clock = clock
        self.slippage = slippage_bps / BPS
        self.max_fill = max_fill_quantity
        self.faults = faults or FaultPlan()

    # -- VenueAdapter ------------------------------------------------------------------------

    async def submit(self, order: VenueOrder) -> ExecutionReport:
        fault = self.faults.next(order)
        if fault == "timeout":
            raise VenueTimeout(f"paper venue: simulated timeout for {order.client_order_id}")
        report = await self.db.write(lambda c: self._accept(c, order, reject=fault == "reject"))
        if fault == "lost_ack":
            raise VenueTimeout(f"paper venue: simulated lost answer for {order.client_order_id}")
        return report

    async def lookup(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        return await self.db.read(lambda c: self._find(c, tenant_id, client_order_id))

    async def cancel(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        return await self.db.write(lambda c: self._cancel(c, tenant_id, client_order_id))

    async def on_mark(
        self, tenant_id: str, instrument: str, price: Decimal, at: datetime
    ) -> list[ExecutionReport]:
        return await self.db.write(lambda c: self._match(c, tenant_id, instrument, price, at))

    # -- the book ----------------------------------------------------------------------------

    def _find(
        self, conn: Connection, tenant_id: str, client_order_id: str, *, lock: bool = False
    ) -> ExecutionReport | None:
        query = sa.select(book).where(
            book.c.tenant_id == tenant_id, book.c.client_order_id == client_order_id
        )
        row = conn.execute(query.with_for_update() if lock else query).first()
        return _report(row) if row is not None else None

    def _accept(self, conn: Connection, order: VenueOrder, *, reject: bool) -> ExecutionReport:
        existing = conn.execute(
            sa.select(book).where(book.c.client_order_id == order.client_order_id)
        ).first()
        if existing is not None:
            raise DuplicateClientOrderId(_report(existing))
        now = self.clock.now()
        mark = store.mark_price(conn, order.tenant_id, order.instrument)
        status, reason = OPEN, ""
        fills: tuple[VenueFill, ...] = ()
        if reject:
            status, reason = REJECTED, "paper venue: simulated reject"
        elif order.type == "market" and mark is None:
            status, reason = REJECTED, f"paper venue: no mark for {order.instrument}"
        elif mark is not None:
            fills = self._fill(order, order.quantity, mark[0], now)
        filled = sum((f.quantity for f in fills), ZERO)
        if status == OPEN and filled == order.quantity:
            status = FILLED
        conn.execute(
            sa.insert(book).values(
                client_order_id=order.client_order_id,
                tenant_id=order.tenant_id,
                account_id=order.account_id,
                instrument=order.instrument,
                side=order.side,
                type=order.type,
                quantity=format_decimal(order.quantity),
                limit_price=format_decimal(order.limit_price)
                if order.limit_price is not None
                else "",
                status=status,
                filled_quantity=format_decimal(filled),
                fills=_fills_json(fills),
                reason=reason,
                created_at=now,
                updated_at=now,
            )
        )
        return ExecutionReport(order.client_order_id, status, filled, fills, reason)

    def _cancel(
        self, conn: Connection, tenant_id: str, client_order_id: str
    ) -> ExecutionReport | None:
        report = self._find(conn, tenant_id, client_order_id, lock=True)
        if report is None or report.status != OPEN:
            return report
        conn.execute(
            sa.update(book)
            .where(book.c.client_order_id == client_order_id, book.c.status == OPEN)
            .values(status=CANCELLED, reason="cancelled", updated_at=self.clock.now())
        )
        return ExecutionReport(
            client_order_id, CANCELLED, report.filled_quantity, report.fills, "cancelled"
        )

    def _match(
        self, conn: Connection, tenant_id: str, instrument: str, price: Decimal, at: datetime
    ) -> list[ExecutionReport]:
        rows = conn.execute(
            sa.select(book)
            .where(
                book.c.tenant_id == tenant_id,
                book.c.instrument == instrument,
                book.c.status == OPEN,
            )
            .order_by(book.c.created_at, book.c.client_order_id)
            .with_for_update()
        ).all()
        reports: list[ExecutionReport] = []
        for row in rows:
            m = row._mapping
            before = _report(row)
            limit = str(m["limit_price"])
            order = VenueOrder(
                client_order_id=str(m["client_order_id"]),
                tenant_id=tenant_id,
                account_id=str(m["account_id"]),
                instrument=instrument,
                side=str(m["side"]),
                type=str(m["type"]),
                quantity=stored_decimal(str(m["quantity"])),
                limit_price=Decimal(limit) if limit else None,
            )
            remaining = order.quantity - before.filled_quantity
            new = self._fill(order, remaining, price, at)
            if not new:
                continue
            fills = before.fills + new
            filled = before.filled_quantity + sum((f.quantity for f in new), ZERO)
            status = FILLED if filled == order.quantity else OPEN
            conn.execute(
                sa.update(book)
                .where(book.c.client_order_id == order.client_order_id)
                .values(
                    status=status,
                    filled_quantity=format_decimal(filled),
                    fills=_fills_json(fills),
                    updated_at=self.clock.now(),
                )
            )
            reports.append(ExecutionReport(order.client_order_id, status, filled, fills))
        return reports

    def _fill(
        self, order: VenueOrder, remaining: Decimal, mark: Decimal, at: datetime
    ) -> tuple[VenueFill, ...]:
        """One deterministic fill of what is left at this mark, or none if it does not cross."""
        if remaining <= 0:
            return ()
        with localcontext() as ctx:
            ctx.prec, ctx.rounding = 60, ROUND_HALF_EVEN
            move = 1 + self.slippage if order.side == "buy" else 1 - self.slippage
            price = (mark * move).quantize(PRICE_PLACES)
        if order.limit_price is not None:
            limit = order.limit_price
            if not (mark <= limit if order.side == "buy" else mark >= limit):
                return ()
            # A limit order never fills worse than its limit, slippage or not.
            if order.side == "buy":
                price = min(price, order.limit_price)
            else:
                price = max(price, order.limit_price)
        quantity = min(remaining, self.max_fill) if self.max_fill > 0 else remaining
        return (VenueFill(f"fil_{uuid.uuid4().hex[:24]}", quantity, price.normalize(), at),)
