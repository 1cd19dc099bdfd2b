"""Every public operation: its OpenAPI operationId, the RPC behind it, and who may call it.

Request messages are built generically from the validated body, path and query
parameters (their JSON names equal the proto's JSON names); the few operations whose
request nests differently say so with their own `build`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from gate4.audit.v1 import audit_pb2
from gate4.conversation.v1 import conversation_pb2
from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.runtime import roles

Idempotency = Literal["required", "optional", "none"]
Builder = Callable[[dict[str, Any]], dict[str, Any]]

# Reads are open to every role; each write names the one role that may perform it.


@dataclass(frozen=True)
class Operation:
    operation_id: str
    service: str
    rpc: str
    request: type[Message]
    role: str
    status: int = 200
    idempotency: Idempotency = "none"
    build: Builder | None = None
    #: Query/path parameter names that differ from the request's JSON field names.
    rename: tuple[tuple[str, str], ...] = ()
    #: Where to follow a command answered 202 (still running), from its path parameters.
    poll: str = ""


def _kill_switch_ref(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in ("scope", "scopeId")}
    out["ref"] = {"scope": data["scope"], "scopeId": data["scopeId"]}
    return out


OPERATIONS: tuple[Operation, ...] = (
    # Conversation (v2)
    Operation(
        "createSession",
        "conversation",
        "CreateSession",
        conversation_pb2.CreateSessionRequest,
        roles.TRADER,
        201,
    ),
    Operation(
        "getSession", "conversation", "GetSession", conversation_pb2.GetSessionRequest, roles.VIEWER
    ),
    Operation(
        "createTurn",
        "conversation",
        "CreateTurn",
        conversation_pb2.CreateTurnRequest,
        roles.TRADER,
        201,
        "optional",
    ),
    Operation(
        "listNotifications",
        "conversation",
        "ListNotifications",
        conversation_pb2.ListNotificationsRequest,
        roles.VIEWER,
    ),
    # Execution
    Operation(
        "createDeployment",
        "execution",
        "CreateDeployment",
        execution_pb2.CreateDeploymentRequest,
        roles.TRADER,
        201,
        "required",
    ),
    Operation(
        "listDeployments",
        "execution",
        "ListDeployments",
        execution_pb2.ListDeploymentsRequest,
        roles.VIEWER,
    ),
    Operation(
        "getDeployment",
        "execution",
        "GetDeployment",
        execution_pb2.GetDeploymentRequest,
        roles.VIEWER,
    ),
    Operation(
        "stopDeployment",
        "execution",
        "StopDeployment",
        execution_pb2.StopDeploymentRequest,
        roles.TRADER,
        200,
        "optional",
        poll="/v1/deployments/{deploymentId}",
    ),
    Operation(
        "submitOrder",
        "execution",
        "SubmitOrder",
        execution_pb2.SubmitOrderRequest,
        roles.TRADER,
        201,
        "required",
    ),
    Operation(
        "listOrders", "execution", "ListOrders", execution_pb2.ListOrdersRequest, roles.VIEWER
    ),
    Operation("getOrder", "execution", "GetOrder", execution_pb2.GetOrderRequest, roles.VIEWER),
    Operation(
        "cancelOrder", "execution", "CancelOrder", execution_pb2.CancelOrderRequest, roles.TRADER
    ),
    Operation("feedMarks", "execution", "FeedMarks", execution_pb2.FeedMarksRequest, roles.TRADER),
    # Risk
    Operation("getPolicy", "risk", "GetPolicy", risk_pb2.GetPolicyRequest, roles.VIEWER),
    Operation("putPolicy", "risk", "PutPolicy", risk_pb2.PutPolicyRequest, roles.RISK_OFFICER),
    Operation(
        "validatePolicy", "risk", "ValidatePolicy", risk_pb2.ValidatePolicyRequest, roles.VIEWER
    ),
    Operation(
        "listPolicyVersions",
        "risk",
        "ListPolicyVersions",
        risk_pb2.ListPolicyVersionsRequest,
        roles.VIEWER,
    ),
    Operation(
        "listKillSwitches",
        "risk",
        "ListKillSwitches",
        risk_pb2.ListKillSwitchesRequest,
        roles.VIEWER,
    ),
    Operation("getKillSwitch", "risk", "GetKillSwitch", risk_pb2.KillSwitchRef, roles.VIEWER),
    Operation(
        "engageKillSwitch",
        "risk",
        "EngageKillSwitch",
        risk_pb2.EngageKillSwitchRequest,
        roles.RISK_OFFICER,
        build=_kill_switch_ref,
    ),
    Operation(
        "releaseKillSwitch",
        "risk",
        "ReleaseKillSwitch",
        risk_pb2.ReleaseKillSwitchRequest,
        roles.RISK_OFFICER,
        build=_kill_switch_ref,
    ),
    # Audit
    Operation("queryAuditEvents", "audit", "Query", audit_pb2.QueryRequest, roles.SRE),
    Operation("verifyAuditChain", "audit", "Verify", audit_pb2.VerifyRequest, roles.SRE),
)

BY_ID = {op.operation_id: op for op in OPERATIONS}
