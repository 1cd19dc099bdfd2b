"""Proactive notifications from the audit event stream.

The feed subscribes to the audit service across tenants from a persisted cursor. Each event
that matters to a trader becomes one notification per opted-in session of its tenant, written
in the same transaction that advances the cursor, and the (session, event) pair is unique:
after a restart the feed resumes where it stopped and nothing is lost or repeated. A turn
delivers a session's pending notifications and marks them delivered in the turn's own
transaction, so each reaches its session exactly once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.conversation.v1 import conversation_pb2
from services.conversation import sessions
from services.runtime import correlation, outcomes, roles
from services.runtime.resilience import SYSTEM, Clock, RetryPolicy, Worker
from services.runtime.storage import Database
from services.runtime.timeutil import to_timestamp

if TYPE_CHECKING:
    from gate4.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub

log = logging.getLogger("gate4.notifications")

CONSUMER = "notifications"
FEED_TENANT = "platform"
#: Resubscribing after the stream broke: 0.2 s, then twice as long each time, at most
#: GATE4_NOTIFICATIONS_RETRY_MAX_SECONDS. A stream audit ended cleanly resubscribes
#: after `initial`.
RESUBSCRIBE = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=5.0)


@dataclass(frozen=True)
class Kind:
    severity: str
    headline: str
    #: The outcomes that make the event a transition; None: every event of the type is one.
    outcomes: frozenset[str] | None = None


#: Audit event types that become notifications, with their severity and headline: the
#: kill-switch transitions risk records and the deployment transitions execution records
#: (services/execution/placement.py writes `deployment.degraded` / `.recovered` only on change).
#: Risk also writes `killswitch.engaged` with ALREADY_ENGAGED when someone engages an engaged
#: switch: nothing changed, so that is no notification.
KINDS: dict[str, Kind] = {
    "killswitch.tripped": Kind(
        "critical", "Kill switch tripped", frozenset({outcomes.KILL_SWITCH_TRIPPED})
    ),
    "killswitch.engaged": Kind("critical", "Kill switch engaged", frozenset({outcomes.ENGAGED})),
    "killswitch.released": Kind("info", "Kill switch released", frozenset({outcomes.RELEASED})),
    "deployment.stopped": Kind("info", "Deployment stopped"),
    "deployment.failed": Kind("critical", "Deployment failed"),
    "deployment.degraded": Kind("warning", "Deployment degraded"),
    "deployment.recovered": Kind("info", "Deployment recovered"),
}


def notifies(event: audit_pb2.AuditEvent) -> bool:
    """Whether the event is a transition a trader is told about."""
    kind = KINDS.get(event.type)
    return kind is not None and (kind.outcomes is None or event.outcome in kind.outcomes)


notifications = sa.table(
    "conversation_notifications",
    *(
        sa.column(n, sa.String)
        for n in (
            "notification_id",
            "tenant_id",
            "session_id",
            "source_event_id",
            "kind",
            "severity",
            "message",
            "deployment_id",
            "account_id",
            "order_id",
            "request_id",
            "delivered_turn_id",
        )
    ),
    sa.column("created_at", sa.DateTime),
    sa.column("delivered_at", sa.DateTime),
)
cursor = sa.table(
    "conversation_feed_cursor", sa.column("consumer", sa.String), sa.column("position", sa.Integer)
)


def describe(event: audit_pb2.AuditEvent) -> str:
    kind = KINDS[event.type]
    subject = event.deployment_id or event.account_id or event.tenant_id
    scope = event.data.fields.get("scope")
    if scope is not None and scope.string_value:
        scope_id = event.data.fields.get("scopeId")
        subject = f"{scope.string_value} {scope_id.string_value if scope_id else subject}"
    text = f"{kind.headline} for {subject}"
    return f"{text}: {event.reason}" if event.reason else text


def read_cursor(conn: Connection) -> int:
    value = conn.execute(sa.select(cursor.c.position).where(cursor.c.consumer == CONSUMER)).scalar()
    return int(value or 0)


def ingest(conn: Connection, event: audit_pb2.AuditEvent, now: datetime) -> int:
    """Records the event's notifications and moves the cursor past it; returns how many."""
    created = 0
    if notifies(event):
        kind = KINDS[event.type]
        text = describe(event)[:1000]
        for session_id in sessions.opted_in(conn, event.tenant_id):
            exists = conn.execute(
                sa.select(notifications.c.notification_id).where(
                    notifications.c.session_id == session_id,
                    notifications.c.source_event_id == event.event_id,
                )
            ).first()
            if exists:
                continue
            conn.execute(
                sa.insert(notifications).values(
                    notification_id=f"ntf_{uuid.uuid4().hex[:24]}",
                    tenant_id=event.tenant_id,
                    session_id=session_id,
                    source_event_id=event.event_id,
                    kind=event.type,
                    severity=kind.severity,
                    message=text,
                    deployment_id=event.deployment_id,
                    account_id=event.account_id,
                    order_id=event.order_id,
                    request_id=event.request_id,
                    created_at=now,
                )
            )
            created += 1
    moved = conn.execute(
        sa.update(cursor).where(cursor.c.consumer == CONSUMER).values(position=event.position)
    ).rowcount
    if not moved:
        conn.execute(sa.insert(cursor).values(consumer=CONSUMER, position=event.position))
    return created


