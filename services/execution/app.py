"""The execution service process."""

from __future__ import annotations

from pathlib import Path

import grpc

from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2_grpc
from services.execution.servicer import ExecutionServicer
from services.runtime.app import BaseService


class ExecutionService(BaseService):
    name = "execution"
    service_names: tuple[str, ...] = (
        execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    peers = ("risk",)

    def register(self, server: grpc.aio.Server) -> None:
        risk = risk_pb2_grpc.RiskServiceStub(self.channels["risk"])
        execution_pb2_grpc.add_ExecutionServiceServicer_to_server(
            ExecutionServicer(self.db, risk), server
        )
