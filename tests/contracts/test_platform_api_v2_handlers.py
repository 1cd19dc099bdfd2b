"""Runbook A's three routes: success shapes, validation, auth and tenancy, all canonical."""

from __future__ import annotations

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


@pytest.fixture
def client(live_stack: LiveStack) -> Any:
    with live_stack.client(live_stack.headers(tenant="v2-handlers")) as c:
        yield c


def _session(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post(SESSIONS, json={**REPRO, **overrides})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_session_runbook_repro(client: httpx.Client) -> None:
    response = client.post(SESSIONS, json=REPRO, headers={"X-Request-Id": "req-v2-create-0001"})
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-v2-create-0001"
    body = response.json()
    assert set(body) >= {
        "sessionId", "channel", "topic", "metadata", "contextMemory", "contextMemorySnapshot",
        "createdAt", "updatedAt", "status", "turnCount", "pendingNotificationCount",
    }  # fmt: skip
    assert body["channel"] == "openclaw" and body["topic"] == "incident-triage"
    assert body["metadata"] == {"notificationsOptIn": True}
    assert body["status"] == "active" and body["turnCount"] == 0
    assert body["createdAt"].endswith("Z")
    snapshot = body["contextMemorySnapshot"]
    assert snapshot["version"] == 0 and len(snapshot["digest"]) == 64


def test_get_session_returns_the_same_session(client: httpx.Client) -> None:
    created = _session(client)
    fetched = client.get(f"{SESSIONS}/{created['sessionId']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_turn_success_shape(client: httpx.Client) -> None:
    session = _session(client)
    response = client.post(
        f"{SESSIONS}/{session['sessionId']}/turns",
        json={"message": "help"},
        headers={"X-Request-Id": "req-v2-turn-00001"},
    )
    assert response.status_code == 201, response.text
    turn = response.json()
    assert set(turn) >= {
        "turnId", "sessionId", "sequence", "message", "reply", "contextMemory",
        "contextMemorySnapshot", "notifications", "requestId", "createdAt",
    }  # fmt: skip
    assert turn["requestId"] == "req-v2-turn-00001"
    assert turn["sequence"] == 1 and turn["sessionId"] == session["sessionId"]
    assert "status" in turn["reply"]["text"] and turn["reply"]["actions"] == []
    assert turn["notifications"] == []
    assert turn["contextMemorySnapshot"]["content"] == turn["contextMemory"]
    assert turn["contextMemorySnapshot"]["version"] == 1
    after = client.get(f"{SESSIONS}/{session['sessionId']}").json()
    assert after["turnCount"] == 1
    assert after["contextMemorySnapshot"] == turn["contextMemorySnapshot"]


@pytest.mark.parametrize(
    "path_suffix,body,field",
    [
        ("", {**REPRO, "channel": "sms"}, "channel"),
        ("", {"channel": "openclaw"}, "topic"),
        ("", {**REPRO, "metadata": {"notificationsOptIn": 1}}, "metadata.notificationsOptIn"),
        ("/turns", {"message": ""}, "message"),
        ("/turns", {}, "message"),
        ("/turns", {"message": "hi", "metadata": {"colour": "red"}}, "metadata.colour"),
        ("/turns", {"message": "x" * 4001}, "message"),
    ],
)
def test_validation_errors_are_canonical(
    client: httpx.Client, path_suffix: str, body: dict[str, Any], field: str
) -> None:
    url = SESSIONS
    if path_suffix:
        url = f"{SESSIONS}/{_session(client)['sessionId']}{path_suffix}"
    problem = assert_problem(client.post(url, json=body), 400, "VALIDATION_FAILED")
    assert field in [e["field"] for e in problem["errors"]]


def test_unknown_session_is_404_on_get_and_turn(client: httpx.Client) -> None:
    assert_problem(client.get(f"{SESSIONS}/ses_missing"), 404, "NOT_FOUND")
    assert_problem(
        client.post(f"{SESSIONS}/ses_missing/turns", json={"message": "help"}), 404, "NOT_FOUND"
    )


def test_auth_and_tenant_errors_on_every_route(live_stack: LiveStack, client: httpx.Client) -> None:
    session_id = _session(client)["sessionId"]
    routes = [
        ("POST", SESSIONS, REPRO),
        ("GET", f"{SESSIONS}/{session_id}", None),
        ("POST", f"{SESSIONS}/{session_id}/turns", {"message": "help"}),
    ]
    good = live_stack.headers(tenant="v2-handlers")
    for method, url, body in routes:
        with live_stack.client() as anonymous:
            assert_problem(anonymous.request(method, url, json=body), 401, "UNAUTHENTICATED")
        wrong_tenant = {**good, "X-Tenant-Id": "someone-else"}
        with live_stack.client(wrong_tenant) as other:
            assert_problem(other.request(method, url, json=body), 403, "TENANT_MISMATCH")
    # Another tenant with valid credentials cannot tell the session exists.
    with live_stack.client(live_stack.headers(tenant="v2-intruder")) as intruder:
        assert_problem(intruder.get(f"{SESSIONS}/{session_id}"), 404, "NOT_FOUND")
        assert_problem(
            intruder.post(f"{SESSIONS}/{session_id}/turns", json={"message": "help"}),
            404,
            "NOT_FOUND",
        )
    # A viewer reads but may not converse.
    with live_stack.client(live_stack.headers(tenant="v2-handlers", roles=["viewer"])) as viewer:
        assert viewer.get(f"{SESSIONS}/{session_id}").status_code == 200
        assert_problem(
            viewer.post(f"{SESSIONS}/{session_id}/turns", json={"message": "help"}),
            403,
            "FORBIDDEN",
        )


def test_unknown_input_gets_help_not_an_error(client: httpx.Client) -> None:
    session_id = _session(client)["sessionId"]
    turn = client.post(f"{SESSIONS}/{session_id}/turns", json={"message": "make me rich"}).json()
    assert turn["reply"]["text"].startswith("I did not understand")
    assert turn["contextMemory"]["lastIntent"] == "unknown"
