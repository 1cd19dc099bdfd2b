"""Storage benchmark: group commit versus one transaction per write, in-process.

N writes from C concurrent asyncio tasks go, on a fresh database each time:

  per-request   each write in its own transaction (`Database.write_sync` on a thread pool
                of the size asyncio would pick), so every write pays its own commit (the
                baseline);
  group-commit  through `Database.write`: one writer thread runs every queued write in one
                transaction and commits once per batch.

Each runs twice: with a single-row insert per write, and with a write shaped like the
services' units of work (`/uow`: a lookup, the row, an outbox-like event). The `/uow` group
commit runs twice more with tracing on (an SDK tracer provider whose spans are formatted
and discarded): each write under a request span (`+spans`), and also with a span per SQL
statement (`+sql-spans`, `Database(trace_sql=True)`). On PostgreSQL, `/uow x2` is the
`/uow` group commit with two batches in flight (`Database(writers=2)`). Each row's ratio is
to the row named in its `vs`. Each scenario's writes are split over interleaved rounds, so
load from elsewhere on the host weighs on every scenario alike.

SQLite runs on a temp file with the Database's own pragmas (WAL, synchronous=FULL,
BEGIN IMMEDIATE). PostgreSQL runs in a throwaway database `gate4_bench_<hex>` on the
loopback server when it answers, and is skipped with a message otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
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
    sa.Column("seq", sa.Integer, nullable=False, index=True),
    sa.Column("payload", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
# What a unit of work records besides its row: an audit event in the outbox.
bench_events = sa.Table(
    "bench_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(32), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)
EVENT_PAYLOAD = b"e" * 200


@dataclass(frozen=True)
class Scenario:
    name: str
    group: bool
    #: "insert": one INSERT; "uow": SELECT by seq, INSERT the row, INSERT an event.
    op: str
    #: "none"; "request": a span per write; "sql": that and a span per statement.
    spans: str = "none"
    #: The row this one's ratio is to.
    versus: str = "per-request"
    #: Database(writers=...): batches in flight at once (PostgreSQL only).
    writers: int = 1


SCENARIOS = (
    Scenario("per-request", group=False, op="insert"),
    Scenario("group-commit", group=True, op="insert"),
    Scenario("per-request/uow", group=False, op="uow", versus="per-request/uow"),
    Scenario("group-commit/uow", group=True, op="uow", versus="per-request/uow"),
    Scenario("group-commit/uow+spans", True, "uow", "request", versus="group-commit/uow"),
    Scenario("group-commit/uow+sql-spans", True, "uow", "sql", versus="group-commit/uow+spans"),
    Scenario("group-commit/uow x2", True, "uow", versus="group-commit/uow", writers=2),
)


@dataclass(frozen=True)
class StorageOptions:
    requests: int = 2000
    concurrency: int = 64
    duration: float = 15.0
    postgres: bool = True
    postgres_url: str = DEFAULT_POSTGRES_URL
    op_timeout: float = 30.0
    #: Each scenario's writes are split over this many interleaved rounds.
    rounds: int = 3

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


def _unit_of_work(seq: int) -> Callable[[Connection], None]:
    def op(conn: Connection) -> None:
        # Like an idempotency-key lookup: a read on an index before writing.
        if conn.execute(sa.select(bench_writes.c.id).where(bench_writes.c.seq == seq)).first():
            return
        _insert(seq)(conn)
        conn.execute(
            sa.insert(bench_events).values(event_id=uuid.uuid4().hex, payload=EVENT_PAYLOAD)
        )

    return op


class _Discard(SpanExporter):
    """Formats every span as the services' span files do, then drops it."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = io.StringIO()
        for span in spans:
            out.write(span.to_json(indent=None) + os.linesep)
        return SpanExportResult.SUCCESS


def _count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(bench_writes)).scalar_one())


def _fresh_table(db: Database) -> None:
    with db.writer_engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)


@dataclass
class _Pooled:
    """One scenario's rounds, added up."""

    sample: Sample = field(default_factory=Sample)
    transactions: int = 0
    rows: int = 0
    replays: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, sample: Sample, transactions: int, rows: int, replays: int) -> None:
        self.sample.latencies += sample.latencies
        self.sample.ok += sample.ok
        self.sample.errors += sample.errors
        self.sample.elapsed += sample.elapsed
        self.sample.error_kinds.update(sample.error_kinds)
        self.sample.stopped_by_time |= sample.stopped_by_time
        self.transactions += transactions
        self.rows += rows
        self.replays += replays

    def add_cpu(self, percent: dict[str, int], elapsed: float) -> None:
        for name, value in percent.items():
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + value * elapsed / 100

    def cpu(self) -> dict[str, int]:
        elapsed = self.sample.elapsed
        return {n: round(100 * s / elapsed) for n, s in self.cpu_seconds.items()} if elapsed else {}


