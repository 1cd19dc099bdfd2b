"""The real risk service, from RPC-level tests, on the shared platform of the contract tests.

`RiskRig` calls the risk process of a running `ExecutionStack` (tests/support/execution_stack.py)
the way an internal caller does (service token and tenant, tests/support/rpc.py), reads the
audit service directly, and reaches the real execution service through the gateway: when a
switch engages, risk's `EnforceKillSwitch` goes to the real execution process, so a test
sees what enforcement really did (orders cancelled, positions flattened, audit events).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime.metadata import MD_USER_ID
from tests.support import rpc
from tests.support.execution_stack import ExecutionStack
from tests.support.stack import wait_for
from tests.support.trader import Trader, new_key

ROOT = Path(__file__).resolve().parents[2]
DEMO_POLICY: dict[str, Any] = json.loads((ROOT / "cli" / "demo-risk-policy.json").read_text())
OFFICER = ("risk-officer",)
TRADER = ("trader",)


def policy_doc(**limits: Any) -> dict[str, Any]:
    """The demo policy with some limits replaced (killSwitch.* and instruments.* by prefix)."""
    doc = copy.deepcopy(DEMO_POLICY)
    for key, value in limits.items():
        if key.startswith("killSwitch_"):
            doc["killSwitch"][key.removeprefix("killSwitch_")] = value
        elif key.startswith("instruments_"):
            doc["instruments"][key.removeprefix("instruments_")] = value
        else:
            doc["limits"][key] = value
    return doc


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def user_metadata(
    tenant: str, roles: tuple[str, ...], user: str = "olga"
) -> tuple[tuple[str, str | bytes], ...]:
    """Metadata of a call made on behalf of a user, as the gateway sends it."""
    return (*rpc.metadata(tenant, roles=roles), (MD_USER_ID, user))


def new_tenant(prefix: str = "rk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def order_intent(**fields: Any) -> risk_pb2.OrderIntent:
    """A market buy of 1 BTC-USD at a fresh mark of 1000 by deployment dep-1 of acc-1;
    `mark_age` (seconds, None for an undated mark) and any OrderIntent field override it."""
    mark_age = fields.pop("mark_age", 0.0)
    values: dict[str, Any] = {
        "order_id": f"ord_{uuid.uuid4().hex[:16]}",
        "deployment_id": "dep-1",
        "account_id": "acc-1",
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "1",
        "mark_price": "1000",
        "capital_allocation": "100000",
    }
    values.update(fields)
    intent = risk_pb2.OrderIntent(**values)
    if values["mark_price"] and mark_age is not None:
        intent.mark_time.CopyFrom(timestamp(datetime.now(UTC) - timedelta(seconds=mark_age)))
    return intent


@dataclass
class RiskRig:
    platform: ExecutionStack
    risk: risk_pb2_grpc.RiskServiceStub
    audit: audit_pb2_grpc.AuditServiceStub

    @classmethod
    def on(cls, platform: ExecutionStack) -> RiskRig:
        return cls(
            platform=platform,
            risk=risk_pb2_grpc.RiskServiceStub(platform.channel("risk")),
            audit=audit_pb2_grpc.AuditServiceStub(platform.channel("audit")),
        )

    @contextmanager
    def trader(self, tenant: str) -> Iterator[Trader]:
        """The tenant's user with every role, through the gateway (execution's routes)."""
        trader = Trader.open(self.platform, tenant)
        try:
            yield trader
        finally:
            trader.close()

    # -- policy ----------------------------------------------------------------------------

    def put_policy(
        self,
        tenant: str,
        doc: dict[str, Any],
        *,
        account: str = "",
        roles: tuple[str, ...] = OFFICER,
    ) -> risk_pb2.PolicyVersion:
        return self.risk.PutPolicy(
            risk_pb2.PutPolicyRequest(account_id=account, policy=struct(doc), reason="test limits"),
            metadata=user_metadata(tenant, roles),
        )

    # -- pre-trade -------------------------------------------------------------------------

    def intent(self, **fields: Any) -> risk_pb2.OrderIntent:
        return order_intent(**fields)

    def check_order(
        self, tenant: str, *, action: str = "", request_id: str | None = None, **fields: Any
    ) -> risk_pb2.RiskDecision:
        return self.risk.CheckOrder(
            risk_pb2.CheckOrderRequest(order=self.intent(**fields), action=action),
            metadata=rpc.metadata(tenant, request_id=request_id, caller="execution"),
        )

    def check_deployment(
        self, tenant: str, *, request_id: str | None = None, **fields: Any
    ) -> risk_pb2.RiskDecision:
        values: dict[str, Any] = {
            "deployment_id": f"dep_{uuid.uuid4().hex[:12]}",
            "account_id": "acc-1",
            "strategy_id": "trend-1",
            "instruments": ["BTC-USD"],
            "capital_allocation": "10000",
            "mode": "paper",
            "action": "create",
        }
        values.update(fields)
        return self.risk.CheckDeployment(
            risk_pb2.CheckDeploymentRequest(**values),
            metadata=rpc.metadata(tenant, request_id=request_id, caller="execution"),
        )

    # -- drawdown and kill switch ----------------------------------------------------------

    def report(
        self,
        tenant: str,
        equity: str,
        *,
        at: datetime,
        deployment: str = "dep-1",
        account: str = "acc-1",
        capital: str = "10000",
    ) -> risk_pb2.ReportEquityResponse:
        """Reports equity with all of (equity - capital) as unrealised P&L."""
        from decimal import Decimal

        unrealized = Decimal(equity) - Decimal(capital)
        return self.risk.ReportEquity(
            risk_pb2.ReportEquityRequest(
                account_id=account,
                deployment_id=deployment,
                equity=equity,
                realized_pnl="0",
                unrealized_pnl=str(unrealized),
                at=timestamp(at),
            ),
            metadata=rpc.metadata(tenant, caller="execution"),
        )

    def switch(self, tenant: str, scope: str, scope_id: str) -> risk_pb2.KillSwitch:
        return self.risk.GetKillSwitch(
            risk_pb2.KillSwitchRef(scope=scope, scope_id=scope_id), metadata=rpc.metadata(tenant)
        )

    def wait_enforcement(
        self, tenant: str, scope: str, scope_id: str, status: str, timeout: float = 10.0
    ) -> risk_pb2.KillSwitch:
        """The switch once its enforcement reached status (risk enforces in the background)."""

        def probe() -> risk_pb2.KillSwitch | None:
            switch = self.switch(tenant, scope, scope_id)
            return switch if switch.enforcement == status else None

        return wait_for(probe, timeout=timeout)

    def engage(
        self, tenant: str, scope: str, scope_id: str, *, roles: tuple[str, ...] = OFFICER
    ) -> risk_pb2.KillSwitch:
        return self.risk.EngageKillSwitch(
            risk_pb2.EngageKillSwitchRequest(
                ref=risk_pb2.KillSwitchRef(scope=scope, scope_id=scope_id), reason="test halt"
            ),
            metadata=user_metadata(tenant, roles),
        )

    def release(
        self, tenant: str, scope: str, scope_id: str, *, roles: tuple[str, ...] = OFFICER
    ) -> risk_pb2.KillSwitch:
        return self.risk.ReleaseKillSwitch(
            risk_pb2.ReleaseKillSwitchRequest(
                ref=risk_pb2.KillSwitchRef(scope=scope, scope_id=scope_id),
                reason="breach reviewed",
            ),
            metadata=user_metadata(tenant, roles),
        )

    # -- audit -----------------------------------------------------------------------------

    def events(self, tenant: str, **query: Any) -> list[dict[str, Any]]:
        reply = self.audit.Query(audit_pb2.QueryRequest(**query), metadata=rpc.metadata(tenant))
        return [
            json_format.MessageToDict(e, always_print_fields_with_no_presence=True)
            for e in reply.events
        ]

    def wait_events(
        self, tenant: str, count: int = 1, timeout: float = 10.0, **query: Any
    ) -> list[dict[str, Any]]:
        """The events once at least `count` match (the outbox ships asynchronously)."""

        def probe() -> list[dict[str, Any]] | None:
            found = self.events(tenant, **query)
            return found if len(found) >= count else None

        return wait_for(probe, timeout=timeout)

    def enforced_by_execution(self, trader: Trader, deployment_id: str) -> list[dict[str, Any]]:
        """Execution's `killswitch.enforced` events for the deployment (one per enforcement
        that found it), read once execution's outbox shipped everything it wrote so far: a
        later execution event (marks) is waited for, and the outbox ships in order."""
        barrier = f"req-barrier-{uuid.uuid4().hex[:12]}"
        marks = {"marks": [{"instrument": "ETH-USD", "price": "2000"}]}
        assert trader.post("/v1/sandbox/marks", marks, **{"X-Request-Id": barrier}).is_success
        self.wait_events(trader.tenant, request_id=barrier)
        return [
            e
            for e in self.events(trader.tenant, deployment_id=deployment_id)
            if e["type"] == "killswitch.enforced"
        ]

    def wait_types(
        self, tenant: str, types: set[str], timeout: float = 10.0, **query: Any
    ) -> list[dict[str, Any]]:
        """The events once every type in `types` is among them."""

        def probe() -> list[dict[str, Any]] | None:
            found = self.events(tenant, **query)
            return found if types <= {e["type"] for e in found} else None

        return wait_for(probe, timeout=timeout)


def resting_buys(trader: Trader, deployment_id: str, *prices: str) -> list[str]:
    """Limit buys of 1 BTC-USD at the given prices (below the mark), resting; their ids."""
    ids = []
    for price in prices:
        body = trader.order_body(deployment_id, "buy", "1", type="limit", limitPrice=price)
        response = trader.post("/v1/orders", body, new_key())
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "accepted", response.text
        ids.append(str(response.json()["orderId"]))
    return ids
