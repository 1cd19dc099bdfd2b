"""One unit of work per command step: its SQL, its audit events and what risk must hear.

A flow hands `UnitOfWork.run` a plain function of a `Work`. The function runs inside the
next group-committed transaction, and everything it records commits with it or not at all:

- `guard=Headroom.BOUND` (every step that adds exposure or state) first checks the outbox
  backlog, so no side effect is written that could not be audited: past the bound it fails
  closed. Risk-reducing steps (a stop, a flatten or reduce-only order) pass
  `Headroom.RESERVE` and may use the reserve beyond it, so the brake works while audit is
  down;
- `work.event(...)` adds an audit event to the outbox in the same transaction;
  `work.note(...)` one that records an answer rather than a change (a refusal, a replay),
  kept only below the bound: refusals during an audit outage never eat the reserve;
- `work.settle(...)` queues what risk must hear about an order (fills, closed, not
  executed). It is sent only after the commit: risk must never count a fill that did not
  happen. Sending is best effort; risk asks for any settlement it missed (GetSettlements).

After the commit the outbox shipper is woken and the settlements are sent, so no flow can
forget either. Ops are plain functions of the connection, so running one again is safe:
PostgreSQL deadlock and serialization victims, and unique violations from two processes
inserting the same row at once, are retried a few times.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.execution import idempotency
from services.execution.idempotency import Claim, Progress
from services.execution.riskgate import RiskControls
from services.runtime import correlation, errors, outbox, resilience
from services.runtime.outbox import Headroom, Outbox
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy
from services.runtime.storage import Database, after_commit

T = TypeVar("T")
log = logging.getLogger("gate4.execution")

SOURCE = "execution"
# deadlock_detected, serialization_failure, unique_violation
RETRYABLE_SQLSTATES = ("40P01", "40001", "23505")
#: A deadlock or serialization victim (or a racing insert) runs again at once but for a
#: short pause: 5, 10, 20 ms, four attempts in all.
RETRYABLE = RetryPolicy(initial=0.005, multiplier=2.0, max_attempts=4)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def tenant() -> str:
    return correlation.current().tenant_id


@dataclass
class Work:
    """The transaction a step runs in, and what it records besides its SQL."""

    conn: Connection
    box: Outbox
    settlements: list[risk_pb2.SettleOrderRequest] = field(default_factory=list)

    def event(self, type_: str, **fields: Any) -> None:
        self.box.add(self.conn, outbox.event(type_, source=SOURCE, **fields))

    def note(self, type_: str, **fields: Any) -> None:
        """An event recording an answer, not a change: kept while the backlog is below its
        bound, else only logged (the caller got the answer and nothing was executed)."""
        if self.box.has_room(self.conn):
            self.event(type_, **fields)
            return
        extra = {"event_type": type_, "outcome": fields.get("outcome", "")}
        after_commit(
            self.conn, lambda: log.info("audit backlog full: answer not recorded", extra=extra)
        )

    def settle(self, settlement: risk_pb2.SettleOrderRequest) -> None:
        self.settlements.append(settlement)


def retryable(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


class UnitOfWork:
    def __init__(
        self, db: Database, box: Outbox, risk: RiskControls, clock: Clock = SYSTEM
    ) -> None:
        self.db = db
        self.box = box
        self.risk = risk
        #: The one time every flow over this unit of work reads: stored times, leases,
        #: key expiry, waits (a test moves it with ManualClock.advance()).
        self.clock = clock

    async def run(self, op: Callable[[Work], T], *, guard: Headroom | None = None) -> T:
        committed: list[Work] = []

        def transaction(conn: Connection) -> T:
            work = Work(conn, self.box)
            if guard is not None:
                self.box.ensure_capacity(conn, guard)
            result = op(work)
            committed[:] = [work]
            return result

        # The pause between a deadlock victim's attempts stays on real time (the default
        # clock): it waits out contention in the database, which a test clock cannot move.
        result = await resilience.retry(
            lambda: self.db.write(transaction),
            RETRYABLE,
            on=sa.exc.DBAPIError,
            when=lambda exc: isinstance(exc, sa.exc.DBAPIError) and retryable(exc),
        )
        self.box.notify()
        if committed and committed[0].settlements:
            await self.risk.settle(committed[0].settlements)
        return result

    async def refuse(
        self,
        claim: Claim | None,
        progress: Progress,
        error: errors.Gate4Error,
        type_: str,
        *,
        settlement: risk_pb2.SettleOrderRequest | None = None,
        **fields: Any,
    ) -> errors.Gate4Error:
        """Records a refusal with its audit event (and, for an order risk had approved, that
        it was not executed). A decision is stored with the key, so a retry replays it; a
        transient failure (risk or a dependency unreachable) releases the key instead."""
        transient = isinstance(error, (errors.RiskUnavailable, errors.DependencyUnavailable))

        def op(work: Work) -> None:
            work.note(type_, **fields)
            if settlement is not None:
                work.settle(settlement)
            if transient:
                idempotency.release(work.conn, tenant(), claim)
            else:
                idempotency.complete(work.conn, tenant(), claim, self.clock.now(), error=error)

        await self.run(op)
        progress.settled = True
        return error

    async def check_capacity(self, headroom: Headroom) -> None:
        """The backlog check alone, before asking risk: a command that could not be
        recorded is refused before a decision is made for it."""
        await self.db.read(lambda c: self.box.check_capacity(c, headroom))
