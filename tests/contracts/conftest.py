"""Fixtures shared by the contract tests.

`execution_stack` is one real platform (audit, risk, execution, gateway) for the whole
session, with the fast leases, retries and venue faults of tests/support/execution_stack.py; the
execution and risk contract tests share it, each test with its own tenant. `risk_rig` calls
its risk service at the RPC level. `POLICY` is the agreed `risk-policy.v1` test document;
`TRADING_POLICY` is the same with a price collar wide enough for the resting limit orders
the execution tests place far from the mark.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.execution_stack import ExecutionStack, start_execution_stack
from tests.support.risk_rig import RiskRig
from tests.support.stack import wait_for

POLICY: dict[str, Any] = {
    "schema": "risk-policy.v1",
    "name": "test",
    "limits": {
        "maxOrderNotional": "50000",
        "maxOrderQuantity": "10",
        "maxPositionNotional": "200000",
        "maxOpenOrders": 20,
        "orderRate": {"maxOrders": 30, "windowSeconds": 60},
        "priceCollarPct": "5",
        "markMaxAgeSeconds": 300,
        "maxCapitalAllocation": "1000000",
        "dailyLossLimit": "10000",
    },
    "instruments": {"allowed": ["BTC-USD", "ETH-USD"], "restricted": []},
    "killSwitch": {"maxDrawdownPct": "10", "confirmations": 3, "flattenOnTrip": True},
}

#: The version label decisions carry once a tenant's first policy is put.
POLICY_VERSION = "risk-policy.v1@1"


def policy(**limits: Any) -> dict[str, Any]:
    """The agreed policy with limits replaced (killSwitch.* by the killSwitch_ prefix)."""
    doc = copy.deepcopy(POLICY)
    for key, value in limits.items():
        if key.startswith("killSwitch_"):
            doc["killSwitch"][key.removeprefix("killSwitch_")] = value
        else:
            doc["limits"][key] = value
    return doc


TRADING_POLICY = policy(priceCollarPct="60")


@pytest.fixture(scope="session")
def execution_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExecutionStack]:
    stack = start_execution_stack(tmp_path_factory.mktemp("execution"))
    yield stack
    stack.stop()


def new_tenant(prefix: str = "ex") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def audit_events(
    client: httpx.Client, wanted: set[str], timeout: float = 10.0, **query: str
) -> list[dict[str, Any]]:
    """The events for the query once every wanted type is among them."""

    def probe() -> list[dict[str, Any]] | None:
        reply = client.get("/v1/audit/events", params={**query, "limit": "500"})
        assert reply.status_code == 200, reply.text
        events: list[dict[str, Any]] = reply.json()["events"]
        return events if wanted <= {e["type"] for e in events} else None

    return wait_for(probe, timeout=timeout)


# -- risk (tests/support/risk_rig.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def risk_rig(execution_stack: ExecutionStack) -> RiskRig:
    """The platform's risk process at the RPC level, its audit service, and the real
    execution service behind them (risk's EnforceKillSwitch reaches it). Each test uses its
    own tenant."""
    return RiskRig.on(execution_stack)
