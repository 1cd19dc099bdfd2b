"""Storage benchmark: group commit versus one transaction per write, in-process.

N small inserts from C concurrent asyncio tasks go, on a fresh database each time:

  per-request   each insert in its own transaction (`Database.write_sync` on a thread pool
                of the size asyncio would pick), so every write pays its own commit (the
                baseline);
  group-commit  through `Database.write`: one writer thread runs every queued write in one
                transaction and commits once per batch.

SQLite runs on a temp file with the Database's own pragmas (WAL, synchronous=FULL,
BEGIN IMMEDIATE). PostgreSQL runs in a throwaway database `gate4_bench_<hex>` on the
loopback server when it answers, and is skipped with a message otherwise.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection, make_url

from bench.cpu import CpuMeter
from bench.cpu import warnings as cpu_warnings
from bench.load import Sample, closed_loop
from bench.report import Figures, Section
from services.runtime.storage import Database

Progress = Callable[[str], None]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BASELINE = "per-request"
PAYLOAD = "x" * 48
WARMUP_SECONDS = 3.0

metadata = sa.MetaData()
bench_writes = sa.Table(
    "bench_writes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("payload", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class StorageOptions:
    requests: int = 2000
    concurrency: int = 64
    duration: float = 15.0
    postgres: bool = True
    postgres_url: str = DEFAULT_POSTGRES_URL
    op_timeout: float = 30.0

    @property
    def threads(self) -> int:
        """The thread pool asyncio.to_thread would use by default on this machine."""
        return min(32, (os.cpu_count() or 1) + 4)

    @property
    def warmup(self) -> int:
        return max(1, min(50, self.requests // 20))


def _insert(seq: int) -> Callable[[Connection], None]:
    def op(conn: Connection) -> None:
        conn.execute(
            sa.insert(bench_writes).values(seq=seq, payload=PAYLOAD, created_at=time.time())
        )

    return op


def _count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(bench_writes)).scalar_one())


def _fresh_table(db: Database) -> None:
    with db.writer_engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)


async def _measure(
    db: Database, options: StorageOptions, group: bool
) -> tuple[Sample, dict[str, int | float | str], dict[str, int]]:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="bench-tx") as pool:

        async def op(_task: int, seq: int) -> str | None:
            if group:
                await db.write(_insert(seq))
            else:
                await loop.run_in_executor(pool, db.write_sync, _insert(seq))
            return None

        async def run(requests: int, duration: float) -> Sample:
            return await closed_loop(
                op,
                requests=requests,
                concurrency=options.concurrency,
                duration=duration,
                op_timeout=options.op_timeout,
            )

        await run(options.warmup, min(WARMUP_SECONDS, options.duration))
        rows_before, batches_before = db.read_sync(_count), db.batches
        meter = CpuMeter({}, self_name="bench")
        cpu_before = meter.snapshot()
        sample = await run(options.requests, options.duration)
        cpu = CpuMeter.percent(cpu_before, meter.snapshot(), sample.elapsed)
        rows = db.read_sync(_count) - rows_before
    transactions = db.batches - batches_before if group else sample.ok
    extra: dict[str, int | float | str] = {
        "transactions": transactions,
        "writes_per_transaction": round(sample.ok / transactions, 1) if transactions else 0,
        "rows_committed": rows,
    }
    if not group:
        extra["threads"] = options.threads
    extra.update({f"cpu%_{name}": value for name, value in cpu.items()})
    return sample, extra, cpu


def _run_mode(url: str, options: StorageOptions, group: bool) -> Figures:
    db = Database(url, name="bench-group" if group else "bench-single")
    try:
        _fresh_table(db)
        db.start()
        sample, extra, cpu = asyncio.run(_measure(db, options, group))
    finally:
        db.close()
    if group:
        description = (
            f"Database.write (group commit) from {options.concurrency} tasks; "
            "one transaction per batch"
        )
    else:
        description = (
            f"Database.write_sync (one transaction per write) from {options.concurrency} tasks "
            f"on {options.threads} threads"
        )
    figures = Figures.from_sample("group-commit" if group else BASELINE, description, sample, extra)
    # On PostgreSQL the server's own CPU is part of "other", so only SQLite can tell noise.
    figures.warnings = cpu_warnings(cpu, check_host=db.dialect == "sqlite")
    return figures


def _section(backend: str, title: str, options: StorageOptions) -> Section:
    return Section(
        benchmark="storage",
        title=title,
        unit="writes/s",
        baseline=BASELINE,
        notes=[
            f"{options.requests} single-row inserts per scenario from {options.concurrency} "
            f"asyncio tasks, {options.warmup} warm-up writes not counted; each scenario on a "
            f"fresh {backend} table",
            "latency is from the task's call to its commit being acknowledged",
            "cpu%_bench = this process (tasks, threads, the writer thread), in % of one core",
        ],
    )


def _run_backend(
    backend: str,
    section: Section,
    urls: Callable[[str], str],
    options: StorageOptions,
    progress: Progress,
) -> None:
    for group in (False, True):
        name = "group-commit" if group else BASELINE
        figures = _run_mode(urls(name), options, group)
        section.rows.append(figures)
        progress(
            f"storage/{backend} {name}: {figures.requests} writes, "
            f"{figures.errors} errors, {figures.rate:,.0f} writes/s, "
            f"p50 {figures.p50_ms:.1f} ms, p99 {figures.p99_ms:.1f} ms, "
            f"{figures.extra.get('transactions')} transactions"
        )
    section.apply_ratios()


def run_sqlite(options: StorageOptions, progress: Progress) -> Section:
    section = _section("SQLite", "storage: sqlite (WAL, synchronous=FULL, temp file)", options)
    with tempfile.TemporaryDirectory(prefix="gate4-bench-storage-") as tmp:
        _run_backend(
            "sqlite", section, lambda name: f"sqlite:///{Path(tmp) / name}.db", options, progress
        )
    return section


def postgres_problem(admin_url: str) -> str | None:
    """None when the server at admin_url answers on loopback, else why it is not used."""
    try:
        url = make_url(admin_url)
    except Exception as exc:  # sa.exc.ArgumentError and friends
        return f"invalid PostgreSQL URL: {exc}"
    host, shown = url.host, url.render_as_string(hide_password=True)
    if host not in LOOPBACK_HOSTS:
        return f"PostgreSQL host {host!r} is not loopback; the benchmark only talks to 127.0.0.1"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {shown} is unreachable: {' '.join(str(exc).split())}"
    return None


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """Creates gate4_bench_<hex>; yields its URL; drops it (WITH (FORCE)) afterwards."""
    name = f"gate4_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run_postgres(options: StorageOptions, progress: Progress) -> Section:
    section = _section("PostgreSQL", "storage: postgresql (throwaway database)", options)
    section.notes.append("cpu%_other includes the PostgreSQL server's own processes")
    problem = postgres_problem(options.postgres_url)
    if problem is not None:
        section.skipped = problem
        progress(f"storage/postgresql: skipped ({problem})")
        return section
    with throwaway_database(options.postgres_url) as url:
        _run_backend("postgresql", section, lambda _name: url, options, progress)
    return section


def run(options: StorageOptions, progress: Progress) -> list[Section]:
    sections = [run_sqlite(options, progress)]
    if options.postgres:
        sections.append(run_postgres(options, progress))
    return sections
