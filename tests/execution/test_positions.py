"""Positions and P&L from fills: Decimal arithmetic, longs, shorts, flips, equity, drawdown."""

from __future__ import annotations

from decimal import Decimal as D

from services.execution.positions import Position, gross_exposure, reducing_side, value
from services.runtime.decimals import format_decimal


def test_long_position_average_and_realised_pnl() -> None:
    p = Position("BTC-USD").apply_fill("buy", D("1"), D("100")).apply_fill("buy", D("1"), D("110"))
    assert (p.quantity, p.average_price) == (D(2), D(105))
    p = p.apply_fill("sell", D("0.5"), D("120"))
    assert p.quantity == D("1.5") and p.average_price == D(105)
    assert p.realized_pnl == D("7.5")
    assert p.unrealized_pnl(D("100")) == D("-7.5")


def test_short_position_gains_when_price_falls() -> None:
    p = Position("ETH-USD").apply_fill("sell", D("2"), D("50"))
    assert p.quantity == D(-2)
    assert p.unrealized_pnl(D("40")) == D(20)
    p = p.apply_fill("buy", D("2"), D("45"))
    assert p.quantity == 0 and p.realized_pnl == D(10) and p.average_price == 0


def test_a_fill_larger_than_the_position_flips_it_at_the_fill_price() -> None:
    p = Position("X").apply_fill("buy", D("1"), D("100")).apply_fill("sell", D("3"), D("90"))
    assert p.quantity == D(-2)
    assert p.average_price == D(90)
    assert p.realized_pnl == D(-10)


def test_reducing_side_is_opposite_to_the_position() -> None:
    assert reducing_side(D("0.5")) == "sell"
    assert reducing_side(D("-0.5")) == "buy"
    assert reducing_side(D(0)) is None


def test_valuation_equity_peak_and_drawdown() -> None:
    held = [Position("A", D(2), D(100)), Position("B", D(-1), D(50))]
    v = value(D(1000), held, {"A": D(110), "B": D(60)}, D(1100))
    assert v.unrealized_pnl == D(10)  # +20 on A, -10 on B
    assert v.equity == D(1010)
    assert v.peak_equity == D(1100)
    assert format_decimal(v.drawdown) == "0.0818181818"
    assert gross_exposure(held, {"A": D(110)}) == D(270)  # B has no mark: its average price


def test_decimal_text_has_no_exponent_and_no_negative_zero() -> None:
    assert format_decimal(D("1E+2")) == "100"
    assert format_decimal(D("64000.50")) == "64000.5"
    assert format_decimal(D("-0.000")) == "0"
    assert format_decimal(D("0.00000001")) == "0.00000001"
