"""Turns: one at a time per session, idempotent by key, memory versioned by turn.

A turn is claimed (an in-progress row with the next sequence, unique per session) before the
assistant runs, and completed in one transaction with the session's new memory and the
delivery of pending notifications. A second turn on the same session while one runs is
refused (409), so memory never interleaves; a retry with the same Idempotency-Key returns the
stored turn byte for byte and does not advance memory.

A turn is a keyed command like execution's (services/runtime/idempotency.py): its row is the
key's record, its `turn_id` the fencing token; a claim holds the session (and its key) for
the lease, and a claim past its lease belongs to a crashed process and is taken over. A
completed turn's key is kept for the lifetime; past it the key may name a new turn (the old
turn stays, without its key).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.conversation.v1 import conversation_pb2
from services.runtime import errors
from services.runtime.idempotency import (
    COMPLETED,
    IN_PROGRESS,
    REPLAY,
    KeyPolicy,
    KeyTable,
    taken_over,
)
from services.runtime.storage.conflicts import insert_new
from services.runtime.timeutil import as_utc

turns = sa.table(
    "conversation_turns",
    *(
        sa.column(n, sa.String)
        for n in (
            "turn_id",
            "session_id",
            "tenant_id",
            "idempotency_key",
            "request_digest",
            "status",
        )
    ),
    sa.column("sequence", sa.Integer),
    sa.column("response", sa.LargeBinary),
    sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
    sa.column("lease_until", sa.DateTime),
    sa.column("expires_at", sa.DateTime),
)
#: A turn's row is its key's record; its turn id fences out an attempt taken over.
TABLE = KeyTable(turns, owner="turn_id")


@dataclass(frozen=True)
class Claim:
    turn_id: str
    sequence: int


def replay(
    conn: Connection, session_id: str, key: str, request_digest: str, now: datetime
) -> conversation_pb2.Turn | None:
    """The stored turn for this key; None when the key is new, or free again (its turn's
    lease lapsed, or its lifetime ended): `claim` then takes it. Raises 422/409 as
    execution's keys do."""
    if not key:
        return None
    row = conn.execute(
        sa.select(
            turns.c.status,
            turns.c.request_digest,
            turns.c.response,
            turns.c.lease_until,
            turns.c.expires_at,
        ).where(turns.c.session_id == session_id, turns.c.idempotency_key == key)
    ).first()
    if row is None or TABLE.judge(row._mapping, request_digest, now) != REPLAY:
        return None
    return conversation_pb2.Turn.FromString(row.response)


def claim(
    conn: Connection,
    tenant_id: str,
    session_id: str,
    turn_count: int,
    key: str,
    request_digest: str,
    now: datetime,
    policy: KeyPolicy,
) -> Claim:
    """Reserves the session's next turn, holding it (and its key) for the lease; refuses
    while another turn holds the session."""
    running = conn.execute(
        sa.select(turns.c.turn_id, turns.c.lease_until, turns.c.created_at).where(
            turns.c.session_id == session_id, turns.c.status == IN_PROGRESS
        )
    ).first()
    if running is not None:
        held = dict(running._mapping)
        if held["lease_until"] is None:
            # Claimed by a release that wrote no lease (during a rolling upgrade): it holds
            # the session for the lease from its claim, not for no time at all.
            held["lease_until"] = as_utc(held["created_at"]) + policy.lease
        if TABLE.holds(held, now):
            raise errors.StateConflict(
                "another turn is being processed on this session; retry when it has answered"
            )
        # Its process stopped unfinished: take the session (and the turn's key) over.
        conn.execute(sa.delete(turns).where(TABLE.held_by(running.turn_id)))
    if key:
        # A key past its lifetime names this new turn; its old turn stays, without it.
        conn.execute(
            sa.update(turns)
            .where(turns.c.session_id == session_id, turns.c.idempotency_key == key)
            .where(TABLE.expired(now))
            .values(idempotency_key=None)
        )
    claimed = Claim(turn_id=f"trn_{uuid.uuid4().hex[:24]}", sequence=turn_count + 1)
    row = {
        "turn_id": claimed.turn_id,
        "session_id": session_id,
        "tenant_id": tenant_id,
        "sequence": claimed.sequence,
        "idempotency_key": key or None,
        "request_digest": request_digest,
        "status": IN_PROGRESS,
        "created_at": now,
        "updated_at": now,
        "lease_until": policy.lease_until(now),
        "expires_at": policy.expires_at(now),
    }
    if not insert_new(conn, turns, row, "turn_id"):
        # Another process claimed this sequence (or this key) first.
        raise errors.StateConflict(
            "another turn is being processed on this session; retry when it has answered"
        )
    return claimed


def complete(conn: Connection, turn: conversation_pb2.Turn, now: datetime) -> None:
    """Stores the turn, in the transaction that advances its session; raises (rolling it
    back) when another attempt took the turn over after its lease lapsed."""
    done = conn.execute(
        sa.update(turns)
        .where(TABLE.held_by(turn.turn_id))
        .values(status=COMPLETED, response=turn.SerializeToString(), updated_at=now)
    ).rowcount
    if not done:
        raise taken_over()


def release(conn: Connection, turn_id: str) -> None:
    """Gives up a claim whose turn failed, so the session can take the next one."""
    conn.execute(sa.delete(turns).where(TABLE.held_by(turn_id)))
