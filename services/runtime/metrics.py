"""Prometheus metrics of the gRPC services, and the server that exports them.

Every metric a service exports is defined here, in the process registry (prometheus_client's
default), and served on the service's own metrics port (GATE4_<NAME>_METRICS_PORT, 0: off),
never on its gRPC port. The gateway keeps its HTTP metrics in gateway/metrics.py.

- RPCs: counted and timed by the server interceptor (services/runtime/interceptors.py), by
  gRPC method, gRPC status and domain error code.
- Outbox: backlog, its bound and reserve, reserve use, refusals, shipments and lease
  takeovers (services/runtime/outbox.py).
- Group commit: batches and writes of each database, read from `Database` at scrape time.
- Idempotency claims by route and outcome (`idempotency_claimed`).
- Gauges whose value lives in a database (kill switches, drawdown): `register_gauge_callback`,
  evaluated at scrape time.

docs/portal/operations/gate4-deployment.md ("Metrics") lists them and what to alert on.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.runtime.config import Settings
from services.runtime.storage import Database

log = logging.getLogger("gate4.metrics")

T = TypeVar("T")

# Up to the longest call timeout (30 s, kill-switch enforcement), so even a call that waited
# out its deadline shows how long it took.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# -- RPCs ---------------------------------------------------------------------------------

RPC_HANDLED = Counter(
    "gate4_rpc_server_handled",
    "RPCs a service answered, by gRPC method, gRPC status and domain error code (OK when none).",
    ["grpc_service", "grpc_method", "grpc_code", "error_code"],
)
RPC_SECONDS = Histogram(
    "gate4_rpc_server_handling_seconds",
    "Time a service took to answer an RPC (a stream: until it ended), by method and status.",
    ["grpc_service", "grpc_method", "grpc_code"],
    buckets=LATENCY_BUCKETS,
)

_RpcChildren = tuple[Any, Any]
# The labelled children by (method, status, error code): one dict lookup per call instead of
# two label resolutions under the metrics' locks.
_rpc_children: dict[tuple[str, grpc.StatusCode, str], _RpcChildren] = {}


def observe_rpc(method: str, status: grpc.StatusCode, error_code: str, seconds: float) -> None:
    """Counts and times one answered RPC; `method` is the full path (/pkg.Service/Method)."""
    key = (method, status, error_code)
    children = _rpc_children.get(key)
    if children is None:
        service, _, name = method.lstrip("/").rpartition("/")
        code = status.name
        children = (
            RPC_HANDLED.labels(service, name, code, error_code),
            RPC_SECONDS.labels(service, name, code),
        )
        _rpc_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


# -- outbox -------------------------------------------------------------------------------

OUTBOX_BACKLOG = Gauge(
    "gate4_outbox_backlog",
    "Audit events waiting to ship, as last counted by a capacity check or the shipper "
    "(at least every few seconds while it runs).",
    ["service"],
)
OUTBOX_MAX_BACKLOG = Gauge(
    "gate4_outbox_max_backlog",
    "GATE4_OUTBOX_MAX_BACKLOG: the backlog at which commands that add risk are refused.",
    ["service"],
)
OUTBOX_RESERVE = Gauge(
    "gate4_outbox_reserve",
    "GATE4_OUTBOX_RESERVE: headroom past the bound for risk-reducing commands.",
    ["service"],
)
OUTBOX_RESERVE_IN_USE = Gauge(
    "gate4_outbox_reserve_in_use",
    "Events of the backlog past GATE4_OUTBOX_MAX_BACKLOG, i.e. in the reserve.",
    ["service"],
)
OUTBOX_RESERVE_ADMISSIONS = Counter(
    "gate4_outbox_reserve_admissions",
    "Risk-reducing writes admitted past GATE4_OUTBOX_MAX_BACKLOG, into the reserve.",
    ["service"],
)
OUTBOX_CAPACITY_REFUSALS = Counter(
    "gate4_outbox_capacity_refusals",
    "Writes refused because the audit backlog was full, by the headroom they had.",
    ["service", "headroom"],
)
OUTBOX_SHIPPED = Counter(
    "gate4_outbox_shipped",
    "Audit events this process shipped (acknowledged by audit) or set aside as rejected.",
    ["service", "result"],
)
OUTBOX_TAKEOVERS = Counter(
    "gate4_outbox_lease_takeovers",
    "Outbox rows claimed after another shipper's lease on them expired (it died or stalled).",
    ["service"],
)

# -- storage ------------------------------------------------------------------------------

DB_WRITE_SECONDS = Histogram(
    "gate4_db_write_seconds",
    "Time from queueing a write to its group commit, sampled on the outbox shipper's writes "
    "(they share each batch with the requests' writes).",
    ["database", "op"],
    buckets=LATENCY_BUCKETS,
)


async def timed_write(db: Database, op_name: str, op: Callable[[Any], T]) -> T:
    """`db.write(op)`, observed in gate4_db_write_seconds."""
    started = time.perf_counter()
    try:
        return await db.write(op)
    finally:
        DB_WRITE_SECONDS.labels(db.name, op_name).observe(time.perf_counter() - started)


class _GroupCommitCollector(Collector):
    """Reads each tracked database's group-commit counters at scrape time."""

    def __init__(self) -> None:
        self._databases: weakref.WeakSet[Database] = weakref.WeakSet()

    def track(self, db: Database) -> None:
        self._databases.add(db)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        batches = CounterMetricFamily(
            "gate4_db_group_commit_batches",
            "Transactions the database's writer committed (each holds one or more writes).",
            labels=["database"],
        )
        writes = CounterMetricFamily(
            "gate4_db_group_commit_writes",
            "Writes committed by group commit; writes/batches is the mean batch size.",
            labels=["database"],
        )
        replays = CounterMetricFamily(
            "gate4_db_group_commit_replays",
            "Batches rolled back and run again, each write in its own savepoint, because one "
            "of their writes raised.",
            labels=["database"],
        )
        # Summed per name: two handles on one database (replicas in one test) are one series.
        totals: dict[str, tuple[int, int, int]] = {}
        for db in list(self._databases):
            b, w, r = totals.get(db.name, (0, 0, 0))
            totals[db.name] = (b + db.batches, w + db.writes, r + db.replays)
        for name, (b, w, r) in sorted(totals.items()):
            batches.add_metric([name], b)
            writes.add_metric([name], w)
            replays.add_metric([name], r)
        return [batches, writes, replays]


