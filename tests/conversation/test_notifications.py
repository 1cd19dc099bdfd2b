"""The notification feed follows the real audit stream: exactly once per opted-in session."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from google.protobuf import struct_pb2

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support import rpc
from tests.support.stack import LiveStack, wait_for

SESSIONS = "/v2/conversations/sessions"
TENANT = "feed"


def _session(client: httpx.Client, opt_in: bool) -> str:
    body = {"channel": "openclaw", "topic": "feed", "metadata": {"notificationsOptIn": opt_in}}
    return str(client.post(SESSIONS, json=body).json()["sessionId"])


def _record(stack: LiveStack, type_: str, **fields: Any) -> audit_pb2.AuditEvent:
    """Appends an event to the real audit service the way a service's outbox ships it."""
    data = struct_pb2.Struct()
    data.update(fields.pop("data", {}))
    event = audit_pb2.AuditEvent(
        event_id=f"evt_{uuid.uuid4().hex}", type=type_, source="risk", data=data, **fields
    )
    with rpc.channel(stack.stack.ports["audit"]) as channel:
        reply = audit_pb2_grpc.AuditServiceStub(channel).Append(
            audit_pb2.AppendRequest(event=event), metadata=rpc.metadata(TENANT)
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
            outcome="KILL_SWITCH_ENGAGED",
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
            private_stack, "deployment.stopped", deployment_id="dep_x", reason="stopped by user"
        )
        wait_for(lambda: _pending(client, session_id))
        # The containment switch: this very turn already delivers nothing.
        turn = client.post(
            f"{SESSIONS}/{session_id}/turns",
            json={"message": "status", "metadata": {"notificationsOptIn": False}},
        ).json()
        assert turn["notifications"] == []
        assert turn["contextMemory"]["preferences"]["notificationsOptIn"] is False
        _record(private_stack, "deployment.failed", deployment_id="dep_y", reason="venue down")
        later = client.post(f"{SESSIONS}/{session_id}/turns", json={"message": "help"}).json()
        assert later["notifications"] == []
        assert _pending(client, session_id) == []
