"""The orchestrator: bounded retries with backoff, a refilling budget, reconciliation first."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from decimal import Decimal as D

from services.execution.orchestrator import Orchestrator, RetryBudget, backoff
from services.execution.venue import (
    DuplicateClientOrderId,
    ExecutionReport,
    VenueOrder,
    VenueTimeout,
)
from services.runtime.config import Settings
from services.runtime.resilience import ManualClock

ORDER = VenueOrder("c-1", "t1", "acc", "BTC-USD", "buy", "market", D(1))
FILLED = ExecutionReport("c-1", "filled", D(1))


class ScriptedVenue:
    """Answers submit with the scripted outcomes; records what it was asked."""

    name = "scripted"

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.submits = 0
        self.lookups = 0
        self.book: dict[str, ExecutionReport] = {}

    async def submit(self, order: VenueOrder) -> ExecutionReport:
        self.submits += 1
        step = self.script.pop(0) if self.script else "ok"
        if order.client_order_id in self.book:
            raise DuplicateClientOrderId(self.book[order.client_order_id])
        if step == "timeout":
            raise VenueTimeout("no answer")
        self.book[order.client_order_id] = FILLED
        if step == "lost_ack":
            raise VenueTimeout("answer lost")
        return FILLED

    async def lookup(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        self.lookups += 1
        return self.book.get(client_order_id)

    async def cancel(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        return None

    async def on_mark(
        self, tenant_id: str, instrument: str, price: D, at: datetime
    ) -> list[ExecutionReport]:
        return []


class RecordingClock(ManualClock):
    """Each sleep is recorded and passes at once, moving the clock on."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def orchestrator(venue: ScriptedVenue, **settings: float) -> tuple[Orchestrator, list[float]]:
    clock = RecordingClock()
    config = Settings(
        execution_retry_max_attempts=int(settings.get("attempts", 4)),
        execution_retry_base_seconds=0.1,
        execution_retry_max_backoff_seconds=1.0,
        execution_retry_budget_capacity=settings.get("capacity", 10),
        execution_retry_budget_refill_per_second=0,
    )
    return Orchestrator(venue, config, rng=random.Random(7), clock=clock), clock.slept


def test_timeouts_are_retried_with_backoff_until_the_venue_answers() -> None:
    venue = ScriptedVenue("timeout", "timeout")
    orch, slept = orchestrator(venue)
    result = asyncio.run(orch.submit(ORDER, ("t1", "dep")))
    assert result.report == FILLED and result.attempts == 3 and not result.reconciled
    assert [r.attempt for r in result.retries] == [1, 2]
    assert len(slept) == 2 and 0 <= slept[0] <= 0.1 and 0 <= slept[1] <= 0.2
    assert venue.lookups == 2  # asked by client order id before each resend


def test_a_lost_answer_is_reconciled_never_resubmitted() -> None:
    venue = ScriptedVenue("lost_ack")
    orch, slept = orchestrator(venue)
    result = asyncio.run(orch.submit(ORDER, ("t1", "dep")))
    assert result.report == FILLED and result.reconciled
    assert venue.submits == 1 and slept == []


def test_attempts_are_bounded() -> None:
    venue = ScriptedVenue(*["timeout"] * 10)
    orch, _ = orchestrator(venue, attempts=3)
    result = asyncio.run(orch.submit(ORDER, ("t1", "dep")))
    assert result.exhausted and result.attempts == 3 and "3 attempts failed" in result.error


def test_the_budget_is_per_deployment_and_runs_out() -> None:
    venue = ScriptedVenue(*["timeout"] * 20)
    orch, _ = orchestrator(venue, attempts=10, capacity=2)
    first = asyncio.run(orch.submit(ORDER, ("t1", "dep-a")))
    assert first.exhausted and first.attempts == 3 and "budget" in first.error
    other = VenueOrder("c-2", "t1", "acc", "BTC-USD", "buy", "market", D(1))
    second = asyncio.run(orch.submit(other, ("t1", "dep-b")))
    assert second.attempts == 3  # another deployment has its own budget


def test_the_budget_refills_over_time() -> None:
    now = [0.0]
    budget = RetryBudget(capacity=2, refill_per_second=0.5, clock=lambda: now[0])
    key = ("t1", "dep")
    assert budget.try_spend(key) and budget.try_spend(key)
    assert not budget.try_spend(key)
    now[0] = 1.0
    assert not budget.try_spend(key)  # half a token
    now[0] = 2.0
    assert budget.try_spend(key)
    now[0] = 100.0
    assert budget.tokens(key) == 2  # never above capacity


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 10):
        delay = backoff(attempt, 0.1, 1.0, rng)
        assert 0 <= delay <= min(1.0, 0.1 * 2 ** (attempt - 1))
