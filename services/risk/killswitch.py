"""Kill switches per scope (tenant, account, deployment): latched state and its transitions.

A switch engages by hand (`manual`) or on a confirmed drawdown (`drawdown`) and then holds
until a risk-officer releases it with a reason; engaging an engaged switch changes
nothing. Every transition writes its audit event in the same transaction. After each
engagement execution must enforce it (cancel open orders in scope, flatten when the
policy says so): `enforcement` records whether that happened for the current engagement,
which `generation` numbers.

Risk is the one enforcer. With several risk processes on one database, a process claims
the engagement (`claim`: a conditional update, whoever changes the row won) before it
calls execution, for a lease long enough for the call; a claim whose process died lapses
and may be taken over. Execution answers a repeated call for the same generation with
what the first one did, so a takeover never enforces twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import locks, stamps
from services.runtime import correlation, errors, outbox, outcomes, scopes
from services.runtime.outbox import Outbox
from services.runtime.timeutil import to_timestamp
from services.runtime.validation import ID_RE

MANUAL = "manual"
DRAWDOWN = "drawdown"
# Enforcement states of the current engagement.
PENDING = "pending"
ENFORCED = "enforced"
FAILED = "failed"
# Audit reasons are bounded; the full lists of order ids are in the event's data.
REASON_MAX = 4000

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
    sa.column("flatten", sa.Boolean),
    sa.column("generation", sa.Integer),
    sa.column("request_id", sa.String),
    sa.column("enforcement", sa.String),
    sa.column("enforcement_detail", sa.String),
    sa.column("enforced_at", sa.DateTime),
    sa.column("enforcement_owner", sa.String),
    sa.column("enforcement_lease_until", sa.DateTime),
)


@dataclass(frozen=True)
class Enforcement:
    """What execution must do for one engagement."""

    tenant_id: str
    scope: str
    scope_id: str
    generation: int
    flatten: bool
    reason: str
    request_id: str
    status: str


def check_ref(tenant_id: str, scope: str, scope_id: str) -> None:
    if scope not in scopes.SCOPES:
        raise errors.ValidationFailed(
            f"unknown kill-switch scope {scope!r}",
            field_errors=[errors.FieldError("scope", f"one of {', '.join(scopes.SCOPES)}")],
        )
    if not scope_id:
        raise errors.ValidationFailed(
            "kill-switch scope id is required",
            field_errors=[errors.FieldError("scopeId", "required")],
        )
    if scope == scopes.TENANT:
        if scope_id != tenant_id:
            # Another tenant's switch does not exist as far as this caller can tell.
            raise errors.NotFound(f"no kill switch for tenant {scope_id!r}")
    elif not ID_RE.match(scope_id):
        raise errors.ValidationFailed(
            "malformed kill-switch scope id",
            field_errors=[errors.FieldError("scopeId", "1-64 characters of A-Z a-z 0-9 _ -")],
        )


def _where(tenant_id: str, scope: str, scope_id: str) -> tuple[Any, ...]:
    return (
        switches.c.tenant_id == tenant_id,
        switches.c.scope == scope,
        switches.c.scope_id == scope_id,
    )


def _message(row: sa.Row[tuple[object, ...]]) -> risk_pb2.KillSwitch:
    m = row._mapping
    engaged = bool(m["engaged"])
    msg = risk_pb2.KillSwitch(
        scope=str(m["scope"]),
        scope_id=str(m["scope_id"]),
        engaged=engaged,
        trigger=str(m["trigger"]) if engaged else "",
        reason=str(m["reason"]),
        engaged_by=str(m["engaged_by"]),
        released_by=str(m["released_by"]),
        release_reason=str(m["release_reason"]),
        flatten=bool(m["flatten"]),
        enforcement=str(m["enforcement"] or "") if engaged else "",
        enforcement_detail=str(m["enforcement_detail"] or ""),
    )
    evidence = json.loads(str(m["evidence"]) or "{}")
    if evidence:
        json_format.ParseDict(evidence, msg.evidence)
    for field in ("engaged_at", "released_at", "enforced_at"):
        ts = to_timestamp(m[field])
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def _row(conn: Connection, tenant_id: str, scope: str, scope_id: str) -> Any:
    return conn.execute(sa.select(switches).where(*_where(tenant_id, scope, scope_id))).first()


def get(conn: Connection, tenant_id: str, scope: str, scope_id: str) -> risk_pb2.KillSwitch:
    """The switch's state; a scope never engaged reads as disengaged."""
    row = _row(conn, tenant_id, scope, scope_id)
    if row is None:
        return risk_pb2.KillSwitch(scope=scope, scope_id=scope_id, engaged=False)
    return _message(row)


def list_all(conn: Connection, tenant_id: str, engaged_only: bool) -> list[risk_pb2.KillSwitch]:
    query = sa.select(switches).where(switches.c.tenant_id == tenant_id)
    if engaged_only:
        query = query.where(switches.c.engaged.is_(True))
    rows = conn.execute(query.order_by(switches.c.scope, switches.c.scope_id)).all()
    return [_message(r) for r in rows]


