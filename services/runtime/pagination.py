"""Page cursors: where a list continues.

A cursor is the sort key of the last item of a page, written out. Any well-formed cursor
therefore names a position in the list's order, and the list continues after it: a cursor is
refused only for its form, which is the pattern the OpenAPI document gives for it.

- Lists sorted newest first (orders, deployments) sort by (created_at desc, id desc), the id
  breaking ties between items created in the same microsecond; their cursor is
  `<created_at in microseconds since the epoch>.<id>`.
- The audit trail reads oldest first by its global position; its cursor is that position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.runtime.timeutil import as_utc

# 17 digits of microseconds reach the year 5138, well inside what datetime can hold.
NEWEST_FIRST_RE = re.compile(r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$")
# 18 digits stay below 2**63, the largest position a database integer holds.
POSITION_RE = re.compile(r"^[0-9]{1,18}$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class NewestFirst:
    """The position of an item in a list sorted by (created_at desc, id desc)."""

    created_at: datetime
    item_id: str

    def cursor(self) -> str:
        return f"{(as_utc(self.created_at) - _EPOCH) // _MICROSECOND}.{self.item_id}"

    @classmethod
    def parse(cls, cursor: str) -> NewestFirst | None:
        if not NEWEST_FIRST_RE.match(cursor):
            return None
        micros, item_id = cursor.split(".", 1)
        return cls(_EPOCH + int(micros) * _MICROSECOND, item_id)


def position_cursor(position: int) -> str:
    return str(position)


def parse_position(cursor: str) -> int | None:
    return int(cursor) if POSITION_RE.match(cursor) else None