def _message(row: sa.Row[tuple[object, ...]]) -> conversation_pb2.Notification:
    m = row._mapping
    msg = conversation_pb2.Notification(
        notification_id=m["notification_id"],
        kind=m["kind"],
        severity=m["severity"],
        message=m["message"],
        deployment_id=m["deployment_id"],
        account_id=m["account_id"],
        order_id=m["order_id"],
        request_id=m["request_id"],
        source_event_id=m["source_event_id"],
    )
    created = to_timestamp(m["created_at"])
    if created is not None:
        msg.created_at.CopyFrom(created)
    return msg


def pending(conn: Connection, session_id: str) -> list[conversation_pb2.Notification]:
    rows = conn.execute(
        sa.select(notifications)
        .where(
            notifications.c.session_id == session_id,
            notifications.c.delivered_turn_id.is_(None),
        )
        .order_by(notifications.c.created_at, notifications.c.notification_id)
    ).all()
    return [_message(r) for r in rows]


def listing(
    conn: Connection, session_id: str, include_delivered: bool
) -> list[conversation_pb2.Notification]:
    query = sa.select(notifications).where(notifications.c.session_id == session_id)
    if not include_delivered:
        query = query.where(notifications.c.delivered_turn_id.is_(None))
    rows = conn.execute(
        query.order_by(notifications.c.created_at, notifications.c.notification_id)
    ).all()
    return [_message(r) for r in rows]


def pending_count(conn: Connection, session_id: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(notifications)
            .where(
                notifications.c.session_id == session_id,
                notifications.c.delivered_turn_id.is_(None),
            )
        ).scalar_one()
    )


def deliver(
    conn: Connection, session_id: str, turn_id: str, now: datetime
) -> list[conversation_pb2.Notification]:
    """Takes the session's pending notifications for this turn."""
    items = pending(conn, session_id)
    if items:
        conn.execute(
            sa.update(notifications)
            .where(
                notifications.c.notification_id.in_([n.notification_id for n in items]),
                notifications.c.delivered_turn_id.is_(None),
            )
            .values(delivered_turn_id=turn_id, delivered_at=now)
        )
    return items


def discard_pending(conn: Connection, session_id: str, now: datetime) -> None:
    """Opting out stops delivery at once: what is still pending is never delivered."""
    conn.execute(
        sa.update(notifications)
        .where(
            notifications.c.session_id == session_id,
            notifications.c.delivered_turn_id.is_(None),
        )
        .values(delivered_turn_id="opted-out", delivered_at=now)
    )


class Feed(Worker):
    """The background task that follows the audit stream: each step is one subscription."""

    def __init__(
        self,
        db: Database,
        channel: grpc.aio.Channel,
        *,
        retry: RetryPolicy = RESUBSCRIBE,
        clock: Clock = SYSTEM,
    ) -> None:
        # The stream never ends by itself: draining it cuts it at once (the cursor moves
        # with each event's commit, so nothing is lost or repeated).
        super().__init__(
            "conversation-notification-feed",
            interval=retry.initial,
            on_failure=retry,
            clock=clock,
            drain_seconds=0.0,
            logger=log,
        )
        self.db = db
        self.stub: AuditServiceAsyncStub = audit_pb2_grpc.AuditServiceStub(channel)
        self.ingested = 0

    async def step(self) -> bool:
        await self._follow()
        return False

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            log.warning("audit stream interrupted; resubscribing", extra={"code": exc.code().name})
        else:
            # A failed write (database locked or unreachable) must not end the feed for
            # good: the cursor did not move, so resubscribing retries that event.
            log.error("notification feed failed; resubscribing", exc_info=exc)

    async def _follow(self) -> None:
        after = await self.db.read(read_cursor)
        internal = correlation.Correlation(
            request_id=correlation.new_request_id(),
            tenant_id=FEED_TENANT,
            roles=frozenset({roles.INTERNAL}),
        )
        # The whole stream runs under the internal identity: the call is set up lazily, on
        # first iteration, so binding it only around Subscribe() would not be enough.
        with correlation.bound(internal):
            stream = self.stub.Subscribe(
                audit_pb2.SubscribeRequest(
                    after_position=after, all_tenants=True, types=list(KINDS)
                )
            )
            async for event in stream:
                await self.db.write(_ingest_op(event, self.clock))
                self.ingested += 1


def _ingest_op(event: audit_pb2.AuditEvent, clock: Clock) -> Callable[[Connection], int]:
    return lambda conn: ingest(conn, event, clock.now())
