"""insert_new: a row is written unless it conflicts with a unique key, with no savepoint and
no error for group commit to replay, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.storage import Database
from services.runtime.storage.conflicts import insert_new

items = sa.table("items", sa.column("id", sa.Integer), sa.column("name", sa.String))


@pytest.fixture
def db(items_db: Database) -> Database:
    return items_db


def names(db: Database) -> list[str]:
    query = sa.select(items.c.name).order_by(items.c.id)
    return list(db.read_sync(lambda c: c.execute(query).scalars()))


def test_a_new_row_is_written_and_a_conflicting_one_is_skipped(db: Database) -> None:
    assert db.write_sync(lambda c: insert_new(c, items, {"name": "a"}, "id")) is True
    assert db.write_sync(lambda c: insert_new(c, items, {"name": "a"}, "id")) is False
    first = db.read_sync(lambda c: c.execute(sa.select(items.c.id)).scalar_one())
    assert db.write_sync(lambda c: insert_new(c, items, {"id": first, "name": "b"}, "id")) is False
    assert names(db) == ["a"]


def test_in_a_batch_a_skipped_row_leaves_its_neighbours_and_the_batch_alone(
    db: Database,
) -> None:
    def claim(name: str) -> Callable[[Connection], bool]:
        def op(conn: Connection) -> bool:
            return insert_new(conn, items, {"name": name}, "id")

        return op

    async def go() -> list[bool]:
        return await asyncio.gather(*(db.write(claim(n)) for n in ("x", "y", "x", "z", "y")))

    results = asyncio.run(go())
    assert sorted(results) == [False, False, True, True, True]
    assert sorted(names(db)) == ["x", "y", "z"]
    assert db.replays == 0
