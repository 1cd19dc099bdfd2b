"""The decimal wire format: how quantities, prices and money travel as strings.

Every service writes a decimal the same way (plain digits, no exponent, no trailing zeros,
never "-0": 64000.50 -> "64000.5") and reads one the same way (a finite decimal, or none).
What a bad value means stays with the field that carried it: validation messages, risk's
Undecidable, a policy problem.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

ZERO = Decimal(0)


def format_decimal(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros, and never "-0"."""
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def parse_decimal(value: object) -> Decimal | None:
    """The finite decimal a wire value (a string, or a JSON number) holds; None when it
    holds none: empty, malformed, NaN or infinite."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def stored_decimal(value: object) -> Decimal:
    """A decimal column as the service wrote it: empty is zero, anything else must parse."""
    if value is None or value == "":
        return ZERO
    number = parse_decimal(value)
    if number is None:
        raise ValueError(f"stored value {value!r} is not a decimal")
    return number