async def _measure(
    db: Database,
    options: StorageOptions,
    scenario: Scenario,
    provider: TracerProvider | None,
    requests: int,
    pooled: _Pooled,
) -> None:
    loop = asyncio.get_running_loop()
    group = scenario.group
    make = _unit_of_work if scenario.op == "uow" else _insert
    tracer = provider.get_tracer("bench.storage") if provider is not None else None
    # Unique over the warm-up and the measured loop, so the /uow lookup never finds a row.
    keys = itertools.count()
    with ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="bench-tx") as pool:

        async def op(_task: int, _seq: int) -> str | None:
            seq = next(keys)
            with (
                tracer.start_as_current_span("request")
                if tracer is not None
                else contextlib.nullcontext()
            ):
                if group:
                    await db.write(make(seq))
                else:
                    await loop.run_in_executor(pool, db.write_sync, make(seq))
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
        rows_before, batches_before, replays_before = db.read_sync(_count), db.batches, db.replays
        meter = CpuMeter({}, self_name="bench")
        cpu_before = meter.snapshot()
        sample = await run(requests, options.duration / options.rounds)
        pooled.add_cpu(
            CpuMeter.percent(cpu_before, meter.snapshot(), sample.elapsed), sample.elapsed
        )
        rows = db.read_sync(_count) - rows_before
    transactions = db.batches - batches_before if group else sample.ok
    pooled.add(sample, transactions, rows, db.replays - replays_before)


def _run_round(
    url: str, options: StorageOptions, scenario: Scenario, requests: int, pooled: _Pooled
) -> str:
    """Runs one round of scenario on a fresh table; returns the database's dialect."""
    provider = None
    if scenario.spans != "none":
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_Discard()))
    db = Database(
        url,
        name="bench-group" if scenario.group else "bench-single",
        writers=scenario.writers,
        trace_sql=scenario.spans == "sql",
        tracer_provider=provider,
    )
    try:
        _fresh_table(db)
        db.start()
        asyncio.run(_measure(db, options, scenario, provider, requests, pooled))
    finally:
        db.close()
        if provider is not None:
            provider.shutdown()
    return db.dialect


def _figures(scenario: Scenario, options: StorageOptions, pooled: _Pooled, dialect: str) -> Figures:
    sample, transactions = pooled.sample, pooled.transactions
    extra: dict[str, int | float | str] = {
        "vs": scenario.versus,
        "transactions": transactions,
        "writes_per_transaction": round(sample.ok / transactions, 1) if transactions else 0,
        "rows_committed": pooled.rows,
    }
    if scenario.group:
        description = (
            f"Database.write (group commit) from {options.concurrency} tasks; "
            f"one transaction per batch, {scenario.writers} batch(es) in flight"
        )
        extra["replays"] = pooled.replays
    else:
        description = (
            f"Database.write_sync (one transaction per write) from {options.concurrency} tasks "
            f"on {options.threads} threads"
        )
        extra["threads"] = options.threads
    cpu = pooled.cpu()
    extra.update({f"cpu%_{name}": value for name, value in cpu.items()})
    figures = Figures.from_sample(scenario.name, description, sample, extra)
    # On PostgreSQL the server's own CPU is part of "other", so only SQLite can tell noise.
    figures.warnings = cpu_warnings(cpu, check_host=dialect == "sqlite")
    return figures


def _section(backend: str, title: str, options: StorageOptions) -> Section:
    return Section(
        benchmark="storage",
        title=title,
        unit="writes/s",
        baseline=BASELINE,
        notes=[
            f"{options.requests} writes per scenario from {options.concurrency} "
            f"asyncio tasks, in {options.rounds} interleaved rounds (each on a fresh {backend} "
            f"table, after {options.warmup} warm-up writes not counted)",
            "a write is one INSERT, or with /uow a SELECT by an indexed column and two "
            "INSERTs (the row and an outbox-like event)",
            "the ratio column is to the row named by each row's vs (per-request for the first two)",
            "+spans: each write under a recording request span (SDK, spans formatted and "
            "discarded); +sql-spans: also a span per SQL statement",
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
    scenarios = [s for s in SCENARIOS if s.writers == 1 or backend == "postgresql"]
    pooled = {s.name: _Pooled() for s in scenarios}
    dialect = ""
    # Rounds interleave the scenarios, so a burst of load from elsewhere on the host
    # lands on all of them rather than on one.
    for round_ in range(options.rounds):
        requests = options.requests // options.rounds + (round_ < options.requests % options.rounds)
        for scenario in scenarios:
            if requests:
                dialect = _run_round(
                    urls(scenario.name), options, scenario, requests, pooled[scenario.name]
                )
    for scenario in scenarios:
        figures = _figures(scenario, options, pooled[scenario.name], dialect)
        section.rows.append(figures)
        progress(
            f"storage/{backend} {scenario.name}: {figures.requests} writes, "
            f"{figures.errors} errors, {figures.rate:,.0f} writes/s, "
            f"p50 {figures.p50_ms:.1f} ms, p99 {figures.p99_ms:.1f} ms, "
            f"{figures.extra.get('transactions')} transactions"
        )
    section.apply_ratios()
    rates = {row.name: row.rate for row in section.rows}
    for row, scenario in zip(section.rows, scenarios, strict=True):
        base = rates[scenario.versus]
        row.ratio = round(row.rate / base, 3) if base > 0 else None


def run_sqlite(options: StorageOptions, progress: Progress) -> Section:
    section = _section("SQLite", "storage: sqlite (WAL, synchronous=FULL, temp file)", options)
    with tempfile.TemporaryDirectory(prefix="gate4-bench-storage-") as tmp:
        _run_backend(
            "sqlite",
            section,
            lambda name: f"sqlite:///{Path(tmp) / name.replace('/', '-')}.db",
            options,
            progress,
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
