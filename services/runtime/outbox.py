"""Transactional outbox to the audit service.

A side effect and its audit event are written in one local transaction (`add` inside the
same write op); a shipper task sends pending events to the audit service with AppendBatch
(at least once; audit deduplicates by event id) and deletes them once acknowledged. When
the backlog passes its bound, `ensure_capacity` refuses new side effects: no decision
without its record.

The bound is GATE4_OUTBOX_MAX_BACKLOG for what adds risk. Risk-reducing commands (stop,
flatten, cancel, kill-switch engage, reduce-only orders) and equity reports check with
`Headroom.RESERVE`: they may go GATE4_OUTBOX_RESERVE events further, so the emergency brake
works while audit is down. Each admission into the reserve counts in
`gate4_outbox_reserve_admissions_total` and is logged (at most every few seconds, with the
count); past the reserve they are refused too.

Each event carries the traceparent of the span that recorded it. A shipment is a span of
its own linked to every event's span, and the audit service records each append as a child
of that span, so the request's trace shows its audit hop (services/audit/servicer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import sqlalchemy as sa
from alembic import op as alembic_op
from google.protobuf import struct_pb2
from opentelemetry import trace
from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Connection

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime import correlation, errors
from services.runtime.storage import Database
from services.runtime.telemetry import current_trace_id, current_traceparent, remote_parent

if TYPE_CHECKING:
    from gate4.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub

log = logging.getLogger("gate4.outbox")

SHIP_BATCH = 500
#: Most span links one shipment carries (a batch holds up to SHIP_BATCH events).
MAX_LINKS = 128
#: Seconds between two log lines about the reserve being used (the metric counts each use).
RESERVE_LOG_INTERVAL = 10.0

# In the process registry (prometheus_client's default).
BACKLOG = Gauge(
    "gate4_outbox_backlog",
    "Audit events waiting to ship, as last counted by a capacity check.",
    ["service"],
)
RESERVE_ADMISSIONS = Counter(
    "gate4_outbox_reserve_admissions",
    "Risk-reducing writes admitted past GATE4_OUTBOX_MAX_BACKLOG, into the reserve.",
    ["service"],
)
CAPACITY_REFUSALS = Counter(
    "gate4_outbox_capacity_refusals",
    "Writes refused because the audit backlog was full, by the headroom they had.",
    ["service", "headroom"],
)


class Headroom(enum.Enum):
    """How far past its bound a write may fill the outbox."""

    #: What adds risk (new orders and deployments, policy changes, releases): the bound.
    BOUND = "bound"
    #: Risk-reducing commands and equity reports: the bound plus the reserve.
    RESERVE = "reserve"


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
        traceparent=current_traceparent(),
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
    def __init__(self, db: Database, service: str, max_backlog: int, reserve: int = 0) -> None:
        self.db = db
        self.service = service
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
        self.reserve = reserve
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Checks run on the writer thread and on readers: the log's rate limit is shared.
        self._reserve_lock = threading.Lock()
        self._reserve_logged_at = 0.0
        self._reserve_unlogged = 0

    # -- inside a write op -----------------------------------------------------------------

    def ensure_capacity(self, conn: Connection, headroom: Headroom = Headroom.BOUND) -> None:
        """Inside the write op that records events: refuses the write (503
        DEPENDENCY_UNAVAILABLE) when the backlog has no room left for it, at the bound for
        what adds risk, at bound + reserve for what reduces it. A write admitted into the
        reserve is counted and logged."""
        pending = self._count(conn)
        BACKLOG.labels(self.service).set(pending)
        refusal = self._refusal(pending, headroom)
        if refusal is not None:
            CAPACITY_REFUSALS.labels(self.service, headroom.value).inc()
            raise refusal
        if pending >= self.max_backlog:
            self._reserve_used(pending)

    def check_capacity(self, conn: Connection, headroom: Headroom = Headroom.BOUND) -> None:
        """The same refusal before a command asks for its decision (a command that could not
        be recorded is refused before anything is decided); counts nothing: the write that
        follows does."""
        refusal = self._refusal(self._count(conn), headroom)
        if refusal is not None:
            raise refusal

    def _refusal(self, pending: int, headroom: Headroom) -> errors.DependencyUnavailable | None:
        if pending < self.max_backlog:
            return None
        if headroom is Headroom.BOUND:
            return errors.DependencyUnavailable(
                f"audit backlog is full ({pending} events unshipped); new risk is refused "
                "until the audit service catches up (risk-reducing commands still pass)"
            )
        if pending < self.max_backlog + self.reserve:
            return None
        return errors.DependencyUnavailable(
            f"audit backlog is full ({pending} events unshipped), its reserve for "
            "risk-reducing commands too; refused until the audit service catches up"
        )

    def has_room(self, conn: Connection) -> bool:
        """Whether the backlog is below its bound (no metric, no refusal)."""
        return self._count(conn) < self.max_backlog

    def _count(self, conn: Connection) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(self.table).where(self._pending)
            ).scalar_one()
        )

    def _reserve_used(self, pending: int) -> None:
        RESERVE_ADMISSIONS.labels(self.service).inc()
        now = time.monotonic()
        with self._reserve_lock:
            self._reserve_unlogged += 1
            if now - self._reserve_logged_at < RESERVE_LOG_INTERVAL:
                return
            count, self._reserve_unlogged = self._reserve_unlogged, 0
            self._reserve_logged_at = now
        log.warning(
            "audit backlog past its bound: risk-reducing writes use the outbox reserve",
            extra={
                "backlog": pending,
                "bound": self.max_backlog,
                "reserve": self.reserve,
                "reserve_admissions": count,
            },
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
        return await self.db.read(self._count)

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
            with (
                correlation.bound(
                    correlation.Correlation(
                        request_id=correlation.new_request_id(), tenant_id=tenant
                    )
                ),
                _shipment(self.service, [evt for _, evt in items]),
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


def _shipment(
    service: str, events: list[audit_pb2.AuditEvent]
) -> contextlib.AbstractContextManager[trace.Span]:
    """The shipment's span, linked to the span that recorded each event it carries."""
    links = []
    for evt in events[:MAX_LINKS]:
        parent = remote_parent(evt.traceparent)
        if parent is not None:
            links.append(
                trace.Link(
                    trace.get_current_span(parent).get_span_context(),
                    {"gate4.request_id": evt.request_id, "gate4.audit.event_id": evt.event_id},
                )
            )
    return trace.get_tracer("gate4.outbox").start_as_current_span(
        "outbox.ship",
        kind=trace.SpanKind.PRODUCER,
        links=links,
        attributes={"gate4.outbox.service": service, "gate4.outbox.events": len(events)},
    )
