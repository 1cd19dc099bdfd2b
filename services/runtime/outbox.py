"""Transactional outbox to the audit service.

A side effect and its audit event are written in one local transaction (`add` inside the
same write op); a shipper task sends pending events to the audit service with AppendBatch
(at least once; audit deduplicates by event id) and deletes them once acknowledged. When
the backlog passes its bound, `ensure_capacity` refuses new side effects: no decision
without its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import sqlalchemy as sa
from alembic import op as alembic_op
from google.protobuf import struct_pb2
from sqlalchemy.engine import Connection

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime import correlation, errors
from services.runtime.storage import Database
from services.runtime.telemetry import current_trace_id

if TYPE_CHECKING:
    from gate4.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub

log = logging.getLogger("gate4.outbox")

SHIP_BATCH = 500
# Statuses by which audit says "this event is invalid": retrying cannot help.
REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
)


def table_name(service: str) -> str:
    return f"{service}_outbox"


def create_table(service: str) -> None:
    """Called from a service's migration to create its outbox table."""
    alembic_op.create_table(
        table_name(service),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Set when the audit service refused the event as invalid: kept for operators,
        # never retried, and never blocking the events behind it.
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reject_reason", sa.String(500), nullable=True),
    )


def event(
    type_: str,
    *,
    source: str,
    outcome: str = "",
    reason: str = "",
    policy_version: str = "",
    account_id: str = "",
    deployment_id: str = "",
    order_id: str = "",
    session_id: str = "",
    data: dict[str, Any] | None = None,
) -> audit_pb2.AuditEvent:
    """An audit event stamped with the current correlation ids and trace id."""
    corr = correlation.current()
    evt = audit_pb2.AuditEvent(
        event_id=f"evt_{uuid.uuid4().hex}",
        tenant_id=corr.tenant_id,
        type=type_,
        source=source,
        request_id=corr.request_id,
        trace_id=current_trace_id(),
        user_id=corr.user_id,
        channel=corr.channel,
        account_id=account_id,
        deployment_id=deployment_id,
        order_id=order_id,
        session_id=session_id,
        outcome=outcome,
        policy_version=policy_version,
        reason=reason,
    )
    evt.occurred_at.FromDatetime(datetime.now(UTC))
    if data:
        struct = struct_pb2.Struct()
        struct.update(data)
        evt.data.CopyFrom(struct)
    return evt


class Outbox:
    def __init__(self, db: Database, service: str, max_backlog: int) -> None:
        self.db = db
        self.table = sa.table(
            table_name(service),
            sa.column("id", sa.Integer),
            sa.column("event_id", sa.String),
            sa.column("payload", sa.LargeBinary),
            sa.column("created_at", sa.DateTime),
            sa.column("rejected_at", sa.DateTime),
            sa.column("reject_reason", sa.String),
        )
        self._pending = self.table.c.rejected_at.is_(None)
        self.max_backlog = max_backlog
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- inside a write op -----------------------------------------------------------------

    def ensure_capacity(self, conn: Connection) -> None:
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(self.table).where(self._pending)
        ).scalar_one()
        if pending >= self.max_backlog:
            raise errors.DependencyUnavailable(
                f"audit backlog is full ({pending} events unshipped); side effects are refused "
                "until the audit service catches up"
            )

    def add(self, conn: Connection, evt: audit_pb2.AuditEvent) -> None:
        if not evt.tenant_id:
            # The audit service scopes every event by tenant; one without could never ship.
            raise ValueError(f"audit event {evt.type} has no tenant")
        conn.execute(
            sa.insert(self.table).values(
                event_id=evt.event_id,
                payload=evt.SerializeToString(),
                created_at=datetime.now(UTC),
            )
        )

    def notify(self) -> None:
        """Wakes the shipper after a commit that added events."""
        self._wake.set()

    # -- shipping --------------------------------------------------------------------------

    def start(self, channel: grpc.aio.Channel) -> None:
        self._task = asyncio.create_task(self._run(audit_pb2_grpc.AuditServiceStub(channel)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def backlog(self) -> int:
        return await self.db.read(
            lambda c: c.execute(
                sa.select(sa.func.count()).select_from(self.table).where(self._pending)
            ).scalar_one()
        )

    async def _run(self, stub: AuditServiceAsyncStub) -> None:
        delay = 0.2
        while True:
            try:
                shipped = await self.ship_once(stub)
                delay = 0.2
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "audit unreachable; outbox keeps events", extra={"code": exc.code().name}
                )
                shipped = 0
                delay = min(delay * 2, 5.0)
            if shipped:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay if delay > 0.2 else 1.0)

    async def ship_once(self, stub: AuditServiceAsyncStub) -> int:
        rows = await self.db.read(
            lambda c: c.execute(
                sa.select(self.table.c.id, self.table.c.payload)
                .where(self._pending)
                .order_by(self.table.c.id)
                .limit(SHIP_BATCH)
            ).all()
        )
        if not rows:
            return 0
        by_tenant: dict[str, list[tuple[int, audit_pb2.AuditEvent]]] = {}
        for row_id, payload in rows:
            evt = audit_pb2.AuditEvent.FromString(payload)
            by_tenant.setdefault(evt.tenant_id, []).append((row_id, evt))
        shipped: list[int] = []
        rejected: dict[int, str] = {}
        # The audit service scopes every call by tenant, so ship one batch per tenant.
        for tenant, items in by_tenant.items():
            with correlation.bound(
                correlation.Correlation(request_id=correlation.new_request_id(), tenant_id=tenant)
            ):
                try:
                    await stub.AppendBatch(
                        audit_pb2.AppendBatchRequest(events=[evt for _, evt in items])
                    )
                    shipped += [row_id for row_id, _ in items]
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in REFUSED:
                        raise
                    # One bad event must not hold back the rest: find it one by one.
                    for row_id, evt in items:
                        try:
                            await stub.Append(audit_pb2.AppendRequest(event=evt))
                            shipped.append(row_id)
                        except grpc.aio.AioRpcError as one:
                            if one.code() not in REFUSED:
                                raise
                            rejected[row_id] = (one.details() or one.code().name)[:500]
                            log.error(
                                "audit refused an event; it is kept in the outbox as rejected",
                                extra={"event_id": evt.event_id, "reason": rejected[row_id]},
                            )
        await self.db.write(lambda c: self._settle(c, shipped, rejected))
        return len(shipped) + len(rejected)

    def _settle(self, conn: Connection, shipped: list[int], rejected: dict[int, str]) -> None:
        if shipped:
            conn.execute(sa.delete(self.table).where(self.table.c.id.in_(shipped)))
        now = datetime.now(UTC)
        for row_id, reason in rejected.items():
            conn.execute(
                sa.update(self.table)
                .where(self.table.c.id == row_id)
                .values(rejected_at=now, reject_reason=reason)
            )
