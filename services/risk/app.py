"""The risk service process."""

from __future__ import annotations

from pathlib import Path

import grpc

from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.risk.servicer import RiskServicer
from services.runtime.app import BaseService


class RiskService(BaseService):
    name = "risk"
    service_names: tuple[str, ...] = (
        risk_pb2.DESCRIPTOR.services_by_name["RiskService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"

    def register(self, server: grpc.aio.Server) -> None:
        risk_pb2_grpc.add_RiskServiceServicer_to_server(RiskServicer(self.db, self.outbox), server)
