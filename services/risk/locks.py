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

from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime import resilience
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy

T = TypeVar("T")

# First key of the two-key advisory lock space, so risk's keys never meet anyone else's.
NAMESPACE = 0x52534B  # "RSK"
#: Running an op again while another process holds its key: short pauses, jittered so two
#: processes retrying one key do not keep colliding, for at most 3 s (within a call's budget).
RETRY = RetryPolicy(initial=0.002, multiplier=2.0, max_delay=0.05, jitter=0.5, max_elapsed=3.0)


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


async def retry(
    attempt: Callable[[], Awaitable[T]], policy: RetryPolicy = RETRY, *, clock: Clock = SYSTEM
) -> T:
    """Runs attempt until it does not raise Contended; re-raises once the policy's budget
    is spent."""
    return await resilience.retry(attempt, policy, on=Contended, clock=clock)
