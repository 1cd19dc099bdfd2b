"""Retry policies, the clock and background workers: one home for how services wait.

- `RetryPolicy`: exponential backoff with jitter and a budget (attempts and/or elapsed
  time). Every retry loop in the services computes its delays from one of these, so a
  tunable lives in one place (the policies in the services' modules, some from Settings).
- `Clock`: what code that reads the time or waits takes, so tests move time with
  `ManualClock.advance()` instead of sleeping (leases, rate windows, drawdown, backoff).
- `Worker`: a named background task that logs and survives a failed iteration, waits
  between iterations on the clock (woken early by `wake()`), and ends promptly on `stop()`
  or after its current iteration on `drain()`. Every service's background loop is one,
  started and stopped by services/runtime/app.py.

Hand-written rather than tenacity or stamina: the loops here are not retries of one call
(a shipper idles on an event, a feed follows a stream) and need a clock shared with the
domain code, which those libraries do not provide as one object.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

T = TypeVar("T")

log = logging.getLogger("gate4.resilience")


# -- the clock -----------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC (what is stored and compared with rows)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals and deadlines."""

    async def sleep(self, seconds: float) -> None:
        """Waits `seconds` of this clock's time."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


#: The process's clock; code takes a `Clock` defaulting to this.
SYSTEM = SystemClock()


class ManualClock:
    """A clock for tests: time stands still until `advance()` moves it, which wakes every
    sleeper whose time has come. `now()` and `monotonic()` may be read from any thread
    (database writer threads); `sleep` and `advance` belong to the event loop's thread."""

    def __init__(
        self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC), monotonic: float = 1000.0
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time")
        self._start = start.astimezone(UTC)
        self._origin = monotonic
        self._elapsed = 0.0
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._slept: asyncio.Event | None = None

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._origin + self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), waiter))
        if self._slept is not None:
            self._slept.set()
        await waiter

    def advance(self, seconds: float | timedelta) -> None:
        """Moves time on and wakes the sleepers that are due (they run at the loop's next
        turn: `await asyncio.sleep(0)` or `settle()` lets them)."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if step < 0:
            raise ValueError("time does not go back")
        self._elapsed += step
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)

    @property
    def sleepers(self) -> int:
        """Sleeps not yet over (cancelled ones excluded)."""
        return sum(1 for *_, waiter in self._sleepers if not waiter.done())

    async def sleeping(self, count: int = 1) -> None:
        """Returns once at least `count` tasks sleep on this clock: a test advances time
        only when what it moves is waiting for it."""
        while self.sleepers < count:
            self._slept = asyncio.Event()
            await self._slept.wait()

    @staticmethod
    async def settle(turns: int = 10) -> None:
        """Lets woken tasks run on up to their next wait."""
        for _ in range(turns):
            await asyncio.sleep(0)


# -- retry policies ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Delays `initial * multiplier**(n-1)` after the n-th failure, capped at `max_delay`.

    `jitter` in [0, 1] is the share of each delay drawn at random: the delay is uniform in
    [d * (1 - jitter), d] (1: "full jitter", 0: none), so retries of several processes
    spread out and the cap is never exceeded. The budget ends retrying after
    `max_attempts` attempts (the first included) or once `max_elapsed` seconds have passed
    since the first; None: no such bound.
    """

    initial: float
    multiplier: float = 2.0
    max_delay: float = math.inf
    jitter: float = 0.0
    max_attempts: int | None = None
    max_elapsed: float | None = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.multiplier < 1 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a share of the delay, between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts counts the first attempt: at least 1")

    def backoff(self, failures: int) -> float:
        """The delay after `failures` failures in a row, before jitter (0 before any)."""
        if failures < 1:
            return 0.0
        # No float overflow for long outages: the cap is reached long before.
        exponent = min(failures - 1, 1024)
        try:
            raw = self.initial * self.multiplier**exponent
        except OverflowError:
            raw = math.inf
        return min(raw, self.max_delay)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The jittered delay to wait after `failures` failures in a row."""
        base = self.backoff(failures)
        if not self.jitter or not base:
            return base
        return base * (1 - self.jitter * (rng or random).random())

    def allows(self, attempts: int, elapsed: float = 0.0) -> bool:
        """Whether another attempt may follow `attempts` attempts that took `elapsed`
        seconds since the first began."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return False
        return self.max_elapsed is None or elapsed < self.max_elapsed


