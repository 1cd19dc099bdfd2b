"""Reconciliation by client order id: settling what a dead process left in flight.

Never blind: it only asks the venue what it has for the client order id (our order id) and
adopts that; it never submits anything.

- An order recorded as pending whose lease lapsed: found at the venue, its fills and state
  are adopted (FOUND_AT_VENUE); not found, it is rejected with VENUE_NOT_RECEIVED
  (NOT_AT_VENUE). Its idempotency key completes with the result, so the client's retry
  replays it.
- A deployment left `stopping` whose stop lease lapsed: the stop is finished.
- Open orders: fills the venue made that were never recorded (a crash after a mark) are
  adopted.

`run_once` runs at startup and then periodically, so a replica also settles another
replica's crash; a keyed retry that arrives first settles its own order (`settle_order`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from services.execution import deployments, idempotency, orders, store
from services.execution.idempotency import ROUTE_SUBMIT, Claim
from services.execution.unitofwork import UnitOfWork, Work
from services.execution.venue import ExecutionReport, VenueAdapter, VenueError
from services.runtime import correlation, errors, outcomes
from services.runtime.decimals import stored_decimal
from services.runtime.timeutil import as_utc

if TYPE_CHECKING:
    from services.execution.flows import Flows
    from services.execution.marks import Equity

log = logging.getLogger("gate4.execution.reconcile")


def reconciled_event(work: Work, order: execution_pb2.Order, outcome: str, reason: str) -> None:
    work.event(
        "order.reconciled",
        outcome=outcome,
        reason=reason,
        policy_version=order.policy_version,
        account_id=order.account_id,
        deployment_id=order.deployment_id,
        order_id=order.order_id,
        data={"status": order.status, "clientOrderId": order.order_id},
    )


async def settle_order(
    uow: UnitOfWork,
    venue: VenueAdapter,
    equity: Equity,
    row: sa.RowMapping,
    claim: Claim | None = None,
) -> execution_pb2.Order:
    """Settles an order whose venue answer was never recorded, by client order id."""
    tenant, order_id = str(row["tenant_id"]), str(row["order_id"])
    lease, clock = row["lease_until"], uow.clock
    # The lease holds up to, not including, its end (as an idempotency key's does).
    if row["venue_state"] == orders.PENDING and lease is not None and as_utc(lease) > clock.now():
        raise errors.IdempotencyInProgress(
            f"order {order_id} is still being sent to the venue; retry shortly"
        )
    report = None
    if row["venue_state"] == orders.PENDING:
        report = await venue.lookup(tenant, order_id)

    def op(work: Work) -> execution_pb2.Order:
        conn = work.conn
        now = clock.now()
        current = store.order_row(conn, tenant, order_id, for_update=True)
        assert current is not None
        if current["venue_state"] != orders.PENDING:
            order = store.order_message(conn, current)  # settled meanwhile
        elif report is not None:
            order = orders.apply_report(
                work, tenant, order_id, report, now, event_data={"reconciled": True}
            )
            reconciled_event(
                work,
                order,
                outcomes.FOUND_AT_VENUE,
                "the venue had the order; its answer was adopted",
            )
        else:
            order = orders.reject(
                work,
                tenant,
                order_id,
                now,
                outcome=outcomes.VENUE_NOT_RECEIVED,
                reason="the venue never received the order; it was not resubmitted",
                event_data={"reconciled": True},
            )
            reconciled_event(work, order, outcomes.NOT_AT_VENUE, "rejected; not resubmitted")
        body = order.SerializeToString()
        if claim is not None:
            idempotency.complete(conn, tenant, claim, now, response=body)
        elif current["idempotency_key"]:
            idempotency.complete_unowned(
                conn, tenant, ROUTE_SUBMIT, str(current["idempotency_key"]), now, body
            )
        return order

    order = await uow.run(op)
    if report is not None and report.fills:
        await equity.report([order.deployment_id])
    return order


async def run_once(flows: Flows) -> int:
    """One pass: lapsed in-flight orders, lapsed stops, then open orders' missed fills."""
    uow = flows.uow
    now = uow.clock.now()
    done = 0
    lapsed = await uow.db.read(lambda c: orders.pending_orders(c, lapsed_by=now))
    for row in lapsed:
        with correlation.bound(_acting_for(str(row["tenant_id"]), str(row["request_id"]))):
            try:
                await settle_order(uow, flows.venue, flows.equity, row)
                done += 1
            except Exception:
                log.exception("reconciliation failed", extra={"order_id": row["order_id"]})
    stops = await uow.db.read(lambda c: _lapsed_stops(c, now))
    lease = flows.settings.command_lease
    for row in stops:
        with correlation.bound(_acting_for(str(row["tenant_id"]), "")):
            try:
                # The new lease runs from the take-over, not from the start of this pass.
                until = uow.clock.now() + lease
                if await uow.run(partial(_take_stop, row=row, lapsed_by=now, lease_until=until)):
                    await flows.deployments.finish_stop(
                        str(row["deployment_id"]),
                        bool(row["stop_flatten"]),
                        str(row["state_reason"]) or "stop resumed after a restart",
                        None,
                    )
                    done += 1
            except Exception:
                log.exception("stop resume failed", extra={"deployment_id": row["deployment_id"]})
    return done + await _sweep_open(flows)


