"""Marks and equity: risk hears each holder's equity, and enforces what it trips itself."""

from __future__ import annotations

import asyncio

from gate4.risk.v1 import risk_pb2
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow
from tests.execution.fakes import acting, make_rig
from tests.execution.test_placement import deploy, intent, place


def test_a_mark_reports_the_equity_of_every_holder(db: Database) -> None:
    rig = make_rig(db)
    holder, idle = deploy(rig), deploy(rig)
    place(rig, intent(holder, qty="2"))
    rig.risk.equity.clear()

    async def go() -> tuple[int, int]:
        with acting():
            return await rig.flows.marks.feed([("BTC-USD", "90", utcnow())])

    assert asyncio.run(go()) == (1, 0)
    (report,) = rig.risk.equity
    assert report.deployment_id == holder and idle != holder
    # 100000 capital, 2 bought at 100, now marked at 90.
    assert (report.equity, report.unrealized_pnl) == ("99980", "-20")


def test_a_trip_in_the_reply_is_left_to_risk_to_enforce(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)
    place(rig, intent(dep, qty="2"))
    resting = place(rig, intent(dep, qty="1", type="limit", limit="90"))
    rig.risk.tripped = [
        risk_pb2.KillSwitch(scope="deployment", scope_id=dep, engaged=True, flatten=True)
    ]

    async def go() -> None:
        with acting():
            await rig.flows.marks.feed([("BTC-USD", "50", utcnow())])

    asyncio.run(go())
    # Risk is the one enforcer (it calls EnforceKillSwitch once per engagement): nothing
    # here cancels or flattens on its own.
    assert rig.venue.orders[resting.order_id].status == "open"
    assert "killswitch.enforced" not in rig.types()
