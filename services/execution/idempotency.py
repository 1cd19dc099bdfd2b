"""Idempotency keys (DESIGN.md section 3): exactly one side effect per key.

A key is scoped to tenant + route. Claiming it inserts an `in_progress` record holding the
digest of the request, a fencing token (`owner`) and a lease; the command's side effect and
the key's completion (the serialized reply, or the refusal) are then written in ONE write op,
so they commit together or not at all:

- crash before that commit: nothing happened; once the lease lapses the retry takes the key
  over (resumed) and reconciles whatever reached the venue before executing anything;
- crash after it: the retry replays the stored result.

Concurrent claims serialise on the primary key: `INSERT ... ON CONFLICT DO NOTHING` then
`SELECT ... FOR UPDATE` on PostgreSQL, so with two processes exactly one inserts and the
others see its record once it commits; SQLite has a single writer. Completion only succeeds
for the owner that still holds the key, which fences out an attempt whose lease was taken.

An order's key costs no transaction of its own (`lookup`, a read): when the key is new the
claim is deferred, and its record is inserted by the transaction that records the order
(`hold`) or its refusal (`complete`). Of two attempts racing with one new key, both may
get a decision from risk, but only one inserts the key with its order; the other is
refused as in progress and risk hears that its approved order was not executed. A key
found in progress past its lease, or completed and expired, takes the claiming write.

Transient failures (risk or a dependency unreachable) release the key: nothing was executed
and the client may retry with the same key. Decisions (risk refusals, state conflicts) are
stored and replayed. Completed keys are kept `GATE4_EXECUTION_IDEMPOTENCY_TTL_SECONDS`
(at least 24 h) and then purged.

The record's states, the judgement of a record a new attempt finds, the lease and the
lifetime are the runtime's (services/runtime/idempotency.py, shared with conversation's
turns); this module is the storage of execution's keys in `execution_idempotency`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.engine import Connection

from services.execution.store import idempotency as keys
from services.runtime import correlation, errors
from services.runtime.idempotency import (
    COMPLETED,
    EXPIRED,
    IN_PROGRESS,
    REPLAY,
    KeyPolicy,
    KeyTable,
    busy,
    taken_over,
)
from services.runtime.storage.conflicts import insert_new

TABLE = KeyTable(keys)

# Routes: a key is scoped to tenant + route.
ROUTE_CREATE = "CreateDeployment"
ROUTE_STOP = "StopDeployment"
ROUTE_SUBMIT = "SubmitOrder"
# Keyed by scope and engagement generation, so one engagement is enforced once.
ROUTE_ENFORCE = "EnforceKillSwitch"


@dataclass
class Progress:
    """What a keyed command has done, so a failure knows whether the key may be released."""

    #: A side effect was committed that reconciliation, not a retry, must finish.
    started: bool = False
    #: The command stored its own result (or released the key) already.
    settled: bool = False


@dataclass(frozen=True)
class Claim:
    """This attempt holds the key. `resumed`: an earlier attempt's lease lapsed unfinished."""

    route: str
    key: str
    owner: str
    resource_id: str
    resumed: bool = False
    #: Not written yet: `hold` or `complete` inserts the record with the command's first
    #: write (the digest and the lease and lifetime are kept here for that insert).
    deferred: bool = False
    digest: str = ""
    policy: KeyPolicy | None = None


@dataclass(frozen=True)
class Stored:
    """The first attempt's result, to replay."""

    resource_id: str
    response: bytes | None
    error_code: str = ""
    error_detail: str = ""
    error_outcome: str = ""

    def error(self) -> errors.Gate4Error:
        cls = errors.error_class(self.error_code) or errors.InternalError
        return cls(self.error_detail, outcome=self.error_outcome)


