"""The ExecutionService RPCs."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
from grpc import aio
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2
from services.execution import store
from services.runtime import correlation, errors
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc, utcnow
from services.runtime.validation import IDEMPOTENCY_KEY_RE, Checker

if TYPE_CHECKING:
    from gate4.risk.v1.risk_pb2_grpc import RiskServiceAsyncStub

Context = aio.ServicerContext[object, object]
MODES = ("paper",)
SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
DEPLOYMENT_STATES = ("pending", "running", "stopping", "stopped", "failed")
ORDER_STATUSES = ("accepted", "partially_filled", "filled", "cancelled", "rejected")
MAX_PAGE = 500


def refusal(decision: risk_pb2.RiskDecision) -> errors.Gate4Error:
    """The error a refused command answers with: 423 for a held kill switch, else 422."""
    if decision.outcome == "KILL_SWITCH_ENGAGED":
        return errors.KillSwitchEngaged(decision.reason, outcome=decision.outcome)
    return errors.RiskLimitBreached(decision.reason, outcome=decision.outcome)


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    def __init__(self, db: Database, risk: RiskServiceAsyncStub) -> None:
        self.db = db
        self.risk = risk

    async def _ask_risk(self, request: risk_pb2.CheckDeploymentRequest) -> risk_pb2.RiskDecision:
        """Fail closed: no answer from risk means the command does not run."""
        try:
            return await self.risk.CheckDeployment(request)
        except grpc.aio.AioRpcError as exc:
            raise errors.RiskUnavailable(
                f"risk controls could not decide ({exc.code().name.lower()}); nothing was executed"
            ) from None

    async def CreateDeployment(
        self, request: execution_pb2.CreateDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        if not request.idempotency_key:
            raise errors.IdempotencyKeyRequired("creating a deployment needs an idempotency key")
        check = Checker()
        if not IDEMPOTENCY_KEY_RE.match(request.idempotency_key):
            check.fail("idempotencyKey", "8-255 characters of A-Z a-z 0-9 . _ : -")
        check.id("strategyId", request.strategy_id)
        check.id("accountId", request.account_id)
        if not request.instruments:
            check.fail("instruments", "at least one instrument")
        for i, instrument in enumerate(request.instruments):
            check.instrument(f"instruments[{i}]", instrument)
        check.decimal("capitalAllocation", request.capital_allocation)
        check.one_of("mode", request.mode or "paper", MODES)
        check.done("invalid deployment")

        decision = await self._ask_risk(
            risk_pb2.CheckDeploymentRequest(
                deployment_id=f"dep_{uuid.uuid4().hex[:24]}",
                account_id=request.account_id,
                strategy_id=request.strategy_id,
                instruments=request.instruments,
                capital_allocation=request.capital_allocation,
                mode=request.mode or "paper",
                action="create",
            )
        )
        if not decision.approved:
            raise refusal(decision)
        raise errors.NotImplementedYet(
            "starting deployments arrives with the execution command layer"
        )

    async def GetDeployment(
        self, request: execution_pb2.GetDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        tenant = correlation.current().tenant_id
        found = await self.db.read(lambda c: store.get_deployment(c, tenant, request.deployment_id))
        if found is None:
            raise errors.NotFound(f"deployment {request.deployment_id!r} not found")
        return found

    async def ListDeployments(
        self, request: execution_pb2.ListDeploymentsRequest, context: Context
    ) -> execution_pb2.ListDeploymentsResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        limit = check.limit("limit", request.limit, default=100, maximum=MAX_PAGE)
        if request.state:
            check.one_of("state", request.state, DEPLOYMENT_STATES)
        check.id("accountId", request.account_id, required=False)
        check.id("cursor", request.cursor, required=False)
        check.done()
        items = await self.db.read(
            lambda c: store.list_deployments(
                c, tenant, request.account_id, request.state, request.cursor, limit + 1
            )
        )
        more = len(items) > limit
        items = items[:limit]
        return execution_pb2.ListDeploymentsResponse(
            deployments=items, next_cursor=items[-1].deployment_id if more else ""
        )

    async def StopDeployment(
        self, request: execution_pb2.StopDeploymentRequest, context: Context
    ) -> execution_pb2.Deployment:
        await self.GetDeployment(
            execution_pb2.GetDeploymentRequest(deployment_id=request.deployment_id), context
        )
        raise errors.NotImplementedYet(
            "stopping deployments arrives with the execution command layer"
        )

    async def SubmitOrder(
        self, request: execution_pb2.SubmitOrderRequest, context: Context
    ) -> execution_pb2.Order:
        if not request.idempotency_key:
            raise errors.IdempotencyKeyRequired("submitting an order needs an idempotency key")
        check = Checker()
        check.id("deploymentId", request.deployment_id)
        check.instrument("instrument", request.instrument)
        check.one_of("side", request.side, SIDES)
        check.one_of("type", request.type, ORDER_TYPES)
        check.decimal("quantity", request.quantity)
        check.decimal("limitPrice", request.limit_price, required=request.type == "limit")
        check.done("invalid order")
        await self.GetDeployment(
            execution_pb2.GetDeploymentRequest(deployment_id=request.deployment_id), context
        )
        raise errors.NotImplementedYet("order submission arrives with the execution command layer")

    async def GetOrder(
        self, request: execution_pb2.GetOrderRequest, context: Context
    ) -> execution_pb2.Order:
        tenant = correlation.current().tenant_id
        found = await self.db.read(lambda c: store.get_order(c, tenant, request.order_id))
        if found is None:
            raise errors.NotFound(f"order {request.order_id!r} not found")
        return found

    async def ListOrders(
        self, request: execution_pb2.ListOrdersRequest, context: Context
    ) -> execution_pb2.ListOrdersResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        limit = check.limit("limit", request.limit, default=100, maximum=MAX_PAGE)
        if request.status:
            check.one_of("status", request.status, ORDER_STATUSES)
        check.id("deploymentId", request.deployment_id, required=False)
        check.id("cursor", request.cursor, required=False)
        check.done()
        items = await self.db.read(
            lambda c: store.list_orders(
                c, tenant, request.deployment_id, request.status, request.cursor, limit + 1
            )
        )
        more = len(items) > limit
        items = items[:limit]
        return execution_pb2.ListOrdersResponse(
            orders=items, next_cursor=items[-1].order_id if more else ""
        )

    async def CancelOrder(
        self, request: execution_pb2.CancelOrderRequest, context: Context
    ) -> execution_pb2.Order:
        await self.GetOrder(execution_pb2.GetOrderRequest(order_id=request.order_id), context)
        raise errors.NotImplementedYet("cancelling orders arrives with the execution command layer")

    async def FeedMarks(
        self, request: execution_pb2.FeedMarksRequest, context: Context
    ) -> execution_pb2.FeedMarksResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        if not 1 <= len(request.marks) <= MAX_PAGE:
            check.fail("marks", f"between 1 and {MAX_PAGE} marks")
        for i, mark in enumerate(request.marks):
            check.instrument(f"marks[{i}].instrument", mark.instrument)
            check.decimal(f"marks[{i}].price", mark.price)
        check.done("invalid marks")
        now = utcnow()
        marks = [
            (m.instrument, m.price, as_utc(m.at.ToDatetime()) if m.HasField("at") else now)
            for m in request.marks
        ]

        def op(conn: Connection) -> None:
            for instrument, price, at in marks:
                store.upsert_mark(conn, tenant, instrument, price, at)

        await self.db.write(op)
        return execution_pb2.FeedMarksResponse(accepted=len(marks), fills=0)

    async def EnforceKillSwitch(
        self, request: execution_pb2.EnforceKillSwitchRequest, context: Context
    ) -> execution_pb2.EnforceKillSwitchResponse:
        raise errors.NotImplementedYet(
            "kill-switch enforcement arrives with the execution command layer"
        )
