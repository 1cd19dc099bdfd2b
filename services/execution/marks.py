"""Marks and equity: sandbox marks fill resting orders, and risk hears each deployment's equity.

Equity reports drive risk's drawdown tracking. Risk alone enforces what a report trips
(it calls EnforceKillSwitch back, once per engagement): execution reports and does not act
on the answer, so a trip is never enforced twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.execution import deployments, orders, store
from services.execution.positions import dec, fmt
from services.execution.positions import value as positions_value
from services.execution.riskgate import RiskControls
from services.execution.unitofwork import UnitOfWork, Work, tenant
from services.execution.venue import VenueAdapter
from services.runtime import outcomes
from services.runtime.timeutil import to_timestamp, utcnow


class Equity:
    def __init__(self, uow: UnitOfWork, risk: RiskControls) -> None:
        self.uow = uow
        self.risk = risk

    async def report(self, deployment_ids: list[str]) -> None:
        """Tells risk each deployment's equity at the current marks (best effort)."""
        for deployment_id in deployment_ids:
            request = await self.uow.run(partial(_equity, tenant_id=tenant(), d=deployment_id))
            if request is not None:
                await self.risk.report_equity(request)


def _equity(work: Work, *, tenant_id: str, d: str) -> risk_pb2.ReportEquityRequest | None:
    conn = work.conn
    row = store.deployment_row(conn, tenant_id, d, for_update=True)
    if row is None or row["state"] == deployments.STOPPED:
        return None
    orders.refresh_peak(conn, tenant_id, d)
    row = store.deployment_row(conn, tenant_id, d)
    assert row is not None
    valuation = positions_value(
        dec(str(row["capital_allocation"])),
        store.deployment_positions(conn, d),
        store.mark_prices(conn, tenant_id),
        dec(str(row["peak_equity"])) if row["peak_equity"] else None,
    )
    request = risk_pb2.ReportEquityRequest(
        account_id=str(row["account_id"]),
        deployment_id=d,
        equity=fmt(valuation.equity),
        realized_pnl=fmt(valuation.realized_pnl),
        unrealized_pnl=fmt(valuation.unrealized_pnl),
    )
    at = to_timestamp(utcnow())
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
                        now=utcnow(),
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
