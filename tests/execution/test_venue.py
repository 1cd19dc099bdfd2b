"""The paper venue: deterministic fills, resting limits, partial fills, duplicate ids, faults."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from services.execution import store
from services.execution.venue import (
    DuplicateClientOrderId,
    FaultPlan,
    PaperVenue,
    VenueOrder,
    VenueTimeout,
)
from services.runtime.storage import Database
from services.runtime.timeutil import utcnow


def order(
    coid: str, side: str = "buy", type_: str = "market", qty: str = "1", **kw: str
) -> VenueOrder:
    limit = kw.get("limit")
    return VenueOrder(
        client_order_id=coid,
        tenant_id="t1",
        account_id=kw.get("account", "acc-1"),
        instrument="BTC-USD",
        side=side,
        type=type_,
        quantity=D(qty),
        limit_price=D(limit) if limit else None,
    )


def set_mark(db: Database, price: str) -> None:
    db.write_sync(lambda c: store.upsert_mark(c, "t1", "BTC-USD", price, utcnow()))


def test_market_orders_fill_at_the_mark_moved_by_slippage(db: Database) -> None:
    set_mark(db, "100")
    venue = PaperVenue(db, slippage_bps=D(10))
    buy = asyncio.run(venue.submit(order("c-buy")))
    sell = asyncio.run(venue.submit(order("c-sell", side="sell")))
    assert buy.status == "filled" and buy.fills[0].price == D("100.1")
    assert sell.status == "filled" and sell.fills[0].price == D("99.9")
    assert asyncio.run(venue.lookup("t1", "c-buy")) == buy
    assert asyncio.run(venue.lookup("t2", "c-buy")) is None  # another tenant's id is unknown


def test_market_order_without_a_mark_is_rejected(db: Database) -> None:
    report = asyncio.run(PaperVenue(db).submit(order("c-nomark")))
    assert report.status == "rejected" and "no mark" in report.reason


def test_limit_orders_rest_until_a_mark_crosses_them(db: Database) -> None:
    set_mark(db, "100")
    venue = PaperVenue(db)
    rest = asyncio.run(venue.submit(order("c-lim", type_="limit", limit="95")))
    assert rest.status == "open" and not rest.fills
    assert asyncio.run(venue.on_mark("t1", "BTC-USD", D("96"), utcnow())) == []
    (filled,) = asyncio.run(venue.on_mark("t1", "BTC-USD", D("94"), utcnow()))
    assert filled.status == "filled" and filled.fills[0].price == D("94")
    # A crossing limit order fills at once, never worse than its limit.
    sell = asyncio.run(venue.submit(order("c-lim-sell", side="sell", type_="limit", limit="90")))
    assert sell.status == "filled" and sell.fills[0].price == D("100")


def test_fills_are_capped_and_the_rest_waits_for_later_marks(db: Database) -> None:
    set_mark(db, "100")
    venue = PaperVenue(db, max_fill_quantity=D("0.4"))
    first = asyncio.run(venue.submit(order("c-part")))
    assert first.status == "open" and first.filled_quantity == D("0.4")
    asyncio.run(venue.on_mark("t1", "BTC-USD", D("101"), utcnow()))
    (last,) = asyncio.run(venue.on_mark("t1", "BTC-USD", D("102"), utcnow()))
    assert last.status == "filled" and last.filled_quantity == D(1)
    assert [f.quantity for f in last.fills] == [D("0.4"), D("0.4"), D("0.2")]


def test_a_known_client_order_id_is_refused_with_what_the_venue_has(db: Database) -> None:
    set_mark(db, "100")
    venue = PaperVenue(db)
    first = asyncio.run(venue.submit(order("c-dup")))
    with pytest.raises(DuplicateClientOrderId) as dup:
        asyncio.run(venue.submit(order("c-dup")))
    assert dup.value.report == first


def test_cancel_leaves_fills_and_ignores_unknown_ids(db: Database) -> None:
    set_mark(db, "100")
    venue = PaperVenue(db)
    asyncio.run(venue.submit(order("c-can", type_="limit", limit="50")))
    cancelled = asyncio.run(venue.cancel("t1", "c-can"))
    assert cancelled is not None and cancelled.status == "cancelled"
    assert asyncio.run(venue.cancel("t1", "c-never")) is None


def test_faults_per_account_and_attempt(db: Database) -> None:
    set_mark(db, "100")
    plan = FaultPlan.parse('{"acc-f": ["timeout", "lost_ack"], "acc-r": "reject"}')
    venue = PaperVenue(db, faults=plan)
    with pytest.raises(VenueTimeout):
        asyncio.run(venue.submit(order("c-f", account="acc-f")))
    assert asyncio.run(venue.lookup("t1", "c-f")) is None  # a timeout never reached the venue
    with pytest.raises(VenueTimeout):
        asyncio.run(venue.submit(order("c-f", account="acc-f")))
    lost = asyncio.run(venue.lookup("t1", "c-f"))  # a lost answer did
    assert lost is not None and lost.status == "filled"
    rejected = asyncio.run(venue.submit(order("c-r", account="acc-r")))
    assert rejected.status == "rejected"
    assert asyncio.run(venue.submit(order("c-ok", account="acc-other"))).status == "filled"
    with pytest.raises(ValueError):
        FaultPlan.parse('{"acc": "explode"}')