def states_of(
    conn: Connection, tenant_id: str, refs: list[tuple[str, str]]
) -> list[risk_pb2.KillSwitch]:
    """The state of each (scope, scope_id) with an id, in the order asked, in one query."""
    wanted = [(scope, scope_id) for scope, scope_id in refs if scope_id]
    if not wanted:
        return []
    rows = conn.execute(
        sa.select(switches).where(
            switches.c.tenant_id == tenant_id,
            sa.or_(*((switches.c.scope == s) & (switches.c.scope_id == i) for s, i in wanted)),
        )
    ).all()
    found = {(str(r._mapping["scope"]), str(r._mapping["scope_id"])): r for r in rows}
    return [
        _message(found[ref])
        if ref in found
        else risk_pb2.KillSwitch(scope=ref[0], scope_id=ref[1], engaged=False)
        for ref in wanted
    ]


def _ids(scope: str, scope_id: str) -> dict[str, str]:
    """Audit correlation fields for the scope, so events are queryable by account/deployment."""
    if scope == scopes.DEPLOYMENT:
        return {"deployment_id": scope_id}
    if scope == scopes.ACCOUNT:
        return {"account_id": scope_id}
    return {}


def engage(
    conn: Connection,
    box: Outbox,
    tenant_id: str,
    scope: str,
    scope_id: str,
    *,
    trigger: str,
    reason: str,
    by: str,
    evidence: risk_pb2.BreachEvidence,
    flatten: bool,
    at: datetime,
) -> tuple[risk_pb2.KillSwitch, bool]:
    """Engages the switch; returns its state and whether this call changed it.

    The caller holds the tenant's lock. An engaged switch stays as it is (its trigger and
    evidence are the first ones): the latch only opens by release.
    """
    row = _row(conn, tenant_id, scope, scope_id)
    evidence_dict = json_format.MessageToDict(evidence)
    event_type = "killswitch.tripped" if trigger == DRAWDOWN else "killswitch.engaged"
    if row is not None and bool(row._mapping["engaged"]):
        current = _message(row)
        if trigger == MANUAL:
            box.add(
                conn,
                outbox.event(
                    event_type,
                    source="risk",
                    outcome=outcomes.ALREADY_ENGAGED,
                    reason=f"already engaged ({current.trigger}): {current.reason}; "
                    f"asked: {reason}",
                    policy_version=current.evidence.policy_version,
                    **_ids(scope, scope_id),
                    data={"scope": scope, "scopeId": scope_id, "trigger": trigger},
                ),
            )
        return current, False
    values = {
        "engaged": True,
        "trigger": trigger,
        "reason": reason,
        "evidence": json.dumps(evidence_dict, sort_keys=True),
        "engaged_at": at,
        "engaged_by": by,
        "released_at": None,
        "released_by": "",
        "release_reason": "",
        "flatten": flatten,
        "request_id": correlation.current().request_id,
        "enforcement": PENDING,
        "enforcement_detail": "",
        "enforced_at": None,
        "enforcement_owner": "",
        "enforcement_lease_until": None,
    }
    stamps.touch(conn, tenant_id)  # every account's decisions read the switches
    if row is None:
        conn.execute(
            sa.insert(switches).values(
                tenant_id=tenant_id, scope=scope, scope_id=scope_id, generation=1, **values
            )
        )
    else:
        conn.execute(
            sa.update(switches)
            .where(*_where(tenant_id, scope, scope_id))
            .values(generation=switches.c.generation + 1, **values)
        )
    box.add(
        conn,
        outbox.event(
            event_type,
            source="risk",
            outcome=outcomes.KILL_SWITCH_TRIPPED if trigger == DRAWDOWN else outcomes.ENGAGED,
            reason=reason,
            policy_version=evidence.policy_version,
            **_ids(scope, scope_id),
            data={
                "scope": scope,
                "scopeId": scope_id,
                "trigger": trigger,
                "engagedBy": by,
                "flatten": flatten,
                "evidence": evidence_dict,
            },
        ),
    )
    return get(conn, tenant_id, scope, scope_id), True


def release(
    conn: Connection,
    box: Outbox,
    tenant_id: str,
    scope: str,
    scope_id: str,
    *,
    by: str,
    reason: str,
    at: datetime,
) -> risk_pb2.KillSwitch:
    """Opens the latch; a switch that is not engaged is a state conflict (409)."""
    row = _row(conn, tenant_id, scope, scope_id)
    if row is None or not bool(row._mapping["engaged"]):
        raise errors.StateConflict(f"the kill switch of {scope} {scope_id} is not engaged")
    held = _message(row)
    stamps.touch(conn, tenant_id)
    conn.execute(
        sa.update(switches)
        .where(*_where(tenant_id, scope, scope_id))
        .values(
            engaged=False,
            released_at=at,
            released_by=by,
            release_reason=reason,
            enforcement="",
            enforcement_owner="",
            enforcement_lease_until=None,
        )
    )
    box.add(
        conn,
        outbox.event(
            "killswitch.released",
            source="risk",
            outcome=outcomes.RELEASED,
            reason=reason,
            policy_version=held.evidence.policy_version,
            **_ids(scope, scope_id),
            data={
                "scope": scope,
                "scopeId": scope_id,
                "releasedBy": by,
                "trigger": held.trigger,
                "engagedReason": held.reason,
                "engagedBy": held.engaged_by,
                "engagedAt": json_format.MessageToDict(held)["engagedAt"]
                if held.HasField("engaged_at")
                else "",
            },
        ),
    )
    return get(conn, tenant_id, scope, scope_id)


