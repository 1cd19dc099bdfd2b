"""Service-side field checks collect every problem before failing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.runtime.canonical import canonical_json, digest
from services.runtime.errors import FieldError, ValidationFailed
from services.runtime.validation import Checker


def test_checker_collects_all_problems() -> None:
    check = Checker()
    check.id("accountId", "")
    check.id("strategyId", "has space")
    check.instrument("instrument", "btc-usd")
    assert check.decimal("quantity", "1.50") == Decimal("1.50")
    check.decimal("price", "-1")
    check.decimal("limit", "NaN")
    check.one_of("side", "hold", ("buy", "sell"))
    with pytest.raises(ValidationFailed) as info:
        check.done("invalid order")
    fields = [f.field for f in info.value.field_errors]
    assert fields == ["accountId", "strategyId", "instrument", "price", "limit", "side"]
    assert info.value.detail.startswith("invalid order: accountId: required")


def test_checker_passes_valid_input() -> None:
    check = Checker()
    check.id("accountId", "acc_1")
    check.decimal("limitPrice", "", required=False)
    assert check.limit("limit", 0, default=100, maximum=500) == 100
    check.done()
    assert check.problems == []


def test_limit_bounds() -> None:
    check = Checker()
    check.limit("limit", 501, default=100, maximum=500)
    assert check.problems == [FieldError("limit", "between 1 and 500")]


def test_canonical_json_is_order_and_float_stable() -> None:
    assert (
        canonical_json({"b": 1.0, "a": [2, {"d": 3, "c": "é"}]})
        == '{"a":[2,{"c":"é","d":3}],"b":1}'.encode()
    )
    assert digest({"x": 1}) == digest({"x": 1.0})
    assert digest({"x": 1}) != digest({"x": 1.5})
