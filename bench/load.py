"""A bounded closed-loop load generator: C tasks issue at most N operations, for at most T s.

Each task starts its next operation as soon as the previous one finishes (like `wrk -cC`),
so the offered load follows what the system under test can absorb. Every loop stops by
itself: after N operations in total, after the time bound, or when an operation times out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: An operation: given the index of the task running it (0..C-1) and its sequence number
#: (0..N-1), returns None when it succeeded as expected, or a short description of what went
#: wrong ("status 500"); an exception also counts as an error.
Operation = Callable[[int, int], Awaitable[str | None]]


@dataclass
class Sample:
    """What one closed loop measured; latencies are in seconds, one per finished operation."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    elapsed: float = 0.0
    error_kinds: Counter[str] = field(default_factory=Counter)
    stopped_by_time: bool = False

    @property
    def finished(self) -> int:
        return self.ok + self.errors


async def closed_loop(
    op: Operation,
    *,
    requests: int,
    concurrency: int,
    duration: float,
    op_timeout: float,
) -> Sample:
    """Runs op `requests` times from `concurrency` tasks, stopping early after `duration` s."""
    if requests < 1 or concurrency < 1 or duration <= 0 or op_timeout <= 0:
        raise ValueError("requests, concurrency, duration and op_timeout must be positive")
    sample = Sample()
    issued = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(task: int) -> None:
        nonlocal issued
        while issued < requests:
            if time.perf_counter() >= deadline:
                sample.stopped_by_time = True
                return
            seq = issued
            issued += 1
            began = time.perf_counter()
            try:
                async with asyncio.timeout(op_timeout):
                    problem = await op(task, seq)
            except TimeoutError:
                problem = "timeout"
            except Exception as exc:  # any failure of the operation is a counted error
                problem = type(exc).__name__
            sample.latencies.append(time.perf_counter() - began)
            if problem is None:
                sample.ok += 1
            else:
                sample.errors += 1
                sample.error_kinds[problem] += 1

    workers = min(concurrency, requests)
    await asyncio.gather(*(worker(task) for task in range(workers)))
    sample.elapsed = time.perf_counter() - start
    return sample
