"""Risk's kill switches as execution's deployment reads see them: cached, shared, dropped."""

from __future__ import annotations

import asyncio

from gate4.risk.v1 import risk_pb2
from services.execution.riskgate import Engaged, SwitchCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Risk:
    """Answers ListKillSwitches with what is engaged now, counting calls; may hold them."""

    def __init__(self) -> None:
        self.engaged: Engaged = {}
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.called: asyncio.Event | None = None

    async def fetch(self) -> Engaged | None:
        self.calls += 1
        if self.called is not None:
            self.called.set()
        answer = dict(self.engaged)
        if self.gate is not None:
            await self.gate.wait()
        return answer


def engage(risk: Risk, scope_id: str) -> None:
    risk.engaged[("deployment", scope_id)] = risk_pb2.KillSwitch(
        scope="deployment", scope_id=scope_id, engaged=True
    )


def test_reads_within_the_period_share_one_call_then_refresh() -> None:
    risk, clock = Risk(), Clock()
    cache = SwitchCache(risk.fetch, ttl=1.0, clock=clock)

    async def go() -> None:
        assert await cache.engaged("t1") == {}
        engage(risk, "dep-1")
        clock.now = 0.9
        assert await cache.engaged("t1") == {}  # within the period: as fetched
        clock.now = 1.0
        assert ("deployment", "dep-1") in (await cache.engaged("t1") or {})

    asyncio.run(go())
    assert risk.calls == 2


def test_concurrent_reads_make_one_call() -> None:
    risk, clock = Risk(), Clock()
    cache = SwitchCache(risk.fetch, ttl=1.0, clock=clock)

    async def go() -> None:
        risk.gate = asyncio.Event()
        reads = [asyncio.create_task(cache.engaged("t1")) for _ in range(20)]
        await asyncio.sleep(0)
        risk.gate.set()
        assert await asyncio.gather(*reads) == [{}] * 20

    asyncio.run(go())
    assert risk.calls == 1


def test_after_invalidation_no_read_sees_a_list_fetched_before_it() -> None:
    risk, clock = Risk(), Clock()
    cache = SwitchCache(risk.fetch, ttl=60.0, clock=clock)

    async def go() -> None:
        risk.gate, risk.called = asyncio.Event(), asyncio.Event()
        stale = asyncio.create_task(cache.engaged("t1"))  # fetches before the engagement
        await risk.called.wait()
        risk.called.clear()
        engage(risk, "dep-1")
        cache.invalidate()  # the switch was enforced here
        fresh = asyncio.create_task(cache.engaged("t1"))
        await risk.called.wait()
        risk.gate.set()
        assert await stale == {}
        assert ("deployment", "dep-1") in (await fresh or {})
        # The stale answer was not kept: the next read within the period is the fresh one.
        assert ("deployment", "dep-1") in (await cache.engaged("t1") or {})

    asyncio.run(go())
    assert risk.calls == 2


def test_an_unreachable_risk_is_not_cached() -> None:
    clock = Clock()
    answers: list[Engaged | None] = [None, {}]

    async def fetch() -> Engaged | None:
        return answers.pop(0)

    cache = SwitchCache(fetch, ttl=60.0, clock=clock)

    async def go() -> None:
        assert await cache.engaged("t1") is None
        assert await cache.engaged("t1") == {}

    asyncio.run(go())
