"""The RiskService RPCs."""

from __future__ import annotations

from google.protobuf import struct_pb2
from grpc import aio

from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.risk import killswitch, policy, pretrade
from services.runtime import correlation, errors
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.timeutil import to_timestamp

Context = aio.ServicerContext[object, object]
MAX_VERSIONS = 100


def _policy_message(record: policy.PolicyRecord) -> risk_pb2.PolicyVersion:
    msg = risk_pb2.PolicyVersion(
        tenant_id=record.tenant_id,
        account_id=record.account_id,
        version=record.version,
        digest=record.digest,
        author=record.author,
        reason=record.reason,
        active=record.active,
    )
    doc = struct_pb2.Struct()
    doc.update(record.document)
    msg.policy.CopyFrom(doc)
    created = to_timestamp(record.created_at)
    if created is not None:
        msg.created_at.CopyFrom(created)
    return msg


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, db: Database, box: Outbox) -> None:
        self.db = db
        self.outbox = box

    async def _decide(self, command: pretrade.Command) -> risk_pb2.RiskDecision:
        decision = await self.db.write(lambda c: pretrade.decide(c, self.outbox, command))
        self.outbox.notify()
        return decision

    # -- policy ----------------------------------------------------------------------------

    async def GetPolicy(
        self, request: risk_pb2.GetPolicyRequest, context: Context
    ) -> risk_pb2.PolicyVersion:
        tenant = correlation.current().tenant_id
        record = await self.db.read(lambda c: policy.active_policy(c, tenant, request.account_id))
        if record is None:
            raise errors.NotFound(
                "no risk policy is active for this tenant; put a risk-policy.v1 document"
            )
        return _policy_message(record)

    async def ListPolicyVersions(
        self, request: risk_pb2.ListPolicyVersionsRequest, context: Context
    ) -> risk_pb2.ListPolicyVersionsResponse:
        tenant = correlation.current().tenant_id
        limit = request.limit or MAX_VERSIONS
        if not 1 <= limit <= MAX_VERSIONS:
            raise errors.ValidationFailed(
                "limit out of range",
                field_errors=[errors.FieldError("limit", f"1..{MAX_VERSIONS}")],
            )
        records = await self.db.read(
            lambda c: policy.list_versions(c, tenant, request.account_id, limit)
        )
        return risk_pb2.ListPolicyVersionsResponse(versions=[_policy_message(r) for r in records])

    async def PutPolicy(
        self, request: risk_pb2.PutPolicyRequest, context: Context
    ) -> risk_pb2.PolicyVersion:
        raise errors.NotImplementedYet(
            "putting a risk policy arrives with the risk-policy.v1 schema"
        )

    async def ValidatePolicy(
        self, request: risk_pb2.ValidatePolicyRequest, context: Context
    ) -> risk_pb2.ValidatePolicyResponse:
        raise errors.NotImplementedYet("policy validation arrives with the risk-policy.v1 schema")

    # -- pre-trade -------------------------------------------------------------------------

    async def CheckDeployment(
        self, request: risk_pb2.CheckDeploymentRequest, context: Context
    ) -> risk_pb2.RiskDecision:
        if request.action not in ("create", "stop"):
            raise errors.ValidationFailed(
                "unknown deployment action",
                field_errors=[errors.FieldError("action", "create or stop")],
            )
        return await self._decide(
            pretrade.Command(
                kind=f"deployment.{request.action}",
                tenant_id=correlation.current().tenant_id,
                account_id=request.account_id,
                deployment_id=request.deployment_id,
                reduces_risk=request.action == "stop",
                details={
                    "strategyId": request.strategy_id,
                    "instruments": list(request.instruments),
                    "capitalAllocation": request.capital_allocation,
                    "mode": request.mode,
                },
            )
        )

    async def CheckOrder(
        self, request: risk_pb2.CheckOrderRequest, context: Context
    ) -> risk_pb2.RiskDecision:
        order = request.order
        return await self._decide(
            pretrade.Command(
                kind="order.submit",
                tenant_id=correlation.current().tenant_id,
                account_id=order.account_id,
                deployment_id=order.deployment_id,
                order_id=order.order_id,
                reduces_risk=order.reduce_only,
                details={
                    "instrument": order.instrument,
                    "side": order.side,
                    "type": order.type,
                    "quantity": order.quantity,
                    "limitPrice": order.limit_price,
                    "reduceOnly": order.reduce_only,
                },
            )
        )

    async def ReportEquity(
        self, request: risk_pb2.ReportEquityRequest, context: Context
    ) -> risk_pb2.ReportEquityResponse:
        raise errors.NotImplementedYet("drawdown tracking arrives with the risk runtime")

    # -- kill switch -----------------------------------------------------------------------

    async def GetKillSwitch(
        self, request: risk_pb2.KillSwitchRef, context: Context
    ) -> risk_pb2.KillSwitch:
        tenant = correlation.current().tenant_id
        killswitch.check_ref(tenant, request.scope, request.scope_id)
        return await self.db.read(
            lambda c: killswitch.get(c, tenant, request.scope, request.scope_id)
        )

    async def ListKillSwitches(
        self, request: risk_pb2.ListKillSwitchesRequest, context: Context
    ) -> risk_pb2.ListKillSwitchesResponse:
        tenant = correlation.current().tenant_id
        items = await self.db.read(lambda c: killswitch.list_all(c, tenant, request.engaged_only))
        return risk_pb2.ListKillSwitchesResponse(kill_switches=items)

    async def EngageKillSwitch(
        self, request: risk_pb2.EngageKillSwitchRequest, context: Context
    ) -> risk_pb2.KillSwitch:
        raise errors.NotImplementedYet("engaging a kill switch arrives with the risk runtime")

    async def ReleaseKillSwitch(
        self, request: risk_pb2.ReleaseKillSwitchRequest, context: Context
    ) -> risk_pb2.KillSwitch:
        raise errors.NotImplementedYet("releasing a kill switch arrives with the risk runtime")
