"""reconcile.py on both backends with an in-memory venue and risk: an order left pending by a
dead process is settled by its client order id, never by sending it again."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from decimal import Decimal

import pytest

from gate4.execution.v1 import execution_pb2
from services.execution import idempotency, orders, reconcile, store
from services.execution.idempotency import ROUTE_SUBMIT, Progress
from services.execution.orders import Intent
from services.execution.venue import ExecutionReport, VenueOrder
from services.runtime import errors, outcomes
from services.runtime.idempotency import KeyPolicy
from services.runtime.resilience import ManualClock
from services.runtime.storage import Database
from services.runtime.timeutil import as_utc
from tests.execution.fakes import TENANT, Rig, acting, make_rig
from tests.execution.rows import T0, deploy, filled, order, pending

#: A lease that has not lapsed while the test runs (the module reads the real clock).
LIVE = T0 + timedelta(days=3650)
KEY = "key-reconcile-1"


@pytest.fixture
def rig(db: Database) -> Rig:
    return make_rig(db)


def settle(rig: Rig, order_id: str, claim: idempotency.Claim | None = None) -> execution_pb2.Order:
    row = rig.db.read_sync(lambda c: store.order_row(c, TENANT, order_id))
    assert row is not None

    async def run() -> execution_pb2.Order:
        with acting():
            return await reconcile.settle_order(
                rig.flows.uow, rig.flows.venue, rig.flows.equity, row, claim
            )

    return asyncio.run(run())


def run_once(rig: Rig) -> int:
    return asyncio.run(reconcile.run_once(rig.flows))


def claim_key(rig: Rig, order_id: str) -> idempotency.Claim | idempotency.Stored:
    """The client's retry of the keyed submit that created `order_id`."""
    with acting():
        return rig.db.write_sync(
            lambda c: idempotency.claim(
                c,
                tenant_id=TENANT,
                route=ROUTE_SUBMIT,
                key=KEY,
                digest="digest-of-the-submit",
                resource_id=order_id,
                now=T0,
                policy=KeyPolicy(1, 86400 * 36500),
            )
        )


def reconciled(rig: Rig) -> list[str]:
    return [e.outcome for e in rig.events() if e.type == "order.reconciled"]


def test_an_order_found_at_the_venue_is_adopted_and_its_key_completed(rig: Rig) -> None:
    """FOUND_AT_VENUE: the venue's fills and state are adopted, nothing is resubmitted,
    risk hears the settlement, and the client's retry with the key replays the order."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, quantity="2", key=KEY)
    first = claim_key(rig, order_id)  # the dead attempt's claim, leased until T0 + 1 s
    assert isinstance(first, idempotency.Claim)
    rig.venue.orders[order_id] = filled(order_id, "2")

    settled = settle(rig, order_id)
    assert (settled.status, settled.filled_quantity) == ("filled", "2")
    assert rig.venue.submitted == []
    assert rig.db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD")).quantity == 2
    assert reconciled(rig) == [outcomes.FOUND_AT_VENUE]
    assert rig.data("order.filled")[0]["reconciled"] is True
    assert [(s.order_id, s.closed) for s in rig.risk.settlements] == [(order_id, True)]
    assert [r.deployment_id for r in rig.risk.equity] == [dep]

    replay = claim_key(rig, "ord_of_the_retry")
    assert isinstance(replay, idempotency.Stored)
    assert execution_pb2.Order.FromString(replay.response or b"") == settled


def test_a_retry_that_resumed_the_key_settles_its_order_from_the_venue(rig: Rig) -> None:
    """The keyed retry that took a lapsed key over settles the order first (found at the
    venue: adopted) and completes the key as its owner; a later retry replays that."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, key=KEY)
    assert isinstance(claim_key(rig, order_id), idempotency.Claim)
    with acting():
        resumed = rig.db.write_sync(
            lambda c: idempotency.claim(
                c,
                tenant_id=TENANT,
                route=ROUTE_SUBMIT,
                key=KEY,
                digest="digest-of-the-submit",
                resource_id="ord_of_the_retry",
                now=T0 + timedelta(seconds=2),  # after the first lease lapsed
                policy=KeyPolicy(30, 86400 * 36500),
            )
        )
    assert isinstance(resumed, idempotency.Claim)
    assert resumed.resumed and resumed.resource_id == order_id
    rig.venue.orders[order_id] = filled(order_id, "1")

    settled = settle(rig, order_id, resumed)
    assert settled.status == "filled" and rig.venue.submitted == []
    replay = claim_key(rig, "ord_of_another_retry")
    assert isinstance(replay, idempotency.Stored)
    assert execution_pb2.Order.FromString(replay.response or b"") == settled


