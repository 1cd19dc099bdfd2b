"""Page cursors: any well-formed cursor is a position, and the form is the document's."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from gateway.openapi import ApiContract
from services.runtime.pagination import (
    NewestFirst,
    parse_position,
    position_cursor,
)

SCHEMAS = ApiContract().document["components"]["schemas"]


def test_a_newest_first_cursor_names_the_item_it_was_made_from() -> None:
    at = datetime(2026, 11, 30, 11, 8, 31, 485430, tzinfo=UTC)
    cursor = NewestFirst(at, "ord_abc-1").cursor()
    assert cursor == f"{int(at.timestamp())}485430.ord_abc-1"
    assert NewestFirst.parse(cursor) == NewestFirst(at, "ord_abc-1")


@pytest.mark.parametrize(
    "cursor",
    ["1.a", f"{'9' * 17}.{'z' * 64}", "0.ord_x", "1796036895000000.dep_Z-9"],
)
def test_every_cursor_of_the_documented_form_is_a_position(cursor: str) -> None:
    assert re.fullmatch(SCHEMAS["Cursor"]["pattern"], cursor)
    assert NewestFirst.parse(cursor) is not None


@pytest.mark.parametrize(
    "cursor",
    ["abc", "1.", ".a", f"{'9' * 18}.a", f"1.{'a' * 65}", "1.a.b", "1.a b", "ord_123"],
)
def test_a_cursor_of_another_form_is_refused_by_the_document_as_by_the_service(
    cursor: str,
) -> None:
    assert not re.fullmatch(SCHEMAS["Cursor"]["pattern"], cursor)
    assert NewestFirst.parse(cursor) is None


def test_an_audit_cursor_is_the_position_of_the_last_event() -> None:
    assert position_cursor(1042) == "1042" and parse_position("1042") == 1042
    assert parse_position("9" * 18) == int("9" * 18)
    for bad in ("", "p12", "-1", "9" * 19, "1.0"):
        assert parse_position(bad) is None
        assert not bad or not re.fullmatch(SCHEMAS["AuditCursor"]["pattern"], bad)
