"""Context memory: the structured state the assistant keeps per session.

Memory is plain JSON of strings, booleans, null and nested objects (no numbers, which would
change form across protobuf's Struct), so its canonical JSON and digest are stable. It holds
nothing specific to one session (no ids of the session, times or request ids), so two
sessions fed the same inputs against the same platform state have identical snapshots.
"""

from __future__ import annotations

import copy
from typing import Any

from gate4.conversation.v1 import conversation_pb2
from services.runtime.canonical import digest

Memory = dict[str, Any]


def initial(notifications_opt_in: bool) -> Memory:
    return {
        "activeDeploymentId": "",
        "lastOrderId": "",
        "lastIntent": "",
        "pendingConfirmation": None,
        "preferences": {"notificationsOptIn": notifications_opt_in},
    }


def evolve(memory: Memory, **changes: Any) -> Memory:
    """A changed copy; the stored memory of a turn is never mutated in place."""
    out = copy.deepcopy(memory)
    for key, value in changes.items():
        if key == "notificationsOptIn":
            out.setdefault("preferences", {})["notificationsOptIn"] = value
        else:
            out[key] = value
    return out


def snapshot(version: int, memory: Memory) -> conversation_pb2.ContextMemorySnapshot:
    snap = conversation_pb2.ContextMemorySnapshot(version=version, digest=digest(memory))
    snap.content.SetInParent()
    snap.content.update(memory)
    return snap
