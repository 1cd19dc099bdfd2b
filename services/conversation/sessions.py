"""Conversation sessions: owner, channel, metadata, opt-in and context memory."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.engine import Connection

from gate4.conversation.v1 import conversation_pb2
from services.conversation import memory as memory_mod
from services.runtime.timeutil import to_timestamp
from services.runtime.validation import Checker

#: openclaw is the OpenClaw assistant lane; the others are the platform's own clients.
CHANNELS = ("openclaw", "web", "mobile", "api")
CLIENT_LANES = ("skill", "cli")
MAX_METADATA_KEYS = 32
MAX_METADATA_BYTES = 4096
OPT_IN = "notificationsOptIn"

sessions = sa.table(
    "conversation_sessions",
    *(
        sa.column(n, sa.String)
        for n in (
            "session_id",
            "tenant_id",
            "user_id",
            "channel",
            "topic",
            "metadata",
            "status",
            "memory",
        )
    ),
    sa.column("notifications_opt_in", sa.Boolean),
    sa.column("turn_count", sa.Integer),
    sa.column("memory_version", sa.Integer),
    sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
)


def check_new_session(channel: str, topic: str, metadata: dict[str, Any]) -> None:
    check = Checker()
    check.one_of("channel", channel, CHANNELS)
    check.text("topic", topic, max_length=200, required=True)
    if len(metadata) > MAX_METADATA_KEYS:
        check.fail("metadata", f"at most {MAX_METADATA_KEYS} keys")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        check.fail("metadata", f"at most {MAX_METADATA_BYTES} bytes of JSON")
    for key, value in metadata.items():
        if isinstance(value, (dict, list)) or value is None:
            check.fail(f"metadata.{key}", "a string, number or boolean")
    if OPT_IN in metadata and not isinstance(metadata[OPT_IN], bool):
        check.fail(f"metadata.{OPT_IN}", "a boolean")
    if "clientLane" in metadata:
        check.one_of("metadata.clientLane", str(metadata["clientLane"]), CLIENT_LANES)
    check.done("invalid session")


def message(
    row: sa.Row[tuple[object, ...]], pending_notifications: int = 0
) -> conversation_pb2.Session:
    m = row._mapping
    mem = json.loads(m["memory"])
    msg = conversation_pb2.Session(
        session_id=m["session_id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        channel=m["channel"],
        topic=m["topic"],
        status=m["status"],
        turn_count=m["turn_count"],
        pending_notification_count=pending_notifications,
        context_memory_snapshot=memory_mod.snapshot(m["memory_version"], mem),
    )
    # Empty objects are still present on the wire: clients read {} rather than a missing field.
    msg.metadata.SetInParent()
    json_format.ParseDict(json.loads(m["metadata"]), msg.metadata)
    msg.context_memory.SetInParent()
    msg.context_memory.update(mem)
    for field in ("created_at", "updated_at"):
        ts = to_timestamp(m[field])
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def create(
    conn: Connection,
    tenant_id: str,
    user_id: str,
    channel: str,
    topic: str,
    metadata: dict[str, Any],
    now: datetime,
) -> str:
    session_id = f"ses_{uuid.uuid4().hex[:24]}"
    opt_in = bool(metadata.get(OPT_IN, False))
    conn.execute(
        sa.insert(sessions).values(
            session_id=session_id,
            tenant_id=tenant_id,
            user_id=user_id,
            channel=channel,
            topic=topic,
            metadata=json.dumps(metadata, sort_keys=True),
            notifications_opt_in=opt_in,
            status="active",
            turn_count=0,
            memory_version=0,
            memory=json.dumps(memory_mod.initial(opt_in), sort_keys=True),
            created_at=now,
            updated_at=now,
        )
    )
    return session_id


def row(conn: Connection, tenant_id: str, session_id: str) -> sa.Row[tuple[object, ...]] | None:
    return conn.execute(
        sa.select(sessions).where(
            sessions.c.tenant_id == tenant_id, sessions.c.session_id == session_id
        )
    ).first()


def advance(
    conn: Connection,
    session_id: str,
    *,
    turn_count: int,
    memory: memory_mod.Memory,
    metadata: dict[str, Any],
    now: datetime,
) -> None:
    """Stores the state a completed turn leaves behind."""
    conn.execute(
        sa.update(sessions)
        .where(sessions.c.session_id == session_id)
        .values(
            turn_count=turn_count,
            memory_version=turn_count,
            memory=json.dumps(memory, sort_keys=True),
            metadata=json.dumps(metadata, sort_keys=True),
            notifications_opt_in=bool(metadata.get(OPT_IN, False)),
            updated_at=now,
        )
    )


def opted_in(conn: Connection, tenant_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(sessions.c.session_id).where(
            sessions.c.tenant_id == tenant_id,
            sessions.c.notifications_opt_in.is_(True),
            sessions.c.status == "active",
        )
    ).all()
    return [str(r[0]) for r in rows]
