"""The positions ledger only moves forward: a snapshot replaces what is stored only when its
version is higher, whatever order the snapshots arrive in."""

from __future__ import annotations

from decimal import Decimal

from services.risk import books, ledger
from services.risk.checks import Position
from tests.risk.conftest import T0, RiskStore

D = Decimal


def position(quantity: str, version: int, **fields: str) -> Position:
    values = {"deployment_id": "dep-1", "instrument": "BTC-USD", **fields}
    return Position(
        deployment_id=values["deployment_id"],
        instrument=values["instrument"],
        quantity=D(quantity),
        version=version,
        price=D(fields.get("price", "100")),
    )


def test_stale_versions_are_ignored(store: RiskStore) -> None:
    def merge(*snapshots: Position, account: str = "acc-1") -> None:
        store.run(lambda c: ledger.merge(c, "t1", account, snapshots, T0))

    def stored() -> tuple[Decimal, int, Decimal | None]:
        held = store.run(lambda c: ledger.get(c, "t1", "dep-1", "BTC-USD"))
        return held.quantity, held.version, held.price

    merge(position("3", 5, price="101"))
    assert stored() == (D(3), 5, D(101))
    merge(position("1", 4, price="90"))  # older: ignored
    merge(position("9", 5, price="90"))  # the same version again: ignored
    assert stored() == (D(3), 5, D(101))
    merge(position("-2", 6, price="99"))
    assert stored() == (D(-2), 6, D(99))
    # Reordered within one message too: only the newest stays.
    merge(position("4", 8), position("0", 7))
    assert stored()[:2] == (D(4), 8)


def test_the_account_position_sums_its_deployments(store: RiskStore) -> None:
    store.run(
        lambda c: ledger.merge(
            c,
            "t1",
            "acc-1",
            [position("2", 1), position("5", 1, instrument="ETH-USD")],
            T0,
        )
    )
    store.run(
        lambda c: ledger.merge(c, "t1", "acc-1", [position("-0.5", 3, deployment_id="dep-2")], T0)
    )
    store.run(
        lambda c: ledger.merge(c, "t1", "acc-2", [position("7", 1, deployment_id="dep-9")], T0)
    )
    book = store.run(lambda c: books.load(c, "t1", "acc-1", T0))
    assert book.account_position("BTC-USD") == D("1.5")
    assert store.run(lambda c: books.load(c, "t2", "acc-1", T0)).account_position("BTC-USD") == 0
    assert sorted(book.held_of("dep-1")) == ["BTC-USD", "ETH-USD"]
    held = store.run(lambda c: ledger.of_account(c, "t1", "acc-2"))
    assert [(h.deployment_id, h.quantity) for h in held] == [("dep-9", D(7))]