async def retry(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on: type[Exception] | tuple[type[Exception], ...],
    when: Callable[[Exception], bool] | None = None,
    clock: Clock = SYSTEM,
    rng: random.Random | None = None,
) -> T:
    """Runs `attempt` until it returns; an exception of type `on` (for which `when` holds,
    when given) is retried after the policy's delay while its budget lasts, then
    re-raised. Other exceptions propagate at once."""
    started = clock.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except on as exc:
            if when is not None and not when(exc):
                raise
            if not policy.allows(attempts, clock.monotonic() - started):
                raise
        await clock.sleep(policy.delay(attempts, rng))


# -- background workers --------------------------------------------------------------------


class Worker:
    """A background loop: `step()` over and over, `interval` seconds apart.

    A step that raises is logged (`failed`) and the next one waits `on_failure`'s delay
    for the failures in a row (default: `interval`). A step that returns True has more
    work at once and is followed without a wait. `wake()` ends a wait early. `stop()`
    cancels whatever runs; `drain()` lets the current step finish (up to `drain_seconds`),
    then stops. Either way `stopped()` runs last, once.
    """

    def __init__(
        self,
        name: str,
        *,
        interval: float,
        on_failure: RetryPolicy | None = None,
        clock: Clock = SYSTEM,
        wait_first: bool = False,
        drain_seconds: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self.on_failure = on_failure or RetryPolicy(initial=interval, multiplier=1.0)
        self.clock = clock
        #: Wait one interval before the first step (a pass over what has aged since).
        self.wait_first = wait_first
        self.drain_seconds = drain_seconds
        self.log = logger or log
        #: Failed steps in a row.
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False

    # -- what a worker does ----------------------------------------------------------------

    async def step(self) -> bool | None:
        """One iteration; True: more work is waiting, run the next at once."""
        raise NotImplementedError

    async def started(self) -> None:
        """Runs once in the task before the first step (a failure is logged, not fatal)."""

    async def stopped(self) -> None:
        """Runs once after the task has ended, on stop() or drain()."""

    def failed(self, exc: Exception) -> None:
        """Reports a failed step; the loop goes on."""
        self.log.error(
            "background step failed; retrying",
            exc_info=exc,
            extra={"worker": self.name, "failures": self.failures},
        )

    # -- life cycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Ends the current wait: the next step runs at once."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancels the loop wherever it is, then runs `stopped()`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._stopped()

    async def drain(self) -> None:
        """Lets a step in progress finish (up to `drain_seconds`), starts no other, stops."""
        task = self._task
        if task is None:
            return
        self._closing = True
        self._wake.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=self.drain_seconds)
        await self.stop()

    async def _stopped(self) -> None:
        try:
            await self.stopped()
        except Exception:
            self.log.exception(
                "background worker did not stop cleanly", extra={"worker": self.name}
            )

    async def _run(self) -> None:
        try:
            await self.started()
        except Exception:
            self.log.exception(
                "background worker could not start cleanly", extra={"worker": self.name}
            )
        if self.wait_first:
            await self._wait(self.interval)
        while not self._closing:
            more = False
            try:
                more = bool(await self.step())
                self.failures = 0
            except Exception as exc:
                self.failures += 1
                self.failed(exc)
            if self._closing:
                return
            if not more:
                delay = self.on_failure.delay(self.failures) if self.failures else self.interval
                await self._wait(delay)

    async def _wait(self, seconds: float) -> None:
        """Sleeps on the clock until `seconds` have passed or `wake()` is called."""
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, woken):
                waiter.cancel()
            self._wake.clear()


class Periodic(Worker):
    """A worker whose step is one call of `job` (its result ignored)."""

    def __init__(
        self,
        name: str,
        job: Callable[[], Awaitable[object]],
        *,
        interval: float,
        on_failure: RetryPolicy | None = None,
        clock: Clock = SYSTEM,
        wait_first: bool = False,
        drain_seconds: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(
            name,
            interval=interval,
            on_failure=on_failure,
            clock=clock,
            wait_first=wait_first,
            drain_seconds=drain_seconds,
            logger=logger,
        )
        self.job = job

    async def step(self) -> bool:
        await self.job()
        return False
