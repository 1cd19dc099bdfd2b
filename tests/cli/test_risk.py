"""`gate4 risk policy` against a live gateway."""

from __future__ import annotations

import json
from pathlib import Path

from cli.errors import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from tests.support.live import (
    DEMO_POLICY,
    RunCli,
    Tenant,
    gate4_stack,
    new_tenant,
    run_cli,
    tenant,
)
from tests.support.stack import LiveStack

__all__ = ["gate4_stack", "run_cli", "tenant"]


def test_validate_put_get_versions(tenant: Tenant, run_cli: RunCli, tmp_path: Path) -> None:
    env = tenant.env()
    none_yet = run_cli(["risk", "policy", "get"], env)
    assert none_yet.exit_code == EXIT_NOT_FOUND  # no policy: side effects are refused

    valid = run_cli(["risk", "policy", "validate", "--file", str(DEMO_POLICY)], env)
    assert valid.exit_code == EXIT_OK
    assert valid.json()["valid"] is True

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": "risk-policy.v1"}))
    invalid = run_cli(["risk", "policy", "validate", "--file", str(broken)], env)
    assert invalid.exit_code == EXIT_OK  # an invalid policy is an answer, not an error
    assert invalid.json()["valid"] is False and invalid.json()["problems"]

    refused = run_cli(["risk", "policy", "put", "--file", str(broken), "--reason", "x"], env)
    assert refused.exit_code == EXIT_USAGE
    assert refused.json()["code"] == "RISK_POLICY_INVALID"

    put = run_cli(["risk", "policy", "put", "--file", str(DEMO_POLICY), "--reason", "initial"], env)
    assert put.exit_code == EXIT_OK
    assert (put.json()["version"], put.json()["reason"]) == (1, "initial")
    assert run_cli(["risk", "policy", "get"], env).json()["digest"] == valid.json()["digest"]
    versions = run_cli(["risk", "policy", "versions", "-o", "table"], env).stdout.splitlines()
    assert versions[0] == "versions: 1"
    assert versions[2].split()[:2] == ["1", "true"]


def test_local_file_problems_are_usage_errors(
    tenant: Tenant, run_cli: RunCli, tmp_path: Path
) -> None:
    env = tenant.env()
    missing = run_cli(["risk", "policy", "validate", "--file", str(tmp_path / "nope.json")], env)
    assert missing.exit_code == EXIT_USAGE and "cannot read policy file" in missing.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = run_cli(["risk", "policy", "validate", "--file", str(tmp_path / "bad.json")], env)
    assert bad.exit_code == EXIT_USAGE and "not valid JSON" in bad.stderr
    assert bad.stdout == ""


def test_putting_a_policy_needs_the_risk_officer_role(
    gate4_stack: LiveStack, run_cli: RunCli
) -> None:
    trader = new_tenant(gate4_stack, roles=["viewer", "trader"])
    result = run_cli(
        ["risk", "policy", "put", "--file", str(DEMO_POLICY), "--reason", "x"], trader.env()
    )
    assert result.exit_code == EXIT_AUTH
    assert result.json()["code"] == "FORBIDDEN"
