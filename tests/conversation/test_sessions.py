"""sessions.py on both backends: a session is created with its opt-in and initial memory,
loaded only by its own tenant, and advanced by a completed turn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format

from services.conversation import memory, sessions
from services.runtime import errors
from services.runtime.storage import Database

#: When the session is created, and when a turn advances it.
T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)
T1 = datetime(2026, 5, 4, 12, 5, tzinfo=UTC)


def create(db: Database, tenant: str = "t1", **metadata: Any) -> str:
    return db.write_sync(
        lambda c: sessions.create(c, tenant, "alice", "openclaw", "incident-triage", metadata, T0)
    )


def load(db: Database, session_id: str, tenant: str = "t1") -> Any:
    row = db.read_sync(lambda c: sessions.row(c, tenant, session_id))
    return sessions.message(row) if row is not None else None


def test_a_new_session_starts_active_with_its_opt_in_in_memory(db: Database) -> None:
    """A session starts active at turn 0 with its metadata and the initial memory of its opt-in."""
    session_id = create(db, notificationsOptIn=True, clientLane="skill")
    session = load(db, session_id)
    assert session_id.startswith("ses_")
    assert (session.tenant_id, session.user_id, session.channel) == ("t1", "alice", "openclaw")
    assert (session.topic, session.status, session.turn_count) == ("incident-triage", "active", 0)
    assert json_format.MessageToDict(session.metadata) == {
        "notificationsOptIn": True,
        "clientLane": "skill",
    }
    assert json_format.MessageToDict(session.context_memory) == json_format.MessageToDict(
        json_format.ParseDict(memory.initial(True), type(session.context_memory)())
    )
    assert session.context_memory_snapshot.version == 0
    assert db.read_sync(lambda c: sessions.opted_in(c, "t1")) == [session_id]


def test_an_empty_metadata_and_memory_are_present_on_the_wire(db: Database) -> None:
    """Empty metadata is still set on the message ({} for clients); no opt-in, no notifications."""
    session = load(db, create(db))
    assert session.HasField("metadata") and json_format.MessageToDict(session.metadata) == {}
    assert session.HasField("context_memory")
    assert db.read_sync(lambda c: sessions.opted_in(c, "t1")) == []


def test_a_session_is_loaded_only_by_its_tenant(db: Database) -> None:
    """Another tenant's session, and an unknown id, read as missing."""
    session_id = create(db)
    assert load(db, session_id, tenant="t2") is None
    assert load(db, "ses_missing") is None


def test_advance_stores_what_a_turn_leaves_and_versions_memory_by_turn(db: Database) -> None:
    """turn_count and memory_version move together; the opt-in follows the metadata."""
    session_id = create(db, notificationsOptIn=True)
    changed = memory.evolve(
        memory.initial(True), activeDeploymentId="dep_1", notificationsOptIn=False
    )
    db.write_sync(
        lambda c: sessions.advance(
            c,
            session_id,
            turn_count=3,
            memory=changed,
            metadata={"notificationsOptIn": False},
            now=T1,
        )
    )
    session = load(db, session_id)
    assert session.turn_count == 3 and session.context_memory_snapshot.version == 3
    assert session.created_at.ToDatetime(UTC) == T0 and session.updated_at.ToDatetime(UTC) == T1
    assert session.context_memory["activeDeploymentId"] == "dep_1"
    assert session.context_memory["preferences"]["notificationsOptIn"] is False
    assert db.read_sync(lambda c: sessions.opted_in(c, "t1")) == []


@pytest.mark.parametrize(
    ("channel", "topic", "metadata", "fields"),
    [
        ("fax", "t", {}, {"channel"}),
        ("web", "", {}, {"topic"}),
        ("web", "t", {"nested": {"a": 1}}, {"metadata.nested"}),
        ("web", "t", {"notificationsOptIn": "yes"}, {"metadata.notificationsOptIn"}),
        ("web", "t", {"clientLane": "fax"}, {"metadata.clientLane"}),
        ("web", "t", {f"k{i}": i for i in range(33)}, {"metadata"}),
    ],
)
def test_a_new_session_is_checked_field_by_field(
    channel: str, topic: str, metadata: dict[str, Any], fields: set[str]
) -> None:
    """Each bad field is named; the same session with good fields passes."""
    with pytest.raises(errors.ValidationFailed) as refused:
        sessions.check_new_session(channel, topic, metadata)
    assert {f.field for f in refused.value.field_errors} == fields
    sessions.check_new_session("api", "t", {"notificationsOptIn": False, "clientLane": "cli"})
