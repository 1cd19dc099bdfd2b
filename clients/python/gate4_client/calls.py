"""One builder per Platform API operation: arguments in, `Call[Result]` out.

Both clients delegate here, so a route, a body or an Idempotency-Key rule is written once.
Side-effecting commands that accept an Idempotency-Key always get one (a fresh UUID unless
the caller passes its own), so every retry of the same call is safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gate4_client._core import Call, new_idempotency_key
from gate4_client.models import (
    AuditEventPage,
    AuditFilters,
    ChainVerification,
    Deployment,
    DeploymentList,
    FeedMarksResult,
    HealthStatus,
    KillSwitch,
    KillSwitchList,
    Mark,
    NotificationList,
    Order,
    OrderList,
    PolicyValidation,
    PolicyVersion,
    PolicyVersionList,
    ReadinessStatus,
    Session,
    Turn,
)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- operations --------------------------------------------------------------------------


def healthz() -> Call[HealthStatus]:
    return Call("healthz")


def readyz() -> Call[ReadinessStatus]:
    return Call("readyz", also_ok=frozenset({503}))


def metrics() -> Call[str]:
    return Call("metrics", result="text")


def openapi_document() -> Call[dict[str, Any]]:
    return Call("openapiDocumentJson")


# -- conversations -----------------------------------------------------------------------


def create_session(
    *, topic: str, channel: str = "openclaw", metadata: Mapping[str, Any] | None = None
) -> Call[Session]:
    body: dict[str, Any] = {"channel": channel, "topic": topic}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return Call("createSession", body=body)


def get_session(session_id: str) -> Call[Session]:
    return Call("getSession", {"sessionId": session_id})


def create_turn(
    session_id: str,
    message: str,
    *,
    notifications_opt_in: bool | None = None,
    idempotency_key: str | None = None,
) -> Call[Turn]:
    body: dict[str, Any] = {"message": message}
    if notifications_opt_in is not None:
        body["metadata"] = {"notificationsOptIn": notifications_opt_in}
    return Call(
        "createTurn",
        {"sessionId": session_id},
        body=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def list_notifications(
    session_id: str, *, include_delivered: bool | None = None
) -> Call[NotificationList]:
    return Call(
        "listNotifications", {"sessionId": session_id}, {"includeDelivered": include_delivered}
    )


# -- deployments -------------------------------------------------------------------------


def create_deployment(
    *,
    strategy_id: str,
    account_id: str,
    instruments: Sequence[str],
    capital_allocation: str,
    mode: str | None = None,
    idempotency_key: str | None = None,
) -> Call[Deployment]:
    body = _drop_none(
        {
            "strategyId": strategy_id,
            "accountId": account_id,
            "instruments": list(instruments),
            "capitalAllocation": capital_allocation,
            "mode": mode,
        }
    )
    return Call(
        "createDeployment", body=body, idempotency_key=idempotency_key or new_idempotency_key()
    )


def list_deployments(
    *,
    account_id: str | None = None,
    state: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[DeploymentList]:
    query = {"accountId": account_id, "state": state, "limit": limit, "cursor": cursor}
    return Call("listDeployments", query=query)


def get_deployment(deployment_id: str) -> Call[Deployment]:
    return Call("getDeployment", {"deploymentId": deployment_id})


def stop_deployment(
    deployment_id: str,
    *,
    flatten: bool | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> Call[Deployment]:
    return Call(
        "stopDeployment",
        {"deploymentId": deployment_id},
        body=_drop_none({"flatten": flatten, "reason": reason}),
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


# -- orders ------------------------------------------------------------------------------


def submit_order(
    *,
    deployment_id: str,
    instrument: str,
    side: str,
    type: str,
    quantity: str,
    limit_price: str | None = None,
    reduce_only: bool | None = None,
    client_order_id: str | None = None,
    idempotency_key: str | None = None,
) -> Call[Order]:
    body = _drop_none(
        {
            "deploymentId": deployment_id,
            "instrument": instrument,
            "side": side,
            "type": type,
            "quantity": quantity,
            "limitPrice": limit_price,
            "reduceOnly": reduce_only,
            "clientOrderId": client_order_id,
        }
    )
    return Call("submitOrder", body=body, idempotency_key=idempotency_key or new_idempotency_key())


def list_orders(
    *,
    deployment_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[OrderList]:
    query = {"deploymentId": deployment_id, "status": status, "limit": limit, "cursor": cursor}
    return Call("listOrders", query=query)


def get_order(order_id: str) -> Call[Order]:
    return Call("getOrder", {"orderId": order_id})


def cancel_order(order_id: str, *, reason: str | None = None) -> Call[Order]:
    return Call("cancelOrder", {"orderId": order_id}, body=_drop_none({"reason": reason}))


def feed_marks(marks: Sequence[Mark]) -> Call[FeedMarksResult]:
    return Call("feedMarks", body={"marks": [dict(m) for m in marks]})


# -- risk policy -------------------------------------------------------------------------


def get_policy(*, account_id: str | None = None) -> Call[PolicyVersion]:
    return Call("getPolicy", query={"accountId": account_id})


def put_policy(
    policy: Mapping[str, Any], *, reason: str, account_id: str | None = None
) -> Call[PolicyVersion]:
    body = _drop_none({"policy": dict(policy), "reason": reason, "accountId": account_id})
    return Call("putPolicy", body=body)


def validate_policy(policy: Mapping[str, Any]) -> Call[PolicyValidation]:
    return Call("validatePolicy", body={"policy": dict(policy)})


def list_policy_versions(
    *, account_id: str | None = None, limit: int | None = None
) -> Call[PolicyVersionList]:
    return Call("listPolicyVersions", query={"accountId": account_id, "limit": limit})


# -- kill switches -----------------------------------------------------------------------


def list_kill_switches(*, engaged_only: bool | None = None) -> Call[KillSwitchList]:
    return Call("listKillSwitches", query={"engagedOnly": engaged_only})


def get_kill_switch(scope: str, scope_id: str) -> Call[KillSwitch]:
    return Call("getKillSwitch", {"scope": scope, "scopeId": scope_id})


def engage_kill_switch(
    scope: str, scope_id: str, *, reason: str, flatten: bool = False
) -> Call[KillSwitch]:
    """Halts new risk in scope; closes its positions too only with `flatten`."""
    body: dict[str, Any] = {"reason": reason}
    if flatten:
        body["flatten"] = True
    return Call("engageKillSwitch", {"scope": scope, "scopeId": scope_id}, body=body)


def release_kill_switch(scope: str, scope_id: str, *, reason: str) -> Call[KillSwitch]:
    return Call("releaseKillSwitch", {"scope": scope, "scopeId": scope_id}, body={"reason": reason})


# -- audit -------------------------------------------------------------------------------


def query_audit_events(
    filters: AuditFilters | None = None, *, limit: int | None = None, cursor: str | None = None
) -> Call[AuditEventPage]:
    query: dict[str, str | int | bool | None] = {k: str(v) for k, v in (filters or {}).items()}
    query.update({"limit": limit, "cursor": cursor})
    return Call("queryAuditEvents", query=query)


def verify_audit_chain() -> Call[ChainVerification]:
    return Call("verifyAuditChain")
