"""Context memory: deterministic across retries and sessions, versioned by turn, serialised."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.support.problems import assert_problem
from tests.support.stack import LiveStack

SESSIONS = "/v2/conversations/sessions"
REPRO = {
    "channel": "openclaw",
    "topic": "incident-triage",
    "metadata": {"notificationsOptIn": True},
}
SCRIPT = [
    "help",
    "status",
    "order ord_missing",
    "stop dep_missing",
    "kill switch",
    "notifications off",
]


@pytest.fixture
def client(live_stack: LiveStack) -> Any:
    with live_stack.client(live_stack.headers(tenant="memory")) as c:
        yield c


def _session(client: httpx.Client) -> str:
    return str(client.post(SESSIONS, json=REPRO).json()["sessionId"])


def _turn(
    client: httpx.Client, session_id: str, message: str, key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"{SESSIONS}/{session_id}/turns", json={"message": message}, headers=headers)


def test_retry_with_the_same_key_returns_the_identical_turn(client: httpx.Client) -> None:
    session_id = _session(client)
    first = _turn(client, session_id, "status", key="turn-retry-0001")
    assert first.status_code == 201
    again = _turn(client, session_id, "status", key="turn-retry-0001")
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # The retry did not advance memory.
    session = client.get(f"{SESSIONS}/{session_id}").json()
    assert session["turnCount"] == 1
    assert session["contextMemorySnapshot"] == first.json()["contextMemorySnapshot"]


def test_same_key_with_another_message_is_422(client: httpx.Client) -> None:
    session_id = _session(client)
    assert _turn(client, session_id, "status", key="turn-reuse-0001").status_code == 201
    assert_problem(
        _turn(client, session_id, "help", key="turn-reuse-0001"), 422, "IDEMPOTENCY_KEY_REUSED"
    )


def test_versions_progress_one_per_turn(client: httpx.Client) -> None:
    session_id = _session(client)
    versions = [
        _turn(client, session_id, m).json()["contextMemorySnapshot"]["version"] for m in SCRIPT
    ]
    assert versions == list(range(1, len(SCRIPT) + 1))


def test_two_sessions_with_the_same_inputs_have_identical_snapshots(client: httpx.Client) -> None:
    a, b = _session(client), _session(client)
    snaps_a = [_turn(client, a, m).json()["contextMemorySnapshot"] for m in SCRIPT]
    snaps_b = [_turn(client, b, m).json()["contextMemorySnapshot"] for m in SCRIPT]
    assert snaps_a == snaps_b
    # And the digest is the SHA-256 of the canonical JSON of the content.
    import hashlib
    import json

    for snap in snaps_a:
        canonical = json.dumps(
            snap["content"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert snap["digest"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_memory_tracks_the_conversation(client: httpx.Client) -> None:
    session_id = _session(client)
    proposal = _turn(client, session_id, "stop dep_missing").json()
    # Reading the deployment failed (it does not exist): nothing is pending.
    assert proposal["contextMemory"]["pendingConfirmation"] is None
    assert proposal["reply"]["actions"][0]["status"] == "refused"
    assert proposal["reply"]["actions"][0]["outcome"] == "NOT_FOUND"
    off = _turn(client, session_id, "notifications off").json()
    assert off["contextMemory"]["preferences"]["notificationsOptIn"] is False
    session = client.get(f"{SESSIONS}/{session_id}").json()
    assert session["metadata"]["notificationsOptIn"] is False
    confirm = _turn(client, session_id, "yes").json()
    assert confirm["reply"]["text"] == "There is nothing waiting for confirmation."


def test_concurrent_turns_never_interleave(client: httpx.Client, live_stack: LiveStack) -> None:
    session_id = _session(client)
    headers = live_stack.headers(tenant="memory")
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        with live_stack.client(headers) as c:
            response = _turn(c, session_id, "status")
        with lock:
            results.append(response)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r.status_code == 201]
    lost = [r for r in results if r.status_code != 201]
    assert won, [r.text for r in results]
    for r in lost:
        assert_problem(r, 409, "STATE_CONFLICT")
    sequences = sorted(r.json()["sequence"] for r in won)
    assert sequences == list(range(1, len(won) + 1))
    session = client.get(f"{SESSIONS}/{session_id}").json()
    assert session["turnCount"] == len(won)
    assert session["contextMemorySnapshot"]["version"] == len(won)
