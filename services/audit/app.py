"""The audit service process: the shared BaseService (database, migrations) plus the servicer.

Audit is where every other service's outbox ships to, so it keeps no outbox itself.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore
from services.runtime.app import BaseService


class AuditService(BaseService):
    name = "audit"
    service_names: tuple[str, ...] = (
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    uses_outbox = False
    servicer: AuditServicer | None = None

    def register(self, server: grpc.aio.Server) -> None:
        self.servicer = AuditServicer(AuditStore(self.db))
        audit_pb2_grpc.add_AuditServiceServicer_to_server(self.servicer, server)

    async def drain(self) -> None:
        """Called by the runner when draining starts: Subscribe streams end at once."""
        if self.servicer is not None:
            self.servicer.close()
