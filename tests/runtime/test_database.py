"""Group-commit storage (services.runtime.storage.Database) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from tests.support.migrations import items_migrations

T = TypeVar("T")


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = Database(database_url, name="demo", max_batch=256)
    migrate(database, items_migrations(tmp_path / "migrations"), "demo")
    database.start()
    try:
        yield database
    finally:
        database.close()


def insert(name: str) -> Callable[[Connection], int]:
    def op(conn: Connection) -> int:
        return int(
            conn.execute(
                sa.text("INSERT INTO items (name) VALUES (:n) RETURNING id"), {"n": name}
            ).scalar_one()
        )

    return op


def names(db: Database) -> set[str]:
    return set(db.read_sync(lambda c: c.execute(sa.text("SELECT name FROM items")).scalars()))


async def behind_a_blocked_writer(db: Database, ops: list[Awaitable[T]]) -> list[T | BaseException]:
    """Holds the writer thread inside one write until every op is queued, then lets go.

    The ops then share one batch (they are fewer than max_batch), which is what the tests
    about neighbours in a batch need.
    """
    started, release = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> None:
        started.set()
        release.wait(10)

    blocked = asyncio.ensure_future(db.write(blocker))
    await asyncio.to_thread(started.wait, 10)
    tasks = [asyncio.ensure_future(op) for op in ops]
    await asyncio.sleep(0.05)  # every task runs up to its queue put
    release.set()
    await blocked
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_group_commit_batches_concurrent_writes(db: Database) -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(db.write(insert(f"item-{i}")) for i in range(200)))

    ids = asyncio.run(main())

    assert len(set(ids)) == 200
    assert db.writes == 200
    assert db.batches < 200, "concurrent writes should share transactions"
    assert names(db) == {f"item-{i}" for i in range(200)}


def test_batches_never_exceed_max_batch(database_url: str, tmp_path: Path) -> None:
    small = Database(database_url, name="demo", max_batch=10)
    migrate(small, items_migrations(tmp_path / "migrations"), "demo")
    small.start()
    try:
        results = asyncio.run(
            behind_a_blocked_writer(small, [small.write(insert(f"n{i}")) for i in range(50)])
        )
        assert all(isinstance(r, int) for r in results)
        # The blocker's batch, then 50 queued writes in batches of at most 10.
        assert small.batches == 1 + 5
        assert len(names(small)) == 50
    finally:
        small.close()


class Boom(Exception):
    pass


def test_a_failing_write_does_not_undo_its_neighbours(db: Database) -> None:
    def fails_after_inserting(conn: Connection) -> None:
        insert("from-the-failing-op")(conn)
        raise Boom("refused")

    batches_before = db.batches
    results = asyncio.run(
        behind_a_blocked_writer(
            db,
            [
                db.write(insert("a")),
                db.write(fails_after_inserting),
                db.write(insert("b")),
                db.write(insert("a")),  # unique violation inside the database
                db.write(insert("c")),
            ],
        )
    )

    assert db.batches == batches_before + 2, "the five ops should have shared one batch"
    a, failed, b, duplicate, c = results
    assert isinstance(failed, Boom) and str(failed) == "refused"
    assert isinstance(duplicate, sa.exc.IntegrityError)
    assert all(isinstance(r, int) for r in (a, b, c))
    # The failing op's own insert is rolled back to its savepoint; its neighbours commit.
    assert names(db) == {"a", "b", "c"}


def test_reads_see_committed_writes(db: Database) -> None:
    async def main() -> list[str]:
        await db.write(insert("visible"))
        # A separate connection (SQLite's reader engine) sees it as soon as write returns.
        return await db.read(lambda c: list(c.execute(sa.text("SELECT name FROM items")).scalars()))

    assert asyncio.run(main()) == ["visible"]


def test_write_results_come_back_to_their_callers(db: Database) -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(db.write(insert(f"r{i}")) for i in range(20)))

    ids = asyncio.run(main())
    rows = {
        name: id_
        for name, id_ in db.read_sync(
            lambda c: c.execute(sa.text("SELECT name, id FROM items")).all()
        )
    }
    assert ids == [rows[f"r{i}"] for i in range(20)]


def test_close_commits_what_is_already_queued(db: Database) -> None:
    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(db.write(insert(f"q{i}"))) for i in range(30)]
        await asyncio.sleep(0)  # every write is queued
        await asyncio.to_thread(db.close)
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(main())) == 30
    reopened = Database(db.url, name="demo")
    try:
        assert names(reopened) == {f"q{i}" for i in range(30)}
    finally:
        reopened.close()


def test_write_before_start_is_refused(database_url: str) -> None:
    idle = Database(database_url, name="idle")
    try:
        with pytest.raises(RuntimeError, match="not started"):
            asyncio.run(idle.write(insert("x")))
    finally:
        idle.close()


def test_a_caller_that_went_away_does_not_stop_the_writer(db: Database) -> None:
    """A cancelled caller (its RPC's client disconnected) must not kill the writer thread."""
    started, release = threading.Event(), threading.Event()

    def slow(conn: Connection) -> int:
        started.set()
        release.wait(10)
        return insert("orphan")(conn)

    async def scenario() -> int:
        orphan = asyncio.ensure_future(db.write(slow))
        await asyncio.to_thread(started.wait, 10)
        orphan.cancel()
        await asyncio.gather(orphan, return_exceptions=True)
        release.set()
        # The writer survived: the next write commits and returns.
        return await asyncio.wait_for(db.write(insert("after")), 10)

    assert asyncio.run(scenario()) > 0
    # The orphan's write committed all the same; nobody was there to read its result.
    assert names(db) >= {"orphan", "after"}
