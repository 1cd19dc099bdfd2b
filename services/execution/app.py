"""The execution service process: the command layer, the paper venue and its background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import grpc

from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2_grpc
from services.execution import reconcile
from services.execution.config import ExecutionSettings, get_execution_settings
from services.execution.faults import CrashHooks
from services.execution.flows import Flows
from services.execution.orchestrator import Orchestrator
from services.execution.riskgate import RiskGate
from services.execution.servicer import ExecutionServicer
from services.execution.venue import FaultPlan, PaperVenue
from services.runtime.app import BaseService
from services.runtime.config import Settings

log = logging.getLogger("gate4.execution")


class ExecutionService(BaseService):
    name = "execution"
    service_names: tuple[str, ...] = (
        execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    peers = ("risk",)

    def __init__(
        self, settings: Settings | None = None, execution: ExecutionSettings | None = None
    ) -> None:
        super().__init__(settings)
        self.execution = execution or get_execution_settings()
        # Refuses the crash hooks in production before anything starts.
        self.hooks = CrashHooks(self.execution)
        self.venue = PaperVenue(
            self.db,
            slippage_bps=self.execution.paper_venue_slippage_bps,
            max_fill_quantity=self.execution.paper_venue_max_fill_quantity,
            faults=FaultPlan.parse(self.execution.paper_venue_faults),
        )
        self.flows: Flows | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> None:
        risk = RiskGate(
            risk_pb2_grpc.RiskServiceStub(self.channels["risk"]),
            switch_cache_seconds=self.execution.execution_switch_cache_seconds,
        )
        self.flows = Flows(
            self.db,
            self.outbox,
            self.venue,
            Orchestrator(self.venue, self.execution),
            risk,
            self.execution,
            self.hooks,
        )
        execution_pb2_grpc.add_ExecutionServiceServicer_to_server(
            ExecutionServicer(
                self.db,
                self.flows,
                self.execution,
                deadline_margin=self.settings.deadline_margin_seconds,
            ),
            server,
        )

    async def start(self, server: grpc.aio.Server) -> None:
        await super().start(server)
        flows = self.flows
        assert flows is not None
        # In-flight commands of a previous run are reconciled first, then periodically
        # (another replica's lapsed leases), and expired idempotency keys are purged.
        self._tasks = [
            asyncio.create_task(
                _every(
                    "reconcile",
                    self.execution.execution_reconcile_interval_seconds,
                    partial(reconcile.run_once, flows),
                )
            ),
            asyncio.create_task(
                _every(
                    "purge-idempotency-keys",
                    self.execution.execution_cleanup_interval_seconds,
                    flows.purge_expired_keys,
                )
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.flows is not None:
            await self.flows.equity.close()  # risk hears the last fills' equity
        await super().stop()


async def _every(name: str, seconds: float, job: Callable[[], Awaitable[int]]) -> None:
    while True:
        try:
            await job()
        except Exception:
            log.exception("background job failed", extra={"job": name})
        await asyncio.sleep(seconds)
