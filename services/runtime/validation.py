"""Field checks that services apply to RPC input, collecting every problem before failing.

The gateway validates against the OpenAPI document first; services check again because
other services call them directly and a service must never trust its caller's input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from services.runtime.decimals import parse_decimal
from services.runtime.errors import FieldError, ValidationFailed
from services.runtime.pagination import NewestFirst

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INSTRUMENT_RE = re.compile(r"^[A-Z0-9][A-Z0-9._/-]{0,31}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{8,255}$")
MAX_DECIMAL_DIGITS = 30


class Checker:
    """Accumulates field errors; `done()` raises them all at once."""

    def __init__(self) -> None:
        self.problems: list[FieldError] = []

    def fail(self, field: str, message: str) -> None:
        self.problems.append(FieldError(field, message))

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.fail(field, "required")
        elif not ID_RE.match(value):
            self.fail(field, "1-64 characters of A-Z a-z 0-9 _ -")
        return value

    def instrument(self, field: str, value: str) -> str:
        if not INSTRUMENT_RE.match(value):
            self.fail(field, "an instrument symbol such as BTC-USD (upper case, 1-32 characters)")
        return value

    def decimal(
        self, field: str, value: str, *, positive: bool = True, required: bool = True
    ) -> Decimal | None:
        if not value:
            if required:
                self.fail(field, "required")
            return None
        number = parse_decimal(value)
        if number is None:
            self.fail(field, 'a decimal number written as a string, e.g. "12.5"')
            return None
        if len(number.as_tuple().digits) > MAX_DECIMAL_DIGITS:
            self.fail(field, "a finite decimal of at most 30 digits")
            return None
        if positive and number <= 0:
            self.fail(field, "must be greater than zero")
            return None
        return number

    def one_of(self, field: str, value: str, choices: Iterable[str]) -> str:
        options = tuple(choices)
        if value not in options:
            self.fail(field, f"one of: {', '.join(options)}")
        return value

    def text(self, field: str, value: str, *, max_length: int, required: bool = False) -> str:
        if required and not value.strip():
            self.fail(field, "required")
        elif len(value) > max_length:
            self.fail(field, f"at most {max_length} characters")
        return value

    def limit(self, field: str, value: int, *, default: int, maximum: int) -> int:
        if value == 0:
            return default
        if not 1 <= value <= maximum:
            self.fail(field, f"between 1 and {maximum}")
        return value

    def newest_first_cursor(self, field: str, value: str) -> NewestFirst | None:
        """The position a newest-first page continues after; empty means the first page."""
        if not value:
            return None
        position = NewestFirst.parse(value)
        if position is None:
            self.fail(field, "the nextCursor of an earlier page")
        return position

    def done(self, detail: str = "invalid request") -> None:
        if self.problems:
            summary = "; ".join(f"{p.field}: {p.message}" for p in self.problems[:5])
            raise ValidationFailed(f"{detail}: {summary}", field_errors=self.problems)
