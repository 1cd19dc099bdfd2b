"""Drawdown tracking: peaks with capital inflows, confirmations, aggregates, daily loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.risk import books, drawdown, versions
from services.risk.drawdown import EquityReport, Track, advance
from tests.risk.conftest import RiskStore
from tests.support.risk_rig import policy_doc

D = Decimal
T0 = datetime(2026, 5, 4, 23, 59, 58, tzinfo=UTC)


def test_peak_follows_equity_and_capital_inflows() -> None:
    first, _ = advance(None, D("10000"), D("10000"), None)
    assert first == Track(D("10000"), D("10000"), 0)
    up, _ = advance(first, D("11000"), D(0), None)
    assert up.peak == D("11000")
    down, _ = advance(up, D("10500"), D(0), None)
    assert down.peak == D("11000") and down.drawdown_pct.quantize(D("0.01")) == D("4.55")
    # 5000 of new capital: peak and equity rise together, the drawdown does not vanish.
    funded, _ = advance(down, D("15500"), D("5000"), None)
    assert funded.peak == D("16000")


def test_confirmations_count_consecutive_breaches_and_reset() -> None:
    track, breached = advance(None, D("100"), D("100"), D("10"))
    sequence = [("89", True, 1), ("88", True, 2), ("95", False, 0), ("89", True, 1)]
    for equity, want_breach, want_count in sequence:
        track, breached = advance(track, D(equity), D(0), D("10"))
        assert (breached, track.breaches) == (want_breach, want_count), equity
    at_limit, breached = advance(track, D("90"), D(0), D("10"))
    assert not breached and at_limit.breaches == 0


def test_a_worthless_peak_has_no_drawdown() -> None:
    assert Track(D("-5"), D("0"), 0).drawdown_pct == 0


def report(
    equity: str,
    at: datetime,
    deployment: str = "dep-1",
    capital: str = "10000",
    account: str = "acc-1",
) -> EquityReport:
    return EquityReport(account, deployment, D(equity), D(capital), at)


def test_aggregates_and_daily_loss_in_the_database(store: RiskStore) -> None:
    store.run(
        lambda c: versions.put_version(
            c,
            tenant_id="t1",
            account_id="",
            document=policy_doc(killSwitch_maxDrawdownPct="50"),
            author="olga",
            reason="r",
            now=T0,
        )
    )
    box, kept = store.outbox, store.books
    store.run(lambda c: drawdown.record(c, box, kept, "t1", report("10000", T0)))
    store.run(
        lambda c: drawdown.record(c, box, kept, "t1", report("9000", T0 + timedelta(seconds=1)))
    )
    result = store.run(
        lambda c: drawdown.record(
            c,
            box,
            store.books,
            "t1",
            report("5000", T0 + timedelta(seconds=1), "dep-2", "5000", "acc-2"),
        )
    )
    tenant = next(s for s in result.states if s.scope == "tenant")
    assert (tenant.equity, tenant.peak_equity) == ("14000", "15000")
    day = T0.date().isoformat()

    def loss(account: str, on: str) -> Decimal:
        """The account's daily loss as a decision reads it: from its book."""
        return store.run(lambda c: books.load(c, "t1", account, T0).daily_loss(on))  # type: ignore[no-any-return]

    assert loss("acc-1", day) == D("1000")
    assert loss("acc-2", day) == 0
    # Past midnight the day starts again from the last equity of the day before.
    next_day = T0 + timedelta(seconds=3)
    store.run(lambda c: drawdown.record(c, box, kept, "t1", report("8800", next_day)))
    today = next_day.date().isoformat()
    assert today != day
    assert loss("acc-1", today) == D("200")
    assert loss("acc-1", day) == 0
    assert store.run(lambda c: drawdown.account_of(c, "t1", "dep-2")) == "acc-2"


def test_without_a_policy_equity_is_tracked_but_nothing_trips(store: RiskStore) -> None:
    box, kept = store.outbox, store.books
    for step, equity in enumerate(["10000", "1000", "1000", "1000", "1000"]):
        at = T0 + timedelta(seconds=step)
        result = store.run(
            lambda c, e=equity, a=at: drawdown.record(c, box, kept, "t1", report(e, a))
        )
        assert result.tripped == []
    assert result.states[0].drawdown == "90" and result.states[0].threshold == ""
    assert store.events() == []