# -- enforcement bookkeeping -------------------------------------------------------------------


def enforcement_for(
    conn: Connection, tenant_id: str, scope: str, scope_id: str
) -> Enforcement | None:
    row = _row(conn, tenant_id, scope, scope_id)
    return _enforcement(row) if row is not None and bool(row._mapping["engaged"]) else None


def _enforcement(row: Any) -> Enforcement:
    m = row._mapping
    return Enforcement(
        tenant_id=str(m["tenant_id"]),
        scope=str(m["scope"]),
        scope_id=str(m["scope_id"]),
        generation=int(m["generation"]),
        flatten=bool(m["flatten"]),
        reason=str(m["reason"]),
        request_id=str(m["request_id"] or ""),
        status=str(m["enforcement"] or ""),
    )


def unenforced(conn: Connection, pending_before: datetime, now: datetime) -> list[Enforcement]:
    """Engaged switches of every tenant whose enforcement failed, or is pending since before
    pending_before (its process died between the engagement and the call, or execution was
    still at work), and that no live claim holds."""
    rows = conn.execute(
        sa.select(switches).where(
            switches.c.engaged.is_(True),
            sa.or_(
                switches.c.enforcement == FAILED,
                sa.and_(switches.c.enforcement == PENDING, switches.c.engaged_at < pending_before),
            ),
            _claimable(now),
        )
    ).all()
    return [_enforcement(r) for r in rows]


def _claimable(now: datetime) -> Any:
    return sa.or_(
        switches.c.enforcement_lease_until.is_(None), switches.c.enforcement_lease_until < now
    )


def claim(
    conn: Connection, job: Enforcement, *, owner: str, now: datetime, lease: timedelta
) -> bool:
    """Takes the engagement's enforcement for `lease`; False when it is enforced already,
    over, or another live claim holds it. Only the winner calls execution."""
    locks.hold(conn, locks.tenant_key(job.tenant_id))
    result = conn.execute(
        sa.update(switches)
        .where(
            *_where(job.tenant_id, job.scope, job.scope_id),
            switches.c.engaged.is_(True),
            switches.c.generation == job.generation,
            switches.c.enforcement.in_((PENDING, FAILED)),
            _claimable(now),
        )
        .values(enforcement_owner=owner, enforcement_lease_until=now + lease)
    )
    return result.rowcount == 1


def record_enforcement(
    conn: Connection,
    box: Outbox,
    job: Enforcement,
    *,
    status: str,
    detail: str,
    data: dict[str, Any],
    owner: str,
    now: datetime,
) -> bool:
    """Stores the outcome of one enforcement attempt on the engagement it was made for and
    gives up the claim: ENFORCED, FAILED, or PENDING (execution is still at it).

    Audited when enforced (once per engagement), and on the first failure of an engagement
    (retries that fail again only update the detail, so an unreachable execution does not
    flood the trail). When the engagement is over meanwhile (released, or engaged anew),
    an enforcement is still audited, since execution did act, but the switch's state is
    left alone; returns False. An enforced engagement stays enforced.
    """
    locks.hold(conn, locks.tenant_key(job.tenant_id))
    row = _row(conn, job.tenant_id, job.scope, job.scope_id)
    m = row._mapping if row is not None else None
    current = m is not None and bool(m["engaged"]) and int(m["generation"]) == job.generation
    previous = str(m["enforcement"] or "") if current and m is not None else ""
    if current:
        values: dict[str, Any] = {}
        if previous != ENFORCED:
            values.update(
                enforcement=status,
                enforcement_detail=detail,
                enforced_at=now if status == ENFORCED else None,
            )
        if m is not None and str(m["enforcement_owner"] or "") == owner:
            values.update(enforcement_owner="", enforcement_lease_until=None)
        if values:
            conn.execute(
                sa.update(switches)
                .where(*_where(job.tenant_id, job.scope, job.scope_id))
                .values(**values)
            )
    audited = (status == ENFORCED and previous != ENFORCED) or (
        status == FAILED and previous not in (FAILED, ENFORCED)
    )
    if audited:
        evidence = json.loads(str(m["evidence"]) or "{}") if m is not None else {}
        box.add(
            conn,
            outbox.event(
                "killswitch.enforcement",
                source="risk",
                outcome=outcomes.ENFORCED if status == ENFORCED else outcomes.ENFORCEMENT_FAILED,
                reason=detail[:REASON_MAX],
                policy_version=str(evidence.get("policyVersion", "")),
                **_ids(job.scope, job.scope_id),
                data={
                    "scope": job.scope,
                    "scopeId": job.scope_id,
                    "generation": job.generation,
                    "flatten": job.flatten,
                    "engagementOver": not current,
                    **data,
                },
            ),
        )
    return current