async def _sweep_open(flows: Flows) -> int:
    rows = await flows.uow.db.read(_open_confirmed)
    done = 0
    for row in rows:
        tenant, order_id = str(row["tenant_id"]), str(row["order_id"])
        try:
            report = await flows.venue.lookup(tenant, order_id)
        except VenueError:
            continue
        if report is None or _unchanged(row, report):
            continue
        with correlation.bound(_acting_for(tenant, str(row["request_id"]))):
            order = await flows.uow.run(
                partial(
                    orders.apply_report,
                    tenant_id=tenant,
                    order_id=order_id,
                    report=report,
                    now=flows.uow.clock.now(),
                    event_data={"reconciled": True},
                )
            )
            await flows.equity.report([order.deployment_id])
        done += 1
    return done


def _acting_for(tenant: str, request_id: str) -> correlation.Correlation:
    """Reconciliation acts for the tenant, under the original request id when known."""
    return correlation.Correlation(
        request_id=request_id or correlation.new_request_id(),
        tenant_id=tenant,
        user_id="execution-reconciler",
        channel="internal",
    )


def _take_stop(
    work: Work, *, row: sa.RowMapping, lapsed_by: datetime, lease_until: datetime
) -> bool:
    taken = work.conn.execute(
        sa.update(store.deployments)
        .where(
            store.deployments.c.deployment_id == row["deployment_id"],
            store.deployments.c.state == deployments.STOPPING,
            store.deployments.c.stop_lease_until <= lapsed_by,
        )
        .values(stop_lease_until=lease_until)
    ).rowcount
    return bool(taken)


def _lapsed_stops(conn: Connection, now: datetime) -> list[sa.RowMapping]:
    """Stops whose lease ended by `now` (a lease holds up to, not including, its end)."""
    d = store.deployments
    rows = conn.execute(
        sa.select(d).where(d.c.state == deployments.STOPPING, d.c.stop_lease_until <= now)
    ).all()
    return [r._mapping for r in rows]


def _open_confirmed(conn: Connection) -> list[sa.RowMapping]:
    o = store.orders
    rows = conn.execute(
        sa.select(o).where(
            o.c.status.in_(orders.OPEN_STATUSES), o.c.venue_state == orders.CONFIRMED
        )
    ).all()
    return [r._mapping for r in rows]


def _unchanged(row: sa.RowMapping, report: ExecutionReport) -> bool:
    return (
        stored_decimal(str(row["filled_quantity"])) == report.filled_quantity
        and report.status == "open"
    )
