"""The reservation reaper: asks execution about approvals that nothing has settled for a while.

Execution settles every change of an order (services.risk.settlement), but a settlement
can be lost (execution crashed after the fill, risk was unreachable). Each pass takes the
open reservations nothing has settled for `check_after`, asks execution
(`GetSettlements`, one call per tenant, as that tenant) and:

- applies what execution reports, like any settlement;
- releases, as not executed, an order execution never recorded once its decision is older
  than `release_after`: by then the command that asked (its lease is shorter) has given
  up, and should it be resumed it asks risk again, which voids this decision anyway;
- keeps everything when execution cannot be reached: holding exposure that may be stale
  is the safe side, and the next pass asks again.

Several risk processes may reap at once: settlements are idempotent and a release only
acts on the same open decision, so each order is released once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

import grpc
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from services.risk import locks, reservations, settlement
from services.risk.books import Books
from services.risk.reservations import Reservation
from services.runtime import correlation, errors
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock, Periodic
from services.runtime.storage import Database

if TYPE_CHECKING:
    from gate4.execution.v1.execution_pb2_grpc import ExecutionServiceAsyncStub

log = logging.getLogger("gate4.risk.reaper")

NEVER_RECORDED = "execution never recorded the order"
# Orders asked about per tenant and pass; the oldest first, the rest next pass.
BATCH = 500
CALL_TIMEOUT_SECONDS = 5.0
# Finished orders are kept this long: longer than execution keeps idempotency keys, so an
# order resumed late still finds the decision it must void.
KEEP_FINISHED = timedelta(days=7)


@dataclass
class Pass:
    """What one pass did."""

    asked: int = 0
    settled: int = 0
    released: int = 0
    #: Reservations kept because execution could not answer for them.
    kept: int = 0


class Reaper:
    def __init__(
        self,
        db: Database,
        box: Outbox,
        execution: ExecutionServiceAsyncStub,
        *,
        check_after: timedelta,
        release_after: timedelta,
        clock: Clock = SYSTEM,
        books: Books | None = None,
    ) -> None:
        self.db = db
        self.books = books if books is not None else Books()
        self.outbox = box
        self.execution = execution
        self.check_after = check_after
        self.release_after = max(release_after, check_after)
        self.clock = clock
        #: A pass every `check_after` (the first one `check_after` after start: a restart
        #: does not ask about what a previous run's pass just asked about).
        self.worker = Periodic(
            "risk-reservation-reaper",
            self.reap_once,
            interval=check_after.total_seconds(),
            clock=clock,
            wait_first=True,
            logger=log,
        )

    async def reap_once(self, now: datetime | None = None) -> Pass:
        """One pass over the reservations due at `now` (default: the current time)."""
        at = now or self.clock.now()
        due = await self.db.read(lambda c: reservations.stale(c, at - self.check_after, BATCH * 10))
        by_tenant: dict[str, list[Reservation]] = {}
        for held in due:
            tenant = by_tenant.setdefault(held.tenant_id, [])
            if len(tenant) < BATCH:
                tenant.append(held)
        done = Pass()
        for tenant_id, orders in by_tenant.items():
            corr = correlation.Correlation(
                request_id=correlation.new_request_id(), tenant_id=tenant_id
            )
            with correlation.bound(corr):
                await self._reap_tenant(tenant_id, orders, at, done)
        await self.db.write(partial(reservations.prune, before=at - KEEP_FINISHED))
        if done.released:
            self.outbox.notify()
        return done

    async def _reap_tenant(
        self, tenant: str, held: list[Reservation], at: datetime, done: Pass
    ) -> None:
        by_order = {h.order_id: h for h in held}
        done.asked += len(by_order)
        try:
            reply = await self.execution.GetSettlements(
                execution_pb2.GetSettlementsRequest(order_ids=list(by_order)),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            error = errors.from_peer("execution", exc)
            log.warning(
                "execution could not report settlements; reservations are kept",
                extra={"tenant_id": tenant, "code": error.error_code()},
            )
            done.kept += len(by_order)
            return
        for request in reply.settlements:
            order = by_order.get(request.order_id)
            if order is None:
                continue  # not asked for: not this pass's to apply
            # Execution's report may leave out what risk already knows.
            request.account_id = request.account_id or order.account_id
            request.deployment_id = request.deployment_id or order.deployment_id
            try:
                parsed = settlement.parse(request)
            except errors.ValidationFailed as exc:
                log.error("execution reported an invalid settlement", extra={"detail": exc.detail})
                done.kept += 1
                continue
            if (await self._apply(tenant, parsed, at, None)).changed:
                done.settled += 1
        cutoff = at - self.release_after
        for order_id in reply.unknown_order_ids:
            order = by_order.get(order_id)
            if order is None:
                continue
            if order.decided_at >= cutoff:
                done.kept += 1  # the command that asked may still be placing it
                continue
            release = settlement.Settlement(
                order_id=order.order_id,
                account_id=order.account_id,
                deployment_id=order.deployment_id,
                filled=Decimal(0),
                closed=False,
                position=None,
                not_executed_reason=NEVER_RECORDED,
                decision_id=order.decision_id,
            )
            if (await self._apply(tenant, release, at, cutoff)).changed:
                done.released += 1

    async def _apply(
        self,
        tenant: str,
        settled: settlement.Settlement,
        at: datetime,
        decided_before: datetime | None,
    ) -> settlement.Applied:
        def op(conn: Connection) -> settlement.Applied:
            return settlement.apply(
                conn, self.outbox, self.books, tenant, settled, at, decided_before=decided_before
            )

        return await locks.retry(lambda: self.db.write(op))
