"""Risk's books: each account's decision state held in memory, trusted by its stamps.

A decision reads the active policy, the kill switches, the account's open reservations, the
orders approved within the rate window, the positions ledger and the deployments' equity
today. Reading them from the database on every order took most of a decision's statements;
a `Book` keeps them per account instead, loaded once and kept current by the writes this
process makes (write-through):

- a decision records its order's row and updates the book;
- a settlement (fills, close, not executed) and an equity report update it too.

Whether the book may be trusted is decided in the database, not in memory
(services.risk.stamps): a decision rewrites the account's stamp only where it and the
tenant's still match the book's, in the same statement, so another risk process's write,
a policy or kill-switch change, or a transaction of this process that rolled back makes the
book load again, inside the decision's transaction and under the account's lock. With
several risk processes on one PostgreSQL database each decision still counts everything
every process committed before it.

Books live on the database writer threads: they are only read or changed inside a write op
holding the account's lock (on SQLite the single writer), so no two ops touch one book at
once. A book is changed in place as its op writes; should the transaction roll back, the
stamp the book carries never reached the database, and the next op loads it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import drawdown, killswitch, ledger, locks, reservations, stamps, versions
from services.risk.checks import Position
from services.risk.drawdown import DayEquity
from services.risk.ledger import Held
from services.risk.policy import Policy, PolicyProblems
from services.risk.ratelimit import Window
from services.risk.reservations import Reservation
from services.runtime import scopes
from services.runtime.metrics import RISK_BOOKS
from services.runtime.storage import after_commit

ZERO = Decimal(0)
#: Accounts kept in memory per process; the least recently loaded one is dropped first.
CAPACITY = 10_000


@dataclass
class Book:
    """What one account's decisions read, as of `stamp` (and the tenant's `tenant_stamp`)."""

    tenant_id: str
    account_id: str
    tenant_stamp: str
    stamp: str
    policy: versions.PolicyRecord | None
    parsed: Policy | PolicyProblems | None
    #: The tenant's engaged switches by (scope, scope id).
    switches: dict[tuple[str, str], risk_pb2.KillSwitch]
    #: Open reservations by order id.
    open: dict[str, Reservation]
    #: Approved orders decided within the rate window.
    window: Window
    #: The ledger by (deployment, instrument).
    positions: dict[tuple[str, str], Held]
    #: Each deployment's equity day.
    equity: dict[str, DayEquity] = field(default_factory=dict)

    # -- what decisions read -----------------------------------------------------------------

    def engaged_for(self, deployment_id: str) -> risk_pb2.KillSwitch | None:
        """The widest engaged switch holding the tenant, the account or the deployment."""
        for scope, scope_id in (
            (scopes.TENANT, self.tenant_id),
            (scopes.ACCOUNT, self.account_id),
            (scopes.DEPLOYMENT, deployment_id),
        ):
            held = self.switches.get((scope, scope_id)) if scope_id else None
            if held is not None:
                return held
        return None

    def daily_loss(self, day: str) -> Decimal:
        return drawdown.loss_of_day(self.equity.values(), day)

    def orders_in_window(self, after: datetime, besides: str = "") -> int:
        return self.window.count(after, besides=besides)

    def reserved(self, besides: str = "") -> list[Reservation]:
        return [r for order_id, r in self.open.items() if order_id != besides]

    def held_of(self, deployment_id: str) -> dict[str, Held]:
        return {i: h for (d, i), h in self.positions.items() if d == deployment_id}

    def account_position(self, instrument: str) -> Decimal:
        return sum((h.quantity for (_, i), h in self.positions.items() if i == instrument), ZERO)

    def newer(self, snapshots: Iterable[Position]) -> list[Position]:
        """The snapshots the ledger would take: newer than the version it holds."""
        found = []
        for s in snapshots:
            held = self.positions.get((s.deployment_id, s.instrument))
            if held is None or held.version < s.version:
                found.append(s)
        return found

    # -- what writes change ------------------------------------------------------------------

    def merged(self, snapshots: Iterable[Position]) -> None:
        """Snapshots the ledger took (ledger.merge, version rule)."""
        for s in self.newer(snapshots):
            self.positions[(s.deployment_id, s.instrument)] = Held(
                deployment_id=s.deployment_id,
                instrument=s.instrument,
                quantity=s.quantity,
                price=s.price,
                version=s.version,
            )

    def decided(self, row: Reservation) -> None:
        """The order's row as its (new) decision wrote it."""
        self.open.pop(row.order_id, None)
        if row.state == reservations.OPEN:
            self.open[row.order_id] = row
        self.window.moved(row)

    def advanced(self, held: Reservation, *, filled: Decimal, state: str, now: datetime) -> None:
        """The open row moved on (reservations.advance)."""
        row = replace(held, filled=max(filled, held.filled), state=state, updated_at=now)
        self.open.pop(row.order_id, None)
        if state == reservations.OPEN:
            self.open[row.order_id] = row
        if state not in reservations.APPROVED_STATES:
            self.window.moved(row)

    def reported(self, deployment_id: str, day: DayEquity) -> None:
        self.equity[deployment_id] = day


