"""Risk is the one kill-switch enforcer: a process claims an engagement before it calls
execution, so of two enforcers only one calls; it passes the engagement's generation and
records exactly what execution answered; a call still running in execution leaves the
engagement pending, and the next attempt gets execution's stored answer."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar, cast

import grpc
import pytest
from google.protobuf import json_format

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.risk import killswitch
from services.risk.enforcement import Enforcer
from services.runtime import correlation, errors
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow
from tests.risk.conftest import RiskStore

T = TypeVar("T")
CANCELLED = ["ord_a", "ord_b"]
FLATTENED = ["ord_flat"]


class FakeExecution:
    """EnforceKillSwitch that can be held mid-call and made to fail."""

    def __init__(self) -> None:
        self.calls: list[execution_pb2.EnforceKillSwitchRequest] = []
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.error: grpc.aio.AioRpcError | None = None

    async def EnforceKillSwitch(
        self, request: execution_pb2.EnforceKillSwitchRequest, **options: Any
    ) -> execution_pb2.EnforceKillSwitchResponse:
        self.calls.append(request)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return execution_pb2.EnforceKillSwitchResponse(
            cancelled_order_ids=CANCELLED, flatten_order_ids=FLATTENED
        )


def run(work: Coroutine[Any, Any, T]) -> T:
    """Runs the work as a request of tenant t1 would (an engage or an equity report)."""
    with correlation.bound(correlation.Correlation(request_id="req_enforce", tenant_id="t1")):
        return asyncio.run(work)


def rpc_error(error: errors.Gate4Error) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        error.status_for_grpc(),
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*errors.trailing_metadata(error)),
        details=error.detail,
    )


@pytest.fixture
def second_db(running: RiskStore, database_url: str) -> Iterator[Database]:
    """Another handle on the same database: another risk process, as far as claims go."""
    db = Database(database_url, name="risk")
    db.start()
    try:
        yield db
    finally:
        db.close()


def engage(store: RiskStore, scope_id: str = "dep-1", ago: float = 60) -> killswitch.Enforcement:
    evidence = risk_pb2.BreachEvidence(policy_version="risk-policy.v1@1")
    store.run(
        lambda c: killswitch.engage(
            c,
            store.outbox,
            "t1",
            "deployment",
            scope_id,
            trigger=killswitch.MANUAL,
            reason="halt",
            by="olga",
            evidence=evidence,
            flatten=True,
            at=utcnow() - timedelta(seconds=ago),
        )
    )
    job = store.run(lambda c: killswitch.enforcement_for(c, "t1", "deployment", scope_id))
    assert job is not None
    return job  # type: ignore[no-any-return]


def switch(store: RiskStore, scope_id: str = "dep-1") -> risk_pb2.KillSwitch:
    return store.run(lambda c: killswitch.get(c, "t1", "deployment", scope_id))  # type: ignore[no-any-return]


def enforcers(store: RiskStore, other: Database, execution: FakeExecution) -> list[Enforcer]:
    stub = cast(Any, execution)
    return [
        Enforcer(store.db, store.outbox, stub, owner="risk-a"),
        Enforcer(other, Outbox(other, "risk", 10_000), stub, owner="risk-b"),
    ]


def test_of_two_enforcers_only_the_claimant_calls_execution(
    running: RiskStore, second_db: Database
) -> None:
    execution = FakeExecution()
    first, second = enforcers(running, second_db, execution)
    job = engage(running)

    async def held_then_raced() -> tuple[bool, bool]:
        execution.gate = asyncio.Event()
        calling = asyncio.create_task(first.enforce(job))
        await execution.started.wait()
        # While the first call runs, the other process finds the engagement claimed.
        lost = await second.enforce(job)
        execution.gate.set()
        return await calling, lost

    assert run(held_then_raced()) == (True, False)
    (call,) = execution.calls
    assert (call.scope, call.scope_id, call.flatten, call.generation) == (
        "deployment",
        "dep-1",
        True,
        job.generation,
    )
    state = switch(running)
    assert state.enforcement == "enforced"
    assert state.enforcement_detail == (
        "execution cancelled 2 open order(s) (ord_a, ord_b) and placed 1 flatten order(s) "
        "(ord_flat)"
    )
    (event,) = running.events("killswitch.enforcement")
    data = json_format.MessageToDict(event.data)
    assert (event.outcome, data["cancelledOrderIds"], data["flattenOrderIds"]) == (
        "ENFORCED",
        CANCELLED,
        FLATTENED,
    )
    assert data["generation"] == job.generation
    # Enforced: nobody claims it again, so nobody calls again.
    assert run(second.enforce(job)) is False
    assert run(second.retry_once(force=True)) == 0
    assert len(execution.calls) == 1


def test_two_enforcers_at_once_call_execution_once(running: RiskStore, second_db: Database) -> None:
    execution = FakeExecution()
    pair = enforcers(running, second_db, execution)
    job = engage(running, "dep-2")

    async def both() -> list[bool]:
        return list(await asyncio.gather(*(e.enforce(job) for e in pair)))

    assert sorted(run(both())) == [False, True]
    assert len(execution.calls) == 1
    assert len(running.events("killswitch.enforcement")) == 1


def test_a_call_still_running_in_execution_leaves_the_engagement_pending(
    running: RiskStore, second_db: Database
) -> None:
    execution = FakeExecution()
    first, second = enforcers(running, second_db, execution)
    job = engage(running)
    execution.error = rpc_error(errors.IdempotencyInProgress("generation 1 is still running"))
    assert run(first.enforce(job)) is True
    state = switch(running)
    assert state.enforcement == "pending" and "still enforcing" in state.enforcement_detail
    assert running.events("killswitch.enforcement") == []  # nothing failed
    # The repeat gets execution's stored answer (from the other process, as it happens).
    execution.error = None
    assert run(second.retry_once(force=True)) == 1
    assert switch(running).enforcement == "enforced"
    assert [c.generation for c in execution.calls] == [job.generation, job.generation]
    (event,) = running.events("killswitch.enforcement")
    assert event.outcome == "ENFORCED"


def test_a_failure_is_recorded_and_audited_once(running: RiskStore, second_db: Database) -> None:
    execution = FakeExecution()
    first, _ = enforcers(running, second_db, execution)
    job = engage(running)
    execution.error = rpc_error(errors.DependencyUnavailable("execution is restarting"))
    run(first.enforce(job))
    run(first.retry_once(force=True))
    state = switch(running)
    assert state.enforcement == "failed" and "DEPENDENCY_UNAVAILABLE" in state.enforcement_detail
    assert [e.outcome for e in running.events("killswitch.enforcement")] == ["ENFORCEMENT_FAILED"]


def test_a_lapsed_claim_is_taken_over_and_a_live_one_is_not(
    running: RiskStore, second_db: Database
) -> None:
    execution = FakeExecution()
    first, _ = enforcers(running, second_db, execution)
    job = engage(running)
    lease = timedelta(seconds=40)
    # A process claimed it and died: its lease ran out an hour ago.
    assert running.run(
        lambda c: killswitch.claim(
            c, job, owner="dead", now=utcnow() - timedelta(hours=1), lease=lease
        )
    )
    assert run(first.retry_once(force=True)) == 1
    assert switch(running).enforcement == "enforced"

    other = engage(running, "dep-3")
    assert running.run(
        lambda c: killswitch.claim(c, other, owner="alive", now=utcnow(), lease=lease)
    )
    assert run(first.enforce(other)) is False
    assert run(first.retry_once(force=True)) == 0
    assert switch(running, "dep-3").enforcement == "pending"


def test_an_engage_cut_short_by_its_deadline_leaves_the_engagement_pending(
    running: RiskStore, second_db: Database
) -> None:
    execution = FakeExecution()
    first, _ = enforcers(running, second_db, execution)
    job = engage(running)
    execution.error = grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    # The engage's caller had 4 s left: execution goes on with the flatten regardless.
    assert run(first.enforce(job, within=4.0)) is True
    assert switch(running).enforcement == "pending"
    # The full call timing out is a failure.
    assert run(first.retry_once(force=True)) == 1
    assert switch(running).enforcement == "failed"
    assert [e.outcome for e in running.events("killswitch.enforcement")] == ["ENFORCEMENT_FAILED"]
