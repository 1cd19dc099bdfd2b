"""The execution service process: the command layer, the paper venue and its background work."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import grpc

from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2_grpc
from services.execution import reconcile
from services.execution.faults import CrashHooks
from services.execution.flows import Flows
from services.execution.orchestrator import Orchestrator
from services.execution.riskgate import RiskGate
from services.execution.servicer import ExecutionServicer
from services.execution.venue import FaultPlan, PaperVenue
from services.runtime.app import BaseService
from services.runtime.config import Settings
from services.runtime.resilience import SYSTEM, Clock, Periodic, Worker

log = logging.getLogger("gate4.execution")


class ExecutionService(BaseService):
    name = "execution"
    service_names: tuple[str, ...] = (
        execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    peers = ("risk",)
    #: The one clock the flows, the paper venue and the venue retry budget read.
    clock: Clock = SYSTEM

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        # Refuses the crash hooks in production before anything starts.
        self.hooks = CrashHooks(self.settings)
        self.venue = PaperVenue(
            self.db,
            slippage_bps=self.settings.paper_venue_slippage_bps,
            max_fill_quantity=self.settings.paper_venue_max_fill_quantity,
            faults=FaultPlan.parse(self.settings.paper_venue_faults),
            clock=self.clock,
        )
        self.flows: Flows | None = None

    def register(self, server: grpc.aio.Server) -> None:
        risk = RiskGate(
            risk_pb2_grpc.RiskServiceStub(self.channels["risk"]),
            switch_cache_seconds=self.settings.execution_switch_cache_seconds,
            read_timeout=self.settings.execution_switch_read_timeout_seconds,
        )
        self.flows = Flows(
            self.db,
            self.outbox,
            self.venue,
            Orchestrator(self.venue, self.settings, clock=self.clock),
            risk,
            self.settings,
            self.hooks,
            clock=self.clock,
        )
        execution_pb2_grpc.add_ExecutionServiceServicer_to_server(
            ExecutionServicer(
                self.db,
                self.flows,
                self.settings,
                deadline_margin=self.settings.deadline_margin_seconds,
            ),
            server,
        )

    def workers(self) -> Sequence[Worker]:
        flows = self.flows
        assert flows is not None
        # In-flight commands of a previous run are reconciled first, then periodically
        # (another replica's lapsed leases), and expired idempotency keys are purged.
        return (
            Periodic(
                "execution-reconcile",
                partial(reconcile.run_once, flows),
                interval=self.settings.execution_reconcile_interval_seconds,
                logger=log,
            ),
            Periodic(
                "execution-purge-idempotency-keys",
                flows.purge_expired_keys,
                interval=self.settings.execution_cleanup_interval_seconds,
                logger=log,
            ),
        )

    async def stopped(self) -> None:
        if self.flows is not None:
            await self.flows.equity.close()  # risk hears the last fills' equity
