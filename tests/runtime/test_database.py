"""Group-commit storage (services.runtime.storage.Database) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Connection

from services.runtime.storage import Database, after_commit
from services.runtime.storage.migrations import migrate
from tests.support.migrations import items_migrations

T = TypeVar("T")


@pytest.fixture
def db(items_db: Database) -> Database:
    return items_db


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


async def behind_a_blocked_writer(
    db: Database, ops: Sequence[Awaitable[T]]
) -> list[T | BaseException]:
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
    assert db.replays == 1, "the batch failed optimistically once, then ran isolated"
    a, failed, b, duplicate, c = results
    assert isinstance(failed, Boom) and str(failed) == "refused"
    assert isinstance(duplicate, sa.exc.IntegrityError)
    if db.dialect == "postgresql":
        # unique_violation: what execution's unit of work retries, so it must arrive intact.
        assert getattr(duplicate.orig, "sqlstate", None) == "23505"
    # The failing ops' own inserts are rolled back; their neighbours commit, and each
    # caller gets the id of its own row.
    assert ids_by_name(db) == {"a": a, "b": b, "c": c}


def ids_by_name(db: Database) -> dict[str, int]:
    rows = db.read_sync(lambda c: c.execute(sa.text("SELECT name, id FROM items")).all())
    return {str(name): int(id_) for name, id_ in rows}


def statements(db: Database) -> list[str]:
    """Every statement the writer engine runs from now on (a live list)."""
    seen: list[str] = []

    @sa.event.listens_for(db.writer_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return seen


def test_a_batch_that_succeeds_runs_no_savepoint(db: Database) -> None:
    seen = statements(db)
    results = asyncio.run(
        behind_a_blocked_writer(db, [db.write(insert(f"s{i}")) for i in range(20)])
    )

    assert all(isinstance(r, int) for r in results)
    assert db.replays == 0
    assert not [s for s in seen if "SAVEPOINT" in s.upper()], seen
    assert len(names(db)) == 20


def test_the_replay_runs_neighbours_again_but_not_the_failed_op(db: Database) -> None:
    runs = {"before": 0, "failing": 0, "after": 0}

    def counted(key: str, name: str) -> Callable[[Connection], int]:
        def op(conn: Connection) -> int:
            runs[key] += 1
            return insert(name)(conn)

        return op

    def failing(conn: Connection) -> None:
        runs["failing"] += 1
        insert("never")(conn)
        raise Boom("once")

    seen = statements(db)
    before, failed, after = asyncio.run(
        behind_a_blocked_writer(
            db,
            [
                db.write(counted("before", "before")),
                db.write(failing),
                db.write(counted("after", "after")),
            ],
        )
    )

    # The op ahead of the failure ran twice (its first run was rolled back), the failed op
    # once (its caller gets that run's error), the op behind it only in the replay.
    assert runs == {"before": 2, "failing": 1, "after": 1}
    assert isinstance(failed, Boom)
    assert ids_by_name(db) == {"before": before, "after": after}
    # In the replay, each op ran in its own savepoint.
    assert sum("SAVEPOINT" in s.upper() and "RELEASE" not in s.upper() for s in seen) == 2


def test_each_caller_gets_its_own_error_when_many_fail(db: Database) -> None:
    def refused(i: int) -> Callable[[Connection], None]:
        def op(conn: Connection) -> None:
            insert(f"refused-{i}")(conn)
            raise Boom(f"refused {i}")

        return op

    ops = [db.write(refused(i)) if i % 2 else db.write(insert(f"ok-{i}")) for i in range(8)]
    results = asyncio.run(behind_a_blocked_writer(db, ops))

    assert db.replays == 1, "one replay isolates every failure of the batch"
    for i, result in enumerate(results):
        if i % 2:
            assert isinstance(result, Boom) and str(result) == f"refused {i}"
    assert ids_by_name(db) == {f"ok-{i}": results[i] for i in range(0, 8, 2)}


def test_an_op_failing_only_in_the_replay_is_isolated_too(db: Database) -> None:
    """An op is a function of the database, which may change between runs (PostgreSQL)."""
    attempts = 0

    def flaky(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        row = insert("flaky")(conn)
        if attempts > 1:
            raise Boom("second run")
        return row

    def failing(conn: Connection) -> None:
        raise Boom("first run")

    flaky_result, failed, last = asyncio.run(
        behind_a_blocked_writer(db, [db.write(flaky), db.write(failing), db.write(insert("z"))])
    )

    assert isinstance(flaky_result, Boom) and str(flaky_result) == "second run"
    assert isinstance(failed, Boom) and str(failed) == "first run"
    assert ids_by_name(db) == {"z": last}


def test_a_failed_commit_reaches_every_caller_and_the_writer_goes_on(db: Database) -> None:
    def closes_the_transaction(conn: Connection) -> None:
        # Leaves SQLAlchemy's transaction with nothing to commit: the commit raises.
        conn.connection.dbapi_connection.close()  # type: ignore[union-attr]

    async def scenario() -> tuple[list[int | BaseException | None], int]:
        results = await behind_a_blocked_writer(
            db, [db.write(insert("lost")), db.write(closes_the_transaction)]
        )
        return results, await asyncio.wait_for(db.write(insert("after")), 10)

    (lost, closer), after = asyncio.run(scenario())

    assert isinstance(lost, Exception) and isinstance(closer, Exception)
    assert ids_by_name(db) == {"after": after}


@pytest.mark.postgres
def test_several_writers_on_postgresql_keep_results_apart(
    postgres_url: str, tmp_path: Path
) -> None:
    parallel = Database(postgres_url, name="demo", writers=3)
    migrate(parallel, items_migrations(tmp_path / "migrations"), "demo")
    parallel.start()
    try:

        async def main() -> list[int | BaseException]:
            ops = [parallel.write(insert(f"p{i}")) for i in range(150)]
            ops.insert(75, parallel.write(insert("p0")))  # a duplicate, in some batch
            return await asyncio.gather(*ops, return_exceptions=True)

        results = asyncio.run(main())
        duplicate = results.pop(75)
        assert isinstance(duplicate, sa.exc.IntegrityError)
        assert ids_by_name(parallel) == {f"p{i}": results[i] for i in range(150)}
        assert parallel.writes == 151
    finally:
        parallel.close()


def test_sqlite_keeps_one_writer(tmp_path: Path) -> None:
    assert Database(f"sqlite:///{tmp_path / 'one.db'}", name="demo", writers=4).writers == 1


def test_statement_spans_belong_to_the_callers_trace(database_url: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = Database(database_url, name="demo", trace_sql=True, tracer_provider=provider)
    migrate(traced, items_migrations(tmp_path / "migrations"), "demo")
    exporter.clear()  # the migration's statements
    traced.start()
    tracer = provider.get_tracer("test")
    try:

        async def request(name: str) -> trace.SpanContext:
            with tracer.start_as_current_span(f"request {name}") as span:
                await traced.write(insert(name))
                await traced.read(lambda c: c.execute(sa.text("SELECT count(*) FROM items")))
                return span.get_span_context()

        async def main() -> list[trace.SpanContext]:
            return await asyncio.gather(*(request(f"t{i}") for i in range(5)))

        callers = asyncio.run(main())
    finally:
        traced.close()
        provider.shutdown()

    spans = exporter.get_finished_spans()
    inserts = [s for s in spans if s.name.startswith("INSERT")]
    assert len(inserts) == 5
    by_trace = {c.trace_id: c.span_id for c in callers}
    for span in spans:
        if span.name.startswith("request"):
            continue
        # Every statement span, writes (on the writer thread) and reads, is a child of the
        # request that ran it: none starts a trace of its own (the batch's BEGIN is not traced).
        assert span.context is not None and span.parent is not None, span.name
        assert by_trace[span.context.trace_id] == span.parent.span_id, span.name
        assert span.kind is trace.SpanKind.CLIENT
    assert {s.context.trace_id for s in inserts if s.context} == set(by_trace)


def test_statements_are_not_traced_unless_asked(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    quiet = Database(
        f"sqlite:///{tmp_path / 'quiet.db'}", name="demo", trace_sql=False, tracer_provider=provider
    )
    try:
        with provider.get_tracer("test").start_as_current_span("request"):
            quiet.read_sync(lambda c: c.execute(sa.text("SELECT 1")))
    finally:
        quiet.close()
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


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


def test_after_commit_runs_once_per_committed_write_and_never_for_a_failed_one(
    db: Database,
) -> None:
    """The op ahead of a failure runs twice (see above); what it asked to run after the
    commit runs once, and the failed op's never."""
    ran: list[str] = []

    def counted(name: str) -> Callable[[Connection], int]:
        def op(conn: Connection) -> int:
            after_commit(conn, lambda: ran.append(name))
            return insert(name)(conn)

        return op

    def failing(conn: Connection) -> None:
        after_commit(conn, lambda: ran.append("failing"))
        raise Boom("once")

    def failing_in_the_replay(conn: Connection) -> None:
        after_commit(conn, lambda: ran.append("isolated"))
        if "before" in names_in(conn):
            raise Boom("in its savepoint")

    asyncio.run(
        behind_a_blocked_writer(
            db,
            [
                db.write(counted("before")),
                db.write(failing),
                db.write(failing_in_the_replay),
                db.write(counted("after")),
            ],
        )
    )
    assert sorted(ran) == ["after", "before"]
    # A transaction of its own (tools, migrations) runs them too; a later one starts empty.
    db.write_sync(counted("sync"))
    assert sorted(ran) == ["after", "before", "sync"]


def names_in(conn: Connection) -> set[str]:
    return set(conn.execute(sa.text("SELECT name FROM items")).scalars())
