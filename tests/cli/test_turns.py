"""`gate4 turns send` against a live gateway."""

from __future__ import annotations

from cli.errors import EXIT_NOT_FOUND, EXIT_OK
from tests.support.live import RunCli, Tenant, gate4_stack, run_cli, tenant

__all__ = ["gate4_stack", "run_cli", "tenant"]


def test_send_prints_the_turn_and_a_retry_with_the_key_is_replayed(
    tenant: Tenant, run_cli: RunCli
) -> None:
    env = tenant.env()
    session_id = run_cli(["sessions", "create", "--topic", "t", "--lane", "cli"], env).json()[
        "sessionId"
    ]
    argv = [
        "turns",
        "send",
        session_id,
        "--message",
        "status",
        "--idempotency-key",
        "key-turn-0001",
    ]
    first = run_cli(argv, env)
    assert first.exit_code == EXIT_OK, first.stderr
    turn = first.json()
    assert turn["sessionId"] == session_id and turn["sequence"] == 1
    assert set(turn) >= {"reply", "contextMemory", "contextMemorySnapshot", "notifications"}
    assert "idempotency key key-turn-0001" in first.stderr
    again = run_cli(argv, env)
    assert again.exit_code == EXIT_OK
    assert again.json()["turnId"] == turn["turnId"]  # replayed, not appended twice


def test_notifications_can_be_switched_off_from_a_turn(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    session_id = run_cli(["sessions", "create", "--topic", "t"], env).json()["sessionId"]
    result = run_cli(["turns", "send", session_id, "-m", "help", "--no-notifications"], env)
    assert result.exit_code == EXIT_OK
    session = run_cli(["sessions", "get", session_id], env).json()
    assert session["contextMemory"]["preferences"]["notificationsOptIn"] is False


def test_send_to_an_unknown_session(tenant: Tenant, run_cli: RunCli) -> None:
    result = run_cli(["turns", "send", "ses_unknown", "--message", "hi"], tenant.env())
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.json()["code"] == "NOT_FOUND"
    assert "idempotency key " in result.stderr
