"""Placing an order: the risk decision, the record, the venue, the settlement.

One order's life, in two units of work around the venue call:

1. One read: the OrderIntent risk decides on and the checks that need no lock (the
   deployment exists and takes orders, a reduce-only order reduces, the audit backlog has
   room); then risk's decision. Risk counts every order it approved and that has not
   settled yet, together with filled positions, so concurrent orders cannot each pass a
   limit that only one of them fits (services/risk/exposure.py). An order that adds risk
   first waits until the deployment's last fills were reported to risk (marks.Equity).
2. Record: under the deployment's row lock, the checks again, the idempotency key still
   ours (fencing out an attempt whose lease was taken over; a new key is written here,
   with the order), the order `accepted` with venue_state `pending` and its audit event.
   An approved order refused here is recorded as `order.rejected` with the decision's id,
   and risk hears it was not executed.
3. The venue, with the orchestrator's retries; never blind (reconcile.py).
4. Settle: fills, position (versioned), status, audit events, the key's stored reply;
   then risk hears of the fills, and of the deployment's equity (coalesced).

Risk-reducing flatten orders (stop, kill switch) are the one place a missing risk answer
does not block: they are sized from the position ledger under the reduce-only guard.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.execution import deployments, idempotency, orders, reconcile, settlements, store
from services.execution.faults import CrashHooks
from services.execution.idempotency import ROUTE_SUBMIT, Claim, Progress
from services.execution.marks import Equity
from services.execution.orchestrator import Orchestrator, Retry
from services.execution.orders import Intent
from services.execution.positions import gross_exposure
from services.execution.riskgate import RiskControls, refusal
from services.execution.unitofwork import UnitOfWork, Work, tenant
from services.execution.venue import ExecutionReport, VenueAdapter, VenueError, VenueOrder
from services.runtime import correlation, errors, outcomes
from services.runtime.config import Settings
from services.runtime.decimals import format_decimal
from services.runtime.outbox import Headroom, Outbox
from services.runtime.timeutil import to_timestamp

# What this service itself refuses an order for: not running, a reduce-only order that does
# not reduce, or no room to audit it.
LOCAL_REFUSALS = (errors.StateConflict, errors.RiskLimitBreached, errors.DependencyUnavailable)


class OrderFlow:
    def __init__(
        self,
        uow: UnitOfWork,
        venue: VenueAdapter,
        orchestrator: Orchestrator,
        risk: RiskControls,
        equity: Equity,
        settings: Settings,
        hooks: CrashHooks,
    ) -> None:
        self.uow = uow
        self.venue = venue
        self.orchestrator = orchestrator
        self.risk = risk
        self.equity = equity
        self.settings = settings
        self.hooks = hooks

    async def submit(
        self, intent: Intent, order_id: str, claim: Claim | None, progress: Progress
    ) -> execution_pb2.Order:
        if claim is not None and claim.resumed:
            tenant_id = tenant()
            row = await self.uow.db.read(lambda c: store.order_row(c, tenant_id, order_id))
            if row is not None:
                # The attempt that held the key recorded the order, then died: never resend,
                # reconcile with the venue by client order id.
                progress.started = progress.settled = True
                return await reconcile.settle_order(self.uow, self.venue, self.equity, row, claim)
        return await self.place(intent, order_id, claim, progress)

    async def place(
        self,
        intent: Intent,
        order_id: str,
        claim: Claim | None,
        progress: Progress,
        *,
        flatten: str = "",
    ) -> execution_pb2.Order:
        """Risk check, record as pending, send with retries, settle: one order's whole life."""
        tenant_id = tenant()
        # Reduce-only and flatten orders are the brake: they may use the outbox reserve.
        headroom = Headroom.RESERVE if flatten or intent.reduce_only else Headroom.BOUND
        if headroom is Headroom.BOUND:
            # Risk decides an order that adds risk on the deployment's equity as of its last
            # fill (drawdown). The brake does not wait for it: reducing is always allowed.
            await self.equity.reported(intent.deployment_id)
        ready = await self.uow.db.read(
            lambda c: _prepare(c, self.uow.box, tenant_id, intent, order_id, headroom, flatten)
        )
        row, check = ready.row, ready.check
        common: dict[str, Any] = {"deployment_id": intent.deployment_id, "order_id": order_id}
        data: dict[str, Any] = {
            "instrument": intent.instrument,
            "side": intent.side,
            "type": intent.type,
            "quantity": format_decimal(intent.quantity),
            "reduceOnly": intent.reduce_only,
            **({"flatten": flatten} if flatten else {}),
        }

        def refused(exc: errors.Gate4Error, **event: Any) -> Awaitable[errors.Gate4Error]:
            """Records the refusal (order.rejected, outcome from the error) with the key."""
            fields: dict[str, Any] = {
                "outcome": exc.outcome or exc.error_code(),
                "reason": exc.detail,
            }
            fields.update(event)
            return self.uow.refuse(claim, progress, exc, "order.rejected", **fields, **common)

        if row is None:
            missing = errors.NotFound(f"deployment {intent.deployment_id!r} not found")
            raise await refused(missing, outcome=missing.error_code(), reason="", data=data)
        common["account_id"] = str(row["account_id"])
        if ready.refusal is not None:
            raise await refused(ready.refusal, data=data)

        decision: risk_pb2.RiskDecision | None
        try:
            decision = await self.risk.check_order(check)
        except errors.RiskUnavailable as exc:
            if not flatten:
                raise await refused(exc, data=data) from None
            decision = None  # a flatten proceeds under the local reduce-only guard
        if decision is not None and not decision.approved:
            raise await refused(
                refusal(decision),
                policy_version=decision.policy_version,
                data={**data, "decisionId": decision.decision_id},
            )
        version = decision.policy_version if decision is not None else str(row["policy_version"])
        outcome = decision.outcome if decision is not None else outcomes.RISK_UNAVAILABLE
        decision_id = decision.decision_id if decision is not None else ""
        lease = self.settings.command_lease

        def record(work: Work) -> None:
            conn = work.conn
            current = store.deployment_row(conn, tenant_id, intent.deployment_id, for_update=True)
            assert current is not None
            now = self.uow.clock.now()
            idempotency.hold(conn, tenant_id, claim, now, now + lease)
            if not flatten:
                deployments.check_accepts_orders(intent.deployment_id, str(current["state"]))
            if intent.reduce_only:
                # Again under the row lock: two reducers must not take the same quantity.
                orders.check_reduce_only(conn, tenant_id, intent.deployment_id, intent)
            orders.insert_pending(
                conn,
                order_id=order_id,
                deployment=current,
                intent=intent,
                policy_version=version,
                outcome=outcome,
                decision_id=decision_id,
                idempotency_key=claim.key if claim is not None else "",
                request_id=correlation.current().request_id,
                lease_until=now + lease,
                now=now,
            )
            if decision is not None and current["policy_version"] != version:
                conn.execute(
                    sa.update(store.deployments)
                    .where(store.deployments.c.deployment_id == intent.deployment_id)
                    .values(policy_version=version)
                )
            work.event(
                "order.accepted",
                outcome=outcome,
                reason=decision.reason if decision is not None else "risk unavailable",
                policy_version=version,
                data={**data, "decisionId": decision_id, "clientOrderId": intent.client_order_id},
                **common,
            )

        try:
            await self.uow.run(record, guard=headroom)
        except errors.IdempotencyInProgress:
            # Fenced out: the attempt that took the key over decides this order id again,
            # which voids this decision at risk; or, for a new key, another attempt wrote
            # it first with its own order, and risk hears this one was not executed.
            # Nothing of this attempt was recorded.
            progress.settled = True
            if claim is not None and claim.deferred and decision is not None:
                await self.risk.settle(
                    [
                        settlements.not_executed(
                            order_id,
                            str(row["account_id"]),
                            intent.deployment_id,
                            decision_id,
                            "another request with the same Idempotency-Key recorded its order",
                        )
                    ]
                )
            raise
        except LOCAL_REFUSALS as exc:
            raise await refused(
                exc,
                reason=f"refused after risk approved it: {exc.detail}",
                policy_version=version,
                data={**data, "decisionId": decision_id, "notExecuted": True},
                settlement=settlements.not_executed(
                    order_id, str(row["account_id"]), intent.deployment_id, decision_id, exc.detail
                )
                if decision is not None
                else None,
            ) from None
        progress.started = True
        return await self._send(intent, order_id, claim, progress, row, version, common, data)

    async def _send(
        self,
        intent: Intent,
        order_id: str,
        claim: Claim | None,
        progress: Progress,
        row: sa.RowMapping,
        version: str,
        common: dict[str, Any],
        data: dict[str, Any],
    ) -> execution_pb2.Order:
        tenant_id = tenant()
        venue_order = VenueOrder(
            client_order_id=order_id,
            tenant_id=tenant_id,
            account_id=str(row["account_id"]),
            instrument=intent.instrument,
            side=intent.side,
            type=intent.type,
            quantity=intent.quantity,
            limit_price=intent.limit_price,
        )
        lease = self.settings.command_lease

        async def on_retry(retry: Retry) -> None:
            def op(work: Work) -> None:
                work.conn.execute(
                    sa.update(store.orders)
                    .where(store.orders.c.order_id == order_id)
                    .values(venue_attempts=retry.attempt, lease_until=self.uow.clock.now() + lease)
                )
                work.event(
                    "order.retried",
                    outcome=outcomes.VENUE_RETRY,
                    reason=retry.error,
                    policy_version=version,
                    data={**data, "attempt": retry.attempt, "delaySeconds": retry.delay_seconds},
                    **common,
                )

            await self.uow.run(op)

        submission = await self.orchestrator.submit(
            venue_order, (tenant_id, intent.deployment_id), on_retry
        )
        self.hooks.crash_after_venue(ROUTE_SUBMIT)

        def settle(work: Work) -> execution_pb2.Order:
            now = self.uow.clock.now()
            extra: dict[str, object] = {
                "reconciled": submission.reconciled,
                "attempts": submission.attempts,
            }
            if submission.report is not None:
                order = orders.apply_report(
                    work,
                    tenant_id,
                    order_id,
                    submission.report,
                    now,
                    attempts=submission.attempts,
                    event_data=extra,
                )
                if submission.reconciled:
                    reconcile.reconciled_event(
                        work, order, outcomes.FOUND_AT_VENUE, "adopted the venue's answer"
                    )
                _degrade(work, tenant_id, intent.deployment_id, "", now)
            else:
                order = orders.reject(
                    work,
                    tenant_id,
                    order_id,
                    now,
                    outcome=outcomes.VENUE_RETRY_BUDGET_EXHAUSTED,
                    reason=submission.error,
                    attempts=submission.attempts,
                    event_data=extra,
                )
                _degrade(work, tenant_id, intent.deployment_id, submission.error, now)
            idempotency.complete(
                work.conn, tenant_id, claim, now, response=order.SerializeToString()
            )
            return order

        order = await self.uow.run(settle)
        progress.settled = True
        self.hooks.crash_after_commit(ROUTE_SUBMIT)
        if order.fills:
            self.equity.changed([intent.deployment_id])
        return order

    async def get(self, order_id: str) -> execution_pb2.Order:
        tenant_id = tenant()
        found = await self.uow.db.read(lambda c: store.get_order(c, tenant_id, order_id))
        if found is None:
            raise errors.NotFound(f"order {order_id!r} not found")
        return found

    async def cancel(self, order_id: str, reason: str) -> execution_pb2.Order:
        """Cancelling never adds exposure: it needs no risk decision and is audited here."""
        tenant_id = tenant()
        row = await self.uow.db.read(lambda c: store.order_row(c, tenant_id, order_id))
        if row is None:
            raise errors.NotFound(f"order {order_id!r} not found")
        if row["status"] not in orders.OPEN_STATUSES:
            raise errors.StateConflict(
                f"order {order_id} is {row['status']}; it cannot be cancelled"
            )
        if row["venue_state"] == orders.PENDING:
            raise errors.StateConflict(
                f"order {order_id} is still being sent to the venue; retry the cancel shortly"
            )
        # A cancel reduces risk: it may use the outbox reserve while audit is down.
        await self.uow.check_capacity(Headroom.RESERVE)
        return await self.cancel_row(row, reason or "cancelled on request")

    async def cancel_row(self, row: sa.RowMapping, reason: str) -> execution_pb2.Order:
        tenant_id, order_id = str(row["tenant_id"]), str(row["order_id"])
        try:
            report = await self.venue.cancel(tenant_id, order_id)
        except VenueError as exc:
            raise errors.DependencyUnavailable(
                f"the venue did not confirm the cancel of {order_id}: {exc}"
            ) from None
        if report is None:
            # The venue never had it (it was never sent): cancelled on our side only.
            report = ExecutionReport(order_id, "cancelled", reason="never reached the venue")
        cancelled, clock = report, self.uow.clock
        return await self.uow.run(
            lambda w: orders.apply_report(
                w, tenant_id, order_id, cancelled, clock.now(), event_data={"reason": reason}
            )
        )


