"""servicer.py called directly, with in-memory risk and venue and a fake gRPC context.

Input checks refuse a request before anything runs; the idempotency envelope replays a
stored reply or refusal with `x-idempotent-replayed: true`, refuses a key reused with
another payload, and releases a key after a transient failure. Commands run to their end
when their caller leaves, and how they ended is logged once: an answer the caller got is the
interceptor's to log; one nobody got is logged here, a refusal without a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from gate4.execution.v1 import execution_pb2
from gate4.risk.v1 import risk_pb2
from services.execution import store
from services.execution.servicer import ExecutionServicer, _shielded
from services.runtime import errors
from services.runtime.config import Settings
from services.runtime.metadata import REPLAYED_FLAG
from services.runtime.storage import Database
from tests.execution.fakes import TENANT, Rig, acting, make_rig
from tests.execution.rows import T0, deploy

Outcome = Callable[[], Coroutine[Any, Any, str]]


async def _refused() -> str:
    await asyncio.sleep(0.05)
    raise errors.StateConflict("deployment dep_1 is already stopping")


async def _unavailable() -> str:
    await asyncio.sleep(0.05)
    raise errors.DependencyUnavailable("the venue did not confirm the cancel")


async def _crashed() -> str:
    await asyncio.sleep(0.05)
    raise RuntimeError("bug")


async def _finished() -> str:
    await asyncio.sleep(0.05)
    return "done"


def _caller_leaves(outcome: Outcome) -> None:
    async def scenario() -> None:
        caller: asyncio.Future[str] = asyncio.ensure_future(_shielded(outcome()))
        await asyncio.sleep(0.01)
        caller.cancel()  # the RPC's deadline, or the client went away
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.1)  # the command runs on to its end

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("outcome", "level", "code"),
    [
        (_refused, logging.INFO, "STATE_CONFLICT"),
        (_unavailable, logging.WARNING, "DEPENDENCY_UNAVAILABLE"),
    ],
)
def test_a_refusal_nobody_waited_for_is_logged_once_without_a_traceback(
    outcome: Outcome, level: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(outcome)
    (record,) = caplog.records
    assert record.getMessage() == "command refused after its caller left"
    assert (record.levelno, record.code, record.exc_info) == (level, code, None)  # type: ignore[attr-defined]


def test_a_crash_nobody_waited_for_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(_crashed)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_command_that_ends_after_its_caller_left_is_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gate4.execution"):
        _caller_leaves(_finished)
    assert [r.getMessage() for r in caplog.records] == ["command finished after its caller left"]


def test_an_answer_the_caller_got_is_not_logged_here(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with pytest.raises(errors.StateConflict):
            await _shielded(_refused())
        assert await _shielded(_finished()) == "done"

    with caplog.at_level(logging.DEBUG, logger="gate4.execution"):
        asyncio.run(scenario())
    assert caplog.records == []


# -- request validation and the idempotency envelope -----------------------------------------


class FakeContext:
    """The one thing the servicer does with its gRPC context: send initial metadata."""

    def __init__(self) -> None:
        self.initial_metadata: list[tuple[tuple[str, str], ...]] = []

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial_metadata.append(tuple(metadata))


class Servicer:
    """An ExecutionServicer on the rig's flows; `call` runs one RPC as tenant t1."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.servicer = ExecutionServicer(
            rig.db, rig.flows, Settings(execution_retry_base_seconds=0)
        )

    def call(self, method: str, request: Any) -> tuple[Any, FakeContext]:
        context = FakeContext()

        async def run() -> Any:
            with acting():
                return await getattr(self.servicer, method)(request, cast(Any, context))

        return asyncio.run(run()), context

    def refused(self, method: str, request: Any) -> tuple[errors.Gate4Error, FakeContext]:
        context = FakeContext()

        async def run() -> Any:
            with acting():
                return await getattr(self.servicer, method)(request, cast(Any, context))

        with pytest.raises(errors.Gate4Error) as refusal:
            asyncio.run(run())
        return refusal.value, context


@pytest.fixture
def rig(db: Database) -> Rig:
    return make_rig(db)