def request_digest(request: Message) -> str:
    """sha256 of the request's deterministic serialization, without its idempotency key."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "idempotency_key" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("idempotency_key")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _where(tenant_id: str, route: str, key: str) -> sa.ColumnElement[bool]:
    return (keys.c.tenant_id == tenant_id) & (keys.c.route == route) & (keys.c.key == key)


def claim(
    conn: Connection,
    *,
    tenant_id: str,
    route: str,
    key: str,
    digest: str,
    resource_id: str,
    now: datetime,
    policy: KeyPolicy,
) -> Claim | Stored:
    """Takes the key, or returns the stored result; raises 422/409 as the contract says."""
    owner = uuid.uuid4().hex
    lease_until = policy.lease_until(now)
    fresh = _fresh(owner, digest, resource_id, now, lease_until, policy.expires_at(now))
    _insert(conn, tenant_id, route, key, fresh)
    row = (
        conn.execute(sa.select(keys).where(_where(tenant_id, route, key)).with_for_update())
        .one()
        ._mapping
    )
    if row["owner"] == owner:
        return Claim(route, key, owner, resource_id)
    standing = TABLE.judge(row, digest, now)
    if standing == REPLAY:
        return _stored(row)
    if standing == EXPIRED:
        # Expired but not purged yet: the key is free again.
        conn.execute(sa.update(keys).where(_where(tenant_id, route, key)).values(**fresh))
        return Claim(route, key, owner, resource_id)
    # The attempt holding the key stopped (crashed) without finishing: take it over.
    conn.execute(
        sa.update(keys)
        .where(_where(tenant_id, route, key))
        .values(owner=owner, lease_until=lease_until)
    )
    return Claim(route, key, owner, str(row["resource_id"]), resumed=True)


def lookup(
    conn: Connection,
    *,
    tenant_id: str,
    route: str,
    key: str,
    digest: str,
    resource_id: str,
    now: datetime,
    policy: KeyPolicy,
) -> Claim | Stored | None:
    """Reads the key: a deferred claim when it is new, else the stored result or 422/409 as
    `claim` would answer. None: the key needs the claiming write (in progress past its
    lease, or completed and expired)."""
    row = conn.execute(sa.select(keys).where(_where(tenant_id, route, key))).first()
    if row is None:
        return Claim(
            route,
            key,
            uuid.uuid4().hex,
            resource_id,
            deferred=True,
            digest=digest,
            policy=policy,
        )
    return _stored(row._mapping) if TABLE.judge(row._mapping, digest, now) == REPLAY else None


def _stored(row: sa.RowMapping) -> Stored:
    return Stored(
        resource_id=str(row["resource_id"]),
        response=bytes(row["response"]) if row["response"] is not None else None,
        error_code=str(row["error_code"]),
        error_detail=str(row["error_detail"]),
        error_outcome=str(row["error_outcome"]),
    )


def _fresh(
    owner: str,
    digest: str,
    resource_id: str,
    now: datetime,
    lease_until: datetime,
    expires_at: datetime,
) -> dict[str, object]:
    """A key's record as its claim writes it: in progress, held by `owner` until
    `lease_until`."""
    return {
        "request_digest": digest,
        "status": IN_PROGRESS,
        "owner": owner,
        "lease_until": lease_until,
        "resource_id": resource_id,
        "result_kind": "",
        "response": None,
        "error_code": "",
        "error_detail": "",
        "error_outcome": "",
        "request_id": correlation.current().request_id,
        "created_at": now,
        "completed_at": None,
        "expires_at": expires_at,
    }


def _insert(
    conn: Connection, tenant_id: str, route: str, key: str, values: dict[str, object]
) -> bool:
    """Inserts the key's record unless it exists; whether it did."""
    return insert_new(
        conn, keys, {"tenant_id": tenant_id, "route": route, "key": key, **values}, "owner"
    )


def _insert_deferred(
    conn: Connection, tenant_id: str, claim_: Claim, now: datetime, **values: object
) -> None:
    """Writes a deferred claim's record; an attempt that wrote the key first keeps it."""
    assert claim_.policy is not None  # `lookup` gives every deferred claim its policy
    policy = claim_.policy
    fresh = _fresh(
        claim_.owner,
        claim_.digest,
        claim_.resource_id,
        now,
        policy.lease_until(now),
        policy.expires_at(now),
    )
    if not _insert(conn, tenant_id, claim_.route, claim_.key, {**fresh, **values}):
        raise busy()


def hold(
    conn: Connection, tenant_id: str, claim_: Claim | None, now: datetime, lease_until: datetime
) -> None:
    """Checks, inside the transaction that records a side effect, that this attempt still
    holds the key, and extends its lease. An attempt whose lease lapsed and was taken over
    is fenced out here, before it records anything the new holder would then repeat. A
    deferred claim's record is written here, with the side effect."""
    if claim_ is None:
        return
    if claim_.deferred:
        _insert_deferred(conn, tenant_id, claim_, now, lease_until=lease_until)
        return
    held = conn.execute(
        sa.update(keys)
        .where(_where(tenant_id, claim_.route, claim_.key), TABLE.held_by(claim_.owner))
        .values(lease_until=lease_until)
    ).rowcount
    if not held:
        raise taken_over()


def complete(
    conn: Connection,
    tenant_id: str,
    claim_: Claim | None,
    now: datetime,
    *,
    response: bytes | None = None,
    error: errors.Gate4Error | None = None,
) -> None:
    """Stores the result in the same transaction as the side effect (no-op without a key).
    A deferred claim refused before its record was written writes it completed."""
    if claim_ is None:
        return
    done = conn.execute(
        sa.update(keys)
        .where(_where(tenant_id, claim_.route, claim_.key), TABLE.held_by(claim_.owner))
        .values(**_result(now, response, error))
    ).rowcount
    if not done and claim_.deferred:
        _insert_deferred(conn, tenant_id, claim_, now, **_result(now, response, error))
        return
    if not done:
        # Another attempt took the key over after our lease lapsed.
        raise taken_over()


def complete_unowned(
    conn: Connection, tenant_id: str, route: str, key: str, now: datetime, response: bytes
) -> None:
    """Completes a key whose attempt died, from reconciliation (the order row is locked)."""
    conn.execute(
        sa.update(keys)
        .where(_where(tenant_id, route, key), keys.c.status == IN_PROGRESS)
        .values(**_result(now, response, None))
    )


def release(conn: Connection, tenant_id: str, claim_: Claim | None) -> None:
    """Frees the key after a transient failure: nothing was executed, the retry may run."""
    if claim_ is None:
        return
    conn.execute(
        sa.delete(keys).where(
            _where(tenant_id, claim_.route, claim_.key), TABLE.held_by(claim_.owner)
        )
    )


def purge_expired(conn: Connection, now: datetime) -> int:
    return int(conn.execute(sa.delete(keys).where(TABLE.expired(now))).rowcount)


def _result(
    now: datetime, response: bytes | None, error: errors.Gate4Error | None
) -> dict[str, object]:
    if error is not None:
        return {
            "status": COMPLETED,
            "result_kind": "error",
            "error_code": error.error_code(),
            "error_detail": error.detail,
            "error_outcome": error.outcome,
            "completed_at": now,
        }
    return {"status": COMPLETED, "result_kind": "reply", "response": response, "completed_at": now}
