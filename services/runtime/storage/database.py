"""Database access with group commit.

Writes are plain functions of a SQLAlchemy `Connection`, queued to a writer thread that
runs every pending write in a single transaction and commits once per batch: concurrent
requests share one commit (one fsync, one round trip) instead of paying one each. Reads
run on a small thread pool.

A batch runs optimistically, with no savepoint per write: on PostgreSQL a savepoint costs
two round trips per write, which made group commit slower than a transaction per request.
If a write raises, the whole transaction is rolled back and the batch replayed with every
other write in its own savepoint, so one failing write still does not undo its neighbours.
The failing write is not run again: its caller gets the error of its first run. Because
its neighbours may run twice, an op must not change anything outside the transaction that
a second run would count again: what it counts or logs about its write goes through
`after_commit`, which runs once the transaction commits, and never for a run rolled back.
(psycopg's pipeline mode would not do: SQLAlchemy reads each statement's result as it
runs, and a pipelined error surfaces at a later statement, so it could not be pinned on the
op that caused it.)

On PostgreSQL, `writers` > 1 keeps several batches in flight on their own connections; their
ops then contend for locks as separate processes' ops do (see services/risk/locks.py).
SQLite keeps one writer: its write lock is per file. With `trace_sql`, each statement is a
client span under the span of the request that ran it (OpenTelemetry's SQLAlchemy
instrumentation), also on the writer thread, which runs each op in its caller's context.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as _otel_sa_version
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.semconv.metrics import MetricInstruments
from sqlalchemy.engine import Connection, Engine

from services.runtime.config import get_settings

log = logging.getLogger("gate4.storage")

T = TypeVar("T")
WriteOp = Callable[[Connection], T]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "postgresql+"))


def normalise_url(url: str) -> str:
    """Lets users write postgresql://...; we always use the psycopg (v3) driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass
class _Pending:
    op: Callable[[Connection], Any]
    future: Future[Any]
    # The caller's context (correlation ids, current span), so ops see them on the writer thread.
    context: contextvars.Context


# What a write came to: its result, or the exception its caller gets.
_Outcome = tuple[Any, Exception | None]


class _OpFailed(Exception):
    """Ends the optimistic run of a batch (rolling it back) when one of its writes raised."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


_STOP = object()

#: Where a transaction's `after_commit` callbacks wait (the connection's info, cleared at
#: every begin: it belongs to the pooled DBAPI connection and outlives one transaction).
_AFTER_COMMIT = "gate4.after_commit"


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Runs callback, in the caller's context, once the transaction `conn` is in commits;
    never if it rolls back. A metric or a log line about a write counts it once, although
    group commit may run the write twice."""
    context = contextvars.copy_context()
    conn.info.setdefault(_AFTER_COMMIT, []).append(lambda: context.run(callback))


def _begun(conn: Connection) -> Connection:
    conn.info.pop(_AFTER_COMMIT, None)
    return conn


def _committed(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a count or a log line must never fail a committed write
            log.exception("an after-commit callback failed")


def trace_statements(engine: Engine, provider: trace.TracerProvider | None = None) -> None:
    """Makes each statement on engine a client span under the current span.

    SQLAlchemyInstrumentor().instrument() is a process-wide singleton that also patches
    sa.create_engine and Engine.connect, and returns nothing when called again; the
    EngineTracer it attaches per engine is all we want, for this engine only.
    """
    name = "opentelemetry.instrumentation.sqlalchemy"
    usage = metrics.get_meter(name, _otel_sa_version).create_up_down_counter(
        name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
        unit="connections",
        description="Connections of the pool, by state (idle, used).",
    )
    tracer = trace.get_tracer(name, _otel_sa_version, provider)
    EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]  # untyped package


