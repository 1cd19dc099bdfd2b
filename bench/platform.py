"""Platform benchmark: what users feel, next to ceilings measured in the same run with wrk.

Ceilings (bench/ceilings.py, separate processes, the platform's libraries and settings):
a no-op JSON POST route; that route plus one no-op grpc.aio hop; plus two sequential hops.

Scenarios, through a fresh five-process platform (SQLite unless said otherwise), each
held to its ceiling:

    healthz            GET /healthz                                  vs route alone
    orders             POST /v1/orders, unique Idempotency-Key, alternating sides, a
                       bench policy whose limits are far away         vs two hops
    deployment-read    GET /v1/deployments/{id}                       vs one hop
    order-read         GET /v1/orders/{id}                            vs one hop
    turn-help          POST .../turns "help" over many sessions       vs one hop
    turn-status        POST .../turns "status of all deployments"     vs one hop
    orders (tracing off)   the orders scenario with OTEL_TRACES_SAMPLER=always_off
    orders (PostgreSQL)    the orders scenario with every process on one PostgreSQL database

Per scenario: req/s of 2xx answers, p50, p99, non-2xx answers, the ratio to its ceiling;
each process's CPU share during the scenario and its RSS after the run. The goals the
platform is held to are printed next to what was measured; nothing passes or fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bench import wrk
from bench.cpu import CpuMeter
from bench.cpu import warnings as cpu_warnings
from bench.report import Comparison, Figures, Section, compare
from bench.storage import DEFAULT_POSTGRES_URL, postgres_problem, throwaway_database
from cli.devstack import Stack, free_port
from gateway.apikeys import ApiKeyStore, open_database
from services.runtime.auth import mint_token
from services.runtime.config import Settings
from services.runtime.roles import PLATFORM as ROLES

Progress = Callable[[str], None]

TENANT = "acme"
USER = "alice"
_ISOLATED_PREFIXES = ("GATE4_", "OTEL_")

ROUTE_ALONE = "route"
ONE_HOP = "route+1hop"
TWO_HOPS = "route+2hops"
ECHO_BODY = json.dumps({"deploymentId": "dep_x", "side": wrk.SIDE, "quantity": "1"})

# Every limit far away, so the orders measure the path, not a refusal.
BENCH_POLICY: dict[str, Any] = {
    "schema": "risk-policy.v1",
    "name": "bench",
    "limits": {
        "maxOrderNotional": "1000000000",
        "maxOrderQuantity": "1000",
        "maxPositionNotional": "1000000000",
        "maxOpenOrders": 100000,
        "orderRate": {"maxOrders": 100000, "windowSeconds": 1},
        "priceCollarPct": "50",
        "markMaxAgeSeconds": 86400,
        "maxCapitalAllocation": "1000000000",
        "dailyLossLimit": "1000000000",
    },
    "instruments": {"allowed": [], "restricted": []},
    "killSwitch": {"maxDrawdownPct": "90", "confirmations": 100, "flattenOnTrip": False},
}


@dataclass(frozen=True)
class PlatformOptions:
    seconds: float = 10.0
    warmup: float = 3.0
    connections: int = 32
    sessions: int = 256
    untraced: bool = True
    postgres: bool = True
    postgres_url: str = DEFAULT_POSTGRES_URL
    start_timeout: float = 60.0


@dataclass(frozen=True)
class Goal:
    text: str
    check: Callable[[dict[str, Figures]], tuple[bool, str] | None]


def _ratio(rows: dict[str, Figures], name: str) -> float | None:
    row = rows.get(name)
    return row.ratio if row is not None else None


def _at_least(name: str, floor: float) -> Callable[[dict[str, Figures]], tuple[bool, str] | None]:
    def check(rows: dict[str, Figures]) -> tuple[bool, str] | None:
        ratio = _ratio(rows, name)
        return None if ratio is None else (ratio >= floor, f"{ratio:.2f}x")

    return check


# -- the processes under test ---------------------------------------------------------------------


class _DefaultSettings(Settings):
    """Settings from defaults and arguments only, matching the isolated processes' env."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def isolate(stack: Stack, overrides: dict[str, str]) -> None:
    """Drops inherited GATE4_*/OTEL_* variables from every process, then applies overrides,
    so no remote database or collector of the caller's environment is contacted. Variables
    the stack itself set (var dir, addresses, ports) are kept."""

    def inherited(key: str, value: str) -> bool:
        return key.startswith(_ISOLATED_PREFIXES) and os.environ.get(key) == value

    for process in stack.processes.values():
        kept = {k: v for k, v in process.env.items() if not inherited(k, v)}
        kept.update(overrides)
        process.env = kept


