"""The platform as the assistant sees it: execution, risk and audit over gRPC.

Every call carries the turn's correlation ids (requestId, tenant, user, roles), so what the
assistant does is traced and audited under the turn's requestId. Errors come back as the
platform's own `Gate4Error`s; the assistant turns them into replies, never into a failed turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime import errors

if TYPE_CHECKING:
    from gate4.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from gate4.execution.v1.execution_pb2_grpc import ExecutionServiceAsyncStub
    from gate4.risk.v1.risk_pb2_grpc import RiskServiceAsyncStub


class Platform:
    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.execution: ExecutionServiceAsyncStub = execution_pb2_grpc.ExecutionServiceStub(
            channels["execution"]
        )
        self.risk: RiskServiceAsyncStub = risk_pb2_grpc.RiskServiceStub(channels["risk"])
        self.audit: AuditServiceAsyncStub = audit_pb2_grpc.AuditServiceStub(channels["audit"])

    async def deployments(self) -> list[execution_pb2.Deployment]:
        try:
            reply = await self.execution.ListDeployments(execution_pb2.ListDeploymentsRequest())
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("execution", exc) from None
        return list(reply.deployments)

    async def deployment(self, deployment_id: str) -> execution_pb2.Deployment:
        try:
            return await self.execution.GetDeployment(
                execution_pb2.GetDeploymentRequest(deployment_id=deployment_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("execution", exc) from None

    async def stop(
        self, deployment_id: str, *, flatten: bool, reason: str, idempotency_key: str
    ) -> execution_pb2.Deployment:
        try:
            return await self.execution.StopDeployment(
                execution_pb2.StopDeploymentRequest(
                    deployment_id=deployment_id,
                    flatten=flatten,
                    reason=reason,
                    idempotency_key=idempotency_key,
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("execution", exc) from None

    async def order(self, order_id: str) -> execution_pb2.Order:
        try:
            return await self.execution.GetOrder(execution_pb2.GetOrderRequest(order_id=order_id))
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("execution", exc) from None

    async def order_events(self, order_id: str) -> list[audit_pb2.AuditEvent]:
        try:
            reply = await self.audit.Query(audit_pb2.QueryRequest(order_id=order_id, limit=50))
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("audit", exc) from None
        return list(reply.events)

    async def kill_switches(self) -> list[risk_pb2.KillSwitch]:
        try:
            reply = await self.risk.ListKillSwitches(
                risk_pb2.ListKillSwitchesRequest(engaged_only=True)
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("risk", exc) from None
        return list(reply.kill_switches)

    async def policy(self) -> risk_pb2.PolicyVersion:
        try:
            return await self.risk.GetPolicy(risk_pb2.GetPolicyRequest())
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("risk", exc) from None
