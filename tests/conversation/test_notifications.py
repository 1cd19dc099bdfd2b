"""The notification feed follows the real audit stream: exactly once per opted-in session, and
only for real transitions (an engage of an engaged switch is not one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, cast

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.conversation import notifications
from services.runtime import outcomes
from services.runtime.storage import Database
from tests.support import rpc
from tests.support.stack import LiveStack, wait_for

SESSIONS = "/v2/conversations/sessions"
TENANT = "feed"


def _session(client: httpx.Client, opt_in: bool) -> str:
    body = {"channel": "openclaw", "topic": "feed", "metadata": {"notificationsOptIn": opt_in}}
    return str(client.post(SESSIONS, json=body).json()["sessionId"])


def _record(
    stack: LiveStack, type_: str, tenant: str = TENANT, **fields: Any
) -> audit_pb2.AuditEvent:
    """Appends an event to the real audit service the way a service's outbox ships it."""
    data = struct_pb2.Struct()
    data.update(fields.pop("data", {}))
    event = audit_pb2.AuditEvent(
        event_id=f"evt_{uuid.uuid4().hex}", type=type_, source="risk", data=data, **fields
    )
    with rpc.channel(stack.stack.ports["audit"]) as channel:
        reply = audit_pb2_grpc.AuditServiceStub(channel).Append(
            audit_pb2.AppendRequest(event=event), metadata=rpc.metadata(tenant, caller="risk")
        )
    return reply.event


def _pending(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"{SESSIONS}/{session_id}/notifications").json()[
        "notifications"
    ]
    return items


def test_trip_reaches_opted_in_sessions_once_and_survives_a_restart(
    private_stack: LiveStack,
) -> None:
    with private_stack.client(private_stack.headers(tenant=TENANT)) as client:
        opted_in = _session(client, True)
        opted_out = _session(client, False)
        trip = _record(
            private_stack,
            "killswitch.tripped",
            deployment_id="dep_feed",
            outcome="KILL_SWITCH_TRIPPED",
            reason="drawdown 12% breached limit 10%",
            request_id="req-feed-trip-0001",
            data={"scope": "deployment", "scopeId": "dep_feed"},
        )
        _record(private_stack, "risk.decision", outcome="APPROVED")  # not a notification

        pending = wait_for(lambda: _pending(client, opted_in))
        assert len(pending) == 1
        note = pending[0]
        assert note["kind"] == "killswitch.tripped" and note["severity"] == "critical"
        assert note["requestId"] == "req-feed-trip-0001"
        assert note["sourceEventId"] == trip.event_id
        assert "dep_feed" in note["message"] and "drawdown" in note["message"]
        assert client.get(f"{SESSIONS}/{opted_in}").json()["pendingNotificationCount"] == 1
        assert _pending(client, opted_out) == []

        # The conversation service restarts: the feed resumes from its cursor, repeating nothing.
        private_stack.stack.restart("conversation")
        released = _record(
            private_stack,
            "killswitch.released",
            outcome="RELEASED",
            reason="reviewed",
            data={"scope": "deployment", "scopeId": "dep_feed"},
        )

        def both() -> list[dict[str, Any]] | None:
            items = _pending(client, opted_in)
            return items if len(items) == 2 else None

        pending = wait_for(both)
        assert [p["sourceEventId"] for p in pending] == [trip.event_id, released.event_id]

        turn = client.post(f"{SESSIONS}/{opted_in}/turns", json={"message": "help"}).json()
        assert [n["sourceEventId"] for n in turn["notifications"]] == [
            trip.event_id,
            released.event_id,
        ]
        again = client.post(f"{SESSIONS}/{opted_in}/turns", json={"message": "help"}).json()
        assert again["notifications"] == []
        delivered = client.get(
            f"{SESSIONS}/{opted_in}/notifications", params={"includeDelivered": "true"}
        )
        assert len(delivered.json()["notifications"]) == 2
        other = client.post(f"{SESSIONS}/{opted_out}/turns", json={"message": "help"}).json()
        assert other["notifications"] == []


def test_opting_out_stops_delivery_at_once(private_stack: LiveStack) -> None:
    with private_stack.client(private_stack.headers(tenant=TENANT)) as client:
        session_id = _session(client, True)
        _record(
            private_stack,
            "deployment.stopped",
            deployment_id="dep_x",
            outcome="STOPPED",
            reason="stopped by user",
        )
        wait_for(lambda: _pending(client, session_id))
        # The containment switch: this very turn already delivers nothing.
        turn = client.post(
            f"{SESSIONS}/{session_id}/turns",
            json={"message": "status", "metadata": {"notificationsOptIn": False}},
        ).json()
        assert turn["notifications"] == []
        assert turn["contextMemory"]["preferences"]["notificationsOptIn"] is False
        _record(
            private_stack,
            "deployment.failed",
            deployment_id="dep_y",
            outcome="FAILED",
            reason="venue down",
        )
        later = client.post(f"{SESSIONS}/{session_id}/turns", json={"message": "help"}).json()
        assert later["notifications"] == []
        assert _pending(client, session_id) == []


