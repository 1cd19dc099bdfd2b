"""The orchestrator: venue submission with a retry budget, and reconciliation by client order id.

Submission: one attempt, then on a timeout the venue is asked for the client order id first
(it may have taken the order and lost the answer) and only if it does not have it is the
order sent again, after an exponential backoff with full jitter. Retries are bounded per
order (`GATE4_EXECUTION_RETRY_MAX_ATTEMPTS`) and drawn from a token bucket per deployment
(`..._RETRY_BUDGET_CAPACITY` tokens, refilled at `..._RETRY_BUDGET_REFILL_PER_SECOND`), so a
venue outage cannot turn into a retry storm. When either runs out the order is rejected with
VENUE_RETRY_BUDGET_EXHAUSTED and the deployment is marked degraded. Resending is never blind:
the same client order id is used, and a venue refuses an id it already knows.

Reconciliation: an order whose venue answer was never recorded (the process died, or its
lease lapsed) is looked up at the venue by client order id. If the venue has it, what the
venue did is adopted; if not, the order is rejected with VENUE_NOT_RECEIVED. Reconciliation
never submits anything. It runs at startup and then periodically for leases that lapse
later (another replica's crash).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.execution.venue import (
    DuplicateClientOrderId,
    ExecutionReport,
    VenueAdapter,
    VenueError,
    VenueOrder,
)
from services.runtime.config import Settings
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy

log = logging.getLogger("gate4.execution.orchestrator")


class RetryBudget:
    """Token bucket per deployment: each retry spends a token; tokens refill over time."""

    def __init__(
        self, capacity: float, refill_per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.refill = refill_per_second
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def tokens(self, key: tuple[str, str]) -> float:
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.refill)

    def try_spend(self, key: tuple[str, str]) -> bool:
        tokens = self.tokens(key)
        if tokens < 1:
            self._buckets[key] = (tokens, self.clock())
            return False
        self._buckets[key] = (tokens - 1, self.clock())
        return True


def policy(settings: Settings) -> RetryPolicy:
    """Submission retries: exponential from GATE4_EXECUTION_RETRY_BASE_SECONDS, capped at
    ..._MAX_BACKOFF_SECONDS, full jitter, at most ..._MAX_ATTEMPTS attempts per order."""
    return RetryPolicy(
        initial=settings.execution_retry_base_seconds,
        max_delay=settings.execution_retry_max_backoff_seconds,
        jitter=1.0,
        max_attempts=settings.execution_retry_max_attempts,
    )


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return RetryPolicy(initial=base, max_delay=cap, jitter=1.0).delay(attempt, rng)


@dataclass
class Retry:
    attempt: int
    delay_seconds: float
    error: str


@dataclass
class Submission:
    """How a submission ended: the venue's report, or exhausted with no report."""

    report: ExecutionReport | None
    attempts: int
    #: The report came from asking the venue by client order id, not from a submit answer.
    reconciled: bool = False
    retries: list[Retry] = field(default_factory=list)
    error: str = ""

    @property
    def exhausted(self) -> bool:
        return self.report is None


class Orchestrator:
    def __init__(
        self,
        venue: VenueAdapter,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.venue = venue
        self.policy = policy(settings)
        self.budget = RetryBudget(
            settings.execution_retry_budget_capacity,
            settings.execution_retry_budget_refill_per_second,
            clock.monotonic,
        )
        self.rng = rng or random.Random()
        self.clock = clock

    async def submit(
        self,
        order: VenueOrder,
        budget_key: tuple[str, str],
        on_retry: Callable[[Retry], Awaitable[None]] | None = None,
    ) -> Submission:
        retries: list[Retry] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                report = await self.venue.submit(order)
                return Submission(report, attempt, retries=retries)
            except DuplicateClientOrderId as dup:
                # An earlier attempt got through after all: adopt it, never a second order.
                return Submission(dup.report, attempt, reconciled=True, retries=retries)
            except VenueError as exc:
                error = str(exc)
            found = await self.lookup(order)
            if found is not None:
                return Submission(found, attempt, reconciled=True, retries=retries)
            if not self.policy.allows(attempt):
                return Submission(
                    None, attempt, retries=retries, error=f"{attempt} attempts failed: {error}"
                )
            if not self.budget.try_spend(budget_key):
                return Submission(
                    None,
                    attempt,
                    retries=retries,
                    error=f"the deployment's retry budget is spent; last error: {error}",
                )
            retry = Retry(attempt, self.policy.delay(attempt, self.rng), error)
            retries.append(retry)
            log.warning(
                "venue submission failed; retrying",
                extra={"client_order_id": order.client_order_id, "attempt": attempt},
            )
            if on_retry is not None:
                await on_retry(retry)
            await self.clock.sleep(retry.delay_seconds)

    async def lookup(self, order: VenueOrder) -> ExecutionReport | None:
        try:
            return await self.venue.lookup(order.tenant_id, order.client_order_id)
        except VenueError:
            # Unknown either way; resending is still safe (the venue refuses a known id).
            return None