@pytest.fixture
def api(rig: Rig) -> Servicer:
    return Servicer(rig)


def order_request(deployment_id: str, key: str = "key-servicer-1", **fields: Any) -> Any:
    values: dict[str, Any] = {
        "deployment_id": deployment_id,
        "instrument": "BTC-USD",
        "side": "buy",
        "type": "market",
        "quantity": "1",
        "idempotency_key": key,
        **fields,
    }
    return execution_pb2.SubmitOrderRequest(**values)


def ready(rig: Rig) -> str:
    """A running deployment with a BTC-USD mark, ready to trade."""
    dep = deploy(rig.db)
    rig.db.write_sync(lambda c: store.upsert_mark(c, TENANT, "BTC-USD", "100", T0))
    return dep


def fields(error: errors.Gate4Error) -> set[str]:
    return {f.field for f in error.field_errors}


def test_an_order_without_a_key_is_refused_before_anything_runs(api: Servicer) -> None:
    """SubmitOrder needs a key: refused before risk is asked or anything is audited."""
    error, _ = api.refused("SubmitOrder", order_request("dep_1", key=""))
    assert isinstance(error, errors.IdempotencyKeyRequired)
    assert api.rig.risk.intents == [] and api.rig.events() == []


def test_an_invalid_order_names_every_bad_field(api: Servicer) -> None:
    """Side, type-dependent limit price, client order id and key are checked together."""
    request = order_request(
        "dep_1",
        key="short",
        side="hold",
        quantity="-1",
        limit_price="5",
        client_order_id="bad id!",
    )
    error, _ = api.refused("SubmitOrder", request)
    assert isinstance(error, errors.ValidationFailed)
    assert fields(error) == {"side", "quantity", "limitPrice", "clientOrderId", "idempotencyKey"}
    error, _ = api.refused("SubmitOrder", order_request("dep_1", type="limit"))
    assert fields(error) == {"limitPrice"}  # a limit order needs one
    assert api.rig.risk.intents == []


def test_deployment_and_enforcement_requests_are_checked(api: Servicer) -> None:
    """CreateDeployment needs a key and distinct instruments; EnforceKillSwitch a known
    scope, a scope id and a generation of 0 or more."""
    create = execution_pb2.CreateDeploymentRequest(
        strategy_id="s1", account_id="acc-1", instruments=["BTC-USD"], capital_allocation="1000"
    )
    error, _ = api.refused("CreateDeployment", create)
    assert isinstance(error, errors.IdempotencyKeyRequired)
    create.idempotency_key = "key-create-1"
    create.instruments.append("BTC-USD")
    create.mode = "live"
    error, _ = api.refused("CreateDeployment", create)
    assert fields(error) == {"instruments", "mode"}

    enforce = execution_pb2.EnforceKillSwitchRequest(scope="planet", generation=-1)
    error, _ = api.refused("EnforceKillSwitch", enforce)
    assert fields(error) == {"scope", "scopeId", "generation"}


def test_a_keyed_order_is_replayed_with_its_metadata_and_runs_once(api: Servicer) -> None:
    """The retry gets the stored reply, marked replayed, and audited as command.replayed;
    the venue and risk saw one order."""
    dep = ready(api.rig)
    first, context = api.call("SubmitOrder", order_request(dep))
    assert first.status == "filled" and context.initial_metadata == []
    again, replay_context = api.call("SubmitOrder", order_request(dep))
    assert again == first
    assert replay_context.initial_metadata == [REPLAYED_FLAG]
    assert len(api.rig.venue.submitted) == 1 and len(api.rig.risk.intents) == 1
    (replayed,) = [e for e in api.rig.events() if e.type == "command.replayed"]
    assert (replayed.order_id, replayed.outcome) == (first.order_id, "REPLAYED")