_group_commit = _GroupCommitCollector()
REGISTRY.register(_group_commit)


def track_database(db: Database) -> None:
    """Exports the database's group-commit counters while it lives."""
    _group_commit.track(db)


# -- idempotency --------------------------------------------------------------------------

IDEMPOTENCY_CLAIMS = Counter(
    "gate4_idempotency_claims",
    "Idempotency keys claimed by a command, by route and outcome: claimed (first attempt), "
    "resumed (an abandoned attempt's lease taken over) or replayed (the stored result). "
    "Refusals (in progress, key reused) are RPCs counted with their error code.",
    ["route", "outcome"],
)


def idempotency_claimed(route: str, claimed: object) -> None:
    """Counts one claim of services/execution/idempotency.py once its write committed: a
    `Claim` (it carries `resumed`) or a `Stored` result to replay. Called after the write,
    not inside it: group commit may run a write op twice (a replayed batch)."""
    resumed = getattr(claimed, "resumed", None)
    outcome = "replayed" if resumed is None else "resumed" if resumed else "claimed"
    IDEMPOTENCY_CLAIMS.labels(route, outcome).inc()


# -- risk ---------------------------------------------------------------------------------

RISK_BOOKS = Counter(
    "gate4_risk_book_decisions",
    "Order decisions by how they read their account's state (services/risk/books.py): "
    "trusted (the book held in memory was current), loaded (none was held) or stale "
    "(another process, a policy or kill-switch change, or a rolled-back write changed it).",
    ["result"],
)


# -- gauges read at scrape time -----------------------------------------------------------

CALLBACK_FAILURES = Counter(
    "gate4_metrics_callback_failures",
    "Scrapes in which a gauge callback failed (the gauge is left out of that scrape).",
    ["metric"],
)

GaugeSamples = Iterable[tuple[Sequence[str], float]]


class _CallbackGauge(Collector):
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], fn: Callable[[], GaugeSamples]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.fn = fn

    def describe(self) -> Iterable[Metric]:
        # Without describe, registering would call fn (a database read) right away.
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for label_values, value in self.fn():
                family.add_metric(list(label_values), value)
        except Exception:
            # One failing source (its database down) must not fail the whole scrape.
            log.warning("metric callback failed", exc_info=True, extra={"metric": self.name})
            CALLBACK_FAILURES.labels(self.name).inc()
            return
        yield family


_callbacks: dict[str, _CallbackGauge] = {}
_callbacks_lock = threading.Lock()


def register_gauge_callback(
    name: str, documentation: str, labels: Sequence[str], fn: Callable[[], GaugeSamples]
) -> None:
    """Exports gauge `name`, whose samples `fn` returns at each scrape as (label values,
    value) pairs, e.g. one per kill switch read from the database. fn runs on the metrics
    server's thread, so it must use synchronous access (`db.read_sync`). Registering a name
    again replaces the earlier callback (a service started again in one process)."""
    collector = _CallbackGauge(name, documentation, labels, fn)
    with _callbacks_lock:
        previous = _callbacks.pop(name, None)
        if previous is not None:
            REGISTRY.unregister(previous)
        REGISTRY.register(collector)
        _callbacks[name] = collector


# -- the metrics server -------------------------------------------------------------------


class _App(Protocol):
    name: str


class MetricsServer:
    """prometheus_client's HTTP server (its own thread) on the service's metrics port."""

    def __init__(self, port: int, host: str) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        self.host = host
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(settings: Settings, app: _App) -> MetricsServer | None:
    """Exports the app's metrics (and its database's group commit) on its metrics port;
    None when the port is 0. A port that cannot be bound fails the start: it is configured."""
    db = getattr(app, "db", None)
    if isinstance(db, Database):
        track_database(db)
    addr = settings.metrics_addr(app.name)
    if addr is None:
        return None
    host, port = addr
    try:
        server = MetricsServer(port, host)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); set "
            f"GATE4_{app.name.upper()}_METRICS_PORT to a free port, or 0 to disable"
        ) from exc
    log.info("metrics", extra={"addr": f"{host}:{server.port}", "service": app.name})
    return server