class Database:
    def __init__(
        self,
        url: str,
        *,
        name: str,
        max_batch: int = 256,
        writers: int = 1,
        trace_sql: bool | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        """writers: batches in flight at once, PostgreSQL only (see the module docstring).
        trace_sql: a span per statement; None takes the process's setting (GATE4_TRACE_SQL).
        tracer_provider: for those spans; None is the global one."""
        self.url = normalise_url(url)
        self.name = name
        self.max_batch = max_batch
        self.dialect = "postgresql" if is_postgres_url(self.url) else "sqlite"
        if self.dialect == "sqlite":
            self._ensure_sqlite_folder()
        self.writer_engine = self._make_engine(writer=True)
        self.reader_engine = (
            self._make_engine(writer=False) if self.dialect == "sqlite" else self.writer_engine
        )
        if get_settings().trace_sql if trace_sql is None else trace_sql:
            for engine in {self.writer_engine, self.reader_engine}:
                trace_statements(engine, tracer_provider)
        # SQLite has one write lock per file: a second writer would only wait for it.
        self.writers = writers if self.dialect == "postgresql" else 1
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()
        self.batches = 0
        self.writes = 0
        #: Batches rolled back and run again because one of their writes raised.
        self.replays = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(
                    target=self._writer_loop, name=f"{self.name}-writer-{i}", daemon=True
                )
                for i in range(self.writers)
            ]
            for thread in self._threads:
                thread.start()

    def close(self) -> None:
        if self._threads:
            for _ in self._threads:
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join()
            self._threads = []
        self.writer_engine.dispose()
        if self.reader_engine is not self.writer_engine:
            self.reader_engine.dispose()

    # -- access ----------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Runs op inside the next group-committed transaction; returns after the commit.

        op may run more than once (see the module docstring); only its last run commits.
        """
        if not self._threads:
            raise RuntimeError(f"database {self.name} is not started")
        future: Future[T] = Future()
        self._queue.put(_Pending(op, future, contextvars.copy_context()))
        return await asyncio.wrap_future(future)

    async def read(self, op: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.read_sync, op)

    def read_sync(self, op: Callable[[Connection], T]) -> T:
        with self.reader_engine.connect() as conn:
            return op(conn)

    def write_sync(self, op: WriteOp[T]) -> T:
        """A write outside group commit, for tools and migrations in their own process."""
        with self.writer_engine.begin() as conn:
            result = op(_begun(conn))
            callbacks = conn.info.pop(_AFTER_COMMIT, [])
        _committed(callbacks)
        return result

    # -- internals -------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        # Only the ops' own statements are traced, in their callers' contexts (each
        # _Pending.context): the batch's BEGIN belongs to no single request.
        with suppress_instrumentation():
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                batch: list[_Pending] = [item]  # type: ignore[list-item]
                stop_after = False
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop_after = True
                        break
                    batch.append(nxt)  # type: ignore[arg-type]
                self._commit(batch)
                if stop_after:
                    return

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._run_batch(batch)
        except Exception as exc:  # the commit itself failed: nothing in the batch persisted
            log.exception("group commit failed", extra={"database": self.name})
            for pending in batch:
                with contextlib.suppress(InvalidStateError):
                    pending.future.set_exception(exc)
            return
        with self._count_lock:
            self.batches += 1
            self.writes += len(batch)
        for pending, (result, error) in zip(batch, outcomes, strict=True):
            # A caller that went away (its task cancelled, e.g. the RPC's client disconnected)
            # cancelled its future: the write committed all the same and nobody awaits the
            # result. Setting it would raise InvalidStateError and kill the writer thread.
            with contextlib.suppress(InvalidStateError):
                if error is not None:
                    pending.future.set_exception(error)
                else:
                    pending.future.set_result(result)

    def _run_batch(self, batch: list[_Pending]) -> list[_Outcome]:
        """Runs and commits batch; raises only when the transaction itself fails."""
        try:
            with self.writer_engine.begin() as conn:
                _begun(conn)
                results = [self._run_plain(i, pending, conn) for i, pending in enumerate(batch)]
                callbacks = conn.info.pop(_AFTER_COMMIT, [])
            _committed(callbacks)
            return [(result, None) for result in results]
        except _OpFailed as failed:
            first = failed  # rolled back: run the batch again with each write isolated
        with self._count_lock:
            self.replays += 1
        outcomes: list[_Outcome] = []
        with self.writer_engine.begin() as conn:
            _begun(conn)
            for i, pending in enumerate(batch):
                if i == first.index:
                    outcomes.append((None, first.error))
                else:
                    outcomes.append(pending.context.run(self._run_isolated, pending.op, conn))
            callbacks = conn.info.pop(_AFTER_COMMIT, [])
        _committed(callbacks)
        return outcomes

    @staticmethod
    def _run_plain(index: int, pending: _Pending, conn: Connection) -> Any:
        try:
            return pending.context.run(pending.op, conn)
        except Exception as exc:
            raise _OpFailed(index, exc) from exc

    @staticmethod
    def _run_isolated(op: Callable[[Connection], Any], conn: Connection) -> _Outcome:
        waiting = conn.info.setdefault(_AFTER_COMMIT, [])
        mark = len(waiting)
        try:
            with conn.begin_nested():
                return op(conn), None
        except Exception as exc:  # the op's own failure, rolled back to its savepoint
            del waiting[mark:]  # and what it asked to run after the commit, with it
            return None, exc

    def _ensure_sqlite_folder(self) -> None:
        path = self.url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _make_engine(self, *, writer: bool) -> Engine:
        if self.dialect == "postgresql":
            return sa.create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # The writer takes the write lock up front, so it never fails to upgrade later.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
