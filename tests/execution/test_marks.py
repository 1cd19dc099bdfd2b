"""Marks and equity: risk hears each holder's equity, and enforces what it trips itself."""

from __future__ import annotations

import asyncio

from gate4.risk.v1 import risk_pb2
from services.execution.idempotency import Progress
from services.execution.unitofwork import new_id
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow
from tests.execution.fakes import Rig, acting, make_rig
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


def held_reports(rig: Rig) -> asyncio.Event:
    """Holds every equity report at risk until the returned event is set."""
    release = asyncio.Event()
    report_equity = rig.risk.report_equity

    async def held(request: risk_pb2.ReportEquityRequest) -> list[risk_pb2.KillSwitch]:
        await release.wait()
        return await report_equity(request)

    rig.risk.report_equity = held  # type: ignore[method-assign]
    return release


def test_the_next_order_is_decided_only_after_the_last_fill_was_reported(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)

    async def go() -> None:
        release = held_reports(rig)
        with acting():
            orders = rig.flows.orders
            await orders.place(intent(dep, qty="1"), new_id("ord"), None, Progress())
            second = asyncio.create_task(
                orders.place(intent(dep, side="sell"), new_id("ord"), None, Progress())
            )
            await asyncio.sleep(0.05)  # lets the second order run as far as it can
            assert len(rig.risk.intents) == 1 and not second.done()
            release.set()
            await second
        # Risk heard the first fill's equity before it decided the second order.
        assert len(rig.risk.equity) >= 1 and len(rig.risk.intents) == 2

    asyncio.run(go())


def test_changes_during_a_report_are_coalesced_into_one_more(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)

    async def go() -> None:
        release = held_reports(rig)
        with acting():
            equity = rig.flows.equity
            equity.changed([dep])
            await asyncio.sleep(0.05)  # the first report is under way, held at risk
            for _ in range(5):
                equity.changed([dep])
            release.set()
            await equity.reported(dep)

    asyncio.run(go())
    assert len(rig.risk.equity) == 2
    assert all(r.deployment_id == dep and r.equity == "100000" for r in rig.risk.equity)


def test_a_reduce_only_order_does_not_wait_for_a_pending_report(db: Database) -> None:
    rig = make_rig(db)
    dep = deploy(rig)

    async def go() -> None:
        release = held_reports(rig)
        with acting():
            orders = rig.flows.orders
            await orders.place(intent(dep, qty="2"), new_id("ord"), None, Progress())
            # Risk-reducing: placed while the report of the first fill is still held.
            reduced = await orders.place(
                intent(dep, side="sell", reduce_only=True), new_id("ord"), None, Progress()
            )
            assert reduced.status == "filled" and rig.risk.equity == []
            release.set()
            await rig.flows.equity.reported(dep)

    asyncio.run(go())
