"""The execution side of the risk contract: pre-trade gates, equity reports, kill-switch reads.

Fail closed: any failure to get a decision (risk down, erroring, too slow) is
RISK_UNAVAILABLE and the command does not run. Equity reports and kill-switch reads are
best effort: they never fail the command that made them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc

from gate4.risk.v1 import risk_pb2
from services.execution.store import KillSwitchView
from services.runtime import errors, outcomes, scopes

if TYPE_CHECKING:
    from gate4.risk.v1.risk_pb2_grpc import RiskServiceAsyncStub

log = logging.getLogger("gate4.execution.risk")


def refusal(decision: risk_pb2.RiskDecision) -> errors.Gate4Error:
    """The error a refused command answers with: 423 for a held kill switch, else 422."""
    if decision.outcome == outcomes.KILL_SWITCH_ENGAGED:
        return errors.KillSwitchEngaged(decision.reason, outcome=decision.outcome)
    return errors.RiskLimitBreached(
        decision.reason or "refused by the pre-trade risk checks", outcome=decision.outcome
    )


def undecided(cause: errors.Gate4Error) -> errors.RiskUnavailable:
    """What a failed call to risk means for a command: no decision, so it does not run.
    The cause (risk down or too slow, or its own reason: its audit backlog is full, say) is
    kept in the detail."""
    return errors.RiskUnavailable(
        f"risk controls could not decide, so nothing was executed "
        f"({cause.error_code()}: {cause.detail})",
        outcome=outcomes.RISK_UNAVAILABLE,
    )


class RiskControls(Protocol):
    """What the command flows ask of risk (RiskGate over gRPC; in-memory fakes in tests)."""

    async def check_order(self, intent: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision: ...

    async def check_deployment(
        self, request: risk_pb2.CheckDeploymentRequest
    ) -> risk_pb2.RiskDecision: ...

    async def report_equity(
        self, request: risk_pb2.ReportEquityRequest
    ) -> list[risk_pb2.KillSwitch]: ...

    async def settle(self, settlements: list[risk_pb2.SettleOrderRequest]) -> None: ...

    async def switch_for(
        self, tenant_id: str, account_id: str, deployment_id: str
    ) -> KillSwitchView | None: ...

    def switches_changed(self) -> None:
        """A switch was enforced here: reads must not show what was cached before."""


Engaged = dict[tuple[str, str], risk_pb2.KillSwitch]


@dataclass
class _Fetched:
    generation: int
    at: float
    engaged: Engaged


class SwitchCache:
    """Risk's engaged kill switches per tenant, fetched at most once per `ttl` seconds per
    tenant however many reads ask (concurrent readers share one call). A read never shows a
    list fetched before the last `invalidate()`."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Engaged | None]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self.clock = clock
        self.generation = 0
        self._fetched: dict[str, _Fetched] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[Engaged | None]] = {}

    def invalidate(self) -> None:
        self.generation += 1
        self._fetched.clear()

    async def engaged(self, tenant_id: str) -> Engaged | None:
        """None when risk could not be asked."""
        known = self._fetched.get(tenant_id)
        fresh = known is not None and known.generation == self.generation
        if known is not None and fresh and self.clock() - known.at < self.ttl:
            return known.engaged
        key = (tenant_id, self.generation)
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(tenant_id, self.generation))
            self._inflight[key] = pending
        return await asyncio.shield(pending)

    async def _load(self, tenant_id: str, generation: int) -> Engaged | None:
        try:
            started = self.clock()
            engaged = await self.fetch()
            if engaged is not None and generation == self.generation:
                self._fetched[tenant_id] = _Fetched(generation, started, engaged)
            return engaged
        finally:
            self._inflight.pop((tenant_id, generation), None)


class RiskGate:
    def __init__(
        self,
        stub: RiskServiceAsyncStub,
        switch_cache_seconds: float = 0.0,
        read_timeout: float = 1.0,  # GATE4_EXECUTION_SWITCH_READ_TIMEOUT_SECONDS
    ) -> None:
        self.stub = stub
        self.read_timeout = read_timeout
        self.switches = SwitchCache(self._engaged, switch_cache_seconds)

    async def check_order(self, intent: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        try:
            return await self.stub.CheckOrder(risk_pb2.CheckOrderRequest(order=intent))
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("risk", exc, meaning=undecided) from None

    async def check_deployment(
        self, request: risk_pb2.CheckDeploymentRequest
    ) -> risk_pb2.RiskDecision:
        try:
            return await self.stub.CheckDeployment(request)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_peer("risk", exc, meaning=undecided) from None

    async def report_equity(
        self, request: risk_pb2.ReportEquityRequest
    ) -> list[risk_pb2.KillSwitch]:
        """Switches the report tripped; [] when risk could not be told (logged, not raised)."""
        try:
            reply = await self.stub.ReportEquity(request)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "equity report not delivered to risk",
                extra={"deployment_id": request.deployment_id, "code": exc.code().name},
            )
            return []
        return list(reply.tripped)

    async def settle(self, settlements: list[risk_pb2.SettleOrderRequest]) -> None:
        """Tells risk what became of approved orders, so their reservations are converted or
        released. Best effort: risk asks again (GetSettlements) for what it never heard."""
        for settlement in settlements:
            try:
                await self.stub.SettleOrder(settlement)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "order settlement not delivered to risk",
                    extra={"order_id": settlement.order_id, "code": exc.code().name},
                )

    async def switch_for(
        self, tenant_id: str, account_id: str, deployment_id: str
    ) -> KillSwitchView | None:
        """The engaged switch holding the deployment (tenant, account, then deployment scope);
        None when risk cannot be asked."""
        engaged = await self.switches.engaged(tenant_id)
        if engaged is None:
            return None
        for scope, scope_id in (
            (scopes.TENANT, tenant_id),
            (scopes.ACCOUNT, account_id),
            (scopes.DEPLOYMENT, deployment_id),
        ):
            switch = engaged.get((scope, scope_id))
            if switch is not None:
                return KillSwitchView(True, scope, scope_id, switch.reason or switch.trigger)
        return KillSwitchView()

    def switches_changed(self) -> None:
        self.switches.invalidate()

    async def _engaged(self) -> Engaged | None:
        """The calling tenant's engaged switches (the tenant travels in the call's metadata)."""
        try:
            reply = await self.stub.ListKillSwitches(
                risk_pb2.ListKillSwitchesRequest(engaged_only=True), timeout=self.read_timeout
            )
        except grpc.aio.AioRpcError:
            return None
        return {(s.scope, s.scope_id): s for s in reply.kill_switches if s.engaged}