@dataclass(frozen=True)
class _Prepared:
    """What one read tells before risk is asked: the deployment (None: not found), the
    OrderIntent risk decides on, and this service's own refusal if it has one."""

    row: sa.RowMapping | None
    check: risk_pb2.OrderIntent
    refusal: errors.Gate4Error | None = None


def _prepare(
    conn: sa.Connection,
    box: Outbox,
    tenant_id: str,
    intent: Intent,
    order_id: str,
    headroom: Headroom,
    flatten: str,
) -> _Prepared:
    """The deployment and the OrderIntent risk decides on (the order, the deployment's
    positions with their versions, the context the contract names), then the local checks
    in the order a client is told of them: not running, no audit room, not reducing."""
    row = store.deployment_row(conn, tenant_id, intent.deployment_id)
    check = risk_pb2.OrderIntent(
        order_id=order_id,
        deployment_id=intent.deployment_id,
        instrument=intent.instrument,
        side=intent.side,
        type=intent.type,
        quantity=format_decimal(intent.quantity),
        limit_price=format_decimal(intent.limit_price) if intent.limit_price is not None else "",
        reduce_only=intent.reduce_only,
    )
    if row is None:
        return _Prepared(None, check)
    account = str(row["account_id"])
    book = store.book(conn, tenant_id, intent.deployment_id)
    check.account_id = account
    check.position_quantity = format_decimal(book.position(intent.instrument).quantity)
    check.open_orders, check.account_open_orders = orders.open_counts(
        conn, tenant_id, account, intent.deployment_id
    )
    check.capital_allocation = str(row["capital_allocation"])
    mark = book.marks.get(intent.instrument)
    if mark is not None:
        check.mark_price = format_decimal(mark)
        ts = to_timestamp(book.mark_times[intent.instrument])
        assert ts is not None
        check.mark_time.CopyFrom(ts)
    check.account_position_quantity = format_decimal(
        store.account_position(conn, tenant_id, account, intent.instrument)
    )
    check.deployment_gross_exposure = format_decimal(gross_exposure(book.positions, book.marks))
    check.positions.extend(settlements.snapshots(book, intent.deployment_id, [intent.instrument]))
    check.deployment_instruments.extend(deployments.instruments(str(row["instruments"])))
    try:
        if not flatten:
            deployments.check_accepts_orders(intent.deployment_id, str(row["state"]))
        box.check_capacity(conn, headroom)
        if intent.reduce_only:
            orders.check_reduce_only(conn, tenant_id, intent.deployment_id, intent)
    except LOCAL_REFUSALS as exc:
        return _Prepared(row, check, exc)
    return _Prepared(row, check)


def _degrade(work: Work, tenant_id: str, deployment_id: str, reason: str, now: datetime) -> None:
    """Marks the deployment degraded (reason) or clears it (no reason), audited on change."""
    row = store.deployment_row(work.conn, tenant_id, deployment_id)
    if row is None or bool(row["degraded"]) == bool(reason):
        return
    work.conn.execute(
        sa.update(store.deployments)
        .where(store.deployments.c.deployment_id == deployment_id)
        .values(degraded=bool(reason), degraded_reason=reason, updated_at=now)
    )
    work.event(
        "deployment.degraded" if reason else "deployment.recovered",
        outcome=outcomes.VENUE_RETRY_BUDGET_EXHAUSTED if reason else outcomes.RECOVERED,
        reason=reason,
        policy_version=str(row["policy_version"]),
        account_id=str(row["account_id"]),
        deployment_id=deployment_id,
    )
