"""Which internal identity may call which RPC: the one table every service enforces.

The server interceptor (services/runtime/interceptors.py) identifies the caller
(services/runtime/identity.py) and then looks the method up here; a method missing from the
table is refused to everyone. The gateway calls what the Platform API exposes; services call
each other only where the platform needs it (risk and execution for the order path and the
kill switch, conversation for its assistant's reads, the stop it confirms, and the
notification feed; every service with an outbox appends to audit).
docs/portal/operations/gate4-security-model.md shows the same table (a test keeps the two
in step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType

from gate4.audit.v1 import audit_pb2
from gate4.conversation.v1 import conversation_pb2
from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.runtime import errors

GATEWAY = "gateway"
AUDIT = "audit"
RISK = "risk"
EXECUTION = "execution"
CONVERSATION = "conversation"

#: Who ships audit events: every service with a transactional outbox.
OUTBOXES = (RISK, EXECUTION, CONVERSATION)


def _service(
    module: ModuleType, service: str, rpcs: Mapping[str, Iterable[str]]
) -> dict[str, frozenset[str]]:
    full_name = module.DESCRIPTOR.services_by_name[service].full_name
    return {f"/{full_name}/{rpc}": frozenset(callers) for rpc, callers in rpcs.items()}


ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    **_service(
        audit_pb2,
        "AuditService",
        {
            "Append": OUTBOXES,
            "AppendBatch": OUTBOXES,
            "Query": (GATEWAY, CONVERSATION),
            "Verify": (GATEWAY,),
            "Subscribe": (CONVERSATION,),
        },
    ),
    **_service(
        risk_pb2,
        "RiskService",
        {
            "PutPolicy": (GATEWAY,),
            "GetPolicy": (GATEWAY, CONVERSATION),
            "ValidatePolicy": (GATEWAY,),
            "ListPolicyVersions": (GATEWAY,),
            "CheckOrder": (EXECUTION,),
            "CheckDeployment": (EXECUTION,),
            "ReportEquity": (EXECUTION,),
            "SettleOrder": (EXECUTION,),
            "GetKillSwitch": (GATEWAY,),
            "ListKillSwitches": (GATEWAY, EXECUTION, CONVERSATION),
            "EngageKillSwitch": (GATEWAY,),
            "ReleaseKillSwitch": (GATEWAY,),
        },
    ),
    **_service(
        execution_pb2,
        "ExecutionService",
        {
            "CreateDeployment": (GATEWAY,),
            "GetDeployment": (GATEWAY, CONVERSATION),
            "ListDeployments": (GATEWAY, CONVERSATION),
            "StopDeployment": (GATEWAY, CONVERSATION),
            "SubmitOrder": (GATEWAY,),
            "GetOrder": (GATEWAY, CONVERSATION),
            "ListOrders": (GATEWAY,),
            "CancelOrder": (GATEWAY,),
            "FeedMarks": (GATEWAY,),
            "EnforceKillSwitch": (RISK,),
            "GetSettlements": (RISK,),
        },
    ),
    **_service(
        conversation_pb2,
        "ConversationService",
        {
            "CreateSession": (GATEWAY,),
            "GetSession": (GATEWAY,),
            "CreateTurn": (GATEWAY,),
            "ListNotifications": (GATEWAY,),
        },
    ),
}


def authorize_caller(
    method: str, caller: str, table: Mapping[str, frozenset[str]] = ALLOWED_CALLERS
) -> None:
    """Refuses (PERMISSION_DENIED) a caller the table does not list for the method."""
    if caller not in table.get(method, frozenset()):
        raise errors.Forbidden(f"{method} does not accept calls from the {caller} identity")