def credentials(var_dir: Path, database_url: str = "") -> dict[str, str]:
    """Headers for the bench tenant and user holding every role; the API key goes into the
    gateway's database (the SQLite file under var_dir, or the PostgreSQL one)."""
    settings = _DefaultSettings(var_dir=var_dir, database_url=database_url)
    db = open_database(settings)
    try:
        api_key = ApiKeyStore(db, 0).create_sync(TENANT, "bench")
    finally:
        db.close()
    token = mint_token(
        settings, tenant_id=TENANT, user_id=USER, roles=list(ROLES), ttl_seconds=3600
    )
    return {
        "Authorization": f"Bearer {token}",
        "X-API-Key": api_key,
        "X-Tenant-Id": TENANT,
        "X-User-Id": USER,
    }


# -- measuring ------------------------------------------------------------------------------------


def measure(
    name: str,
    description: str,
    base_url: str,
    load: wrk.Load,
    options: PlatformOptions,
    meter: CpuMeter | None = None,
) -> Figures:
    if options.warmup > 0:
        wrk.run(base_url, load, seconds=options.warmup, connections=options.connections)
    before = meter.snapshot() if meter is not None else {}
    result = wrk.run(base_url, load, seconds=options.seconds, connections=options.connections)
    figures = Figures(
        name=name,
        description=description,
        requests=result.requests,
        errors=result.non2xx + result.socket_errors,
        elapsed_s=round(result.seconds, 3),
        rate=round(result.rate, 1),
        p50_ms=round(result.p50_ms, 2),
        p90_ms=round(result.p90_ms, 2),
        p99_ms=round(result.p99_ms, 2),
        max_ms=round(result.max_ms, 2),
        error_kinds={
            k: v for k, v in (("non2xx", result.non2xx), ("socket", result.socket_errors)) if v
        },
    )
    if meter is not None:
        cpu = CpuMeter.percent(before, meter.snapshot(), result.seconds)
        # wrk is not one of the named processes: its CPU is part of cpu%_other.
        figures.extra.update({f"cpu%_{k}": v for k, v in cpu.items() if k != "loadgen"})
        figures.warnings = cpu_warnings(cpu, check_host=False)
    return figures


