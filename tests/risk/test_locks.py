"""Advisory locks on PostgreSQL: a busy key is Contended at once, never waited for."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from services.risk import locks
from services.runtime.resilience import RetryPolicy
from services.runtime.storage import normalise_url

pytestmark = pytest.mark.postgres


def test_a_held_key_is_contended_until_its_transaction_ends(postgres_url: str) -> None:
    engine = sa.create_engine(normalise_url(postgres_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as first, engine.connect() as second:
            with first.begin():
                locks.hold(first, "account:t1:a")
                locks.hold(first, "account:t1:a")  # re-entrant in its own transaction
                with second.begin():
                    with pytest.raises(locks.Contended):
                        locks.hold(second, "account:t1:a")
                    locks.hold(second, "account:t1:b")  # other keys are free
            with second.begin():
                locks.hold(second, "account:t1:a")
    finally:
        engine.dispose()


def test_retry_runs_again_until_free_and_gives_up_in_time() -> None:
    attempts: list[int] = []

    async def busy_twice() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise locks.Contended("k")
        return "done"

    async def always_busy() -> str:
        raise locks.Contended("k")

    assert asyncio.run(locks.retry(busy_twice)) == "done" and len(attempts) == 3
    with pytest.raises(locks.Contended):
        asyncio.run(locks.retry(always_busy, RetryPolicy(initial=0.001, max_attempts=3)))