def load(conn: Connection, tenant_id: str, account_id: str, now: datetime) -> Book:
    """The account's book from the database, stamps first (see the module doc)."""
    tenant_stamp, stamp = stamps.read(conn, tenant_id, account_id)
    record = versions.active_policy(conn, tenant_id, account_id)
    parsed = record.parsed() if record is not None else None
    # Rows older than the window cannot count in it; a new policy reloads every book.
    seconds = parsed.limits.order_rate.window_seconds if isinstance(parsed, Policy) else 0
    since = now - timedelta(seconds=seconds)
    rows = reservations.of_account(conn, tenant_id, account_id, decided_after=since)
    engaged = killswitch.list_all(conn, tenant_id, engaged_only=True)
    return Book(
        tenant_id=tenant_id,
        account_id=account_id,
        tenant_stamp=tenant_stamp,
        stamp=stamp,
        policy=record,
        parsed=parsed,
        switches={
            (s.scope, s.scope_id): s
            for s in engaged
            if s.scope != scopes.ACCOUNT or s.scope_id == account_id
        },
        open={r.order_id: r for r in rows if r.state == reservations.OPEN},
        window=Window(rows, after=since),
        positions={
            (h.deployment_id, h.instrument): h
            for h in ledger.of_account(conn, tenant_id, account_id)
        },
        equity=drawdown.deployment_days(conn, tenant_id, account_id),
    )


def _counted(conn: Connection, result: str) -> None:
    # Once the decision commits: group commit may run its op twice.
    after_commit(conn, RISK_BOOKS.labels(result).inc)


class Books:
    """The books of one risk process, by (tenant, account)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._books: dict[tuple[str, str], Book] = {}
        # Each book is only used under its account's lock; this guards the dict itself,
        # which writer threads of several batches (PostgreSQL, writers > 1) share.
        self._guard = threading.Lock()
        #: Books loaded because none was held or it was stale; decisions that trusted one.
        self.loads = 0
        self.hits = 0

    def hold(self, conn: Connection, tenant_id: str, account_id: str, now: datetime) -> Book:
        """For a decision that writes the account's state: its current book, the account's
        lock taken and its stamp rewritten in this transaction."""
        key = (tenant_id, account_id)
        locks.hold(conn, locks.account_key(tenant_id, account_id))
        book = self._take(key)
        if book is not None:
            token = stamps.advance(
                conn, tenant_id, account_id, seen=book.stamp, tenant_seen=book.tenant_stamp
            )
            if token is not None:
                book.stamp = token
                self._keep(key, book)
                self.hits += 1
                _counted(conn, "trusted")
                return book
        _counted(conn, "stale" if book is not None else "loaded")
        book = load(conn, tenant_id, account_id, now)
        if not book.tenant_stamp:
            # A book is only trusted against both stamps: the tenant's must exist, and be
            # read before what it stamps (once per tenant).
            stamps.touch(conn, tenant_id)
            book = load(conn, tenant_id, account_id, now)
        book.stamp = stamps.touch(conn, tenant_id, account_id)
        self.loads += 1
        self._keep(key, book)
        return book

    def changed(
        self,
        conn: Connection,
        tenant_id: str,
        account_id: str,
        change: Callable[[Book], None] | None = None,
    ) -> None:
        """A write of the account's state outside a decision, in its transaction: `change`
        applies it to a current book; a stale one is dropped (it loads at the next
        decision), as is every book when `change` is None."""
        key = (tenant_id, account_id)
        locks.hold(conn, locks.account_key(tenant_id, account_id))
        book = self._take(key)
        if book is not None and change is not None:
            token = stamps.advance(
                conn, tenant_id, account_id, seen=book.stamp, tenant_seen=book.tenant_stamp
            )
            if token is not None:
                book.stamp = token
                change(book)
                self._keep(key, book)
                return
        stamps.touch(conn, tenant_id, account_id)

    def __len__(self) -> int:
        return len(self._books)

    def _take(self, key: tuple[str, str]) -> Book | None:
        """The account's book, out of the dict until its stamp is checked and it is kept
        again: if the check fails or raises, the book is gone and loads next time."""
        with self._guard:
            return self._books.pop(key, None)

    def _keep(self, key: tuple[str, str], book: Book) -> None:
        """Keeps the book as the most recent, dropping the least recent beyond capacity."""
        with self._guard:
            while len(self._books) >= self.capacity:
                del self._books[next(iter(self._books))]
            self._books[key] = book
