"""`gate4 sessions` against a live gateway."""

from __future__ import annotations

import json

from cli.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from tests.support.live import RunCli, Tenant, gate4_stack, run_cli, tenant

__all__ = ["gate4_stack", "run_cli", "tenant"]


def test_create_get_and_notifications(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    created = run_cli(
        [
            "sessions",
            "create",
            "--topic",
            "incident-triage",
            "--lane",
            "cli",
            "--meta",
            "ticket=INC-7",
        ],
        env,
    )
    assert created.exit_code == EXIT_OK, created.stderr
    session = created.json()
    assert session["metadata"] == {
        "ticket": "INC-7",
        "notificationsOptIn": True,
        "clientLane": "cli",
    }
    assert created.stderr == f"gate4: requestId {created.request_id}\n"

    got = run_cli(["sessions", "get", session["sessionId"], "--output", "table"], env)
    assert got.exit_code == EXIT_OK
    rows = dict(line.split(None, 1) for line in got.stdout.splitlines())
    assert rows["sessionId"] == session["sessionId"]
    assert rows["channel"] == "openclaw"
    assert json.loads(rows["metadata"]) == session["metadata"]

    listed = run_cli(["sessions", "notifications", session["sessionId"]], env)
    assert (listed.exit_code, listed.json()) == (EXIT_OK, {"notifications": []})
    table = run_cli(["sessions", "notifications", session["sessionId"], "-o", "table"], env)
    assert table.stdout == "notifications: 0\n"


def test_session_channel_and_notification_flag(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    web = run_cli(
        ["sessions", "create", "--topic", "t", "--session-channel", "web", "--no-notifications"],
        env,
    )
    assert web.exit_code == EXIT_OK
    assert web.json()["channel"] == "web"
    assert web.json()["metadata"] == {"notificationsOptIn": False}
    bad_flag = run_cli(
        ["sessions", "create", "--topic", "t"], {**env, "GATE4_NOTIFICATIONS_OPT_IN": "maybe"}
    )
    assert bad_flag.exit_code == EXIT_USAGE
    assert "GATE4_NOTIFICATIONS_OPT_IN" in bad_flag.stderr
    bad_meta = run_cli(["sessions", "create", "--topic", "t", "--meta", "novalue"], env)
    assert bad_meta.exit_code == EXIT_USAGE and "KEY=VALUE" in bad_meta.stderr


def test_unknown_session_is_not_found_with_its_request_id(tenant: Tenant, run_cli: RunCli) -> None:
    result = run_cli(
        ["sessions", "get", "ses_nope", "--client-request-id", "req:cli-sessions-1"], tenant.env()
    )
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.json()["requestId"] == "req:cli-sessions-1"
    assert "requestId req:cli-sessions-1" in result.stderr
