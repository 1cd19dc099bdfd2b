"""Reducing a deployment's risk: cancel its open orders and, when asked, flatten it.

Shared by a stop and by kill-switch enforcement. Cancelling can never add exposure, and a
flatten is sized from the position ledger, on the reducing side, under the reduce-only
guard, so both proceed even when risk cannot answer (recorded as RISK_UNAVAILABLE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from services.execution import orders, reconcile, store
from services.execution.idempotency import Progress
from services.execution.orders import Intent
from services.execution.placement import OrderFlow
from services.execution.positions import reducing_side
from services.execution.unitofwork import new_id, tenant
from services.runtime import errors
from services.runtime.decimals import format_decimal


@dataclass
class Reduction:
    cancelled: list[str] = field(default_factory=list)
    flattened: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Reducer:
    def __init__(self, orders_flow: OrderFlow) -> None:
        self.orders = orders_flow
        self.uow = orders_flow.uow

    async def reduce(self, deployment_id: str, *, flatten: bool, reason: str) -> Reduction:
        result = Reduction()
        await self.settle_pending(deployment_id)
        result.cancelled = await self._cancel_open(deployment_id, reason)
        if flatten:
            result.flattened, result.problems = await self._flatten(deployment_id, reason)
        return result

    async def settle_pending(self, deployment_id: str) -> None:
        """Waits for in-flight submissions to get their venue answer (a stop must see them)."""
        flow, clock = self.orders, self.uow.clock
        deadline = clock.monotonic() + flow.settings.execution_command_lease_seconds
        while True:
            pending = await self.uow.db.read(
                lambda c: orders.pending_orders(c, deployment_id=deployment_id)
            )
            if not pending:
                return
            if clock.monotonic() > deadline:
                for row in pending:
                    await reconcile.settle_order(self.uow, flow.venue, flow.equity, row)
                return
            await clock.sleep(0.05)

    async def _cancel_open(self, deployment_id: str, reason: str) -> list[str]:
        tenant_id = tenant()
        rows = await self.uow.db.read(
            lambda c: orders.open_orders(c, tenant_id, deployment_id=deployment_id)
        )
        cancelled: list[str] = []
        for row in rows:
            order = await self.orders.cancel_row(row, reason)
            if order.status == orders.CANCELLED:
                cancelled.append(order.order_id)
        return cancelled

    async def _flatten(self, deployment_id: str, reason: str) -> tuple[list[str], list[str]]:
        """Closes every position with a reduce-only market order on the reducing side.

        What counts is the result: another reducer (a stop racing a kill-switch enforcement)
        may hold part of a position, so the problems are the positions still open once every
        in-flight order has its venue answer, with the reason the flatten gave for them."""
        tenant_id = tenant()
        held = await self.uow.db.read(lambda c: store.deployment_positions(c, deployment_id))
        placed: list[str] = []
        why: dict[str, str] = {}
        for position in held:
            if position.quantity == 0:
                continue
            left = await self.uow.db.read(
                partial(
                    orders.reducible,
                    tenant_id=tenant_id,
                    deployment_id=deployment_id,
                    instrument=position.instrument,
                )
            )
            side = reducing_side(left)
            if side is None:
                continue  # another reducer already holds what is left
            intent = Intent(
                deployment_id=deployment_id,
                instrument=position.instrument,
                side=side,
                type="market",
                quantity=abs(left),
                reduce_only=True,
                client_order_id="flatten",
            )
            try:
                order = await self.orders.place(
                    intent, new_id("ord"), None, Progress(), flatten=reason
                )
            except errors.Gate4Error as exc:
                why[position.instrument] = f"flatten refused: {exc.detail}"
                continue
            placed.append(order.order_id)
            if order.status != orders.FILLED:
                why[position.instrument] = (
                    f"flatten order {order.order_id} ended {order.status}: "
                    f"{order.reject_reason or 'not fully filled'}"
                )
        await self.settle_pending(deployment_id)
        after = await self.uow.db.read(lambda c: store.deployment_positions(c, deployment_id))
        problems = [
            f"{p.instrument} still {format_decimal(p.quantity)} after flatten"
            + (f" ({why[p.instrument]})" if p.instrument in why else "")
            for p in after
            if p.quantity != 0
        ]
        return placed, problems
