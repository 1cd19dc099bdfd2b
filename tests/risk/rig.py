"""A real risk process (with the real audit process) for RPC-level tests.

Execution is a stand-in served from the test process: it records every EnforceKillSwitch
risk sends and answers as the test tells it, so enforcement is observable without
depending on the execution service. Calls carry the service token and tenant the way an
internal caller's do (tests/support/rpc.py).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from cli.devstack import PROCESSES, Stack, free_port
from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from services.runtime.correlation import MD_USER_ID
from tests.support import rpc
from tests.support.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEMO_POLICY: dict[str, Any] = json.loads(
    (ROOT / "deploy" / "local" / "demo-risk-policy.json").read_text()
)
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


class FakeExecution(execution_pb2_grpc.ExecutionServiceServicer):
    """Records EnforceKillSwitch calls; fails them with UNAVAILABLE while `failing` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, execution_pb2.EnforceKillSwitchRequest]] = []
        self.failing = False
        self._lock = threading.Lock()

    def EnforceKillSwitch(
        self, request: execution_pb2.EnforceKillSwitchRequest, context: grpc.ServicerContext
    ) -> execution_pb2.EnforceKillSwitchResponse:
        tenant = dict(context.invocation_metadata()).get("x-tenant-id", "")
        with self._lock:
            self.calls.append((str(tenant), request))
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "execution is down (test)")
        flatten = ["ord_flat_1"] if request.flatten else []
        return execution_pb2.EnforceKillSwitchResponse(
            cancelled_order_ids=["ord_open_1", "ord_open_2"], flatten_order_ids=flatten
        )

    def calls_for(self, tenant: str) -> list[execution_pb2.EnforceKillSwitchRequest]:
        with self._lock:
            return [req for t, req in self.calls if t == tenant]


@dataclass
class RiskRig:
    stack: Stack
    risk: risk_pb2_grpc.RiskServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    execution: FakeExecution
    channels: list[grpc.Channel] = field(default_factory=list)

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
            metadata=rpc.metadata(tenant, request_id=request_id),
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
            metadata=rpc.metadata(tenant, request_id=request_id),
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
            metadata=rpc.metadata(tenant),
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

    def wait_types(
        self, tenant: str, types: set[str], timeout: float = 10.0, **query: Any
    ) -> list[dict[str, Any]]:
        """The events once every type in `types` is among them."""

        def probe() -> list[dict[str, Any]] | None:
            found = self.events(tenant, **query)
            return found if types <= {e["type"] for e in found} else None

        return wait_for(probe, timeout=timeout)


@contextmanager
def running_risk(var_dir: Path, env: dict[str, str] | None = None) -> Iterator[RiskRig]:
    """audit + risk as real processes, execution as the in-process FakeExecution."""
    fake = FakeExecution()  # type: ignore[abstract]  # only EnforceKillSwitch is served
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    execution_pb2_grpc.add_ExecutionServiceServicer_to_server(fake, server)
    ports = {name: free_port() for name in PROCESSES}
    server.add_insecure_port(f"127.0.0.1:{ports['execution']}")
    server.start()
    stack = Stack(var_dir, ports=ports, names=["audit", "risk"], env=env)
    channels: list[grpc.Channel] = []
    try:
        stack.start(timeout=60)
        channels = [rpc.channel(ports["risk"]), rpc.channel(ports["audit"])]
        yield RiskRig(
            stack=stack,
            risk=risk_pb2_grpc.RiskServiceStub(channels[0]),
            audit=audit_pb2_grpc.AuditServiceStub(channels[1]),
            execution=fake,
            channels=channels,
        )
    finally:
        for ch in channels:
            ch.close()
        stack.stop()
        server.stop(0)


def settle(seconds: float = 0.05) -> None:
    """A short pause for background work that has nothing to poll for."""
    time.sleep(seconds)
