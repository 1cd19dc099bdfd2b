"""In-memory peers for the execution flows: a risk that records what it is asked, a venue.

The flows run for real on a real database (SQLite or PostgreSQL); only their peers are
replaced, so a test can decide what risk answers and see exactly what risk was told.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from gate4.audit.v1 import audit_pb2
from gate4.risk.v1 import risk_pb2
from services.execution.faults import CrashHooks
from services.execution.flows import Flows
from services.execution.orchestrator import Orchestrator
from services.execution.store import KillSwitchView
from services.execution.venue import ExecutionReport, VenueFill, VenueOrder
from services.runtime import correlation, errors
from services.runtime.config import Settings
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow

TENANT = "t1"


@dataclass
class FakeRisk:
    """Approves everything unless told otherwise; keeps every request it receives."""

    decide: Callable[[risk_pb2.OrderIntent], Awaitable[risk_pb2.RiskDecision]] | None = None
    down: bool = False
    intents: list[risk_pb2.OrderIntent] = field(default_factory=list)
    settlements: list[risk_pb2.SettleOrderRequest] = field(default_factory=list)
    equity: list[risk_pb2.ReportEquityRequest] = field(default_factory=list)
    tripped: list[risk_pb2.KillSwitch] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def approve(self) -> risk_pb2.RiskDecision:
        return risk_pb2.RiskDecision(
            approved=True,
            outcome="APPROVED",
            reason="approved by the fake",
            policy_version="v1",
            decision_id=f"dec_{next(self._ids)}",
        )

    def _available(self) -> None:
        if self.down:
            raise errors.RiskUnavailable("risk is down", outcome="RISK_UNAVAILABLE")

    async def check_order(self, intent: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        self._available()
        self.intents.append(intent)
        if self.decide is not None:
            return await self.decide(intent)
        return self.approve()

    async def check_deployment(
        self, request: risk_pb2.CheckDeploymentRequest
    ) -> risk_pb2.RiskDecision:
        self._available()
        return self.approve()

    async def report_equity(
        self, request: risk_pb2.ReportEquityRequest
    ) -> list[risk_pb2.KillSwitch]:
        self.equity.append(request)
        return list(self.tripped)

    async def settle(self, settlements: list[risk_pb2.SettleOrderRequest]) -> None:
        self.settlements.extend(settlements)

    async def switch_for(
        self, tenant_id: str, account_id: str, deployment_id: str
    ) -> KillSwitchView | None:
        return KillSwitchView()

    def switches_changed(self) -> None:
        pass


@dataclass
class FakeVenue:
    """Fills market orders at `price`; limit orders rest until cancelled."""

    name: str = "fake"
    price: Decimal = Decimal(100)
    orders: dict[str, ExecutionReport] = field(default_factory=dict)
    submitted: list[VenueOrder] = field(default_factory=list)

    async def submit(self, order: VenueOrder) -> ExecutionReport:
        self.submitted.append(order)
        if order.type == "market":
            fill = VenueFill(f"fill_{order.client_order_id}", order.quantity, self.price, utcnow())
            report = ExecutionReport(order.client_order_id, "filled", order.quantity, fills=(fill,))
        else:
            report = ExecutionReport(order.client_order_id, "open")
        self.orders[order.client_order_id] = report
        return report

    async def lookup(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        return self.orders.get(client_order_id)

    async def cancel(self, tenant_id: str, client_order_id: str) -> ExecutionReport | None:
        known = self.orders.get(client_order_id)
        if known is None:
            return None
        cancelled = ExecutionReport(
            client_order_id, "cancelled", known.filled_quantity, known.fills
        )
        self.orders[client_order_id] = cancelled
        return cancelled

    async def on_mark(
        self, tenant_id: str, instrument: str, price: Decimal, at: datetime
    ) -> list[ExecutionReport]:
        return []


@dataclass
class Rig:
    db: Database
    box: Outbox
    risk: FakeRisk
    venue: FakeVenue
    flows: Flows

    def events(self) -> list[audit_pb2.AuditEvent]:
        """Audit events waiting in the outbox, oldest first (nothing ships them here)."""
        rows = self.db.read_sync(
            lambda c: c.execute(self.box.table.select().order_by(self.box.table.c.id)).all()
        )
        return [audit_pb2.AuditEvent.FromString(r.payload) for r in rows]

    def data(self, type_: str) -> list[dict[str, Any]]:
        """The data of every event of one type, as plain JSON."""
        return [json_format.MessageToDict(e.data) for e in self.events() if e.type == type_]

    def types(self) -> list[str]:
        return [e.type for e in self.events()]


def make_rig(db: Database, settings: Settings | None = None, *, clock: Clock = SYSTEM) -> Rig:
    settings = settings or Settings(execution_retry_base_seconds=0)
    box = Outbox(db, "execution", 10_000)
    risk = FakeRisk()
    venue = FakeVenue()
    flows = Flows(
        db,
        box,
        venue,
        Orchestrator(venue, settings, clock=clock),
        risk,
        settings,
        CrashHooks(settings),
        clock=clock,
    )
    return Rig(db, box, risk, venue, flows)


@contextmanager
def acting(tenant: str = TENANT) -> Iterator[None]:
    with correlation.bound(
        correlation.Correlation(
            request_id=correlation.new_request_id(), tenant_id=tenant, user_id="alice"
        )
    ):
        yield
