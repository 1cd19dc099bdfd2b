"""`gate4 audit` against a live gateway."""

from __future__ import annotations

from cli.errors import EXIT_OK, EXIT_USAGE
from tests.support.live import RunCli, Tenant, gate4_stack, run_cli, tenant
from tests.support.stack import wait_for

__all__ = ["gate4_stack", "run_cli", "tenant"]


def test_events_by_request_id_and_session_and_chain_verify(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    created = run_cli(["sessions", "create", "--topic", "audit", "--lane", "cli"], env)
    session_id = created.json()["sessionId"]

    def events_of_request() -> list[dict[str, str]] | None:
        result = run_cli(["audit", "events", "--request-id", created.request_id], env)
        assert result.exit_code == EXIT_OK
        events: list[dict[str, str]] = result.json()["events"]
        return events or None

    (event,) = wait_for(events_of_request)
    assert (event["type"], event["sessionId"], event["channel"]) == (
        "conversation.session.created",
        session_id,
        "openclaw",
    )
    table = run_cli(["audit", "events", "--session", session_id, "--output", "table"], env)
    lines = table.stdout.splitlines()
    assert lines[0] == "events: 1"
    assert lines[1].split()[:4] == ["SEQUENCE", "OCCURREDAT", "TYPE", "OUTCOME"]
    assert created.request_id in lines[2]

    verified = run_cli(["audit", "verify"], env)
    assert verified.exit_code == EXIT_OK
    assert verified.json()["valid"] is True and verified.json()["tenantId"] == tenant.tenant_id


def test_a_malformed_filter_is_the_apis_400(tenant: Tenant, run_cli: RunCli) -> None:
    result = run_cli(["audit", "events", "--since", "yesterday"], tenant.env())
    assert result.exit_code == EXIT_USAGE
    assert result.json()["status"] == 400
