"""Gateway benchmark: a fresh five-process stack on SQLite, driven over loopback HTTP.

Scenarios, each at the same fixed concurrency from async httpx clients (one keep-alive
connection per concurrent task):

  (a) healthz          GET /healthz: no gRPC hop, no auth (the baseline)
  (b) deployment-404   GET /v1/deployments/dep_missing: auth + one gRPC hop, answered 404
  (c) kill-switch-read GET /v1/risk/kill-switches/account/acc-1: one hop + a SQLite read
  (d) session-create   POST /v2/conversations/sessions: one hop + a group-committed write
                       and its outbox record

The stack runs once with OTEL_TRACES_SAMPLER unset (the platform's default sampling) and,
unless told otherwise, once more with OTEL_TRACES_SAMPLER=always_off, to show what tracing
costs. The benchmark's processes get the platform defaults: GATE4_* and OTEL_* variables of
the caller's environment are not passed on, so no remote database or collector is contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bench.cpu import OTHER, CpuMeter
from bench.cpu import warnings as cpu_warnings
from bench.load import Sample, closed_loop
from bench.report import Comparison, Figures, Section, compare
from cli.devstack import GATEWAY, Stack
from gateway.apikeys import ApiKeyStore, open_database
from services.runtime.auth import ROLES, mint_token
from services.runtime.config import Settings

Progress = Callable[[str], None]

TENANT = "acme"
USER = "alice"
SESSION_PAYLOAD: dict[str, Any] = {
    "channel": "openclaw",
    "topic": "incident-triage",
    "metadata": {"notificationsOptIn": True},
}
LOADGEN_NOTE = (
    "the load generator (this process: one asyncio loop, httpx) shares the same {cpus} CPU "
    "cores with the gateway and the four services, so absolute figures understate a "
    "dedicated deployment; read the ratios"
)
_ISOLATED_PREFIXES = ("GATE4_", "OTEL_")
WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    description: str
    method: str
    path: str
    expected_status: int
    authenticated: bool = True
    json_body: dict[str, Any] | None = None
    #: The service the request reaches, for the CPU breakdown.
    service: str | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "healthz",
        "a",
        "GET /healthz: no hop, no auth",
        "GET",
        "/healthz",
        200,
        authenticated=False,
    ),
    Scenario(
        "deployment-404",
        "b",
        "GET /v1/deployments/dep_missing: auth + one gRPC hop, 404",
        "GET",
        "/v1/deployments/dep_missing",
        404,
        service="execution",
    ),
    Scenario(
        "kill-switch-read",
        "c",
        "GET /v1/risk/kill-switches/account/acc-1: auth + one hop + SQLite read",
        "GET",
        "/v1/risk/kill-switches/account/acc-1",
        200,
        service="risk",
    ),
    Scenario(
        "session-create",
        "d",
        "POST /v2/conversations/sessions: auth + one hop + group-committed write + outbox",
        "POST",
        "/v2/conversations/sessions",
        201,
        json_body=SESSION_PAYLOAD,
        service="conversation",
    ),
)
BASELINE = SCENARIOS[0].name


@dataclass(frozen=True)
class GatewayOptions:
    requests: int = 2000
    concurrency: int = 32
    duration: float = 15.0
    untraced_run: bool = True
    request_timeout: float = 10.0
    start_timeout: float = 60.0

    @property
    def warmup(self) -> int:
        return max(1, min(200, self.requests // 10))


@dataclass(frozen=True)
class StackRun:
    key: str
    title: str
    env: Mapping[str, str] = field(default_factory=dict)


RUNS = (
    StackRun("default", "gateway, OTEL_TRACES_SAMPLER unset (default sampling)"),
    StackRun(
        "always_off",
        "gateway, OTEL_TRACES_SAMPLER=always_off (no spans recorded)",
        {"OTEL_TRACES_SAMPLER": "always_off"},
    ),
)


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


def isolate(stack: Stack, overrides: Mapping[str, str]) -> None:
    """Drops inherited GATE4_*/OTEL_* variables from every process, then applies overrides.

    Variables the stack itself set (var dir, addresses, ports) are kept.
    """

    def inherited(key: str, value: str) -> bool:
        return key.startswith(_ISOLATED_PREFIXES) and os.environ.get(key) == value

    for process in stack.processes.values():
        kept = {k: v for k, v in process.env.items() if not inherited(k, v)}
        kept.update(overrides)
        process.env = kept


def credentials(var_dir: Path) -> dict[str, str]:
    """Valid headers for the bench tenant/user holding every role (as tests/support/stack.py)."""
    settings = _DefaultSettings(var_dir=var_dir)
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


async def _drive(
    clients: Sequence[httpx.AsyncClient],
    scenario: Scenario,
    headers: dict[str, str],
    options: GatewayOptions,
    meter: CpuMeter,
) -> Figures:
    sent_headers = headers if scenario.authenticated else {}

    async def op(task: int, _seq: int) -> str | None:
        response = await clients[task].request(
            scenario.method, scenario.path, headers=sent_headers, json=scenario.json_body
        )
        if response.status_code != scenario.expected_status:
            return f"status {response.status_code}"
        return None

    async def loop(requests: int, duration: float) -> Sample:
        return await closed_loop(
            op,
            requests=requests,
            concurrency=options.concurrency,
            duration=duration,
            op_timeout=options.request_timeout,
        )

    await loop(options.warmup, min(WARMUP_SECONDS, options.duration))
    before = meter.snapshot()
    sample = await loop(options.requests, options.duration)
    cpu = CpuMeter.percent(before, meter.snapshot(), sample.elapsed)
    extra: dict[str, int | float | str] = {
        f"cpu%_{k}": v for k, v in cpu.items() if _shown(k, scenario)
    }
    figures = Figures.from_sample(
        scenario.name, f"({scenario.label}) {scenario.description}", sample, extra
    )
    figures.warnings = cpu_warnings(cpu, saturation_of="loadgen")
    return figures


def _shown(process: str, scenario: Scenario) -> bool:
    return process in ("loadgen", GATEWAY, OTHER) or process == scenario.service


async def _drive_all(
    url: str,
    headers: dict[str, str],
    options: GatewayOptions,
    meter: CpuMeter,
    section: Section,
    progress: Progress,
    run_key: str,
) -> None:
    # One client (one keep-alive connection) per task, like wrk's one connection per slot:
    # a single httpx client's pool scans all its connections on every request, which at 32
    # connections costs the load generator more CPU than the gateway spends on /healthz.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    limits=limits,
                    timeout=options.request_timeout,
                    trust_env=False,  # no proxies: traffic stays on loopback, to our gateway
                )
            )
            for _ in range(options.concurrency)
        ]
        for scenario in SCENARIOS:
            figures = await _drive(clients, scenario, headers, options, meter)
            section.rows.append(figures)
            progress(
                f"gateway/{run_key} ({scenario.label}) {scenario.name}: "
                f"{figures.requests} requests, {figures.errors} errors, "
                f"{figures.rate:,.0f} req/s, p50 {figures.p50_ms:.1f} ms, "
                f"p99 {figures.p99_ms:.1f} ms"
            )


def run_stack(run: StackRun, options: GatewayOptions, progress: Progress) -> Section:
    """Starts a fresh stack in a temp dir, drives every scenario, stops it, removes the dir."""
    section = Section(
        benchmark="gateway",
        title=run.title,
        unit="req/s",
        baseline=BASELINE,
        notes=[
            f"concurrency {options.concurrency}, keep-alive connections, "
            f"{options.warmup} warm-up requests per scenario not counted",
            "req/s counts responses with the expected status; latency covers every response",
            LOADGEN_NOTE.format(cpus=os.cpu_count() or "?"),
            "cpu% = share of one core used by that process during the scenario; "
            "cpu%_other = the rest of the machine (other work on the host: noise)",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="gate4-bench-gateway-") as tmp:
        var_dir = Path(tmp)
        stack = Stack(var_dir)
        isolate(stack, run.env)
        progress(f"gateway/{run.key}: starting the stack in {var_dir}")
        try:
            began = time.monotonic()
            stack.start(timeout=options.start_timeout)
            progress(f"gateway/{run.key}: stack ready in {time.monotonic() - began:.1f}s")
            headers = credentials(var_dir)
            meter = CpuMeter(
                {n: p.proc.pid for n, p in stack.processes.items() if p.proc is not None}
            )
            asyncio.run(
                _drive_all(stack.gateway_url, headers, options, meter, section, progress, run.key)
            )
        finally:
            stack.stop()
    section.apply_ratios()
    return section


def run(options: GatewayOptions, progress: Progress) -> tuple[list[Section], list[Comparison]]:
    runs = RUNS if options.untraced_run else RUNS[:1]
    sections = [run_stack(stack_run, options, progress) for stack_run in runs]
    comparisons: list[Comparison] = []
    if len(sections) == 2:
        comparisons.append(
            compare(
                "gateway",
                "tracing cost: default sampling vs always_off (same scenarios, same run)",
                sections[0],
                sections[1],
                left_label="default",
                right_label="always_off",
                notes=[
                    "ratio < 1.00x is the throughput share kept with tracing on; "
                    "the two stacks ran one after the other on the same machine",
                ],
            )
        )
    return sections, comparisons
