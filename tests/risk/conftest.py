"""Risk's domain modules against a real database, in process: both backends, no services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import checks, pretrade, reservations, versions
from services.risk.app import RiskService
from services.risk.books import Books
from services.risk.reservations import Reservation
from services.runtime import correlation
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from tests.support.risk_rig import policy_doc

T = TypeVar("T")
T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)


@dataclass
class RiskStore:
    db: Database
    outbox: Outbox
    #: The process's books, as the servicer keeps them (services.risk.books).
    books: Books = field(default_factory=Books)

    def run(self, op: Any, tenant: str = "t1", user: str = "olga") -> Any:
        """op(conn) in one transaction, as the tenant's request (audit events need one)."""
        corr = correlation.Correlation(
            request_id=correlation.new_request_id(), tenant_id=tenant, user_id=user
        )
        with correlation.bound(corr):
            return self.db.write_sync(op)

    def events(self, *types: str) -> list[Any]:
        """Audit events written so far, oldest first; only `types` when given."""
        from gate4.audit.v1 import audit_pb2

        def read(conn: Connection) -> list[Any]:
            rows = conn.execute(self.outbox.table.select().order_by(self.outbox.table.c.id)).all()
            return [audit_pb2.AuditEvent.FromString(r.payload) for r in rows]

        found = self.db.read_sync(read)
        return [e for e in found if not types or e.type in types]

    def open_orders(self, account: str = "acc-1", tenant: str = "t1") -> list[Reservation]:
        """The account's open reservations, as stored."""
        rows = self.db.read_sync(
            lambda c: reservations.of_account(c, tenant, account, decided_after=T0)
        )
        return [r for r in rows if r.state == reservations.OPEN]

    def put_policy(self, tenant: str = "t1", **limits: Any) -> None:
        doc = policy_doc(**limits)
        self.run(
            lambda c: versions.put_version(
                c,
                tenant_id=tenant,
                account_id="",
                document=doc,
                author="olga",
                reason="r",
                now=T0,
            ),
            tenant,
        )

    def check(
        self, intent: risk_pb2.OrderIntent, now: datetime = T0, tenant: str = "t1"
    ) -> risk_pb2.RiskDecision:
        """CheckOrder's decision for the intent, at `now`."""
        command = submit(intent, tenant)
        return self.run(  # type: ignore[no-any-return]
            lambda c: pretrade.decide(c, self.outbox, self.books, command, now), tenant
        )


@pytest.fixture
def store(database_url: str) -> Iterator[RiskStore]:
    db = Database(database_url, name="risk")
    migrate(db, RiskService.migrations, "risk")
    try:
        yield RiskStore(db, Outbox(db, "risk", 10_000))
    finally:
        db.close()


@pytest.fixture
def running(store: RiskStore) -> RiskStore:
    """The store with its group-commit writer running, for async code (db.write)."""
    store.db.start()
    return store


def submit(intent: risk_pb2.OrderIntent, tenant: str = "t1") -> pretrade.Command:
    """The command CheckOrder builds for an order.submit."""
    command = pretrade.Command(
        kind=pretrade.ORDER_SUBMIT,
        tenant_id=tenant,
        account_id=intent.account_id,
        deployment_id=intent.deployment_id,
        order_id=intent.order_id,
    )
    try:
        command.order = checks.order_context(intent)
    except checks.Undecidable as exc:
        command.undecidable = str(exc)
    return command


def snapshot(
    quantity: str = "0",
    version: int = 0,
    *,
    instrument: str = "BTC-USD",
    price: str = "100",
    deployment: str = "dep-1",
) -> risk_pb2.PositionSnapshot:
    return risk_pb2.PositionSnapshot(
        deployment_id=deployment,
        instrument=instrument,
        quantity=quantity,
        version=version,
        price=price,
    )


def intent(
    order_id: str,
    *,
    positions: list[risk_pb2.PositionSnapshot] | None = None,
    mark: str = "100",
    at: datetime = T0,
    **fields: Any,
) -> risk_pb2.OrderIntent:
    """A market buy of 1 BTC-USD at mark 100 by dep-1 of acc-1, with execution's position
    snapshot (flat, version 0, unless `positions` says otherwise); fields override."""
    values: dict[str, Any] = {
        "order_id": order_id,
        "deployment_id": "dep-1",
        "account_id": "acc-1",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "1",
        "mark_price": mark,
    }
    values.update(fields)
    message = risk_pb2.OrderIntent(**values)
    held = positions if positions is not None else [snapshot(deployment=message.deployment_id)]
    message.positions.extend(held)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    message.mark_time.CopyFrom(stamp)
    return message
