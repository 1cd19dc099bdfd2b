"""The command flows: create and stop deployments, submit and cancel orders, marks, kill switches.

Each side-effecting flow asks risk first, then writes its side effect, its audit events
(transactional outbox) and its idempotency key's result in one write op. The flows that
reach the venue record the order as pending first, so whatever happens afterwards can be
reconciled by client order id (reconcile.py).

Risk-reducing commands (stop, cancel, flatten, enforcing a kill switch) are the one place a
missing risk answer does not block: cancelling can never add exposure, and a flatten is
sized from our own position ledger, on the reducing side, under the reduce-only guard.
Refusing them during a risk outage would keep exposure nobody can then remove. They still
ask risk (so the decision is audited there) and record RISK_UNAVAILABLE here when risk
cannot answer. See docs/portal/operations/gate4-orchestrator-controls.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.execution import deployments, idempotency, orders, reconcile, store
from services.execution.config import ExecutionSettings
from services.execution.faults import CrashHooks
from services.execution.idempotency import ROUTE_CREATE, ROUTE_STOP, ROUTE_SUBMIT, Claim
from services.execution.orchestrator import Orchestrator, Retry
from services.execution.orders import Intent
from services.execution.positions import ZERO, dec, fmt, gross_exposure, reducing_side
from services.execution.positions import value as positions_value
from services.execution.riskgate import RISK_UNAVAILABLE, RiskGate, refusal
from services.execution.venue import ExecutionReport, VenueAdapter, VenueError, VenueOrder
from services.runtime import correlation, errors, outbox
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc, to_timestamp, utcnow

log = logging.getLogger("gate4.execution.commands")
T = TypeVar("T")

SOURCE = "execution"
# deadlock_detected, serialization_failure
RETRYABLE_SQLSTATES = ("40P01", "40001")
RETRYABLE_ATTEMPTS = 3
FOUND_AT_VENUE = "FOUND_AT_VENUE"


@dataclass
class Progress:
    """What a keyed command has done, so a failure knows whether the key may be released."""

    #: A side effect was committed that reconciliation, not a retry, must finish.
    started: bool = False
    #: The command stored its own result (or released the key) already.
    settled: bool = False


@dataclass
class StopResult:
    cancelled: list[str] = field(default_factory=list)
    flattened: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def write_retrying(db: Database, op: Callable[[Connection], T]) -> T:
    """db.write, run again when PostgreSQL picked the op as a deadlock or serialization victim
    (two processes locking keys and deployment rows in different orders). Ops are plain
    functions of the connection, so running one again is safe."""
    for attempt in range(1, RETRYABLE_ATTEMPTS + 1):
        try:
            return await db.write(op)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            if attempt == RETRYABLE_ATTEMPTS:
                raise
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _event(type_: str, **fields: Any) -> Any:
    return outbox.event(type_, source=SOURCE, **fields)


def _tenant() -> str:
    return correlation.current().tenant_id


class Commands:
    def __init__(
        self,
        db: Database,
        box: Outbox,
        venue: VenueAdapter,
        orchestrator: Orchestrator,
        risk: RiskGate,
        settings: ExecutionSettings,
        hooks: CrashHooks,
    ) -> None:
        self.db = db
        self.box = box
        self.venue = venue
        self.orchestrator = orchestrator
        self.risk = risk
        self.settings = settings
        self.hooks = hooks

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.execution_command_lease_seconds)

    async def write(self, op: Callable[[Connection], T]) -> T:
        result = await write_retrying(self.db, op)
        self.box.notify()
        return result

    async def refuse(
        self, claim: Claim | None, progress: Progress, error: errors.Gate4Error, evt: Any
    ) -> errors.Gate4Error:
        """Records a refusal with its audit event; a decision is stored with the key, a
        transient failure (risk or a dependency unreachable) releases it."""
        transient = isinstance(error, (errors.RiskUnavailable, errors.DependencyUnavailable))

        def op(conn: Connection) -> None:
            self.box.add(conn, evt)
            if transient:
                idempotency.release(conn, _tenant(), claim)
            else:
                idempotency.complete(conn, _tenant(), claim, utcnow(), error=error)

        await self.write(op)
        progress.settled = True
        return error

    # -- deployments -------------------------------------------------------------------------

    async def create_deployment(
        self,
        request: execution_pb2.CreateDeploymentRequest,
        deployment_id: str,
        claim: Claim | None,
        progress: Progress,
    ) -> execution_pb2.Deployment:
        mode = request.mode or "paper"
        details = {
            "strategyId": request.strategy_id,
            "instruments": list(request.instruments),
            "capitalAllocation": request.capital_allocation,
            "mode": mode,
        }
        try:
            decision = await self.risk.check_deployment(
                risk_pb2.CheckDeploymentRequest(
                    deployment_id=deployment_id,
                    account_id=request.account_id,
                    strategy_id=request.strategy_id,
                    instruments=request.instruments,
                    capital_allocation=request.capital_allocation,
                    mode=mode,
                    action="create",
                )
            )
        except errors.RiskUnavailable as exc:
            raise await self.refuse(
                claim,
                progress,
                exc,
                _event(
                    "deployment.rejected",
                    outcome=RISK_UNAVAILABLE,
                    reason=exc.detail,
                    account_id=request.account_id,
                    deployment_id=deployment_id,
                    data=details,
                ),
            ) from None
        if not decision.approved:
            raise await self.refuse(
                claim,
                progress,
                refusal(decision),
                _event(
                    "deployment.rejected",
                    outcome=decision.outcome,
                    reason=decision.reason,
                    policy_version=decision.policy_version,
                    account_id=request.account_id,
                    deployment_id=deployment_id,
                    data={**details, "decisionId": decision.decision_id},
                ),
            )

        def op(conn: Connection) -> execution_pb2.Deployment:
            self.box.ensure_capacity(conn)
            now = utcnow()
            conn.execute(
                sa.insert(store.deployments).values(
                    deployment_id=deployment_id,
                    tenant_id=_tenant(),
                    strategy_id=request.strategy_id,
                    account_id=request.account_id,
                    instruments=json.dumps(list(request.instruments)),
                    capital_allocation=fmt(Decimal(request.capital_allocation)),
                    mode=mode,
                    state=deployments.PENDING,
                    policy_version=decision.policy_version,
                    degraded=False,
                    peak_equity=fmt(Decimal(request.capital_allocation)),
                    created_at=now,
                    updated_at=now,
                )
            )
            common = {
                "policy_version": decision.policy_version,
                "account_id": request.account_id,
                "deployment_id": deployment_id,
            }
            self.box.add(
                conn,
                _event(
                    "deployment.created",
                    outcome=decision.outcome,
                    reason=decision.reason,
                    data={**details, "decisionId": decision.decision_id, "state": "pending"},
                    **common,
                ),
            )
            # Nothing to warm up on the paper venue: a created deployment starts at once.
            self._set_state(conn, deployment_id, deployments.PENDING, deployments.RUNNING, "")
            self.box.add(
                conn, _event("deployment.started", outcome="RUNNING", data=details, **common)
            )
            row = store.deployment_row(conn, _tenant(), deployment_id)
            assert row is not None
            msg = store.deployment_message(conn, row)
            idempotency.complete(conn, _tenant(), claim, now, response=msg.SerializeToString())
            return msg

        msg: execution_pb2.Deployment = await self.write(op)
        progress.settled = True
        self.hooks.crash_after_commit(ROUTE_CREATE)
        return msg

    def _set_state(
        self, conn: Connection, deployment_id: str, current: str, target: str, reason: str
    ) -> None:
        deployments.check_transition(deployment_id, current, target)
        values: dict[str, Any] = {"state": target, "updated_at": utcnow()}
        if reason:
            values["state_reason"] = reason
        conn.execute(
            sa.update(store.deployments)
            .where(store.deployments.c.deployment_id == deployment_id)
            .values(**values)
        )

    async def get_deployment(self, deployment_id: str) -> execution_pb2.Deployment:
        tenant = _tenant()
        row = await self.db.read(lambda c: store.deployment_row(c, tenant, deployment_id))
        if row is None:
            raise errors.NotFound(f"deployment {deployment_id!r} not found")
        switch = await self._switch(row)
        found = await self.db.read(lambda c: store.get_deployment(c, tenant, deployment_id, switch))
        assert found is not None
        return found

    async def _switch(self, row: sa.RowMapping) -> store.KillSwitchView:
        view = await self.risk.switch_for(
            str(row["tenant_id"]), str(row["account_id"]), str(row["deployment_id"])
        )
        if view is not None:
            return view
        last = store.stored_switch(str(row["enforced_switch"]))
        reason = "risk unavailable; last enforced switch shown"
        return store.KillSwitchView(
            last.engaged, last.scope, last.scope_id, f"{last.reason} ({reason})".strip()
        )

    async def stop_deployment(
        self,
        request: execution_pb2.StopDeploymentRequest,
        claim: Claim | None,
        progress: Progress,
    ) -> execution_pb2.Deployment:
        tenant, deployment_id = _tenant(), request.deployment_id
        row = await self.db.read(lambda c: store.deployment_row(c, tenant, deployment_id))
        if row is None:
            raise await self.refuse(
                claim,
                progress,
                errors.NotFound(f"deployment {deployment_id!r} not found"),
                _event("deployment.stop_refused", outcome="NOT_FOUND", deployment_id=deployment_id),
            )
        common = {"account_id": str(row["account_id"]), "deployment_id": deployment_id}
        try:
            self._check_stoppable(row, utcnow())
        except errors.StateConflict as exc:
            raise await self.refuse(
                claim,
                progress,
                exc,
                _event(
                    "deployment.stop_refused", outcome="STATE_CONFLICT", reason=exc.detail, **common
                ),
            ) from None
        decision: risk_pb2.RiskDecision | None
        try:
            decision = await self.risk.check_deployment(
                risk_pb2.CheckDeploymentRequest(
                    deployment_id=deployment_id,
                    account_id=str(row["account_id"]),
                    strategy_id=str(row["strategy_id"]),
                    instruments=json.loads(str(row["instruments"])),
                    capital_allocation=str(row["capital_allocation"]),
                    mode=str(row["mode"]),
                    action="stop",
                )
            )
        except errors.RiskUnavailable:
            decision = None  # stopping reduces risk: it proceeds, recorded as such
        if decision is not None and not decision.approved:
            raise await self.refuse(
                claim,
                progress,
                refusal(decision),
                _event(
                    "deployment.stop_refused",
                    outcome=decision.outcome,
                    reason=decision.reason,
                    policy_version=decision.policy_version,
                    **common,
                ),
            )
        outcome = decision.outcome if decision is not None else RISK_UNAVAILABLE
        version = decision.policy_version if decision is not None else str(row["policy_version"])
        reason = request.reason or "stopped on request"

        def begin(conn: Connection) -> None:
            self.box.ensure_capacity(conn)
            current = store.deployment_row(conn, tenant, deployment_id, for_update=True)
            assert current is not None
            self._check_stoppable(current, utcnow())
            if current["state"] != deployments.STOPPING:
                self._set_state(
                    conn, deployment_id, str(current["state"]), deployments.STOPPING, reason
                )
            conn.execute(
                sa.update(store.deployments)
                .where(store.deployments.c.deployment_id == deployment_id)
                .values(
                    stop_flatten=request.flatten,
                    stop_lease_until=utcnow() + self.lease,
                    stop_count=int(current["stop_count"]) + 1,
                    policy_version=version,
                    state_reason=reason,
                )
            )
            self.box.add(
                conn,
                _event(
                    "deployment.stopping",
                    outcome=outcome,
                    reason=reason,
                    policy_version=version,
                    data={
                        "flatten": request.flatten,
                        "riskDecided": decision is not None,
                        "decisionId": decision.decision_id if decision is not None else "",
                        "from": current["state"],
                    },
                    **common,
                ),
            )

        try:
            await self.write(begin)
        except errors.StateConflict as exc:
            raise await self.refuse(
                claim,
                progress,
                exc,
                _event(
                    "deployment.stop_refused", outcome="STATE_CONFLICT", reason=exc.detail, **common
                ),
            ) from None
        progress.started = True
        return await self.finish_stop(deployment_id, request.flatten, reason, claim)

    def _check_stoppable(self, row: sa.RowMapping, now: datetime) -> None:
        state = str(row["state"])
        if state == deployments.STOPPING:
            lease = row["stop_lease_until"]
            if lease is not None and as_utc(lease) > now:
                raise errors.StateConflict(
                    f"deployment {row['deployment_id']} is already stopping; read it to follow"
                )
            return  # the stop that began it died: this one finishes it
        deployments.check_transition(str(row["deployment_id"]), state, deployments.STOPPING)

    async def finish_stop(
        self, deployment_id: str, flatten: bool, reason: str, claim: Claim | None
    ) -> execution_pb2.Deployment:
        tenant = _tenant()
        result = await self._reduce(deployment_id, flatten=flatten, reason=reason)
        row = await self.db.read(lambda c: store.deployment_row(c, tenant, deployment_id))
        assert row is not None
        switch = await self._switch(row)
        target = deployments.FAILED if result.problems else deployments.STOPPED
        final_reason = "; ".join(result.problems) if result.problems else reason

        def end(conn: Connection) -> execution_pb2.Deployment:
            current = store.deployment_row(conn, tenant, deployment_id, for_update=True)
            assert current is not None
            self._set_state(conn, deployment_id, str(current["state"]), target, final_reason)
            conn.execute(
                sa.update(store.deployments)
                .where(store.deployments.c.deployment_id == deployment_id)
                .values(stop_lease_until=None)
            )
            self.box.add(
                conn,
                _event(
                    f"deployment.{target}",
                    outcome=target.upper(),
                    reason=final_reason,
                    policy_version=str(current["policy_version"]),
                    account_id=str(current["account_id"]),
                    deployment_id=deployment_id,
                    data={
                        "flatten": flatten,
                        "cancelledOrderIds": result.cancelled,
                        "flattenOrderIds": result.flattened,
                    },
                ),
            )
            updated = store.deployment_row(conn, tenant, deployment_id)
            assert updated is not None
            msg = store.deployment_message(conn, updated, switch)
            idempotency.complete(conn, tenant, claim, utcnow(), response=msg.SerializeToString())
            return msg

        msg: execution_pb2.Deployment = await self.write(end)
        self.hooks.crash_after_commit(ROUTE_STOP)
        await self.report_equity([deployment_id])
        return msg

    async def _reduce(self, deployment_id: str, *, flatten: bool, reason: str) -> StopResult:
        """Cancels the deployment's open orders and, when asked, flattens its positions."""
        result = StopResult()
        await self._settle_pending(deployment_id)
        result.cancelled = await self._cancel_open(deployment_id, reason)
        if flatten:
            result.flattened, result.problems = await self._flatten(deployment_id, reason)
        return result

    async def _settle_pending(self, deployment_id: str) -> None:
        """Waits for in-flight submissions to get their venue answer (a stop must see them)."""
        deadline = time.monotonic() + self.settings.execution_command_lease_seconds
        while True:
            pending = await self.db.read(
                lambda c: orders.pending_orders(c, deployment_id=deployment_id)
            )
            if not pending:
                return
            if time.monotonic() > deadline:
                for row in pending:
                    await reconcile.settle_order(self, row)
                return
            await asyncio.sleep(0.05)

    async def _cancel_open(self, deployment_id: str, reason: str) -> list[str]:
        tenant = _tenant()
        rows = await self.db.read(
            lambda c: orders.open_orders(c, tenant, deployment_id=deployment_id)
        )
        cancelled: list[str] = []
        for row in rows:
            order = await self._cancel(row, reason)
            if order.status == orders.CANCELLED:
                cancelled.append(order.order_id)
        return cancelled

    async def _cancel(self, row: sa.RowMapping, reason: str) -> execution_pb2.Order:
        tenant, order_id = str(row["tenant_id"]), str(row["order_id"])
        try:
            report = await self.venue.cancel(tenant, order_id)
        except VenueError as exc:
            raise errors.DependencyUnavailable(
                f"the venue did not confirm the cancel of {order_id}: {exc}"
            ) from None
        if report is None:
            # The venue never had it (it was never sent): cancelled on our side only.
            report = ExecutionReport(order_id, "cancelled", reason="never reached the venue")
        return await self.write(
            partial(
                self._apply_report,
                tenant=tenant,
                order_id=order_id,
                report=report,
                event_data={"reason": reason},
            )
        )

    def _apply_report(
        self,
        conn: Connection,
        *,
        tenant: str,
        order_id: str,
        report: ExecutionReport,
        event_data: dict[str, object] | None = None,
    ) -> execution_pb2.Order:
        return orders.apply_report(
            conn, self.box, tenant, order_id, report, utcnow(), event_data=event_data
        )

    async def _flatten(self, deployment_id: str, reason: str) -> tuple[list[str], list[str]]:
        """Closes every position with a reduce-only market order on the reducing side.

        What counts is the result: another reducer (a kill-switch enforcement racing a stop)
        may hold part of a position, so the problems are the positions still open once every
        in-flight order has its venue answer, with the reason the flatten gave for them."""
        tenant = _tenant()
        held = await self.db.read(lambda c: store.deployment_positions(c, deployment_id))
        placed: list[str] = []
        why: dict[str, str] = {}
        for position in held:
            if position.quantity == 0:
                continue
            left = await self.db.read(
                partial(
                    orders.reducible,
                    tenant_id=tenant,
                    deployment_id=deployment_id,
                    instrument=position.instrument,
                )
            )
            side = reducing_side(left)
            if side is None:
                continue  # another reducer already holds what is left
            intent = Intent(
                deployment_id=deployment_id,
                instrument=position.instrument,
                side=side,
                type="market",
                quantity=abs(left),
                reduce_only=True,
                client_order_id="flatten",
            )
            try:
                order = await self._place(intent, new_id("ord"), None, Progress(), flatten=reason)
            except errors.Gate4Error as exc:
                why[position.instrument] = f"flatten refused: {exc.detail}"
                continue
            placed.append(order.order_id)
            if order.status != orders.FILLED:
                why[position.instrument] = (
                    f"flatten order {order.order_id} ended {order.status}: "
                    f"{order.reject_reason or 'not fully filled'}"
                )
        await self._settle_pending(deployment_id)
        after = await self.db.read(lambda c: store.deployment_positions(c, deployment_id))
        problems = [
            f"{p.instrument} still {fmt(p.quantity)} after flatten"
            + (f" ({why[p.instrument]})" if p.instrument in why else "")
            for p in after
            if p.quantity != 0
        ]
        return placed, problems

    # -- orders ------------------------------------------------------------------------------

    async def submit_order(
        self, intent: Intent, order_id: str, claim: Claim | None, progress: Progress
    ) -> execution_pb2.Order:
        if claim is not None and claim.resumed:
            tenant = _tenant()
            row = await self.db.read(lambda c: store.order_row(c, tenant, order_id))
            if row is not None:
                # The attempt that held the key recorded the order, then died: never resend,
                # reconcile with the venue by client order id.
                progress.started = progress.settled = True
                return await reconcile.settle_order(self, row, claim)
        return await self._place(intent, order_id, claim, progress)

    async def _place(
        self,
        intent: Intent,
        order_id: str,
        claim: Claim | None,
        progress: Progress,
        *,
        flatten: str = "",
    ) -> execution_pb2.Order:
        """Risk check, record as pending, send with retries, settle: one order's whole life."""
        tenant = _tenant()
        corr = correlation.current()
        row, check = await self.db.read(lambda c: self._intent(c, tenant, intent, order_id))
        common = {"deployment_id": intent.deployment_id, "order_id": order_id}
        data = {
            "instrument": intent.instrument,
            "side": intent.side,
            "type": intent.type,
            "quantity": fmt(intent.quantity),
            "reduceOnly": intent.reduce_only,
            **({"flatten": flatten} if flatten else {}),
        }
        if row is None:
            raise await self.refuse(
                claim,
                progress,
                errors.NotFound(f"deployment {intent.deployment_id!r} not found"),
                _event("order.rejected", outcome="NOT_FOUND", data=data, **common),
            )
        common["account_id"] = str(row["account_id"])
        try:
            if not flatten:
                deployments.check_accepts_orders(intent.deployment_id, str(row["state"]))
            if intent.reduce_only:
                await self.db.read(
                    lambda c: orders.check_reduce_only(c, tenant, intent.deployment_id, intent)
                )
        except (errors.StateConflict, errors.RiskLimitBreached) as exc:
            raise await self.refuse(
                claim,
                progress,
                exc,
                _event(
                    "order.rejected",
                    outcome=exc.outcome or exc.error_code(),
                    reason=exc.detail,
                    data=data,
                    **common,
                ),
            ) from None

        decision: risk_pb2.RiskDecision | None
        try:
            decision = await self.risk.check_order(check)
        except errors.RiskUnavailable as exc:
            if not flatten:
                raise await self.refuse(
                    claim,
                    progress,
                    exc,
                    _event(
                        "order.rejected",
                        outcome=RISK_UNAVAILABLE,
                        reason=exc.detail,
                        data=data,
                        **common,
                    ),
                ) from None
            decision = None  # a flatten proceeds under the local reduce-only guard
        if decision is not None and not decision.approved:
            raise await self.refuse(
                claim,
                progress,
                refusal(decision),
                _event(
                    "order.rejected",
                    outcome=decision.outcome,
                    reason=decision.reason,
                    policy_version=decision.policy_version,
                    data={**data, "decisionId": decision.decision_id},
                    **common,
                ),
            )
        version = decision.policy_version if decision is not None else str(row["policy_version"])
        outcome = decision.outcome if decision is not None else RISK_UNAVAILABLE

        def record(conn: Connection) -> None:
            self.box.ensure_capacity(conn)
            current = store.deployment_row(conn, tenant, intent.deployment_id, for_update=True)
            assert current is not None
            if not flatten:
                deployments.check_accepts_orders(intent.deployment_id, str(current["state"]))
            if intent.reduce_only:
                # Again under the row lock: two reducers must not take the same quantity.
                orders.check_reduce_only(conn, tenant, intent.deployment_id, intent)
            now = utcnow()
            orders.insert_pending(
                conn,
                order_id=order_id,
                deployment=current,
                intent=intent,
                policy_version=version,
                outcome=outcome,
                idempotency_key=claim.key if claim is not None else "",
                request_id=corr.request_id,
                lease_until=now + self.lease,
                now=now,
            )
            if decision is not None:
                conn.execute(
                    sa.update(store.deployments)
                    .where(store.deployments.c.deployment_id == intent.deployment_id)
                    .values(policy_version=version)
                )
            self.box.add(
                conn,
                _event(
                    "order.accepted",
                    outcome=outcome,
                    reason=decision.reason if decision is not None else "risk unavailable",
                    policy_version=version,
                    data={
                        **data,
                        "decisionId": decision.decision_id if decision is not None else "",
                        "clientOrderId": intent.client_order_id,
                    },
                    **common,
                ),
            )

        try:
            await self.write(record)
        except (errors.StateConflict, errors.RiskLimitBreached) as exc:
            raise await self.refuse(
                claim,
                progress,
                exc,
                _event(
                    "order.rejected",
                    outcome=exc.outcome or exc.error_code(),
                    reason=exc.detail,
                    policy_version=version,
                    data=data,
                    **common,
                ),
            ) from None
        progress.started = True

        venue_order = VenueOrder(
            client_order_id=order_id,
            tenant_id=tenant,
            account_id=str(row["account_id"]),
            instrument=intent.instrument,
            side=intent.side,
            type=intent.type,
            quantity=intent.quantity,
            limit_price=intent.limit_price,
        )

        async def on_retry(retry: Retry) -> None:
            await self.write(
                lambda c: self._retried(c, tenant, order_id, retry, version, common, data)
            )

        submission = await self.orchestrator.submit(
            venue_order, (tenant, intent.deployment_id), on_retry
        )
        self.hooks.crash_after_venue(ROUTE_SUBMIT)

        def settle(conn: Connection) -> execution_pb2.Order:
            now = utcnow()
            extra: dict[str, object] = {
                "reconciled": submission.reconciled,
                "attempts": submission.attempts,
            }
            if submission.report is not None:
                order = orders.apply_report(
                    conn,
                    self.box,
                    tenant,
                    order_id,
                    submission.report,
                    now,
                    attempts=submission.attempts,
                    event_data=extra,
                )
                if submission.reconciled:
                    reconcile.reconciled_event(
                        self.box,
                        conn,
                        order,
                        reconcile.FOUND_AT_VENUE,
                        "adopted the venue's answer",
                    )
                self._degrade(conn, tenant, intent.deployment_id, "")
            else:
                order = orders.reject(
                    conn,
                    self.box,
                    tenant,
                    order_id,
                    now,
                    outcome=orders.VENUE_RETRY_BUDGET_EXHAUSTED,
                    reason=submission.error,
                    attempts=submission.attempts,
                    event_data=extra,
                )
                self._degrade(conn, tenant, intent.deployment_id, submission.error)
            idempotency.complete(conn, tenant, claim, now, response=order.SerializeToString())
            return order

        order: execution_pb2.Order = await self.write(settle)
        progress.settled = True
        self.hooks.crash_after_commit(ROUTE_SUBMIT)
        if order.fills:
            await self.report_equity([intent.deployment_id])
        return order

    def _intent(
        self, conn: Connection, tenant: str, intent: Intent, order_id: str
    ) -> tuple[sa.RowMapping | None, risk_pb2.OrderIntent]:
        """The deployment and the OrderIntent risk needs, with the context the contract names."""
        row = store.deployment_row(conn, tenant, intent.deployment_id)
        check = risk_pb2.OrderIntent(
            order_id=order_id,
            deployment_id=intent.deployment_id,
            instrument=intent.instrument,
            side=intent.side,
            type=intent.type,
            quantity=fmt(intent.quantity),
            limit_price=fmt(intent.limit_price) if intent.limit_price is not None else "",
            reduce_only=intent.reduce_only,
        )
        if row is None:
            return None, check
        account = str(row["account_id"])
        held = store.deployment_positions(conn, intent.deployment_id)
        prices = store.mark_prices(conn, tenant)
        position = next((p.quantity for p in held if p.instrument == intent.instrument), ZERO)
        check.account_id = account
        check.position_quantity = fmt(position)
        check.open_orders = len(
            orders.open_orders(conn, tenant, deployment_id=intent.deployment_id)
        )
        check.capital_allocation = str(row["capital_allocation"])
        mark = store.mark_price(conn, tenant, intent.instrument)
        if mark is not None:
            check.mark_price = fmt(mark[0])
            ts = to_timestamp(mark[1])
            assert ts is not None
            check.mark_time.CopyFrom(ts)
        check.account_position_quantity = fmt(
            store.account_position(conn, tenant, account, intent.instrument)
        )
        check.account_open_orders = len(orders.open_orders(conn, tenant, account_id=account))
        check.deployment_gross_exposure = fmt(gross_exposure(held, prices))
        return row, check

    def _retried(
        self,
        conn: Connection,
        tenant: str,
        order_id: str,
        retry: Retry,
        version: str,
        common: dict[str, str],
        data: dict[str, Any],
    ) -> None:
        conn.execute(
            sa.update(store.orders)
            .where(store.orders.c.order_id == order_id)
            .values(venue_attempts=retry.attempt, lease_until=utcnow() + self.lease)
        )
        self.box.add(
            conn,
            _event(
                "order.retried",
                outcome="VENUE_RETRY",
                reason=retry.error,
                policy_version=version,
                data={**data, "attempt": retry.attempt, "delaySeconds": retry.delay_seconds},
                **common,
            ),
        )

    def _degrade(self, conn: Connection, tenant: str, deployment_id: str, reason: str) -> None:
        """Marks the deployment degraded (reason) or clears it (no reason), audited on change."""
        row = store.deployment_row(conn, tenant, deployment_id)
        if row is None or bool(row["degraded"]) == bool(reason):
            return
        conn.execute(
            sa.update(store.deployments)
            .where(store.deployments.c.deployment_id == deployment_id)
            .values(degraded=bool(reason), degraded_reason=reason, updated_at=utcnow())
        )
        self.box.add(
            conn,
            _event(
                "deployment.degraded" if reason else "deployment.recovered",
                outcome=orders.VENUE_RETRY_BUDGET_EXHAUSTED if reason else "RECOVERED",
                reason=reason,
                policy_version=str(row["policy_version"]),
                account_id=str(row["account_id"]),
                deployment_id=deployment_id,
            ),
        )

    async def get_order(self, order_id: str) -> execution_pb2.Order:
        tenant = _tenant()
        found = await self.db.read(lambda c: store.get_order(c, tenant, order_id))
        if found is None:
            raise errors.NotFound(f"order {order_id!r} not found")
        return found

    async def cancel_order(self, order_id: str, reason: str) -> execution_pb2.Order:
        """Cancelling never adds exposure: it needs no risk decision and is audited here."""
        tenant = _tenant()
        row = await self.db.read(lambda c: store.order_row(c, tenant, order_id))
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
        return await self._cancel(row, reason or "cancelled on request")

    # -- marks and equity --------------------------------------------------------------------

    async def feed_marks(self, marks: list[tuple[str, str, datetime]]) -> tuple[int, int]:
        tenant = _tenant()

        def op(conn: Connection) -> None:
            for instrument, price, at in marks:
                store.upsert_mark(conn, tenant, instrument, price, at)
            self.box.add(
                conn,
                _event(
                    "sandbox.marks",
                    outcome="ACCEPTED",
                    data={"marks": [{"instrument": i, "price": p} for i, p, _ in marks]},
                ),
            )

        await self.write(op)
        fills = 0
        touched: set[str] = set()
        for instrument, price, at in marks:
            for report in await self.venue.on_mark(tenant, instrument, Decimal(price), at):
                order = await self.write(
                    partial(
                        self._apply_report,
                        tenant=tenant,
                        order_id=report.client_order_id,
                        report=report,
                    )
                )
                fills += len(report.fills)
                touched.add(order.deployment_id)
        instruments = {m[0] for m in marks}
        holders = await self.db.read(lambda c: self._holders(c, tenant, instruments))
        await self.report_equity(sorted(touched | holders))
        return len(marks), fills

    def _holders(self, conn: Connection, tenant: str, instruments: set[str]) -> set[str]:
        positions = store.positions
        rows = conn.execute(
            sa.select(positions.c.deployment_id).where(
                positions.c.tenant_id == tenant,
                positions.c.instrument.in_(instruments),
                positions.c.quantity != "0",
            )
        ).scalars()
        return {str(r) for r in rows}

    async def report_equity(self, deployment_ids: list[str]) -> None:
        """Tells risk each deployment's equity; enforces any kill switch the report tripped."""
        tenant = _tenant()
        for deployment_id in deployment_ids:

            def op(conn: Connection, d: str = deployment_id) -> risk_pb2.ReportEquityRequest | None:
                orders.refresh_peak(conn, tenant, d)
                row = store.deployment_row(conn, tenant, d)
                if row is None or row["state"] == deployments.STOPPED:
                    return None
                valuation = positions_value(
                    dec(str(row["capital_allocation"])),
                    store.deployment_positions(conn, d),
                    store.mark_prices(conn, tenant),
                    dec(str(row["peak_equity"])) if row["peak_equity"] else None,
                )
                request = risk_pb2.ReportEquityRequest(
                    account_id=str(row["account_id"]),
                    deployment_id=d,
                    equity=fmt(valuation.equity),
                    realized_pnl=fmt(valuation.realized_pnl),
                    unrealized_pnl=fmt(valuation.unrealized_pnl),
                )
                at = to_timestamp(utcnow())
                assert at is not None
                request.at.CopyFrom(at)
                return request

            request = await self.db.write(op)
            if request is None:
                continue
            for switch in await self.risk.report_equity(request):
                await self.enforce(switch.scope, switch.scope_id, switch.flatten, switch.reason)

    # -- kill switch -------------------------------------------------------------------------

    async def enforce(
        self, scope: str, scope_id: str, flatten: bool, reason: str
    ) -> execution_pb2.EnforceKillSwitchResponse:
        """Cancels open orders in scope and, when asked, flattens its positions. Idempotent:
        a second call finds nothing open and nothing left to reduce."""
        tenant = _tenant()
        rows = await self.db.read(lambda c: store.deployments_in_scope(c, tenant, scope, scope_id))
        reply = execution_pb2.EnforceKillSwitchResponse()
        switch = json.dumps({"scope": scope, "scopeId": scope_id, "reason": reason})
        for row in rows:
            deployment_id = str(row["deployment_id"])
            if row["state"] == deployments.STOPPED:
                continue
            result = await self._reduce(deployment_id, flatten=flatten, reason=reason)
            reply.cancelled_order_ids.extend(result.cancelled)
            reply.flatten_order_ids.extend(result.flattened)

            def op(conn: Connection, r: sa.RowMapping = row, res: StopResult = result) -> None:
                conn.execute(
                    sa.update(store.deployments)
                    .where(store.deployments.c.deployment_id == r["deployment_id"])
                    .values(enforced_switch=switch, updated_at=utcnow())
                )
                self.box.add(
                    conn,
                    _event(
                        "killswitch.enforced",
                        outcome="ENFORCED" if not res.problems else "ENFORCED_WITH_PROBLEMS",
                        reason=reason,
                        policy_version=str(r["policy_version"]),
                        account_id=str(r["account_id"]),
                        deployment_id=str(r["deployment_id"]),
                        data={
                            "scope": scope,
                            "scopeId": scope_id,
                            "flatten": flatten,
                            "cancelledOrderIds": res.cancelled,
                            "flattenOrderIds": res.flattened,
                            "problems": res.problems,
                        },
                    ),
                )

            await self.write(op)
        return reply

    async def purge_expired_keys(self) -> int:
        purged: int = await self.db.write(lambda c: idempotency.purge_expired(c, utcnow()))
        return purged
