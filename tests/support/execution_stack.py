"""The real platform for execution tests, with the settings crash and retry tests need.

`start_execution_stack` runs the real audit, risk, execution and gateway processes with short
leases, fast retries and simulated venue faults for accounts named after them (`FAST_ENV`).
Risk decides for real: a test puts a `risk-policy.v1` for its own tenant first, and drives
refusals, kill switches and outages through the real risk service. `ExecutionStack` adds
what outage tests need: restarting execution with other settings, taking risk or execution
down and bringing it back. `execution_process` runs one more execution process (two
replicas on one PostgreSQL database) against the stack's risk and audit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from cli.devstack import PROCESSES, ManagedProcess, Stack, free_port, stack_env
from gate4.execution.v1 import execution_pb2, execution_pb2_grpc
from tests.support import rpc
from tests.support.stack import TEST_ENV, LiveStack, wait_for

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

#: What the execution tests need; conversation is left out.
NAMES = ["audit", "risk", "execution", "gateway"]

#: A tenant with no risk policy, used only to see whether the processes reach each other.
PROBE_TENANT = "probe-reachability"


@dataclass
class ExecutionStack(LiveStack):
    """Audit, risk, execution and the gateway, all real, on free loopback ports."""

    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _probe_headers: dict[str, str] = field(default_factory=dict)

    @property
    def execution(self) -> ManagedProcess:
        return self.stack.processes["execution"]

    @property
    def risk(self) -> ManagedProcess:
        return self.stack.processes["risk"]

    def channel(self, name: str) -> grpc.Channel:
        """A sync channel to one of the services (kept open for the stack's life)."""
        if name not in self._channels:
            self._channels[name] = rpc.channel(self.stack.ports[name])
        return self._channels[name]

    def stub(self) -> execution_pb2_grpc.ExecutionServiceStub:
        return execution_pb2_grpc.ExecutionServiceStub(self.channel("execution"))

    def stop(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self.stack.stop()

    # -- restarts and outages --------------------------------------------------------------

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

    @contextmanager
    def risk_down(self) -> Iterator[None]:
        """The risk process killed for the block; started again (same database) after it,
        and only returns once the gateway and execution reach it again."""
        self.risk.kill()
        try:
            yield
        finally:
            self.stack.restart("risk")
            self.wait_reachable()

    @contextmanager
    def execution_down(self) -> Iterator[None]:
        """The execution process killed for the block; started again after it."""
        self.execution.kill()
        try:
            yield
        finally:
            self.restart_execution()
            self.wait_reachable()

    def wait_reachable(self, timeout: float = 20.0) -> None:
        """Waits until the gateway reaches risk and execution reaches risk (gRPC channels
        reconnect with a backoff after a peer died). The probe tenant has no policy, so risk
        answers 404 for its policy and refuses its deployments: nothing is ever created."""
        if not self._probe_headers:
            self._probe_headers = self.headers(tenant=PROBE_TENANT)
        body = {"strategyId": "probe", "accountId": "acc-probe", "instruments": ["BTC-USD"]}

        def probe() -> bool:
            with self.client(self._probe_headers) as client:
                policy = client.get("/v1/risk/policy")
                created = client.post(
                    "/v1/deployments",
                    json={**body, "capitalAllocation": "1"},
                    headers={"Idempotency-Key": f"probe-{uuid.uuid4().hex}"},
                )
            return policy.status_code == 404 and created.status_code == 422

        wait_for(probe, timeout=timeout, interval=0.1)


def start_execution_stack(var_dir: Path, env: dict[str, str] | None = None) -> ExecutionStack:
    stack = Stack(var_dir, env={**TEST_ENV, **FAST_ENV, **(env or {})}, names=NAMES)
    try:
        stack.start(timeout=60)
    except Exception:
        stack.stop()
        raise
    return ExecutionStack(stack)


@contextmanager
def execution_process(
    var_dir: Path, name: str, platform: ExecutionStack, env: dict[str, str]
) -> Iterator[ManagedProcess]:
    """One more execution process (its own port and log) using the platform's risk and audit."""
    ports = {n: free_port() for n in PROCESSES}
    ports["risk"] = platform.stack.ports["risk"]
    ports["audit"] = platform.stack.ports["audit"]
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


def metadata(tenant: str, caller: str = "gateway") -> rpc.Metadata:
    return rpc.metadata(tenant, caller=caller)
