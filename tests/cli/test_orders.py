"""`gate4 orders` against a live gateway."""

from __future__ import annotations

from cli.errors import EXIT_CONFLICT, EXIT_OK, EXIT_RISK_REJECTED, EXIT_USAGE
from tests.support.live import RunCli, Tenant, deploy, gate4_stack, run_cli, tenant

__all__ = ["gate4_stack", "run_cli", "tenant"]


def submit(deployment_id: str, *extra: str) -> list[str]:
    return ["orders", "submit", "--deployment", deployment_id, "--instrument", "BTC-USD", *extra]


def test_submit_get_list_and_refusals(tenant: Tenant, run_cli: RunCli) -> None:
    deployment_id = deploy(tenant)
    env = tenant.env()
    placed = run_cli(submit(deployment_id, "--side", "buy", "--quantity", "0.1"), env)
    assert placed.exit_code == EXIT_OK, placed.stdout
    order = placed.json()
    assert (order["side"], order["type"], order["quantity"]) == ("buy", "market", "0.1")
    assert order["outcome"] == "APPROVED"

    got = run_cli(["orders", "get", order["orderId"]], env)
    assert got.json()["orderId"] == order["orderId"]
    listed = run_cli(["orders", "list", "--deployment", deployment_id, "-o", "table"], env)
    assert listed.stdout.splitlines()[0] == "orders: 1"
    assert order["orderId"] in listed.stdout

    too_big = run_cli(submit(deployment_id, "--side", "buy", "--quantity", "100"), env)
    assert too_big.exit_code == EXIT_RISK_REJECTED
    assert too_big.json()["outcome"] == "ORDER_QUANTITY_LIMIT"
    assert "outcome ORDER_QUANTITY_LIMIT" in too_big.stderr

    no_price = run_cli(
        submit(deployment_id, "--side", "sell", "--type", "limit", "--quantity", "1"), env
    )
    assert no_price.exit_code == EXIT_USAGE
    assert no_price.json()["code"] == "VALIDATION_FAILED"

    if order["status"] == "filled":
        cancel = run_cli(["orders", "cancel", order["orderId"], "--reason", "too late"], env)
        assert cancel.exit_code == EXIT_CONFLICT
        assert cancel.json()["code"] == "STATE_CONFLICT"