@contextmanager
def _processes(commands: list[list[str]]) -> Iterator[None]:
    procs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        for command in commands
    ]
    try:
        yield
    finally:
        for proc in reversed(procs):  # the route first, so no hop is cut mid-call
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_http(url: str, timeout: float) -> None:
    """Until the route answers 200: its hops' processes are up too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{url}/echo", json={}, timeout=1, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def ceilings(options: PlatformOptions, progress: Progress) -> Section:
    section = Section(
        benchmark="platform",
        title="ceilings: the platform's libraries doing nothing (separate processes)",
        unit="req/s",
        baseline=ROUTE_ALONE,
        notes=["the route parses and echoes a 100-byte JSON body; hops are no-op unary calls"],
    )
    python = sys.executable
    for name, hops in ((ROUTE_ALONE, 0), (ONE_HOP, 1), (TWO_HOPS, 2)):
        ports = [free_port() for _ in range(hops)]
        route = free_port()
        commands = [[python, "-m", "bench.ceilings", "service", "--port", str(p)] for p in ports]
        hop_args = [arg for p in ports for arg in ("--hop", f"127.0.0.1:{p}")]
        commands.append([python, "-m", "bench.ceilings", "route", "--port", str(route), *hop_args])
        with _processes(commands):
            url = f"http://127.0.0.1:{route}"
            _wait_http(url, options.start_timeout)
            load = wrk.Load("POST", ["/echo"], body=ECHO_BODY)
            figures = measure(name, f"JSON POST route + {hops} no-op hop(s)", url, load, options)
        section.rows.append(figures)
        progress(f"ceiling {name}: {figures.rate:,.0f} req/s, p99 {figures.p99_ms:.1f} ms")
    section.apply_ratios()
    return section


# -- the platform ---------------------------------------------------------------------------------


@dataclass
class Fixture:
    """What the scenarios trade and read: one deployment, one order, many sessions."""

    headers: dict[str, str]
    deployment_id: str
    order_id: str
    sessions: list[str]


def _check(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def prepare(url: str, headers: dict[str, str], options: PlatformOptions) -> Fixture:
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
        _check(client.put("/v1/risk/policy", json={"policy": BENCH_POLICY, "reason": "bench"}), 200)
        marks = {"marks": [{"instrument": "BTC-USD", "price": "100"}]}
        _check(client.post("/v1/sandbox/marks", json=marks), 200)
        deployment = _check(
            client.post(
                "/v1/deployments",
                json={
                    "strategyId": "bench",
                    "accountId": "acc-bench",
                    "instruments": ["BTC-USD"],
                    "capitalAllocation": "100000000",
                },
                headers={"Idempotency-Key": "bench-deployment"},
            ),
            201,
        )
        order = _check(
            client.post(
                "/v1/orders",
                json=_order(deployment["deploymentId"], "buy"),
                headers={"Idempotency-Key": "bench-first-order"},
            ),
            201,
        )
        session = {"channel": "openclaw", "topic": "bench", "metadata": {}}
        sessions = [
            _check(client.post("/v2/conversations/sessions", json=session), 201)["sessionId"]
            for _ in range(options.sessions)
        ]
    return Fixture(headers, deployment["deploymentId"], order["orderId"], sessions)


def _order(deployment_id: str, side: str) -> dict[str, str]:
    return {
        "deploymentId": deployment_id,
        "instrument": "BTC-USD",
        "side": side,
        "type": "market",
        "quantity": "1",
    }


def scenarios(fx: Fixture) -> list[tuple[str, str, str, wrk.Load]]:
    """(name, ceiling, description, load) of every scenario on one platform."""
    auth = fx.headers
    turns = [f"/v2/conversations/sessions/{s}/turns" for s in fx.sessions]
    return [
        ("healthz", ROUTE_ALONE, "GET /healthz", wrk.Load("GET", ["/healthz"])),
        (
            "orders",
            TWO_HOPS,
            "POST /v1/orders: market, unique key, alternating sides",
            wrk.Load(
                "POST",
                ["/v1/orders"],
                auth,
                json.dumps(_order(fx.deployment_id, wrk.SIDE)),
                keyed=True,
            ),
        ),
        (
            "deployment-read",
            ONE_HOP,
            "GET /v1/deployments/{id}",
            wrk.Load("GET", [f"/v1/deployments/{fx.deployment_id}"], auth),
        ),
        (
            "order-read",
            ONE_HOP,
            "GET /v1/orders/{id}",
            wrk.Load("GET", [f"/v1/orders/{fx.order_id}"], auth),
        ),
        (
            "turn-help",
            ONE_HOP,
            f'POST turns "help" over {len(turns)} sessions',
            wrk.Load("POST", turns, auth, json.dumps({"message": "help"})),
        ),
        (
            "turn-status",
            ONE_HOP,
            f'POST turns "status of all deployments" over {len(turns)} sessions',
            wrk.Load("POST", turns, auth, json.dumps({"message": "status of all deployments"})),
        ),
    ]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run_platform(
    title: str,
    env: dict[str, str],
    only: set[str] | None,
    ceiling: Section,
    options: PlatformOptions,
    progress: Progress,
    database_url: str = "",
) -> Section:
    section = Section(
        benchmark="platform",
        title=title,
        unit="req/s",
        baseline="its ceiling",
        notes=[
            f"wrk -t1 -c{options.connections}, {options.seconds:g}s per scenario after a "
            f"{options.warmup:g}s warm-up; servers and load generator share "
            f"{os.cpu_count()} cores",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="gate4-bench-platform-") as tmp:
        var_dir = Path(tmp)
        stack = Stack(var_dir)
        isolate(stack, {**env, **({"GATE4_DATABASE_URL": database_url} if database_url else {})})
        progress(f"{title}: starting the platform")
        try:
            stack.start(timeout=options.start_timeout)
            fx = prepare(stack.gateway_url, credentials(var_dir, database_url), options)
            pids = {n: p.proc.pid for n, p in stack.processes.items() if p.proc is not None}
            meter = CpuMeter(pids)
            for name, ceiling_name, description, load in scenarios(fx):
                if only is not None and name not in only:
                    continue
                figures = measure(name, description, stack.gateway_url, load, options, meter)
                top = ceiling.row(ceiling_name)
                if top is not None and top.rate > 0:
                    figures.ratio = round(figures.rate / top.rate, 3)
                figures.extra["ceiling"] = ceiling_name
                section.rows.append(figures)
                progress(
                    f"{title} {name}: {figures.rate:,.0f} req/s, p50 {figures.p50_ms:.1f} ms, "
                    f"p99 {figures.p99_ms:.1f} ms, non-2xx {figures.error_kinds.get('non2xx', 0)}"
                )
            rss = {name: _rss_mb(pid) for name, pid in pids.items()}
            section.notes.append(
                "RSS after the run (MB): "
                + ", ".join(f"{n} {v:g}" for n, v in rss.items() if v is not None)
            )
        finally:
            stack.stop()
    return section


GOALS = (
    ("orders >= 0.75x of the two-hop ceiling", "default", _at_least("orders", 0.75)),
    (
        "deployment reads >= 0.8x of the one-hop ceiling",
        "default",
        _at_least("deployment-read", 0.8),
    ),
    ("order reads >= 0.8x of the one-hop ceiling", "default", _at_least("order-read", 0.8)),
    ("help turns >= 0.7x of the one-hop ceiling", "default", _at_least("turn-help", 0.7)),
    ("status turns >= 0.7x of the one-hop ceiling", "default", _at_least("turn-status", 0.7)),
)


def goals(sections: dict[str, Section]) -> list[str]:
    """The goals the platform is held to, each with what this run measured."""
    lines: list[str] = []
    default = sections.get("default")
    rows = {r.name: r for r in default.rows} if default is not None else {}
    for text, _key, check in GOALS:
        verdict = check(rows)
        lines.append(_goal(text, verdict))
    orders = rows.get("orders")
    if orders is not None:
        ok = orders.p99_ms <= 50 and not orders.errors
        lines.append(
            _goal(
                "orders p99 <= 50 ms with zero non-2xx",
                (ok, f"p99 {orders.p99_ms:.1f} ms, {orders.errors} non-2xx"),
            )
        )
    off = sections.get("always_off")
    off_orders = off.row("orders") if off is not None else None
    if orders is not None and off_orders is not None and off_orders.rate > 0:
        kept = orders.rate / off_orders.rate
        lines.append(_goal("tracing costs <= 15% of orders", (kept >= 0.85, f"{kept:.2f}x kept")))
    pg = sections.get("postgresql")
    pg_orders = pg.row("orders") if pg is not None else None
    if orders is not None and pg_orders is not None and orders.rate > 0:
        share = pg_orders.rate / orders.rate
        lines.append(
            _goal("orders on PostgreSQL >= 0.5x of SQLite", (share >= 0.5, f"{share:.2f}x"))
        )
    for key, section in sections.items():
        for note in section.notes:
            if note.startswith("RSS after the run (MB): "):
                sizes = [float(p.rsplit(" ", 1)[1]) for p in note.split(": ", 1)[1].split(", ")]
                lines.append(
                    _goal(
                        f"each process's RSS <= 120 MB ({key})",
                        (max(sizes) <= 120, f"largest {max(sizes):g} MB"),
                    )
                )
    return lines


def _goal(text: str, verdict: tuple[bool, str] | None) -> str:
    if verdict is None:
        return f"goal: {text}: not measured"
    met, shown = verdict
    return f"goal: {text}: {shown} ({'met' if met else 'NOT met'})"


def run(
    options: PlatformOptions, progress: Progress
) -> tuple[list[Section], list[Comparison], list[str]]:
    wrk.executable()  # fail before starting anything when wrk is missing
    ceiling = ceilings(options, progress)
    runs: dict[str, Section] = {
        "default": run_platform(
            "platform on SQLite, default tracing", {}, None, ceiling, options, progress
        )
    }
    if options.untraced:
        runs["always_off"] = run_platform(
            "platform on SQLite, OTEL_TRACES_SAMPLER=always_off",
            {"OTEL_TRACES_SAMPLER": "always_off"},
            {"orders"},
            ceiling,
            options,
            progress,
        )
    if options.postgres:
        problem = postgres_problem(options.postgres_url)
        if problem is None:
            with throwaway_database(options.postgres_url) as url:
                runs["postgresql"] = run_platform(
                    "platform on PostgreSQL, default tracing",
                    {},
                    {"orders"},
                    ceiling,
                    options,
                    progress,
                    database_url=url,
                )
        else:
            progress(f"platform on PostgreSQL: skipped ({problem})")
    comparisons: list[Comparison] = []
    if "always_off" in runs:
        comparisons.append(
            compare(
                "platform",
                "tracing cost: default sampling vs always_off",
                runs["default"],
                runs["always_off"],
                left_label="default",
                right_label="always_off",
            )
        )
    if "postgresql" in runs:
        comparisons.append(
            compare(
                "platform",
                "storage: PostgreSQL vs SQLite",
                runs["postgresql"],
                runs["default"],
                left_label="postgresql",
                right_label="sqlite",
            )
        )
    return [ceiling, *runs.values()], comparisons, goals(runs)