def test_an_order_not_at_the_venue_is_rejected_and_not_resent(rig: Rig) -> None:
    """NOT_AT_VENUE: rejected with VENUE_NOT_RECEIVED; the venue is asked, never sent to."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep)
    rejected = settle(rig, order_id)
    assert (rejected.status, rejected.outcome) == ("rejected", outcomes.VENUE_NOT_RECEIVED)
    assert rig.venue.submitted == []
    assert reconciled(rig) == [outcomes.NOT_AT_VENUE]
    assert rig.db.read_sync(lambda c: store.get_position(c, dep, "BTC-USD")).quantity == 0


def test_an_order_whose_lease_is_live_is_left_to_its_sender(rig: Rig) -> None:
    """A pending order still leased is being sent: settling it is refused as in progress."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, lease_until=LIVE)
    rig.venue.orders[order_id] = filled(order_id, "1")
    with pytest.raises(errors.IdempotencyInProgress):
        settle(rig, order_id)
    assert order(rig.db, order_id).status == "accepted"
    assert rig.events() == []


def test_an_order_settled_meanwhile_is_left_as_it_is(rig: Rig) -> None:
    """A row read as pending but confirmed by the time the write runs is not touched."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep)
    stale = rig.db.read_sync(lambda c: store.order_row(c, TENANT, order_id))
    assert stale is not None
    rig.venue.orders[order_id] = ExecutionReport(order_id, "open")
    settle(rig, order_id)  # confirmed as resting
    events = rig.types()

    async def run() -> execution_pb2.Order:
        with acting():
            return await reconcile.settle_order(
                rig.flows.uow, rig.flows.venue, rig.flows.equity, stale
            )

    rig.venue.orders[order_id] = filled(order_id, "1")
    again = asyncio.run(run())
    assert again.status == "accepted" and rig.types() == events


def test_run_once_settles_only_lapsed_leases(rig: Rig) -> None:
    """One pass settles the pending orders whose lease lapsed and leaves live ones."""
    dep = deploy(rig.db)
    lapsed = pending(rig.db, dep)
    found = pending(rig.db, dep)
    live = pending(rig.db, dep, lease_until=LIVE)
    rig.venue.orders[found] = filled(found, "1")
    rig.venue.orders[live] = filled(live, "1")

    assert run_once(rig) == 2
    assert order(rig.db, lapsed).status == "rejected"
    assert order(rig.db, found).status == "filled"
    still = rig.db.read_sync(lambda c: store.order_row(c, TENANT, live))
    assert still is not None and still["venue_state"] == orders.PENDING
    assert sorted(reconciled(rig)) == sorted([outcomes.FOUND_AT_VENUE, outcomes.NOT_AT_VENUE])
    assert run_once(rig) == 0  # nothing left to do
    assert rig.venue.submitted == []


def test_run_once_adopts_fills_of_an_open_order_that_were_never_recorded(rig: Rig) -> None:
    """An open confirmed order the venue filled meanwhile is brought up to the venue."""
    dep = deploy(rig.db)
    order_id = pending(rig.db, dep, type_="limit")
    rig.venue.orders[order_id] = ExecutionReport(order_id, "open")
    settle(rig, order_id)
    assert run_once(rig) == 0  # the venue reports nothing new

    rig.venue.orders[order_id] = filled(order_id, "1")
    assert run_once(rig) == 1
    assert order(rig.db, order_id).status == "filled"
    assert rig.data("order.filled")[0]["reconciled"] is True


# -- leases on the flows' clock ---------------------------------------------------------------
# ManualClock: time moves only when the test advances it, so a lease is probed at its last
# instant and at its end, with no wait.

TICK = timedelta(microseconds=1)  # the finest step a stored time resolves


def test_a_pending_orders_lease_lapses_exactly_at_its_end(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placement leases the venue call for one command lease from the clock's now; while it
    holds, reconcile leaves the order to its sender, and at `lease_until` takes it over."""
    clock = ManualClock(T0)
    rig = make_rig(db, clock=clock)
    lease = rig.flows.settings.command_lease
    dep = deploy(db)

    async def scenario() -> None:
        sent, never = asyncio.Event(), asyncio.Event()

        async def unanswered(order: VenueOrder) -> ExecutionReport:
            sent.set()
            await never.wait()  # the sender dies waiting for the venue's answer
            raise AssertionError("unreachable")

        monkeypatch.setattr(rig.venue, "submit", unanswered)
        intent = Intent(dep, "BTC-USD", "buy", "market", Decimal(1))
        with acting():
            sender = asyncio.create_task(
                rig.flows.orders.place(intent, "ord_in_flight", None, Progress())
            )
        await sent.wait()
        row = await db.read(lambda c: store.order_row(c, TENANT, "ord_in_flight"))
        assert row is not None and row["venue_state"] == orders.PENDING
        assert as_utc(row["lease_until"]) == T0 + lease

        clock.advance(lease - TICK)  # the lease's last instant: still the sender's
        assert await reconcile.run_once(rig.flows) == 0
        with acting(), pytest.raises(errors.IdempotencyInProgress):
            await reconcile.settle_order(rig.flows.uow, rig.flows.venue, rig.flows.equity, row)

        clock.advance(TICK)  # its end: lapsed
        assert await reconcile.run_once(rig.flows) == 1
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    asyncio.run(scenario())
    settled = order(db, "ord_in_flight")
    assert (settled.status, settled.outcome) == ("rejected", outcomes.VENUE_NOT_RECEIVED)
    assert rig.venue.submitted == []  # asked by client order id, never sent again
    assert reconciled(rig) == [outcomes.NOT_AT_VENUE]


