"""Database access with group commit.

Writes are plain functions of a SQLAlchemy `Connection`, queued to one writer thread that
runs every pending write in a single transaction (each inside its own savepoint, so one
failing write does not undo its neighbours) and commits once per batch: concurrent
requests share one fsync instead of paying one each. Reads run on a small thread pool.
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
from sqlalchemy.engine import Connection, Engine

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


_STOP = object()


class Database:
    def __init__(self, url: str, *, name: str, max_batch: int = 256) -> None:
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
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.writes = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._writer_loop, name=f"{self.name}-writer", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self.writer_engine.dispose()
        if self.reader_engine is not self.writer_engine:
            self.reader_engine.dispose()

    # -- access ----------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Runs op inside the next group-committed transaction; returns after the commit."""
        if self._thread is None:
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
            return op(conn)

    # -- internals -------------------------------------------------------------------------

    def _writer_loop(self) -> None:
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
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        try:
            with self.writer_engine.begin() as conn:
                for pending in batch:
                    try:
                        with conn.begin_nested():
                            result = pending.context.run(pending.op, conn)
                        outcomes.append((pending, result, None))
                    except Exception as exc:  # the op's own failure, rolled back to its savepoint
                        outcomes.append((pending, None, exc))
        except Exception as exc:  # the commit itself failed: nothing in the batch persisted
            log.exception("group commit failed", extra={"database": self.name})
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(batch)
        for pending, result, error in outcomes:
            # A caller that went away (its task cancelled, e.g. the RPC's client disconnected)
            # cancelled its future: the write committed all the same and nobody awaits the
            # result. Setting it would raise InvalidStateError and kill the writer thread.
            with contextlib.suppress(InvalidStateError):
                if error is not None:
                    pending.future.set_exception(error)
                else:
                    pending.future.set_result(result)

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
