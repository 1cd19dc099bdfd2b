"""`gate4 killswitch` against a live gateway."""

from __future__ import annotations

from cli.errors import EXIT_OK, EXIT_USAGE
from tests.support.live import RunCli, Tenant, gate4_stack, run_cli, tenant

__all__ = ["gate4_stack", "run_cli", "tenant"]


def test_status_engage_list_release(tenant: Tenant, run_cli: RunCli) -> None:
    env = tenant.env()
    status = run_cli(["killswitch", "status", "tenant"], env)  # scope id: the configured tenant
    assert status.exit_code == EXIT_OK
    assert (status.json()["scopeId"], status.json()["engaged"]) == (tenant.tenant_id, False)

    engaged = run_cli(["killswitch", "engage", "tenant", "--reason", "incident drill"], env)
    assert engaged.exit_code == EXIT_OK
    assert (engaged.json()["engaged"], engaged.json()["trigger"]) == (True, "manual")

    listed = run_cli(["killswitch", "list", "--engaged-only", "-o", "table"], env)
    lines = listed.stdout.splitlines()
    assert lines[0] == "killSwitches: 1"
    assert lines[2].split()[:4] == ["tenant", tenant.tenant_id, "true", "manual"]

    released = run_cli(
        ["killswitch", "release", "tenant", tenant.tenant_id, "--reason", "drill over"], env
    )
    assert released.exit_code == EXIT_OK
    assert released.json()["engaged"] is False
    assert run_cli(["killswitch", "list", "--engaged-only"], env).json() == {"killSwitches": []}


def test_a_scope_other_than_tenant_needs_its_id(tenant: Tenant, run_cli: RunCli) -> None:
    result = run_cli(["killswitch", "status", "deployment"], tenant.env())
    assert result.exit_code == EXIT_USAGE
    assert "needs a SCOPE_ID" in result.stderr
    unknown_scope = run_cli(["killswitch", "status", "galaxy", "x"], tenant.env())
    assert unknown_scope.exit_code == EXIT_USAGE
