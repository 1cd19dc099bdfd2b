"""Pre-trade decisions: every command asks here first, and every answer is audited.

The decision and its audit event commit in one transaction (outbox), so no command is
approved or refused without its record. When risk cannot decide, the answer is no.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import killswitch, policy
from services.runtime import outbox
from services.runtime.outbox import Outbox

APPROVED = "APPROVED"
POLICY_INVALID = "POLICY_INVALID"
KILL_SWITCH_ENGAGED = "KILL_SWITCH_ENGAGED"
RISK_UNDECIDED = "RISK_UNDECIDED"


@dataclass
class Command:
    """What is being asked: a deployment action or an order, in the terms checks need."""

    kind: str  # "deployment.create", "deployment.stop", "order.submit"
    tenant_id: str
    account_id: str = ""
    deployment_id: str = ""
    order_id: str = ""
    #: Stop, cancel and reduce-only orders reduce risk and pass a held kill switch.
    reduces_risk: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def decide(conn: Connection, box: Outbox, command: Command) -> risk_pb2.RiskDecision:
    """Runs inside a write op: evaluates, then records the decision in the same transaction."""
    box.ensure_capacity(conn)
    active = policy.active_policy(conn, command.tenant_id, command.account_id)
    version = active.label if active else ""
    held = killswitch.engaged_for(
        conn, command.tenant_id, command.account_id, command.deployment_id
    )
    if command.reduces_risk:
        outcome, reason = APPROVED, "risk-reducing command; always allowed"
    elif held is not None:
        outcome = KILL_SWITCH_ENGAGED
        reason = (
            f"kill switch engaged for {held.scope} {held.scope_id}: {held.reason or held.trigger}"
        )
    elif active is None:
        outcome = POLICY_INVALID
        reason = (
            "no valid risk-policy.v1 is active for this tenant; side-effecting commands are refused"
        )
    else:
        # Limits are evaluated by the pre-trade checks of the active policy; until a check
        # can speak for a command, the answer is no.
        outcome = RISK_UNDECIDED
        reason = "no pre-trade check could approve this command"

    decision = risk_pb2.RiskDecision(
        approved=outcome == APPROVED,
        outcome=outcome,
        reason=reason,
        policy_version=version,
        decision_id=f"dec_{uuid.uuid4().hex}",
    )
    evidence = struct_pb2.Struct()
    evidence.update({"command": command.kind, **command.details})
    decision.evidence.CopyFrom(evidence)
    box.add(
        conn,
        outbox.event(
            "risk.decision",
            source="risk",
            outcome=outcome,
            reason=reason,
            policy_version=version,
            account_id=command.account_id,
            deployment_id=command.deployment_id,
            order_id=command.order_id,
            data={
                "decisionId": decision.decision_id,
                "approved": decision.approved,
                "command": command.kind,
                **command.details,
            },
        ),
    )
    return decision
