"""Test doubles and launchers for the execution service.

`FakeRisk` is a scriptable RiskService on a real gRPC port: it approves, refuses or fails as
the test says and records every request, so execution logic is tested without depending on
the risk rules. `start_execution_stack` runs the real audit, execution and gateway processes
against it; `execution_process` runs one more execution process (two replicas on one
PostgreSQL database).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cli.devstack import PROCESSES, ManagedProcess, Stack, free_port, stack_env
from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from gate4.risk.v1 import risk_pb2, risk_pb2_grpc
from tests.support import rpc
from tests.support.stack import TEST_ENV, LiveStack

POLICY_VERSION = "risk-policy.v1@7"

#: Short leases and fast retries keep crash and retry tests quick.
FAST_ENV = {
    "GATE4_EXECUTION_COMMAND_LEASE_SECONDS": "1.5",
    "GATE4_EXECUTION_RECONCILE_INTERVAL_SECONDS": "0.3",
    "GATE4_EXECUTION_RETRY_BASE_SECONDS": "0.01",
    "GATE4_EXECUTION_RETRY_MAX_BACKOFF_SECONDS": "0.05",
    "GATE4_EXECUTION_RETRY_MAX_ATTEMPTS": "4",
    "GATE4_EXECUTION_RETRY_BUDGET_CAPACITY": "6",
    "GATE4_EXECUTION_RETRY_BUDGET_REFILL_PER_SECOND": "0.01",
    # Accounts named after the fault they suffer (see services/execution/venue.py).
    "GATE4_PAPER_VENUE_FAULTS": (
        '{"acc-flaky": ["timeout", "timeout"], "acc-down": "timeout",'
        ' "acc-lost-ack": ["lost_ack"], "acc-reject": "reject"}'
    ),
}


@dataclass
class FakeRisk(risk_pb2_grpc.RiskServiceServicer):
    """mode: "approve", "refuse" (outcome `refuse_outcome`), "kill" (kill switch held),
    "refuse_orders" (every order refused, reduce-only too; deployments approved) or "down"
    (UNAVAILABLE). Like the real risk service, stops and reduce-only orders pass a held kill
    switch."""

    mode: str = "approve"
    refuse_outcome: str = "ORDER_NOTIONAL_LIMIT"
    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    trip: list[risk_pb2.KillSwitch] = field(default_factory=list)
    engaged: list[risk_pb2.KillSwitch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.mode, self.refuse_outcome = "approve", "ORDER_NOTIONAL_LIMIT"
            self.calls.clear()
            self.trip.clear()
            self.engaged.clear()

    def _record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self.lock:
            self.calls.append((method, request, metadata))
        if self.mode == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake risk is down")

    def _decide(self, reduces: bool) -> risk_pb2.RiskDecision:
        outcome = "APPROVED"
        if self.mode == "refuse" and not reduces:
            outcome = self.refuse_outcome
        elif self.mode == "kill" and not reduces:
            outcome = "KILL_SWITCH_ENGAGED"
        return risk_pb2.RiskDecision(
            approved=outcome == "APPROVED",
            outcome=outcome,
            reason=f"fake risk says {outcome}",
            policy_version=POLICY_VERSION,
            decision_id=f"dec_{uuid.uuid4().hex[:12]}",
        )

    def CheckOrder(self, request: Any, context: Any) -> risk_pb2.RiskDecision:
        self._record("CheckOrder", request, context)
        if self.mode == "refuse_orders":
            return risk_pb2.RiskDecision(
                approved=False, outcome=self.refuse_outcome, policy_version=POLICY_VERSION
            )
        return self._decide(request.order.reduce_only)

    def CheckDeployment(self, request: Any, context: Any) -> risk_pb2.RiskDecision:
        self._record("CheckDeployment", request, context)
        return self._decide(request.action == "stop")

    def ReportEquity(self, request: Any, context: Any) -> risk_pb2.ReportEquityResponse:
        self._record("ReportEquity", request, context)
        with self.lock:
            tripped, self.trip[:] = list(self.trip), []
        return risk_pb2.ReportEquityResponse(tripped=tripped)

    def ListKillSwitches(self, request: Any, context: Any) -> risk_pb2.ListKillSwitchesResponse:
        self._record("ListKillSwitches", request, context)
        return risk_pb2.ListKillSwitchesResponse(kill_switches=self.engaged)

    def requests(self, method: str) -> list[Any]:
        with self.lock:
            return [r for m, r, _ in self.calls if m == method]


@contextmanager
def fake_risk_server() -> Iterator[tuple[FakeRisk, int]]:
    # Only the RPCs execution calls are implemented; the others answer UNIMPLEMENTED.
    fake = FakeRisk()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    risk_pb2_grpc.add_RiskServiceServicer_to_server(fake, server)
    status = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    status.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, port
    finally:
        server.stop(0)


@dataclass
class ExecutionStack(LiveStack):
    """Audit, execution and the gateway, with risk played by a FakeRisk."""

    risk: FakeRisk | None = None

    @property
    def execution(self) -> ManagedProcess:
        return self.stack.processes["execution"]

    def stub(self) -> execution_pb2_grpc.ExecutionServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.stack.ports['execution']}")
        return execution_pb2_grpc.ExecutionServiceStub(channel)

    def restart_execution(self, **env: str) -> None:
        """Starts execution again (after a crash), with env changes ("" removes a variable)."""
        proc = self.execution
        proc.kill()
        for key, value in env.items():
            if value:
                proc.env[key] = value
            else:
                proc.env.pop(key, None)
        proc.start()
        proc.wait_ready(60)


def start_execution_stack(
    var_dir: Path, risk_port: int, env: dict[str, str] | None = None
) -> ExecutionStack:
    ports = {name: free_port() for name in PROCESSES}
    ports["risk"] = risk_port
    stack = Stack(
        var_dir,
        ports=ports,
        env={**TEST_ENV, **FAST_ENV, **(env or {})},
        names=["audit", "execution", "gateway"],
    )
    try:
        stack.start(timeout=60)
    except Exception:
        stack.stop()
        raise
    return ExecutionStack(stack)


@contextmanager
def execution_process(
    var_dir: Path, name: str, risk_port: int, env: dict[str, str]
) -> Iterator[ManagedProcess]:
    """One more execution process (its own port and log) with the given environment."""
    ports = {n: free_port() for n in PROCESSES}
    ports["risk"] = risk_port
    proc = ManagedProcess(
        "execution",
        stack_env(var_dir, ports, {**TEST_ENV, **FAST_ENV, **env}),
        var_dir / "logs" / f"{name}.log",
    )
    proc.start()
    try:
        proc.wait_ready(60)
        yield proc
    finally:
        proc.stop()


def stub_for(port: int) -> execution_pb2_grpc.ExecutionServiceStub:
    return execution_pb2_grpc.ExecutionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def deployment_request(account: str, **fields: Any) -> execution_pb2.CreateDeploymentRequest:
    values: dict[str, Any] = {
        "strategy_id": "trend-1",
        "account_id": account,
        "instruments": ["BTC-USD", "ETH-USD"],
        "capital_allocation": "100000",
        "mode": "paper",
        "idempotency_key": f"dep-{uuid.uuid4().hex}",
    }
    values.update(fields)
    return execution_pb2.CreateDeploymentRequest(**values)


def metadata(tenant: str) -> rpc.Metadata:
    return rpc.metadata(tenant)