def test_a_stops_lease_lapses_exactly_at_its_end(db: Database) -> None:
    """A stop leases its deployment for one command lease from the clock's now. Its process
    dies mid-stop: another stop is refused up to the lease's last instant, and at
    `stop_lease_until` reconcile takes the stop over and finishes it."""
    clock = ManualClock(T0)
    rig = make_rig(db, clock=clock)
    lease = rig.flows.settings.command_lease
    dep = deploy(db)
    # An order in flight, sent at T0 with its own command lease: the stop waits for it.
    in_flight = pending(db, dep, lease_until=T0 + lease)

    def request() -> execution_pb2.StopDeploymentRequest:
        return execution_pb2.StopDeploymentRequest(deployment_id=dep, reason="done")

    async def scenario() -> None:
        with acting():
            first = asyncio.create_task(rig.flows.deployments.stop(request(), None, Progress()))
        await clock.sleeping()  # the stop waits on the clock for the order's venue answer
        row = await db.read(lambda c: store.deployment_row(c, TENANT, dep))
        assert row is not None and row["state"] == "stopping"
        assert as_utc(row["stop_lease_until"]) == T0 + lease
        first.cancel()  # its process dies, leaving the deployment stopping
        with contextlib.suppress(asyncio.CancelledError):
            await first

        clock.advance(lease - TICK)
        with acting(), pytest.raises(errors.StateConflict, match="already stopping"):
            await rig.flows.deployments.stop(request(), None, Progress())
        assert await reconcile.run_once(rig.flows) == 0

        clock.advance(TICK)
        # The order's lease and the stop's lapse together: the order is settled first.
        assert await reconcile.run_once(rig.flows) == 2

    asyncio.run(scenario())
    assert order(db, in_flight).status == "rejected"
    stopped = db.read_sync(lambda c: store.deployment_row(c, TENANT, dep))
    assert stopped is not None and stopped["state"] == "stopped"
    assert as_utc(stopped["updated_at"]) == T0 + lease
