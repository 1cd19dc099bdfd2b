"""Deployment commands: create (risk first), read, and stop (cancel, flatten when asked).

A stop reduces risk, so it proceeds when risk cannot answer (recorded RISK_UNAVAILABLE):
refusing it during a risk outage would keep exposure nobody can then remove. It is
recorded `stopping` with a lease before anything is cancelled, so a stop whose process
dies is finished by reconciliation (reconcile.py) or by the next stop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.execution import deployments, idempotency, store
from services.execution.faults import CrashHooks
from services.execution.idempotency import ROUTE_CREATE, ROUTE_STOP, Claim, Progress
from services.execution.marks import Equity
from services.execution.reduce import Reducer
from services.execution.riskgate import RiskControls, refusal
from services.execution.unitofwork import UnitOfWork, Work, tenant
from services.runtime import errors, outcomes
from services.runtime.config import Settings
from services.runtime.decimals import format_decimal
from services.runtime.outbox import Headroom
from services.runtime.timeutil import as_utc


class DeploymentFlow:
    def __init__(
        self,
        uow: UnitOfWork,
        risk: RiskControls,
        reducer: Reducer,
        equity: Equity,
        settings: Settings,
        hooks: CrashHooks,
    ) -> None:
        self.uow = uow
        self.risk = risk
        self.reducer = reducer
        self.equity = equity
        self.settings = settings
        self.hooks = hooks

    async def create(
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
        ids: dict[str, Any] = {"account_id": request.account_id, "deployment_id": deployment_id}
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
            raise await self.uow.refuse(
                claim,
                progress,
                exc,
                "deployment.rejected",
                outcome=outcomes.RISK_UNAVAILABLE,
                reason=exc.detail,
                data=details,
                **ids,
            ) from None
        if not decision.approved:
            raise await self.uow.refuse(
                claim,
                progress,
                refusal(decision),
                "deployment.rejected",
                outcome=decision.outcome,
                reason=decision.reason,
                policy_version=decision.policy_version,
                data={**details, "decisionId": decision.decision_id},
                **ids,
            )

        def op(work: Work) -> execution_pb2.Deployment:
            conn, tenant_id, now = work.conn, tenant(), self.uow.clock.now()
            conn.execute(
                sa.insert(store.deployments).values(
                    deployment_id=deployment_id,
                    tenant_id=tenant_id,
                    strategy_id=request.strategy_id,
                    account_id=request.account_id,
                    instruments=json.dumps(list(request.instruments)),
                    capital_allocation=format_decimal(Decimal(request.capital_allocation)),
                    mode=mode,
                    state=deployments.PENDING,
                    policy_version=decision.policy_version,
                    degraded=False,
                    peak_equity=format_decimal(Decimal(request.capital_allocation)),
                    created_at=now,
                    updated_at=now,
                )
            )
            work.event(
                "deployment.created",
                outcome=decision.outcome,
                reason=decision.reason,
                policy_version=decision.policy_version,
                data={**details, "decisionId": decision.decision_id, "state": "pending"},
                **ids,
            )
            # Nothing to warm up on the paper venue: a created deployment starts at once.
            _set_state(conn, deployment_id, deployments.PENDING, deployments.RUNNING, "", now)
            work.event(
                "deployment.started",
                outcome=outcomes.RUNNING,
                policy_version=decision.policy_version,
                data=details,
                **ids,
            )
            row = store.deployment_row(conn, tenant_id, deployment_id)
            assert row is not None
            msg = store.deployment_message(conn, row)
            idempotency.complete(conn, tenant_id, claim, now, response=msg.SerializeToString())
            return msg

        msg = await self.uow.run(op, guard=Headroom.BOUND)
        progress.settled = True
        self.hooks.crash_after_commit(ROUTE_CREATE)
        return msg

    async def get(self, deployment_id: str) -> execution_pb2.Deployment:
        tenant_id = tenant()
        found = await self.uow.db.read(lambda c: store.get_deployment(c, tenant_id, deployment_id))
        if found is None:
            raise errors.NotFound(f"deployment {deployment_id!r} not found")
        last = found.kill_switch
        view = await self._switch(
            tenant_id,
            found.account_id,
            deployment_id,
            store.KillSwitchView(last.engaged, last.scope, last.scope_id, last.reason),
        )
        found.kill_switch.CopyFrom(
            execution_pb2.DeploymentKillSwitch(
                engaged=view.engaged, scope=view.scope, scope_id=view.scope_id, reason=view.reason
            )
        )
        return found

    async def _switch(
        self, tenant_id: str, account_id: str, deployment_id: str, last: store.KillSwitchView
    ) -> store.KillSwitchView:
        """Risk's switches as this process last fetched them (at most
        GATE4_EXECUTION_SWITCH_CACHE_SECONDS old: no call to risk per read); when risk
        cannot be asked, the last switch enforced here."""
        view = await self.risk.switch_for(tenant_id, account_id, deployment_id)
        if view is not None:
            return view
        reason = "risk unavailable; last enforced switch shown"
        return store.KillSwitchView(
            last.engaged, last.scope, last.scope_id, f"{last.reason} ({reason})".strip()
        )

    async def stop(
        self,
        request: execution_pb2.StopDeploymentRequest,
        claim: Claim | None,
        progress: Progress,
    ) -> execution_pb2.Deployment:
        tenant_id, deployment_id = tenant(), request.deployment_id
        row = await self.uow.db.read(lambda c: store.deployment_row(c, tenant_id, deployment_id))
        if row is None:
            raise await self.uow.refuse(
                claim,
                progress,
                errors.NotFound(f"deployment {deployment_id!r} not found"),
                "deployment.stop_refused",
                outcome="NOT_FOUND",
                deployment_id=deployment_id,
            )
        ids: dict[str, Any] = {"account_id": str(row["account_id"]), "deployment_id": deployment_id}

        def conflict(exc: errors.StateConflict) -> Awaitable[errors.Gate4Error]:
            """Already stopping (another stop holds it) or stopped: refused with the key."""
            return self.uow.refuse(
                claim,
                progress,
                exc,
                "deployment.stop_refused",
                outcome="STATE_CONFLICT",
                reason=exc.detail,
                **ids,
            )

        try:
            _check_stoppable(row, self.uow.clock.now())
        except errors.StateConflict as exc:
            raise await conflict(exc) from None
        decision: risk_pb2.RiskDecision | None
        try:
            decision = await self.risk.check_deployment(
                risk_pb2.CheckDeploymentRequest(
                    deployment_id=deployment_id,
                    account_id=str(row["account_id"]),
                    strategy_id=str(row["strategy_id"]),
                    instruments=deployments.instruments(str(row["instruments"])),
                    capital_allocation=str(row["capital_allocation"]),
                    mode=str(row["mode"]),
                    action="stop",
                )
            )
        except errors.RiskUnavailable:
            decision = None  # stopping reduces risk: it proceeds, recorded as such
        if decision is not None and not decision.approved:
            raise await self.uow.refuse(
                claim,
                progress,
                refusal(decision),
                "deployment.stop_refused",
                outcome=decision.outcome,
                reason=decision.reason,
                policy_version=decision.policy_version,
                **ids,
            )
        outcome = decision.outcome if decision is not None else outcomes.RISK_UNAVAILABLE
        version = decision.policy_version if decision is not None else str(row["policy_version"])
        reason = request.reason or "stopped on request"
        lease = self.settings.command_lease

        def begin(work: Work) -> None:
            conn = work.conn
            current = store.deployment_row(conn, tenant_id, deployment_id, for_update=True)
            assert current is not None
            now = self.uow.clock.now()
            _check_stoppable(current, now)
            if current["state"] != deployments.STOPPING:
                _set_state(
                    conn, deployment_id, str(current["state"]), deployments.STOPPING, reason, now
                )
            conn.execute(
                sa.update(store.deployments)
                .where(store.deployments.c.deployment_id == deployment_id)
                .values(
                    stop_flatten=request.flatten,
                    stop_lease_until=now + lease,
                    stop_count=store.deployments.c.stop_count + 1,
                    policy_version=version,
                    state_reason=reason,
                )
            )
            work.event(
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
                **ids,
            )

        try:
            # A stop is the brake: it may use the outbox reserve while audit is down.
            await self.uow.run(begin, guard=Headroom.RESERVE)
        except errors.StateConflict as exc:
            raise await conflict(exc) from None
        progress.started = True
        return await self.finish_stop(deployment_id, request.flatten, reason, claim)

    async def finish_stop(
        self, deployment_id: str, flatten: bool, reason: str, claim: Claim | None
    ) -> execution_pb2.Deployment:
        tenant_id = tenant()
        result = await self.reducer.reduce(deployment_id, flatten=flatten, reason=reason)
        row = await self.uow.db.read(lambda c: store.deployment_row(c, tenant_id, deployment_id))
        assert row is not None
        switch = await self._switch(
            tenant_id,
            str(row["account_id"]),
            deployment_id,
            store.stored_switch(str(row["enforced_switch"])),
        )
        target = deployments.FAILED if result.problems else deployments.STOPPED
        final_reason = "; ".join(result.problems) if result.problems else reason

        def end(work: Work) -> execution_pb2.Deployment:
            conn = work.conn
            current = store.deployment_row(conn, tenant_id, deployment_id, for_update=True)
            assert current is not None
            now = self.uow.clock.now()
            _set_state(conn, deployment_id, str(current["state"]), target, final_reason, now)
            conn.execute(
                sa.update(store.deployments)
                .where(store.deployments.c.deployment_id == deployment_id)
                .values(stop_lease_until=None)
            )
            work.event(
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
            )
            updated = store.deployment_row(conn, tenant_id, deployment_id)
            assert updated is not None
            msg = store.deployment_message(conn, updated, switch)
            idempotency.complete(conn, tenant_id, claim, now, response=msg.SerializeToString())
            return msg

        msg = await self.uow.run(end)
        self.hooks.crash_after_commit(ROUTE_STOP)
        await self.equity.report([deployment_id])
        return msg


def _set_state(
    conn: Connection, deployment_id: str, current: str, target: str, reason: str, now: datetime
) -> None:
    deployments.check_transition(deployment_id, current, target)
    values: dict[str, Any] = {"state": target, "updated_at": now}
    if reason:
        values["state_reason"] = reason
    conn.execute(
        sa.update(store.deployments)
        .where(store.deployments.c.deployment_id == deployment_id)
        .values(**values)
    )


def _check_stoppable(row: sa.RowMapping, now: datetime) -> None:
    state = str(row["state"])
    if state == deployments.STOPPING:
        lease = row["stop_lease_until"]
        if lease is not None and as_utc(lease) > now:
            raise errors.StateConflict(
                f"deployment {row['deployment_id']} is already stopping; read it to follow"
            )
        return  # the stop that began it died: this one finishes it
    deployments.check_transition(str(row["deployment_id"]), state, deployments.STOPPING)