def _event(type_: str, outcome: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(type=type_, outcome=outcome)


@pytest.mark.parametrize(
    "type_,outcome,expected",
    [
        ("killswitch.tripped", outcomes.KILL_SWITCH_TRIPPED, True),
        ("killswitch.engaged", outcomes.ENGAGED, True),
        ("killswitch.engaged", outcomes.ALREADY_ENGAGED, False),  # nothing changed
        ("killswitch.released", outcomes.RELEASED, True),
        ("killswitch.enforcement", outcomes.ENFORCED, False),
        ("deployment.stopped", "STOPPED", True),
        ("deployment.failed", "FAILED", True),
        ("deployment.degraded", "VENUE_RETRY_BUDGET_EXHAUSTED", True),
        ("deployment.recovered", "RECOVERED", True),
        ("deployment.stopping", "APPROVED", False),
        ("deployment.stop_refused", "STATE_CONFLICT", False),
        ("orchestrator.degraded", "VENUE_RETRY_BUDGET_EXHAUSTED", False),  # never emitted
        ("risk.decision", outcomes.APPROVED, False),
    ],
)
def test_only_real_transitions_notify(type_: str, outcome: str, expected: bool) -> None:
    assert notifications.notifies(_event(type_, outcome)) is expected


def test_the_kill_switch_outcomes_are_the_ones_risk_records() -> None:
    kinds = notifications.KINDS
    assert kinds["killswitch.tripped"].outcomes == frozenset({outcomes.KILL_SWITCH_TRIPPED})
    assert kinds["killswitch.engaged"].outcomes == frozenset({outcomes.ENGAGED})
    assert kinds["killswitch.released"].outcomes == frozenset({outcomes.RELEASED})


def test_engaging_an_engaged_switch_notifies_nothing(live_stack: LiveStack) -> None:
    tenant = f"feed-{uuid.uuid4().hex[:10]}"
    switch = {"scope": "tenant", "scopeId": tenant}
    with live_stack.client(live_stack.headers(tenant=tenant)) as client:
        session_id = _session(client, True)
        engaged = _record(
            live_stack,
            "killswitch.engaged",
            tenant,
            outcome=outcomes.ENGAGED,
            reason="incident 7",
            data=switch,
        )
        _record(
            live_stack,
            "killswitch.engaged",
            tenant,
            outcome=outcomes.ALREADY_ENGAGED,
            reason="already engaged (manual): incident 7; asked: incident 7 again",
            data=switch,
        )
        released = _record(
            live_stack,
            "killswitch.released",
            tenant,
            outcome=outcomes.RELEASED,
            reason="reviewed",
            data=switch,
        )

        # The feed handles events in order: once the release is in, the re-engage was seen.
        def released_in() -> list[dict[str, Any]] | None:
            items = _pending(client, session_id)
            return items if released.event_id in {i["sourceEventId"] for i in items} else None

        pending = wait_for(released_in)
        assert [(p["kind"], p["sourceEventId"]) for p in pending] == [
            ("killswitch.engaged", engaged.event_id),
            ("killswitch.released", released.event_id),
        ]


class _Audit:
    """The audit service's Subscribe as the feed sees it: the events past the cursor."""

    def __init__(self, events: list[audit_pb2.AuditEvent]) -> None:
        self.events = events
        self.subscribed_after: list[int] = []

    def Subscribe(self, request: audit_pb2.SubscribeRequest) -> AsyncIterator[audit_pb2.AuditEvent]:
        self.subscribed_after.append(request.after_position)

        async def stream() -> AsyncIterator[audit_pb2.AuditEvent]:
            for event in self.events:
                if event.position > request.after_position:
                    yield event

        return stream()


class _FlakyDatabase:
    """Fails the first `failures` writes the way a locked or unreachable database does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.cursor = 0

    async def read(self, op: Callable[[Any], Any]) -> int:
        return self.cursor

    async def write(self, op: Callable[[Any], Any]) -> Any:
        if self.failures:
            self.failures -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        return op(None)


def test_a_failed_write_does_not_end_the_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _FlakyDatabase(failures=1)
    seen: list[str] = []

    def ingest(conn: Any, event: audit_pb2.AuditEvent, now: datetime) -> int:
        seen.append(event.event_id)
        db.cursor = event.position
        return 1

    monkeypatch.setattr(notifications, "ingest", ingest)
    audit = _Audit(
        [
            audit_pb2.AuditEvent(event_id=f"evt_{n}", position=n, type="killswitch.engaged")
            for n in (1, 2)
        ]
    )

    async def scenario() -> None:
        channel = grpc.aio.insecure_channel("127.0.0.1:9")
        feed = notifications.Feed(cast(Database, db), channel)
        feed.stub = cast(Any, audit)
        feed.start()
        try:
            for _ in range(200):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            await feed.stop()
            await channel.close()

    asyncio.run(scenario())
    # The write failed, the cursor stayed, and the feed resubscribed from it: nothing lost.
    assert seen == ["evt_1", "evt_2"]
    assert audit.subscribed_after[:2] == [0, 0]
