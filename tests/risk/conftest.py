"""Risk's domain modules against a real database, in process: both backends, no services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Connection

from services.risk.app import RiskService
from services.runtime import correlation
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate

T = TypeVar("T")


@dataclass
class RiskStore:
    db: Database
    outbox: Outbox

    def run(self, op: Any, tenant: str = "t1", user: str = "olga") -> Any:
        """op(conn) in one transaction, as the tenant's request (audit events need one)."""
        corr = correlation.Correlation(
            request_id=correlation.new_request_id(), tenant_id=tenant, user_id=user
        )
        with correlation.bound(corr):
            return self.db.write_sync(op)

    def events(self) -> list[Any]:
        from gate4.audit.v1 import audit_pb2

        def read(conn: Connection) -> list[Any]:
            rows = conn.execute(self.outbox.table.select().order_by(self.outbox.table.c.id)).all()
            return [audit_pb2.AuditEvent.FromString(r.payload) for r in rows]

        return self.db.read_sync(read)


@pytest.fixture
def store(database_url: str) -> Iterator[RiskStore]:
    db = Database(database_url, name="risk")
    migrate(db, RiskService.migrations, "risk")
    try:
        yield RiskStore(db, Outbox(db, "risk", 10_000))
    finally:
        db.close()
