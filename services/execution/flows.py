"""The execution service's command flows, wired once over one unit of work.

Each flow is a module of its own: deployments (lifecycle.py), orders (placement.py),
reducing a deployment (reduce.py), marks and equity (marks.py) and kill-switch
enforcement (enforcement.py). Reconciliation (reconcile.py) and the RPC layer
(servicer.py) reach them through this root.
"""

from __future__ import annotations

from services.execution import idempotency
from services.execution.enforcement import KillSwitchEnforcement
from services.execution.faults import CrashHooks
from services.execution.lifecycle import DeploymentFlow
from services.execution.marks import Equity, Marks
from services.execution.orchestrator import Orchestrator
from services.execution.placement import OrderFlow
from services.execution.reduce import Reducer
from services.execution.riskgate import RiskControls
from services.execution.unitofwork import UnitOfWork
from services.execution.venue import VenueAdapter
from services.runtime.config import Settings
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock
from services.runtime.storage import Database


class Flows:
    def __init__(
        self,
        db: Database,
        box: Outbox,
        venue: VenueAdapter,
        orchestrator: Orchestrator,
        risk: RiskControls,
        settings: Settings,
        hooks: CrashHooks,
        *,
        clock: Clock = SYSTEM,
    ) -> None:
        self.settings = settings
        self.venue = venue
        # Every flow reaches the clock through its unit of work (uow.clock).
        self.clock = clock
        self.uow = UnitOfWork(db, box, risk, clock)
        self.equity = Equity(self.uow, risk)
        self.marks = Marks(self.uow, venue, self.equity)
        self.orders = OrderFlow(self.uow, venue, orchestrator, risk, self.equity, settings, hooks)
        self.reducer = Reducer(self.orders)
        self.deployments = DeploymentFlow(
            self.uow, risk, self.reducer, self.equity, settings, hooks
        )
        self.kill_switches = KillSwitchEnforcement(self.uow, self.reducer)

    async def purge_expired_keys(self) -> int:
        return await self.uow.run(lambda w: idempotency.purge_expired(w.conn, self.clock.now()))
