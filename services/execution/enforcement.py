"""Enforcing a kill switch on risk's behalf: cancel open orders in scope, flatten when told.

Risk is the one enforcer of its switches: it calls EnforceKillSwitch once per engagement
and records what this answers. The servicer keys the call by scope and engagement
generation (idempotency.ROUTE_ENFORCE), so a repeated call (risk retrying after a timeout,
or another risk replica) gets the first call's answer instead of enforcing again, and the
switch records exactly the cancels and flatten orders that happened.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from gate4.execution.v1 import execution_pb2
from services.execution import deployments, idempotency, store
from services.execution.idempotency import Claim, Progress
from services.execution.reduce import Reducer, Reduction
from services.execution.unitofwork import UnitOfWork, Work, tenant
from services.runtime import outcomes


class KillSwitchEnforcement:
    def __init__(self, uow: UnitOfWork, reducer: Reducer) -> None:
        self.uow = uow
        self.reducer = reducer

    async def enforce(
        self,
        request: execution_pb2.EnforceKillSwitchRequest,
        claim: Claim | None,
        progress: Progress,
    ) -> execution_pb2.EnforceKillSwitchResponse:
        """Cancels open orders in scope and, when asked, flattens its positions."""
        tenant_id = tenant()
        scope, scope_id, flatten = request.scope, request.scope_id, request.flatten
        reason = request.reason or f"kill switch engaged for {scope} {scope_id}"
        rows = await self.uow.db.read(
            lambda c: store.deployments_in_scope(c, tenant_id, scope, scope_id)
        )
        reply = execution_pb2.EnforceKillSwitchResponse()
        switch = json.dumps({"scope": scope, "scopeId": scope_id, "reason": reason})
        progress.started = True
        # Deployment reads here show this switch from now on, not a list cached before it.
        self.uow.risk.switches_changed()
        for row in rows:
            deployment_id = str(row["deployment_id"])
            if row["state"] == deployments.STOPPED:
                continue
            result = await self.reducer.reduce(deployment_id, flatten=flatten, reason=reason)
            reply.cancelled_order_ids.extend(result.cancelled)
            reply.flatten_order_ids.extend(result.flattened)

            def op(work: Work, r: sa.RowMapping = row, res: Reduction = result) -> None:
                work.conn.execute(
                    sa.update(store.deployments)
                    .where(store.deployments.c.deployment_id == r["deployment_id"])
                    .values(enforced_switch=switch, updated_at=self.uow.clock.now())
                )
                work.event(
                    "killswitch.enforced",
                    outcome=outcomes.ENFORCED
                    if not res.problems
                    else outcomes.ENFORCED_WITH_PROBLEMS,
                    reason=reason,
                    policy_version=str(r["policy_version"]),
                    account_id=str(r["account_id"]),
                    deployment_id=str(r["deployment_id"]),
                    data={
                        "scope": scope,
                        "scopeId": scope_id,
                        "generation": request.generation,
                        "flatten": flatten,
                        "cancelledOrderIds": res.cancelled,
                        "flattenOrderIds": res.flattened,
                        "problems": res.problems,
                    },
                )

            await self.uow.run(op)

        if claim is not None:
            body = reply.SerializeToString()
            await self.uow.run(
                lambda w: idempotency.complete(
                    w.conn, tenant_id, claim, self.uow.clock.now(), response=body
                )
            )
        progress.settled = True
        return reply
