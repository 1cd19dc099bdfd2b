"""Typed shapes of the Platform API's JSON documents.

The contract is gateway/platform-api.openapi.yaml.

They are TypedDicts: what the client returns is the gateway's JSON as parsed, so a field the
contract adds later is simply there. Keys use the contract's lowerCamelCase; decimals are
strings.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Channel = Literal["openclaw", "web", "mobile", "api"]
ClientLane = Literal["skill", "cli"]
KillSwitchScope = Literal["tenant", "account", "deployment"]
OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]


class SessionMetadata(TypedDict, total=False):
    notificationsOptIn: bool
    clientLane: ClientLane


class ContextMemorySnapshot(TypedDict):
    version: int
    digest: str
    content: dict[str, Any]


class Session(TypedDict):
    sessionId: str
    tenantId: str
    userId: str
    channel: str
    topic: str
    status: str
    contextMemory: dict[str, Any]
    contextMemorySnapshot: ContextMemorySnapshot
    createdAt: str
    updatedAt: str
    metadata: NotRequired[dict[str, Any]]
    turnCount: NotRequired[int]
    pendingNotificationCount: NotRequired[int]


class Action(TypedDict):
    kind: str
    status: Literal["proposed", "executed", "refused"]
    deploymentId: NotRequired[str]
    orderId: NotRequired[str]
    requestId: NotRequired[str]
    outcome: NotRequired[str]
    detail: NotRequired[str]


class Reply(TypedDict):
    text: str
    actions: NotRequired[list[Action]]


class Notification(TypedDict):
    notificationId: str
    kind: str
    severity: Literal["info", "warning", "critical"]
    message: str
    createdAt: str
    deploymentId: NotRequired[str]
    accountId: NotRequired[str]
    orderId: NotRequired[str]
    requestId: NotRequired[str]
    sourceEventId: NotRequired[str]


class NotificationList(TypedDict):
    notifications: list[Notification]


class Turn(TypedDict):
    turnId: str
    sessionId: str
    sequence: int
    message: str
    reply: Reply
    contextMemory: dict[str, Any]
    contextMemorySnapshot: ContextMemorySnapshot
    notifications: list[Notification]
    requestId: str
    createdAt: str


class Position(TypedDict):
    instrument: str
    quantity: str
    averagePrice: NotRequired[str]
    markPrice: NotRequired[str]
    realizedPnl: NotRequired[str]
    unrealizedPnl: NotRequired[str]


class DeploymentKillSwitch(TypedDict, total=False):
    engaged: bool
    scope: str
    scopeId: str
    reason: str


class Deployment(TypedDict):
    deploymentId: str
    tenantId: str
    strategyId: str
    accountId: str
    instruments: list[str]
    capitalAllocation: str
    mode: str
    state: str
    createdAt: str
    updatedAt: str
    positions: NotRequired[list[Position]]
    realizedPnl: NotRequired[str]
    unrealizedPnl: NotRequired[str]
    equity: NotRequired[str]
    peakEquity: NotRequired[str]
    drawdown: NotRequired[str]
    killSwitch: NotRequired[DeploymentKillSwitch]
    policyVersion: NotRequired[str]
    degraded: NotRequired[bool]


class DeploymentList(TypedDict):
    deployments: list[Deployment]
    nextCursor: NotRequired[str]


class Fill(TypedDict):
    fillId: str
    quantity: str
    price: str
    at: str


class Order(TypedDict):
    orderId: str
    tenantId: str
    deploymentId: str
    instrument: str
    side: str
    type: str
    quantity: str
    status: str
    createdAt: str
    updatedAt: str
    accountId: NotRequired[str]
    limitPrice: NotRequired[str]
    filledQuantity: NotRequired[str]
    averageFillPrice: NotRequired[str]
    reduceOnly: NotRequired[bool]
    clientOrderId: NotRequired[str]
    outcome: NotRequired[str]
    rejectReason: NotRequired[str]
    fills: NotRequired[list[Fill]]


class OrderList(TypedDict):
    orders: list[Order]
    nextCursor: NotRequired[str]


class Mark(TypedDict):
    instrument: str
    price: str
    at: NotRequired[str]


class FeedMarksResult(TypedDict):
    accepted: int
    fills: int


class PolicyVersion(TypedDict):
    tenantId: str
    version: int
    digest: str
    createdAt: str
    policy: dict[str, Any]
    accountId: NotRequired[str]
    author: NotRequired[str]
    reason: NotRequired[str]
    active: NotRequired[bool]


class PolicyVersionList(TypedDict):
    versions: list[PolicyVersion]


class PolicyProblem(TypedDict):
    path: str
    message: str


class PolicyValidation(TypedDict):
    valid: bool
    problems: NotRequired[list[PolicyProblem]]
    digest: NotRequired[str]


class KillSwitch(TypedDict):
    scope: str
    scopeId: str
    engaged: bool
    trigger: NotRequired[str]
    reason: NotRequired[str]
    evidence: NotRequired[dict[str, Any]]
    engagedAt: NotRequired[str]
    engagedBy: NotRequired[str]
    releasedAt: NotRequired[str]
    releasedBy: NotRequired[str]
    releaseReason: NotRequired[str]


class KillSwitchList(TypedDict):
    killSwitches: list[KillSwitch]


class AuditEvent(TypedDict):
    eventId: str
    tenantId: str
    sequence: int
    type: str
    source: str
    occurredAt: str
    recordedAt: str
    hash: str
    position: NotRequired[int]
    requestId: NotRequired[str]
    traceId: NotRequired[str]
    userId: NotRequired[str]
    channel: NotRequired[str]
    accountId: NotRequired[str]
    deploymentId: NotRequired[str]
    orderId: NotRequired[str]
    sessionId: NotRequired[str]
    outcome: NotRequired[str]
    policyVersion: NotRequired[str]
    reason: NotRequired[str]
    data: NotRequired[dict[str, Any]]
    prevHash: NotRequired[str]


class AuditEventPage(TypedDict):
    events: list[AuditEvent]
    nextCursor: NotRequired[str]


class AuditFilters(TypedDict, total=False):
    """Query filters of `GET /v1/audit/events`, named as in the contract."""

    requestId: str
    deploymentId: str
    orderId: str
    sessionId: str
    accountId: str
    outcome: str
    type: str
    since: str
    until: str


class ChainVerification(TypedDict):
    tenantId: str
    valid: bool
    checkedEvents: NotRequired[int]
    headSequence: NotRequired[int]
    headHash: NotRequired[str]
    firstBadSequence: NotRequired[int]
    problem: NotRequired[str]


class HealthStatus(TypedDict):
    status: str


class ReadinessStatus(TypedDict):
    status: Literal["ready", "unavailable"]
    services: dict[str, str]