def test_a_key_reused_with_another_order_is_refused_and_audited(api: Servicer) -> None:
    """Another order under the key is IDEMPOTENCY_KEY_REUSED, audited as
    command.rejected; nothing is sent."""
    dep = ready(api.rig)
    api.call("SubmitOrder", order_request(dep))
    error, context = api.refused("SubmitOrder", order_request(dep, quantity="2"))
    assert isinstance(error, errors.IdempotencyKeyReused)
    assert context.initial_metadata == []
    assert len(api.rig.venue.submitted) == 1
    (rejected,) = [e for e in api.rig.events() if e.type == "command.rejected"]
    assert rejected.outcome == "IDEMPOTENCY_KEY_REUSED"


def test_a_stored_refusal_is_raised_again_as_a_replay(api: Servicer) -> None:
    """A risk refusal is a decision: the retry gets it again without asking risk."""
    dep = ready(api.rig)

    async def refuse(asked: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        return risk_pb2.RiskDecision(
            approved=False, outcome="ORDER_QUANTITY_LIMIT", reason="too big", decision_id="d1"
        )

    api.rig.risk.decide = refuse
    first, _ = api.refused("SubmitOrder", order_request(dep))
    again, context = api.refused("SubmitOrder", order_request(dep))
    assert isinstance(first, errors.RiskLimitBreached)
    assert isinstance(again, errors.RiskLimitBreached)
    assert (again.outcome, again.detail) == (first.outcome, first.detail)
    assert context.initial_metadata == [REPLAYED_FLAG]
    assert len(api.rig.risk.intents) == 1 and api.rig.venue.submitted == []


def test_a_transient_failure_releases_the_key_for_the_retry(api: Servicer) -> None:
    """Risk unreachable: nothing ran, so the same key runs the order once risk is back."""
    dep = ready(api.rig)
    api.rig.risk.down = True
    error, _ = api.refused("SubmitOrder", order_request(dep))
    assert isinstance(error, errors.RiskUnavailable)
    api.rig.risk.down = False
    order, context = api.call("SubmitOrder", order_request(dep))
    assert order.status == "filled" and context.initial_metadata == []
    assert len(api.rig.venue.submitted) == 1


def test_a_new_order_key_is_written_with_the_order_not_before_it(api: Servicer) -> None:
    """The key costs no transaction of its own: its record commits with the order, so a
    refusal before the record leaves the key completed with that refusal, not claimed."""
    dep = ready(api.rig)
    writes = api.rig.db.writes
    placed, _ = api.call("SubmitOrder", order_request(dep))
    assert placed.status == "filled"
    # record, venue-free fake: record + settle (+ the coalesced equity report at most)
    assert api.rig.db.writes - writes <= 3
    stored = api.rig.db.read_sync(lambda c: c.execute(store.idempotency.select()).mappings().one())
    assert (stored["status"], stored["resource_id"]) == ("completed", placed.order_id)


def test_two_attempts_racing_with_one_new_key_make_one_order(api: Servicer) -> None:
    """Both get a decision from risk; one records its order with the key, the other is
    refused as in progress and risk hears its approved order was not executed."""
    dep = ready(api.rig)
    both_decided = asyncio.Event()
    decided = 0

    async def decide(asked: risk_pb2.OrderIntent) -> risk_pb2.RiskDecision:
        nonlocal decided
        decided += 1
        if decided == 2:
            both_decided.set()
        await both_decided.wait()
        return api.rig.risk.approve()

    api.rig.risk.decide = decide

    async def race() -> list[Any]:
        with acting():
            calls = [
                api.servicer.SubmitOrder(order_request(dep), cast(Any, FakeContext()))
                for _ in range(2)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(race())
    placed = [o for o in outcomes if isinstance(o, execution_pb2.Order)]
    refused = [o for o in outcomes if isinstance(o, errors.IdempotencyInProgress)]
    assert len(placed) == 1 and len(refused) == 1, outcomes
    assert len(api.rig.venue.submitted) == 1
    (not_executed,) = [s for s in api.rig.risk.settlements if s.not_executed_reason]
    assert not_executed.order_id != placed[0].order_id and not_executed.closed
    again, context = api.call("SubmitOrder", order_request(dep))
    assert again == placed[0] and context.initial_metadata == [REPLAYED_FLAG]
