"""Fixtures shared by the contract tests.

Execution: `fake_risk` is a scriptable risk service and `execution_stack` the real audit,
execution and gateway processes in front of it (one per module); `POLICY` is the agreed
`risk-policy.v1` test document for tests that run against the real risk service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.execution.support import (
    ExecutionStack,
    FakeRisk,
    fake_risk_server,
    start_execution_stack,
)
from tests.risk.rig import RiskRig, running_risk
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


@pytest.fixture(scope="module")
def fake_risk_port() -> Iterator[tuple[FakeRisk, int]]:
    with fake_risk_server() as served:
        yield served


@pytest.fixture
def fake_risk(fake_risk_port: tuple[FakeRisk, int]) -> FakeRisk:
    """The module's fake risk service, reset to approving everything."""
    fake = fake_risk_port[0]
    fake.reset()
    return fake


@pytest.fixture(scope="module")
def execution_stack(
    fake_risk_port: tuple[FakeRisk, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExecutionStack]:
    fake, port = fake_risk_port
    stack = start_execution_stack(tmp_path_factory.mktemp("execution"), port)
    stack.risk = fake
    yield stack
    stack.stack.stop()


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


# -- risk (tests/risk/rig.py) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def risk_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RiskRig]:
    """A real risk process with the real audit process and a stand-in execution that records
    EnforceKillSwitch calls: checks and drawdown at the RPC level. Each test uses its own
    tenant."""
    with running_risk(tmp_path_factory.mktemp("risk-rig")) as rig:
        yield rig
