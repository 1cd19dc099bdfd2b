"""Command line: `python -m bench [gateway] [storage] [--requests N] [--concurrency C] ...`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import gateway, storage
from bench.report import Report

BENCHMARKS = ("gateway", "storage")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Gate4 benchmarks: figures and ratios against a baseline measured in the same run. "
            "Nothing passes or fails on time."
        ),
    )
    p.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"which to run: {', '.join(BENCHMARKS)} (default: all)",
    )
    p.add_argument(
        "--requests",
        type=_positive_int,
        help=(
            f"requests per gateway scenario (default {gateway.GatewayOptions.requests}) and "
            f"writes per storage scenario (default {storage.StorageOptions.requests})"
        ),
    )
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        help=(
            f"concurrent requests/tasks (default: gateway {gateway.GatewayOptions.concurrency}, "
            f"storage {storage.StorageOptions.concurrency})"
        ),
    )
    p.add_argument(
        "--duration",
        type=_positive_float,
        help=(
            "upper bound in seconds on each scenario's measured loop (default: gateway "
            f"{gateway.GatewayOptions.duration:g}, storage {storage.StorageOptions.duration:g})"
        ),
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument(
        "--no-untraced",
        action="store_true",
        help="skip the second gateway run with OTEL_TRACES_SAMPLER=always_off",
    )
    p.add_argument(
        "--no-postgres", action="store_true", help="skip the PostgreSQL storage scenarios"
    )
    p.add_argument(
        "--postgres-url",
        default=storage.DEFAULT_POSTGRES_URL,
        help="admin URL of a loopback PostgreSQL server (default %(default)s)",
    )
    return p


def _progress(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    selected: list[str] = list(dict.fromkeys(args.benchmarks)) or list(BENCHMARKS)
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser().error(f"unknown benchmark {', '.join(unknown)}; choose from {BENCHMARKS}")

    gateway_options = gateway.GatewayOptions(
        requests=args.requests or gateway.GatewayOptions.requests,
        concurrency=args.concurrency or gateway.GatewayOptions.concurrency,
        duration=args.duration or gateway.GatewayOptions.duration,
        untraced_run=not args.no_untraced,
    )
    storage_options = storage.StorageOptions(
        requests=args.requests or storage.StorageOptions.requests,
        concurrency=args.concurrency or storage.StorageOptions.concurrency,
        duration=args.duration or storage.StorageOptions.duration,
        postgres=not args.no_postgres,
        postgres_url=args.postgres_url,
    )
    report = Report.new(
        {
            "benchmarks": ",".join(selected),
            "gateway_requests": gateway_options.requests,
            "gateway_concurrency": gateway_options.concurrency,
            "storage_writes": storage_options.requests,
            "storage_concurrency": storage_options.concurrency,
            "gateway_duration_bound_s": gateway_options.duration,
            "storage_duration_bound_s": storage_options.duration,
        }
    )
    report.notes.append(
        f"{os.cpu_count()} CPUs shared by the load generator and the system under test; "
        "compare ratios within this run, not absolute figures across machines"
    )
    began = time.monotonic()
    if "gateway" in selected:
        sections, comparisons = gateway.run(gateway_options, _progress)
        report.sections.extend(sections)
        report.comparisons.extend(comparisons)
    if "storage" in selected:
        report.sections.extend(storage.run(storage_options, _progress))
    _progress(f"done in {time.monotonic() - began:.0f}s")

    sys.stdout.write(report.render())
    sys.stdout.flush()
    if args.json is not None:
        report.write_json(args.json)
        _progress(f"figures written to {args.json}")
    return 0
