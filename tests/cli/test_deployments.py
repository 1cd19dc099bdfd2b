"""`gate4 deployments` against a live gateway."""

from __future__ import annotations

from cli.errors import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_OK
from tests.support.live import RunCli, Tenant, gate4_stack, ready_to_trade, run_cli, tenant

__all__ = ["gate4_stack", "run_cli", "tenant"]

CREATE = [
    "deployments", "create", "--strategy", "mean-reversion-1", "--account", "acc_demo",
    "--instrument", "BTC-USD", "--capital", "10000", "--idempotency-key", "key-deploy-01",
]  # fmt: skip


def test_create_list_get_stop(tenant: Tenant, run_cli: RunCli) -> None:
    env = ready_to_trade(tenant).env()
    created = run_cli(CREATE, env)
    assert created.exit_code == EXIT_OK, created.stdout
    deployment = created.json()
    assert (deployment["state"], deployment["instruments"]) == ("running", ["BTC-USD"])
    assert run_cli(CREATE, env).json()["deploymentId"] == deployment["deploymentId"]  # replay

    table = run_cli(["deployments", "list", "--state", "running", "-o", "table"], env)
    lines = table.stdout.splitlines()
    assert lines[0] == "deployments: 1"
    assert lines[1].split() == [
        "DEPLOYMENTID",
        "STATE",
        "ACCOUNTID",
        "STRATEGYID",
        "EQUITY",
        "DRAWDOWN",
    ]
    assert lines[2].split()[:3] == [deployment["deploymentId"], "running", "acc_demo"]

    got = run_cli(["deployments", "get", deployment["deploymentId"]], env)
    assert got.json()["deploymentId"] == deployment["deploymentId"]

    stop = ["deployments", "stop", deployment["deploymentId"], "--reason", "cli test"]
    stopped = run_cli(stop, env)
    assert stopped.exit_code == EXIT_OK
    assert stopped.json()["state"] in ("stopping", "stopped")
    again = run_cli(stop, env)  # a new key: a second stop, which the state machine refuses
    assert again.exit_code == EXIT_CONFLICT
    assert again.json()["code"] == "STATE_CONFLICT"


def test_stop_of_an_unknown_deployment(tenant: Tenant, run_cli: RunCli) -> None:
    result = run_cli(["deployments", "stop", "dep_unknown", "--flatten"], tenant.env())
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.json()["requestId"] in result.stderr
