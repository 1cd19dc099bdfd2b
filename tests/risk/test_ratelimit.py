"""The order-rate window slides with the servicer's clock: CheckOrder in process, on a
ManualClock that the test moves (no sleeping through a window)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from gate4.risk.v1 import risk_pb2
from services.risk.enforcement import Enforcer
from services.risk.servicer import RiskServicer
from services.runtime import correlation
from services.runtime.resilience import ManualClock
from tests.risk.conftest import T0, RiskStore, intent


def test_the_window_slides_as_the_clock_moves(running: RiskStore) -> None:
    running.put_policy(orderRate={"maxOrders": 3, "windowSeconds": 1}, markMaxAgeSeconds=3600)
    clock = ManualClock(start=T0)
    execution: Any = object()  # CheckOrder never calls execution
    servicer = RiskServicer(
        running.db, running.outbox, Enforcer(running.db, running.outbox, execution), clock=clock
    )
    corr = correlation.Correlation(request_id="req_rate", tenant_id="t1", user_id="olga")

    async def check(order_id: str, account_id: str = "acc-1") -> str:
        request = risk_pb2.CheckOrderRequest(
            order=intent(order_id, account_id=account_id, at=T0), action="submit"
        )
        decision = await servicer.CheckOrder(request, cast(Any, None))
        return str(decision.outcome)

    async def scenario() -> list[str]:
        with correlation.bound(corr):
            seen = [await check(f"o{i}") for i in range(4)]  # below, below, at, above
            seen.append(await check("other", account_id="acc-2"))  # its own window
            clock.advance(0.999)
            seen.append(await check("o4"))  # the first three are still in the window
            clock.advance(0.001)
            seen.append(await check("o5"))  # exactly one window old: they have left it
            return seen

    assert asyncio.run(scenario()) == [
        "APPROVED",
        "APPROVED",
        "APPROVED",
        "ORDER_RATE_LIMIT",
        "APPROVED",
        "ORDER_RATE_LIMIT",
        "APPROVED",
    ]
