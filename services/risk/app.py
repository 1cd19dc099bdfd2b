"""The risk service process."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc

from gate4.execution.v1 import execution_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.risk import enforcement, gauges
from services.risk.books import Books
from services.risk.enforcement import Enforcer
from services.risk.reaper import Reaper
from services.risk.servicer import RiskServicer
from services.runtime.app import BaseService
from services.runtime.resilience import Worker


class RiskService(BaseService):
    name = "risk"
    service_names: tuple[str, ...] = (
        risk_pb2.DESCRIPTOR.services_by_name["RiskService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    # Risk asks execution to enforce a kill switch once it engages, and about reservations
    # nothing has settled.
    peers = ("execution",)
    enforcer: Enforcer | None = None
    reaper: Reaper | None = None

    def register(self, server: grpc.aio.Server) -> None:
        execution = execution_pb2_grpc.ExecutionServiceStub(self.channels["execution"])
        self.enforcer = Enforcer(
            self.db,
            self.outbox,
            execution,
            call_timeout=self.settings.risk_enforcement_timeout_seconds,
            retry=dataclasses.replace(
                enforcement.RETRY,
                initial=self.settings.risk_enforcement_retry_seconds,
                max_delay=self.settings.risk_enforcement_max_backoff_seconds,
            ),
        )
        books = Books()  # one per process: every writer of an account's state keeps it current
        self.reaper = Reaper(
            self.db,
            self.outbox,
            execution,
            check_after=timedelta(seconds=self.settings.risk_reservation_check_seconds),
            release_after=timedelta(seconds=self.settings.risk_reservation_release_seconds),
            books=books,
        )
        risk_pb2_grpc.add_RiskServiceServicer_to_server(
            RiskServicer(self.db, self.outbox, self.enforcer, books=books), server
        )
        gauges.register(self.db)

    def workers(self) -> Sequence[Worker]:
        assert self.enforcer is not None and self.reaper is not None
        return (self.enforcer.retries, self.reaper.worker)
