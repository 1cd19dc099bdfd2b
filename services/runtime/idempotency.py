"""Idempotency keys: exactly one side effect per key, for every keyed command of the platform
(execution's commands, conversation's turns).

A key's record lives in its service's table (`KeyTable`), whose columns are named alike:
`status`, `request_digest`, `lease_until`, `expires_at` and a fencing token (the claim's
owner). A record is `in_progress` while its command runs, held by its owner until
`lease_until`, then `completed` with the command's result, kept until `expires_at`. A new
attempt with the same key is judged (`KeyTable.judge`) against the record it finds:

- completed, not expired, same request: replay the stored result;
- completed and expired: the key is free again (EXPIRED);
- another request (its digest differs): 422 IDEMPOTENCY_KEY_REUSED;
- in progress within its lease: 409 IDEMPOTENCY_IN_PROGRESS;
- in progress past its lease: its attempt stopped unfinished, take it over (LAPSED).

The lease and the lifetime are the same for every service (`KeyPolicy.of(settings)`:
GATE4_EXECUTION_COMMAND_LEASE_SECONDS, GATE4_EXECUTION_IDEMPOTENCY_TTL_SECONDS). Which
transaction writes a record, with which side effect, stays with each service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import sqlalchemy as sa

from services.runtime import errors
from services.runtime.timeutil import as_utc

if TYPE_CHECKING:
    from services.runtime.config import Settings

# A record's states.
IN_PROGRESS = "in_progress"
COMPLETED = "completed"

#: What a new attempt may do with the record it found (`KeyTable.judge`).
REPLAY: Final = "replay"
EXPIRED: Final = "expired"
LAPSED: Final = "lapsed"
Judgement = Literal["replay", "expired", "lapsed"]


@dataclass(frozen=True)
class KeyPolicy:
    """How long a running command holds its key (the lease: past it, another attempt takes
    the key over) and how long a completed key is kept (the lifetime)."""

    lease_seconds: float
    ttl_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> KeyPolicy:
        return cls(
            settings.execution_command_lease_seconds, settings.execution_idempotency_ttl_seconds
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def lease_until(self, now: datetime) -> datetime:
        return now + self.lease

    def expires_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.ttl_seconds)


@dataclass(frozen=True)
class KeyTable:
    """A service's table of key records; `owner` names its fencing-token column."""

    table: sa.TableClause
    owner: str = "owner"

    def held_by(self, owner: str) -> sa.ColumnElement[bool]:
        """The record of an attempt that still holds its key (not taken over, not done)."""
        return (self.table.c[self.owner] == owner) & (self.table.c.status == IN_PROGRESS)

    def expired(self, now: datetime) -> sa.ColumnElement[bool]:
        """Completed records past their lifetime: to purge, or to take the key from."""
        return (self.table.c.status == COMPLETED) & (self.table.c.expires_at <= now)

    def judge(self, record: Mapping[Any, Any], digest: str, now: datetime) -> Judgement:
        """What an existing record answers a new attempt with request `digest` at `now`:
        REPLAY its stored result, or take the key (EXPIRED, LAPSED); raises 422 (another
        request) or 409 (still running). A record without a lease or a lifetime (written
        before the table had them) counts as lapsed, or as never expiring."""
        expires_at = record["expires_at"]
        if record["status"] == COMPLETED and expires_at is not None and as_utc(expires_at) <= now:
            return EXPIRED
        if record["request_digest"] != digest:
            raise reused()
        if record["status"] == COMPLETED:
            return REPLAY
        if self.holds(record, now):
            raise busy()
        return LAPSED

    @staticmethod
    def holds(record: Mapping[Any, Any], now: datetime) -> bool:
        """Whether an in-progress record's attempt still holds its key: its lease runs."""
        lease_until = record["lease_until"]
        return lease_until is not None and as_utc(lease_until) > now


def reused() -> errors.IdempotencyKeyReused:
    return errors.IdempotencyKeyReused(
        "this Idempotency-Key was first used with a different request; use a new key for a "
        "new command"
    )


def busy() -> errors.IdempotencyInProgress:
    return errors.IdempotencyInProgress(
        "a request with this Idempotency-Key is still being processed; retry shortly"
    )


def taken_over() -> errors.IdempotencyInProgress:
    """An attempt finishing after another took its lapsed key over: raising rolls its side
    effect back, and the client's retry with the key gets the other attempt's result."""
    return errors.IdempotencyInProgress(
        "this request ran past its lease and another attempt took its Idempotency-Key over; "
        "retry with the same key to get that attempt's result"
    )
