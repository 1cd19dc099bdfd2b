"""Kill-switch state per scope (tenant, account, deployment)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.runtime import errors
from services.runtime.timeutil import to_timestamp

SCOPES = ("tenant", "account", "deployment")

switches = sa.table(
    "risk_kill_switches",
    sa.column("tenant_id", sa.String),
    sa.column("scope", sa.String),
    sa.column("scope_id", sa.String),
    sa.column("engaged", sa.Boolean),
    sa.column("trigger", sa.String),
    sa.column("reason", sa.String),
    sa.column("evidence", sa.Text),
    sa.column("engaged_at", sa.DateTime),
    sa.column("engaged_by", sa.String),
    sa.column("released_at", sa.DateTime),
    sa.column("released_by", sa.String),
    sa.column("release_reason", sa.String),
)


def check_ref(tenant_id: str, scope: str, scope_id: str) -> None:
    if scope not in SCOPES:
        raise errors.ValidationFailed(
            f"unknown kill-switch scope {scope!r}",
            field_errors=[errors.FieldError("scope", f"one of {', '.join(SCOPES)}")],
        )
    if not scope_id:
        raise errors.ValidationFailed(
            "kill-switch scope id is required",
            field_errors=[errors.FieldError("scopeId", "required")],
        )
    if scope == "tenant" and scope_id != tenant_id:
        # Another tenant's switch does not exist as far as this caller can tell.
        raise errors.NotFound(f"no kill switch for tenant {scope_id!r}")


def _message(row: sa.Row[tuple[object, ...]]) -> risk_pb2.KillSwitch:
    m = row._mapping
    msg = risk_pb2.KillSwitch(
        scope=str(m["scope"]),
        scope_id=str(m["scope_id"]),
        engaged=bool(m["engaged"]),
        trigger=str(m["trigger"]),
        reason=str(m["reason"]),
        engaged_by=str(m["engaged_by"]),
        released_by=str(m["released_by"]),
        release_reason=str(m["release_reason"]),
    )
    evidence = json.loads(str(m["evidence"]) or "{}")
    if evidence:
        json_format.ParseDict(evidence, msg.evidence)
    for field in ("engaged_at", "released_at"):
        ts = to_timestamp(m[field])
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def get(conn: Connection, tenant_id: str, scope: str, scope_id: str) -> risk_pb2.KillSwitch:
    """The switch's state; a scope never engaged reads as disengaged."""
    row = conn.execute(
        sa.select(switches).where(
            switches.c.tenant_id == tenant_id,
            switches.c.scope == scope,
            switches.c.scope_id == scope_id,
        )
    ).first()
    if row is None:
        return risk_pb2.KillSwitch(scope=scope, scope_id=scope_id, engaged=False)
    return _message(row)


def list_all(conn: Connection, tenant_id: str, engaged_only: bool) -> list[risk_pb2.KillSwitch]:
    query = sa.select(switches).where(switches.c.tenant_id == tenant_id)
    if engaged_only:
        query = query.where(switches.c.engaged.is_(True))
    rows = conn.execute(query.order_by(switches.c.scope, switches.c.scope_id)).all()
    return [_message(r) for r in rows]


def engaged_for(
    conn: Connection, tenant_id: str, account_id: str, deployment_id: str
) -> risk_pb2.KillSwitch | None:
    """The first engaged switch holding any scope the command falls in."""
    for scope, scope_id in (
        ("tenant", tenant_id),
        ("account", account_id),
        ("deployment", deployment_id),
    ):
        if scope_id:
            state = get(conn, tenant_id, scope, scope_id)
            if state.engaged:
                return state
    return None
