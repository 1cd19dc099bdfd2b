"""Retry policies, the manual clock and background workers (services/runtime/resilience.py).

Time only moves when a test advances a ManualClock; nothing here sleeps or measures the
wall clock."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.runtime import resilience
from services.runtime.resilience import SYSTEM, ManualClock, Periodic, RetryPolicy, Worker

# -- policies ------------------------------------------------------------------------------


def test_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    policy = RetryPolicy(initial=0.5, multiplier=3.0, max_delay=10.0)
    assert [policy.delay(n) for n in range(6)] == [0.0, 0.5, 1.5, 4.5, 10.0, 10.0]
    assert policy.delay(10_000) == 10.0  # no overflow in a long outage


def test_a_constant_policy_waits_the_same_each_time() -> None:
    policy = RetryPolicy(initial=2.0, multiplier=1.0)
    assert {policy.delay(n) for n in range(1, 20)} == {2.0}


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_jitter_stays_within_its_share_of_the_delay_and_never_past_the_cap(jitter: float) -> None:
    policy = RetryPolicy(initial=0.1, max_delay=1.0, jitter=jitter)
    rng = random.Random(3)
    for failures in range(1, 12):
        ceiling = policy.backoff(failures)
        delays = [policy.delay(failures, rng) for _ in range(200)]
        assert all(ceiling * (1 - jitter) <= d <= ceiling <= 1.0 for d in delays)
        if jitter:
            assert len(set(delays)) > 1  # spread out, not one value


def test_the_budget_bounds_attempts_and_elapsed_time() -> None:
    by_attempts = RetryPolicy(initial=1.0, max_attempts=3)
    assert [by_attempts.allows(n) for n in (1, 2, 3)] == [True, True, False]
    by_time = RetryPolicy(initial=1.0, max_elapsed=5.0)
    assert by_time.allows(100, elapsed=4.99) and not by_time.allows(1, elapsed=5.0)
    assert RetryPolicy(initial=1.0).allows(10**6, elapsed=1e9)


def test_invalid_policies_are_refused() -> None:
    for bad in (
        {"initial": -1.0},
        {"initial": 1.0, "multiplier": 0.5},
        {"initial": 1.0, "jitter": 1.5},
        {"initial": 1.0, "max_attempts": 0},
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


def test_retry_waits_on_the_clock_and_gives_up_when_the_budget_is_spent() -> None:
    clock = ManualClock()
    policy = RetryPolicy(initial=1.0, max_delay=4.0, max_elapsed=6.0)
    calls: list[float] = []

    class Busy(Exception):
        pass

    async def always_busy() -> None:
        calls.append(clock.monotonic())
        raise Busy

    async def scenario() -> None:
        task = asyncio.create_task(resilience.retry(always_busy, policy, on=Busy, clock=clock))
        for wait in (1.0, 2.0, 4.0):  # then 7 s have passed: past the budget of 6 s
            await clock.sleeping()
            clock.advance(wait)
        with pytest.raises(Busy):
            await task

    asyncio.run(scenario())
    start = calls[0]
    assert [t - start for t in calls] == [0.0, 1.0, 3.0, 7.0]


def test_retry_passes_other_errors_and_those_when_rejects_at_once() -> None:
    attempts = 0

    async def fails(exc: Exception) -> None:
        nonlocal attempts
        attempts += 1
        raise exc

    policy = RetryPolicy(initial=0.0, max_attempts=5)
    with pytest.raises(KeyError):
        asyncio.run(resilience.retry(lambda: fails(KeyError("k")), policy, on=ValueError))
    with pytest.raises(ValueError):
        asyncio.run(
            resilience.retry(
                lambda: fails(ValueError("fatal")),
                policy,
                on=ValueError,
                when=lambda exc: "fatal" not in str(exc),
            )
        )
    assert attempts == 2


# -- clocks --------------------------------------------------------------------------------


def test_the_system_clock_is_aware_utc_and_monotonic() -> None:
    now = SYSTEM.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert SYSTEM.monotonic() <= SYSTEM.monotonic()


def test_a_manual_clock_moves_only_when_advanced_and_wakes_sleepers_in_order() -> None:
    start = datetime(2026, 5, 4, 12, tzinfo=UTC)
    clock = ManualClock(start=start)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async def scenario() -> None:
        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 5), ("early", 1))]
        await clock.sleeping(2)
        mono = clock.monotonic()
        clock.advance(0.5)
        await clock.settle()
        assert woke == [] and clock.sleepers == 2
        clock.advance(timedelta(seconds=0.5))
        await clock.settle()
        assert woke == ["early"]
        clock.advance(10)
        await asyncio.gather(*tasks)
        assert woke == ["early", "late"]
        assert clock.now() == start + timedelta(seconds=11)
        assert clock.monotonic() - mono == 11

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        ManualClock(start=datetime(2026, 1, 1))  # naive


def test_a_cancelled_sleep_is_no_longer_counted() -> None:
    clock = ManualClock()

    async def scenario() -> None:
        task = asyncio.create_task(clock.sleep(10))
        await clock.sleeping()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert clock.sleepers == 0
        clock.advance(20)  # nothing left to wake: no error

    asyncio.run(scenario())


# -- workers -------------------------------------------------------------------------------


class Scripted(Worker):
    """Fails on the steps named in `failing`, records the clock at each step."""

    def __init__(self, clock: ManualClock, failing: set[int], **options: object) -> None:
        super().__init__(
            "scripted",
            interval=10.0,
            on_failure=RetryPolicy(initial=1.0, max_delay=4.0),
            clock=clock,
            **options,  # type: ignore[arg-type]
        )
        self.failing = failing
        self.at: list[float] = []
        self.events: list[str] = []

    async def started(self) -> None:
        self.events.append("started")

    async def step(self) -> bool:
        self.at.append(self.clock.monotonic())
        if len(self.at) in self.failing:
            raise RuntimeError(f"step {len(self.at)} failed")
        return False

    async def stopped(self) -> None:
        self.events.append("stopped")


def test_a_worker_survives_failed_steps_backing_off_then_keeps_its_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()

    async def scenario() -> Scripted:
        worker = Scripted(clock, failing={1, 2, 3})
        worker.start()
        for _ in range(5):
            await clock.sleeping()
            clock.advance(10.0 if len(worker.at) > 3 else worker.on_failure.delay(len(worker.at)))
        await clock.sleeping()
        assert worker.running
        await worker.stop()
        return worker

    worker = asyncio.run(scenario())
    start = worker.at[0]
    # Failed steps wait 1, 2, 4 s (the policy); the first success resets to the interval.
    assert [t - start for t in worker.at] == [0.0, 1.0, 3.0, 7.0, 17.0, 27.0]
    assert worker.events == ["started", "stopped"] and worker.failures == 0
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info for r in failures)


def test_wake_ends_the_wait_and_stop_ends_the_worker_at_once() -> None:
    clock = ManualClock()

    async def scenario() -> Scripted:
        worker = Scripted(clock, failing=set(), wait_first=True)
        worker.start()
        await clock.sleeping()
        assert worker.at == []  # waits an interval first
        worker.wake()
        await clock.settle()
        await clock.sleeping()
        assert len(worker.at) == 1
        task = worker._task
        await worker.stop()  # in the middle of a 10 s wait: no time has to pass
        assert task is not None and task.done() and not worker.running
        await worker.stop()  # a second stop is a no-op
        return worker

    worker = asyncio.run(scenario())
    assert worker.events == ["started", "stopped"]


def test_drain_lets_the_step_under_way_finish_and_starts_no_other() -> None:
    clock = ManualClock()
    steps: list[str] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        async def job() -> None:
            steps.append("begun")
            await gate.wait()
            steps.append("finished")

        worker = Periodic("job", job, interval=1.0, clock=clock)
        worker.start()
        await clock.settle()
        assert steps == ["begun"]
        draining = asyncio.create_task(worker.drain())
        await clock.settle()
        assert not draining.done()  # the step is still running
        gate.set()
        await draining
        assert steps == ["begun", "finished"] and not worker.running

    asyncio.run(scenario())


def test_drain_cuts_a_step_that_outlasts_its_bound() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []

        async def forever() -> None:
            seen.append("begun")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        worker = Periodic("stream", forever, interval=1.0, drain_seconds=0.0)
        worker.start()
        await ManualClock.settle()
        await worker.drain()
        return seen

    assert asyncio.run(scenario()) == ["begun", "cancelled"]


def test_a_worker_is_a_named_task() -> None:
    async def idle() -> None:
        pass

    async def scenario() -> str:
        worker = Periodic("named-loop", idle, interval=1.0, clock=ManualClock())
        worker.start()
        assert worker._task is not None
        name = worker._task.get_name()
        await worker.stop()
        return name

    assert asyncio.run(scenario()) == "named-loop"
