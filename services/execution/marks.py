"""Marks and equity: sandbox marks fill resting orders, and risk hears each deployment's equity.

Equity reports drive risk's drawdown tracking. Risk alone enforces what a report trips
(it calls EnforceKillSwitch back, once per engagement): execution reports and does not act
on the answer, so a trip is never enforced twice.

Reports are coalesced per deployment: a fill marks its deployment changed and one report,
valued at the moment it is sent, carries every change since the previous one (the latest
value wins). Before risk decides a deployment's next order, the order waits until every
change seen so far has been reported, so the drawdown check never runs on stale equity.
Mark feeds, stops and reconciliation wait for their report before they answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.execution import deployments, orders, store
from services.execution.positions import value as positions_value
from services.execution.riskgate import RiskControls
from services.execution.unitofwork import UnitOfWork, Work, tenant
from services.execution.venue import VenueAdapter
from services.runtime import outcomes
from services.runtime.decimals import format_decimal, stored_decimal
from services.runtime.timeutil import to_timestamp

log = logging.getLogger("gate4.execution.equity")


@dataclass
class _Reports:
    """One deployment's reports: changes seen, changes reported, the report being sent."""

    changed: int = 0
    reported: int = 0
    sender: asyncio.Task[None] | None = None


class Equity:
    def __init__(self, uow: UnitOfWork, risk: RiskControls) -> None:
        self.uow = uow
        self.risk = risk
        self._reports: dict[tuple[str, str], _Reports] = {}

    def changed(self, deployment_ids: list[str]) -> None:
        """The deployments' equity changed (fills): a report follows, without waiting."""
        for deployment_id in deployment_ids:
            key = (tenant(), deployment_id)
            state = self._reports.setdefault(key, _Reports())
            state.changed += 1
            self._sender(key, state)

    async def reported(self, deployment_id: str) -> None:
        """Returns once every change of the deployment seen so far has been reported (or
        its report failed, which is logged): at most the report under way and one more."""
        key = (tenant(), deployment_id)
        state = self._reports.get(key)
        if state is None:
            return
        target = state.changed
        while state.reported < target:
            await asyncio.wait({self._sender(key, state)})

    async def report(self, deployment_ids: list[str]) -> None:
        """Tells risk each deployment's equity at the current marks and waits until it did
        (best effort: an undelivered report is logged, never raised)."""
        self.changed(deployment_ids)
        for deployment_id in deployment_ids:
            await self.reported(deployment_id)

    async def close(self) -> None:
        """Sends what is pending (on shutdown)."""
        while senders := [
            s.sender for s in self._reports.values() if s.sender is not None and not s.sender.done()
        ]:
            await asyncio.wait(senders)

    def _sender(self, key: tuple[str, str], state: _Reports) -> asyncio.Task[None]:
        """The report under way, or a new one. It runs in the context of the request that
        started it (its correlation ids) and on after that request was answered."""
        if state.sender is None or state.sender.done():
            state.sender = asyncio.create_task(self._send(key, state))
        return state.sender

    async def _send(self, key: tuple[str, str], state: _Reports) -> None:
        tenant_id, deployment_id = key
        target = state.changed  # this report, valued now, covers every change so far
        try:
            clock = self.uow.clock
            request = await self.uow.run(
                lambda w: _equity(w, tenant_id=tenant_id, d=deployment_id, now=clock.now())
            )
            if request is not None:
                await self.risk.report_equity(request)
        except Exception:
            log.exception("equity report failed", extra={"deployment_id": deployment_id})
        state.reported = max(state.reported, target)
        if state.reported < state.changed:
            state.sender = asyncio.create_task(self._send(key, state))
        elif self._reports.get(key) is state:
            del self._reports[key]


def _equity(
    work: Work, *, tenant_id: str, d: str, now: datetime
) -> risk_pb2.ReportEquityRequest | None:
    """The deployment's valuation at the current marks, as of `now`; raises its stored peak
    (under the row lock, so the peak only ever rises)."""
    conn = work.conn
    row = store.deployment_row(conn, tenant_id, d, for_update=True)
    if row is None or row["state"] == deployments.STOPPED:
        return None
    peak = str(row["peak_equity"])
    valuation = positions_value(
        stored_decimal(str(row["capital_allocation"])),
        store.deployment_positions(conn, d),
        store.mark_prices(conn, tenant_id),
        stored_decimal(peak) if peak else None,
    )
    if format_decimal(valuation.peak_equity) != peak:
        conn.execute(
            sa.update(store.deployments)
            .where(store.deployments.c.deployment_id == d)
            .values(peak_equity=format_decimal(valuation.peak_equity))
        )
    request = risk_pb2.ReportEquityRequest(
        account_id=str(row["account_id"]),
        deployment_id=d,
        equity=format_decimal(valuation.equity),
        realized_pnl=format_decimal(valuation.realized_pnl),
        unrealized_pnl=format_decimal(valuation.unrealized_pnl),
    )
    at = to_timestamp(now)
    assert at is not None
    request.at.CopyFrom(at)
    return request


class Marks:
    def __init__(self, uow: UnitOfWork, venue: VenueAdapter, equity: Equity) -> None:
        self.uow = uow
        self.venue = venue
        self.equity = equity

    async def feed(self, marks: list[tuple[str, str, datetime]]) -> tuple[int, int]:
        """Stores the marks, applies the fills they cause, then reports equity to risk."""
        tenant_id = tenant()

        def op(work: Work) -> None:
            for instrument, price, at in marks:
                store.upsert_mark(work.conn, tenant_id, instrument, price, at)
            work.event(
                "sandbox.marks",
                outcome=outcomes.ACCEPTED,
                data={"marks": [{"instrument": i, "price": p} for i, p, _ in marks]},
            )

        await self.uow.run(op)
        fills = 0
        touched: set[str] = set()
        for instrument, price, at in marks:
            for report in await self.venue.on_mark(tenant_id, instrument, Decimal(price), at):
                order = await self.uow.run(
                    partial(
                        orders.apply_report,
                        tenant_id=tenant_id,
                        order_id=report.client_order_id,
                        report=report,
                        now=self.uow.clock.now(),
                    )
                )
                fills += len(report.fills)
                touched.add(order.deployment_id)
        instruments = {m[0] for m in marks}
        holders = await self.uow.db.read(lambda c: _holders(c, tenant_id, instruments))
        await self.equity.report(sorted(touched | holders))
        return len(marks), fills


def _holders(conn: Connection, tenant_id: str, instruments: set[str]) -> set[str]:
    positions = store.positions
    rows = conn.execute(
        sa.select(positions.c.deployment_id).where(
            positions.c.tenant_id == tenant_id,
            positions.c.instrument.in_(instruments),
            positions.c.quantity != "0",
        )
    ).scalars()
    return {str(r) for r in rows}
