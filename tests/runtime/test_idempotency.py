"""The runtime's idempotency mechanism: the lease and lifetime, and the judgement of the
record a new attempt finds, at fixed times passed in (no clock, no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.runtime import errors
from services.runtime.config import Settings
from services.runtime.idempotency import (
    COMPLETED,
    EXPIRED,
    IN_PROGRESS,
    LAPSED,
    REPLAY,
    KeyPolicy,
    KeyTable,
)

T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)
POLICY = KeyPolicy(lease_seconds=30, ttl_seconds=24 * 3600)

records = sa.Table(
    "records",
    sa.MetaData(),
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("holder", sa.String),
    sa.Column("status", sa.String),
    sa.Column("request_digest", sa.String),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
)
TABLE = KeyTable(records, owner="holder")


def record(status: str = IN_PROGRESS, digest: str = "d1", **times: Any) -> dict[str, Any]:
    """A record claimed at T0 under POLICY, with its times overridden by `times`."""
    return {
        "status": status,
        "request_digest": digest,
        "lease_until": POLICY.lease_until(T0),
        "expires_at": POLICY.expires_at(T0),
        **times,
    }


def test_the_policy_comes_from_the_settings_every_service_reads() -> None:
    settings = Settings(
        execution_command_lease_seconds=12.5, execution_idempotency_ttl_seconds=90_000
    )
    assert KeyPolicy.of(settings) == KeyPolicy(12.5, 90_000)
    assert KeyPolicy.of(settings).lease == settings.command_lease


def test_the_lease_and_the_lifetime_run_from_the_claim() -> None:
    assert POLICY.lease_until(T0) == T0 + 30 * SECOND
    assert POLICY.expires_at(T0) == T0 + timedelta(days=1)


def test_a_completed_record_with_the_same_request_is_replayed_until_it_expires() -> None:
    done = record(COMPLETED)
    assert TABLE.judge(done, "d1", T0 + timedelta(hours=23)) == REPLAY
    assert TABLE.judge(done, "d1", POLICY.expires_at(T0) - SECOND) == REPLAY
    assert TABLE.judge(done, "d1", POLICY.expires_at(T0)) == EXPIRED


def test_an_expired_record_frees_the_key_for_any_request() -> None:
    """Past its lifetime the key is new again, whatever request it was first used with."""
    assert TABLE.judge(record(COMPLETED), "d2", POLICY.expires_at(T0)) == EXPIRED


def test_another_request_with_the_key_is_refused_while_the_record_lives() -> None:
    for found in (record(COMPLETED), record(IN_PROGRESS), record(IN_PROGRESS, lease_until=T0)):
        with pytest.raises(errors.IdempotencyKeyReused):
            TABLE.judge(found, "d2", T0 + SECOND)


def test_a_running_record_is_busy_within_its_lease_and_taken_over_after() -> None:
    running = record(IN_PROGRESS)
    with pytest.raises(errors.IdempotencyInProgress):
        TABLE.judge(running, "d1", T0)
    with pytest.raises(errors.IdempotencyInProgress):
        TABLE.judge(running, "d1", POLICY.lease_until(T0) - SECOND)
    assert TABLE.judge(running, "d1", POLICY.lease_until(T0)) == LAPSED
    # A running record never expires: only its lease decides.
    assert TABLE.judge(running, "d1", POLICY.expires_at(T0) + SECOND) == LAPSED


def test_records_without_lease_or_lifetime_are_lapsed_or_kept() -> None:
    """Rows written before their table had the columns: a running one may be taken over,
    a completed one keeps its key."""
    assert TABLE.judge(record(IN_PROGRESS, lease_until=None), "d1", T0) == LAPSED
    far = T0 + timedelta(days=3650)
    assert TABLE.judge(record(COMPLETED, expires_at=None), "d1", far) == REPLAY


def test_naive_times_from_sqlite_are_read_as_utc() -> None:
    naive = record(IN_PROGRESS, lease_until=POLICY.lease_until(T0).replace(tzinfo=None))
    with pytest.raises(errors.IdempotencyInProgress):
        TABLE.judge(naive, "d1", T0)


def test_the_table_clauses_select_the_holder_and_the_expired() -> None:
    engine = sa.create_engine("sqlite://")
    records.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            records.insert(),
            [
                {"key": "running", "holder": "a", **record(IN_PROGRESS)},
                {"key": "done", "holder": "a", **record(COMPLETED)},
                {"key": "old", "holder": "b", **record(COMPLETED, expires_at=T0 - SECOND)},
            ],
        )

        def keys(where: sa.ColumnElement[bool]) -> set[str]:
            return set(conn.execute(sa.select(records.c.key).where(where)).scalars())

        assert keys(TABLE.held_by("a")) == {"running"}
        assert keys(TABLE.held_by("b")) == set()
        assert keys(TABLE.expired(T0)) == {"old"}
        assert keys(TABLE.expired(POLICY.expires_at(T0))) == {"old", "done"}
