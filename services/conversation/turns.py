"""Turns: one at a time per session, idempotent by key, memory versioned by turn.

A turn is claimed (an in-progress row with the next sequence, unique per session) before the
assistant runs, and completed in one transaction with the session's new memory and the
delivery of pending notifications. A second turn on the same session while one runs is
refused (409), so memory never interleaves; a retry with the same Idempotency-Key returns the
stored turn byte for byte and does not advance memory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.conversation.v1 import conversation_pb2
from services.runtime import errors
from services.runtime.timeutil import as_utc, utcnow

#: A claim older than this belongs to a crashed process and may be taken over.
STALE_CLAIM = timedelta(seconds=60)

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
)


@dataclass(frozen=True)
class Claim:
    turn_id: str
    sequence: int


def replay(
    conn: Connection, session_id: str, key: str, request_digest: str
) -> conversation_pb2.Turn | None:
    """The stored turn for this key, or None when the key is new."""
    if not key:
        return None
    row = conn.execute(
        sa.select(
            turns.c.status, turns.c.request_digest, turns.c.response, turns.c.created_at
        ).where(turns.c.session_id == session_id, turns.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    if row.request_digest != request_digest:
        raise errors.IdempotencyKeyReused(
            "this Idempotency-Key was used for a different turn on this session"
        )
    if row.status != "completed" or row.response is None:
        if utcnow() - as_utc(row.created_at) >= STALE_CLAIM:
            return None  # its process crashed: `claim` takes the turn over for this retry
        raise errors.IdempotencyInProgress("the turn with this Idempotency-Key is still running")
    return conversation_pb2.Turn.FromString(row.response)


def claim(
    conn: Connection,
    tenant_id: str,
    session_id: str,
    turn_count: int,
    key: str,
    request_digest: str,
) -> Claim:
    """Reserves the session's next turn; refuses while another turn is running."""
    running = conn.execute(
        sa.select(turns.c.turn_id, turns.c.created_at).where(
            turns.c.session_id == session_id, turns.c.status == "in_progress"
        )
    ).first()
    if running is not None:
        if utcnow() - as_utc(running.created_at) < STALE_CLAIM:
            raise errors.StateConflict(
                "another turn is being processed on this session; retry when it has answered"
            )
        conn.execute(sa.delete(turns).where(turns.c.turn_id == running.turn_id))
    now = utcnow()
    claimed = Claim(turn_id=f"trn_{uuid.uuid4().hex[:24]}", sequence=turn_count + 1)
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(turns).values(
                    turn_id=claimed.turn_id,
                    session_id=session_id,
                    tenant_id=tenant_id,
                    sequence=claimed.sequence,
                    idempotency_key=key or None,
                    request_digest=request_digest,
                    status="in_progress",
                    created_at=now,
                    updated_at=now,
                )
            )
    except sa.exc.IntegrityError:
        # Another process claimed this sequence (or this key) first.
        raise errors.StateConflict(
            "another turn is being processed on this session; retry when it has answered"
        ) from None
    return claimed


def complete(conn: Connection, turn: conversation_pb2.Turn) -> None:
    conn.execute(
        sa.update(turns)
        .where(turns.c.turn_id == turn.turn_id)
        .values(status="completed", response=turn.SerializeToString(), updated_at=utcnow())
    )


def release(conn: Connection, turn_id: str) -> None:
    """Gives up a claim whose turn failed, so the session can take the next one."""
    conn.execute(
        sa.delete(turns).where(turns.c.turn_id == turn_id, turns.c.status == "in_progress")
    )
