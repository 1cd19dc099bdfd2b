"""Transactional outbox to the audit service.

A side effect and its audit event are written in one local transaction (`add` inside the
same write op); a shipper task sends pending events to the audit service with AppendBatch
(at least once; audit deduplicates by event id) and deletes them once acknowledged. When
the backlog passes its bound, `ensure_capacity` refuses new side effects: no decision
without its record.

Replicas of a service share its outbox table, so a shipper first claims the rows it ships:
a short write op stamps them with its id and a lease (`claimed_by`, `claimed_until`), and
the others skip them, so each event is shipped once per attempt. The lease bounds a
shipment: a shipper that dies or stalls loses its rows when the lease expires and another
takes them over; one that runs short of lease stops and gives back what it has not shipped.
The claim works the same on SQLite (the writer's BEGIN IMMEDIATE serialises it) and on
PostgreSQL, where claims are serialised by a transaction-scoped advisory lock (tried, never
waited for: the op shares a group-commit batch) and `FOR UPDATE SKIP LOCKED` passes over
rows a late shipper is still settling. Events of one tenant keep their order, as with one
shipper: no row is claimed of a tenant another shipper holds rows of, so replicas ship
different tenants side by side and each tenant's events one claim after the other.

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

import contextlib
import enum
import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import sqlalchemy as sa
from alembic import op as alembic_op
from google.protobuf import struct_pb2
from opentelemetry import trace
from sqlalchemy.engine import Connection

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime import correlation, deadlines, errors, resilience
from services.runtime.auditfields import SUBJECT_FIELDS
from services.runtime.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_CAPACITY_REFUSALS,
    OUTBOX_MAX_BACKLOG,
    OUTBOX_RESERVE,
    OUTBOX_RESERVE_ADMISSIONS,
    OUTBOX_RESERVE_IN_USE,
    OUTBOX_SHIPPED,
    OUTBOX_TAKEOVERS,
    timed_write,
)
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy, Worker
from services.runtime.storage import Database, after_commit
from services.runtime.telemetry import current_trace_id, current_traceparent, remote_parent

if TYPE_CHECKING:
    from gate4.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub

log = logging.getLogger("gate4.outbox")

SHIP_BATCH = 500
#: Most span links one shipment carries (a batch holds up to SHIP_BATCH events).
MAX_LINKS = 128
#: Seconds between two log lines about the reserve being used (the metric counts each use).
RESERVE_LOG_INTERVAL = 10.0
#: How long a claim holds its rows (GATE4_OUTBOX_LEASE_SECONDS): room for one AppendBatch
#: (GATE4_AUDIT_TIMEOUT_SECONDS) before the settle margin, so a shipment is rarely cut short;
#: short, because a shipper that dies mid-shipment holds its tenants' events that long.
LEASE_SECONDS = 10.0
#: Of the lease, what is kept to record the outcome: no call to audit starts later than this
#: before the lease ends, so the rows are settled while still ours.
SETTLE_MARGIN_SECONDS = 5.0
#: A call to audit is not started with less time than this left before the margin.
MIN_CALL_SECONDS = 1.0
#: A claim while another replica's claim holds the lock is tried again for at most 0.5 s,
#: with short jittered pauses so two replicas do not keep colliding.
CLAIM_RETRY = RetryPolicy(
    initial=0.005, multiplier=2.0, max_delay=0.05, jitter=0.5, max_elapsed=0.5
)
#: A shipper that failed (audit unreachable, the database failing a poll) waits 0.4 s, then
#: twice as long each time, at most GATE4_OUTBOX_RETRY_MAX_SECONDS.
SHIP_RETRY = RetryPolicy(initial=0.4, multiplier=2.0, max_delay=5.0)
#: How often an idle shipper looks for events it was not woken for (another replica's, or
#: a tenant another shipper held).
IDLE_POLL_SECONDS = 1.0
#: On shutdown a shipment under way gets this long to finish and settle its rows.
DRAIN_SECONDS = 2.0
# First key of the two-key advisory lock space, apart from risk's ("RSK").
LOCK_NAMESPACE = 0x4F4258  # "OBX"


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


def add_claim_columns(service: str) -> None:
    """Called from a service's migration: the columns a shipper's claim needs (all nullable,
    so a running previous release, which neither writes nor reads them, is unaffected)."""
    table = table_name(service)
    with alembic_op.batch_alter_table(table) as batch:
        # The event's tenant, for per-tenant ordering across shippers; NULL on rows written
        # before this revision (or by a previous release): ordered against every tenant.
        batch.add_column(sa.Column("tenant_id", sa.String(64), nullable=True))
        # Which shipper holds the row, and until when (see Outbox: claims and leases).
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    # Finds the rows under a claim without reading the (unclaimed) rest of the backlog.
    alembic_op.create_index(f"ix_{table}_claimed_until", table, ["claimed_until"])


def drop_claim_columns(service: str) -> None:
    table = table_name(service)
    alembic_op.drop_index(f"ix_{table}_claimed_until", table_name=table)
    with alembic_op.batch_alter_table(table) as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("tenant_id")


def event(
    type_: str, *, source: str, data: dict[str, Any] | None = None, **subject: str
) -> audit_pb2.AuditEvent:
    """An audit event stamped with the current correlation ids and trace id.

    `subject` names what the event is about: the SUBJECT_FIELDS of the audit event
    (account_id, deployment_id, order_id, session_id, outcome, policy_version, reason).
    """
    unknown = subject.keys() - SUBJECT_FIELDS
    if unknown:
        raise TypeError(f"not a subject field of an audit event: {', '.join(sorted(unknown))}")
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
    )
    for name, value in subject.items():
        setattr(evt, name, value)
    evt.occurred_at.FromDatetime(datetime.now(UTC))
    if data:
        struct = struct_pb2.Struct()
        struct.update(data)
        evt.data.CopyFrom(struct)
    return evt


class Outbox:
    def __init__(
        self,
        db: Database,
        service: str,
        max_backlog: int,
        reserve: int = 0,
        *,
        lease_seconds: float = LEASE_SECONDS,
        ship_batch: int = SHIP_BATCH,
        shipper_id: str = "",
        retry: RetryPolicy = SHIP_RETRY,
        clock: Clock = SYSTEM,
    ) -> None:
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
            sa.column("tenant_id", sa.String),
            sa.column("claimed_by", sa.String),
            sa.column("claimed_until", sa.DateTime),
        )
        self._pending = self.table.c.rejected_at.is_(None)
        self.max_backlog = max_backlog
        self.reserve = reserve
        self.lease_seconds = lease_seconds
        self.ship_batch = ship_batch
        #: Names this shipper in the rows it claims (unique per Outbox, even in one process).
        self.shipper_id = (
            shipper_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.retry = retry
        self.clock = clock
        self.shipper: Shipper | None = None
        # Checks run on the writer thread and on readers: the log's rate limit is shared.
        self._reserve_lock = threading.Lock()
        self._reserve_logged_at = 0.0
        self._reserve_unlogged = 0

    # -- inside a write op -----------------------------------------------------------------

    def ensure_capacity(self, conn: Connection, headroom: Headroom = Headroom.BOUND) -> None:
        """Inside the write op that records events: refuses the write (503
        DEPENDENCY_UNAVAILABLE) when the backlog has no room left for it, at the bound for
        what adds risk, at bound + reserve for what reduces it. A write admitted into the
        reserve is counted and logged once it commits."""
        pending = self._count(conn)
        self._observe_backlog(pending)
        refusal = self._refusal(pending, headroom)
        if refusal is not None:
            OUTBOX_CAPACITY_REFUSALS.labels(self.service, headroom.value).inc()
            raise refusal
        if pending >= self.max_backlog:
            after_commit(conn, lambda: self._reserve_used(pending))

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

    def _observe_backlog(self, pending: int) -> None:
        OUTBOX_BACKLOG.labels(self.service).set(pending)
        OUTBOX_RESERVE_IN_USE.labels(self.service).set(max(0, pending - self.max_backlog))

    def _reserve_used(self, pending: int) -> None:
        OUTBOX_RESERVE_ADMISSIONS.labels(self.service).inc()
        now = self.clock.monotonic()
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
                created_at=self.clock.now(),
                tenant_id=evt.tenant_id,
            )
        )

    def notify(self) -> None:
        """Wakes the shipper after a commit that added events."""
        if self.shipper is not None:
            self.shipper.wake()

    # -- shipping --------------------------------------------------------------------------

    def start(self, channel: grpc.aio.Channel) -> Shipper:
        """Starts shipping to the audit service behind `channel`; returns the shipper."""
        OUTBOX_MAX_BACKLOG.labels(self.service).set(self.max_backlog)
        OUTBOX_RESERVE.labels(self.service).set(self.reserve)
        if self.shipper is None:
            self.shipper = Shipper(self, audit_pb2_grpc.AuditServiceStub(channel))
        self.shipper.start()
        return self.shipper

    async def stop(self) -> None:
        """Stops shipping at once; the claimed rows go back (Shipper.stopped)."""
        if self.shipper is not None:
            await self.shipper.stop()

    async def drain(self) -> None:
        """Lets a shipment under way finish (up to DRAIN_SECONDS), then stops."""
        if self.shipper is not None:
            await self.shipper.drain()

    async def backlog(self) -> int:
        return await self.db.read(self._count)

    async def release(self) -> None:
        """Gives back every row this shipper holds."""
        await self.db.write(self._release)

    async def ship_once(self, stub: AuditServiceAsyncStub) -> int:
        """Claims a batch of pending events, ships it, records the outcome; returns how many
        events were shipped or set aside as rejected (0: nothing this shipper could claim)."""
        pending, claimable = await self.db.read(self._poll)
        self._observe_backlog(pending)
        if not claimable:
            return 0
        started = self.clock.monotonic()
        rows = await self._claim()
        if not rows:
            return 0
        # The lease started no earlier than `started`: stop calling audit before it ends.
        ship_until = started + self.lease_seconds - SETTLE_MARGIN_SECONDS
        by_tenant: dict[str, list[tuple[int, audit_pb2.AuditEvent]]] = {}
        for row_id, payload in rows:
            evt = audit_pb2.AuditEvent.FromString(payload)
            by_tenant.setdefault(evt.tenant_id, []).append((row_id, evt))
        shipped: list[int] = []
        rejected: dict[int, str] = {}
        try:
            # The audit service scopes every call by tenant, so ship one batch per tenant.
            for tenant, items in by_tenant.items():
                if not await self._ship_tenant(stub, tenant, items, ship_until, shipped, rejected):
                    break
        finally:
            # Also when audit failed: what it acknowledged is settled, the rest given back.
            await timed_write(
                self.db, "outbox_settle", lambda c: self._settle(c, shipped, rejected)
            )
            OUTBOX_SHIPPED.labels(self.service, "shipped").inc(len(shipped))
            OUTBOX_SHIPPED.labels(self.service, "rejected").inc(len(rejected))
        return len(shipped) + len(rejected)

    async def _ship_tenant(
        self,
        stub: AuditServiceAsyncStub,
        tenant: str,
        items: list[tuple[int, audit_pb2.AuditEvent]],
        ship_until: float,
        shipped: list[int],
        rejected: dict[int, str],
    ) -> bool:
        """Ships one tenant's events; False when the lease runs short (the caller stops)."""

        def budget() -> float | None:
            left = ship_until - self.clock.monotonic()
            return left if left >= MIN_CALL_SECONDS else None

        left = budget()
        if left is None:
            return False
        with (
            correlation.bound(
                correlation.Correlation(request_id=correlation.new_request_id(), tenant_id=tenant)
            ),
            _shipment(self.service, [evt for _, evt in items]),
            # Each call's deadline ends within the lease (capped by the audit timeout too).
            deadlines.bound(left),
        ):
            try:
                await stub.AppendBatch(audit_pb2.AppendBatchRequest(events=[e for _, e in items]))
                shipped += [row_id for row_id, _ in items]
                return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in REFUSED:
                    raise
            # One bad event must not hold back the rest: find it one by one.
            for row_id, evt in items:
                left = budget()
                if left is None:
                    return False
                try:
                    with deadlines.bound(left):
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
        return True

    # -- claims ----------------------------------------------------------------------------

    def _claimable(self, conn: Connection, now: datetime) -> sa.ColumnElement[bool] | None:
        """Which pending rows this shipper may claim now: unclaimed, expired or its own, and
        of no tenant another shipper holds rows of (that tenant's events would otherwise
        reach audit out of order). A row of unknown tenant (written before the claim
        columns existed) counts as every tenant's. None: nothing may be claimed."""
        t = self.table.c
        held = conn.execute(
            sa.select(t.tenant_id)
            .distinct()
            .where(
                t.claimed_until >= now,
                t.claimed_by != self.shipper_id,
                self._pending,
            )
        ).all()
        tenants = {tenant for (tenant,) in held}
        if None in tenants:
            return None
        free = sa.or_(
            t.claimed_until.is_(None), t.claimed_until < now, t.claimed_by == self.shipper_id
        )
        if not tenants:
            return free
        return sa.and_(free, t.tenant_id.is_not(None), t.tenant_id.not_in(tenants))

    def _poll(self, conn: Connection) -> tuple[int, int]:
        """(pending events, those this shipper could claim now): reads only, so an idle or
        blocked shipper never takes the write lock."""
        pending = self._count(conn)
        claimable = self._claimable(conn, self.clock.now())
        if not pending or claimable is None:
            return pending, 0
        # Whether any, not how many: stop at the first.
        first = conn.execute(
            sa.select(self.table.c.id).where(self._pending, claimable).limit(1)
        ).first()
        return pending, int(first is not None)

    async def _claim(self) -> list[tuple[int, bytes]]:
        """This shipper's next batch, oldest first; retried briefly while another replica's
        claim holds the lock."""
        try:
            rows = await resilience.retry(
                self._try_claim, CLAIM_RETRY, on=_ClaimBusy, clock=self.clock
            )
        except _ClaimBusy:
            return []
        # Counted here, once committed: group commit may run a write op twice.
        taken_over = sum(1 for *_, held in rows if held not in (None, self.shipper_id))
        if taken_over:
            OUTBOX_TAKEOVERS.labels(self.service).inc(taken_over)
            log.warning(
                "outbox rows taken over from an expired claim",
                extra={"rows": taken_over, "shipper": self.shipper_id},
            )
        return [(row_id, payload) for row_id, payload, _ in rows]

    async def _try_claim(self) -> list[tuple[int, bytes, str | None]]:
        rows = await timed_write(self.db, "outbox_claim", self._claim_rows)
        if rows is None:
            raise _ClaimBusy
        return rows

    def _claim_rows(self, conn: Connection) -> list[tuple[int, bytes, str | None]] | None:
        """Inside a write op: claims up to `ship_batch` rows (id, payload, previous holder);
        None when another replica is claiming at this moment (PostgreSQL; on SQLite the
        writer lock serialises claims)."""
        if conn.dialect.name == "postgresql":
            taken = conn.execute(
                sa.text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))"),
                {"ns": LOCK_NAMESPACE, "key": table_name(self.service)},
            ).scalar()
            if not taken:
                return None
        now = self.clock.now()
        claimable = self._claimable(conn, now)
        if claimable is None:
            return []
        t = self.table
        rows = conn.execute(
            sa.select(t.c.id, t.c.payload, t.c.claimed_by)
            .where(self._pending, claimable)
            .order_by(t.c.id)
            .limit(self.ship_batch)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return []
        conn.execute(
            sa.update(t)
            .where(t.c.id.in_([r.id for r in rows]))
            .values(
                claimed_by=self.shipper_id,
                claimed_until=now + timedelta(seconds=self.lease_seconds),
            )
        )
        return [(int(r.id), bytes(r.payload), r.claimed_by) for r in rows]

    def _settle(self, conn: Connection, shipped: list[int], rejected: dict[int, str]) -> None:
        t = self.table
        if shipped:
            conn.execute(sa.delete(t).where(t.c.id.in_(shipped)))
        now = self.clock.now()
        for row_id, reason in rejected.items():
            conn.execute(
                sa.update(t)
                .where(t.c.id == row_id)
                .values(rejected_at=now, reject_reason=reason, claimed_by=None, claimed_until=None)
            )
        # What the shipment did not get to goes back for anyone to take.
        self._release(conn)

    def _release(self, conn: Connection) -> None:
        """Gives back every row this shipper holds."""
        t = self.table
        conn.execute(
            sa.update(t)
            .where(t.c.claimed_by == self.shipper_id)
            .values(claimed_by=None, claimed_until=None)
        )


class _ClaimBusy(Exception):
    """Another replica is claiming at this moment (PostgreSQL): try again shortly."""


class Shipper(Worker):
    """The outbox's background shipper: ships while there is something to claim, then
    waits to be notified (or IDLE_POLL_SECONDS); backs off while shipments fail."""

    def __init__(self, box: Outbox, stub: AuditServiceAsyncStub) -> None:
        super().__init__(
            f"outbox-shipper-{box.service}",
            interval=IDLE_POLL_SECONDS,
            on_failure=box.retry,
            clock=box.clock,
            drain_seconds=DRAIN_SECONDS,
            logger=log,
        )
        self.box = box
        self.stub = stub

    async def started(self) -> None:
        # A shipper named like this one held its rows before this process started: the
        # previous run of this same replica (same host and address), dead, whose claims
        # would otherwise hold its tenants' events until their lease ends.
        try:
            await self.box.release()
        except Exception:
            log.warning("could not take back the previous run's outbox claims", exc_info=True)

    async def step(self) -> bool:
        return await self.box.ship_once(self.stub) > 0

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            log.warning("audit unreachable; outbox keeps events", extra={"code": exc.code().name})
        else:
            # The database failed a poll, claim or settle: the shipper must outlive it.
            log.error("outbox shipment failed; retrying", exc_info=exc)

    async def stopped(self) -> None:
        # Rows claimed by a shipment cut short go back at once, not when the lease ends
        # (a rolling restart would otherwise hold the tenants' events that long).
        try:
            await self.box.release()
        except Exception:
            log.warning("could not give back the outbox's claimed rows", exc_info=True)


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
