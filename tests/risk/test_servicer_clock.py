"""The risk servicer takes its times from its clock alone: a policy version, a drawdown trip
and its evidence, a manual engagement with the scope's drawdown evidence, a release. With a
ManualClock each carries exactly the time the test set, and nothing waits."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

from google.protobuf import timestamp_pb2

from gate4.risk.v1 import risk_pb2
from services.risk.enforcement import Enforcer
from services.risk.servicer import RiskServicer
from services.runtime import correlation, roles
from services.runtime.resilience import ManualClock
from tests.risk.conftest import T0, RiskStore
from tests.risk.test_enforcement import FakeExecution
from tests.support.risk_rig import policy_doc, struct

NO_CONTEXT = cast(Any, None)  # the servicer's methods here do not use the call's context


def at(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=T0.tzinfo)


def test_policy_switches_and_evidence_carry_the_clocks_time(running: RiskStore) -> None:
    clock = ManualClock(T0)
    enforcer = Enforcer(running.db, running.outbox, cast(Any, FakeExecution()), clock=clock)
    servicer = RiskServicer(running.db, running.outbox, enforcer, clock=clock)
    doc = policy_doc(killSwitch_maxDrawdownPct="10", killSwitch_confirmations=1)

    def equity(deployment: str, value: str, unrealized: str = "0") -> Any:
        # No `at`: the report is taken at the servicer's now.
        request = risk_pb2.ReportEquityRequest(
            account_id="acc-1", deployment_id=deployment, equity=value, unrealized_pnl=unrealized
        )
        return servicer.ReportEquity(request, NO_CONTEXT)

    async def scenario() -> None:
        version = await servicer.PutPolicy(
            risk_pb2.PutPolicyRequest(policy=struct(doc), reason="limits"), NO_CONTEXT
        )
        assert at(version.created_at) == T0

        # A drawdown trip: its engagement and evidence are at the report's time.
        clock.advance(10)
        await equity("dep-1", "10000")
        clock.advance(10)
        tripped = (await equity("dep-1", "8000", "-2000")).tripped
        assert {s.scope for s in tripped} == {"deployment", "account", "tenant"}
        for switch in tripped:
            assert at(switch.engaged_at) == at(switch.evidence.at) == T0 + timedelta(seconds=20)

        # By hand: the evidence is the scope's drawdown as it stands at the engagement.
        await equity("dep-2", "5000")
        clock.advance(5)
        ref = risk_pb2.KillSwitchRef(scope="deployment", scope_id="dep-2")
        engaged = await servicer.EngageKillSwitch(
            risk_pb2.EngageKillSwitchRequest(ref=ref, reason="halt"), NO_CONTEXT
        )
        assert engaged.evidence.equity == "5000"
        assert at(engaged.engaged_at) == at(engaged.evidence.at) == T0 + timedelta(seconds=25)
        assert at(engaged.enforced_at) == T0 + timedelta(seconds=25)

        clock.advance(60)
        released = await servicer.ReleaseKillSwitch(
            risk_pb2.ReleaseKillSwitchRequest(ref=ref, reason="all clear"), NO_CONTEXT
        )
        assert at(released.released_at) == T0 + timedelta(seconds=85)

    officer = correlation.Correlation(
        request_id="req_clock",
        tenant_id="t1",
        user_id="olga",
        roles=frozenset({roles.RISK_OFFICER}),
    )
    with correlation.bound(officer):
        asyncio.run(scenario())
