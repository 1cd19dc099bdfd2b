"""Per-key serialisation of risk state across risk processes that share one database.

Decisions count orders in a window and equity reports count confirmations: read, decide,
write. Two risk processes on PostgreSQL must not both read 29 and both write the 30th,
so each such write op first takes a transaction-scoped advisory lock on its key (the
account for decisions, the tenant for equity and kill-switch transitions).

The op runs inside a group-committed batch that may already hold other keys' locks, so it
must never wait for a lock (two batches waiting on each other would deadlock): it tries,
and when the key is busy it raises `Contended`; `retry` runs it again in a later batch,
by which time the other process has committed. On SQLite the writer's BEGIN IMMEDIATE
already serialises every writer of the file, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

T = TypeVar("T")

# First key of the two-key advisory lock space, so risk's keys never meet anyone else's.
NAMESPACE = 0x52534B  # "RSK"
RETRY_SECONDS = 3.0


class Contended(Exception):
    """Another risk process holds the key's lock; run the op again in a later batch."""


def hold(conn: Connection, key: str) -> None:
    """Takes key's lock until the transaction ends, or raises Contended at once."""
    if conn.dialect.name != "postgresql":
        return
    taken = conn.execute(
        sa.text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))"),
        {"ns": NAMESPACE, "key": key},
    ).scalar()
    if not taken:
        raise Contended(key)


def account_key(tenant_id: str, account_id: str) -> str:
    return f"account:{tenant_id}:{account_id}"


def tenant_key(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


async def retry(attempt: Callable[[], Awaitable[T]], within: float = RETRY_SECONDS) -> T:
    """Runs attempt until it does not raise Contended; re-raises after `within` seconds."""
    deadline = time.monotonic() + within
    pause = 0.002
    while True:
        try:
            return await attempt()
        except Contended:
            if time.monotonic() >= deadline:
                raise
            # Jitter, so two processes retrying the same key do not keep colliding.
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.05)
