"""Command line: `python -m bench [platform] [storage] [--seconds S] ...`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import platform, storage
from bench.report import Report

BENCHMARKS = ("platform", "storage")
RESULTS_DIR = Path("var") / "bench"


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


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("cannot be negative")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Gate4 benchmarks: figures and ratios against ceilings measured in the same run. "
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
        "--seconds",
        type=_positive_float,
        default=platform.PlatformOptions.seconds,
        help="measured seconds per platform scenario and ceiling (default %(default)g)",
    )
    p.add_argument(
        "--warmup",
        type=_seconds,
        default=platform.PlatformOptions.warmup,
        help="warm-up seconds before each, not counted (default %(default)g)",
    )
    p.add_argument(
        "--connections",
        type=_positive_int,
        default=platform.PlatformOptions.connections,
        help="wrk connections (default %(default)s)",
    )
    p.add_argument(
        "--sessions",
        type=_positive_int,
        default=platform.PlatformOptions.sessions,
        help="conversation sessions the turn scenarios spread over (default %(default)s)",
    )
    p.add_argument(
        "--requests",
        type=_positive_int,
        help=f"writes per storage scenario (default {storage.StorageOptions.requests})",
    )
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        help=f"storage: concurrent tasks (default {storage.StorageOptions.concurrency})",
    )
    p.add_argument(
        "--duration",
        type=_positive_float,
        help=(
            "storage: upper bound in seconds on each scenario's measured loop "
            f"(default {storage.StorageOptions.duration:g})"
        ),
    )
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"where to write the figures as JSON (default {RESULTS_DIR}/bench-<time>.json)",
    )
    p.add_argument(
        "--no-untraced",
        action="store_true",
        help="skip the orders run with OTEL_TRACES_SAMPLER=always_off",
    )
    p.add_argument("--no-postgres", action="store_true", help="skip every PostgreSQL scenario")
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

    platform_options = platform.PlatformOptions(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        sessions=args.sessions,
        untraced=not args.no_untraced,
        postgres=not args.no_postgres,
        postgres_url=args.postgres_url,
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
            "platform_seconds": platform_options.seconds,
            "platform_warmup_seconds": platform_options.warmup,
            "platform_connections": platform_options.connections,
            "storage_writes": storage_options.requests,
            "storage_concurrency": storage_options.concurrency,
            "storage_duration_bound_s": storage_options.duration,
        }
    )
    report.notes.append(
        f"{os.cpu_count()} CPUs shared by the load generator and the system under test; "
        "compare ratios within this run, not absolute figures across machines"
    )
    began = time.monotonic()
    if "platform" in selected:
        sections, comparisons, goals = platform.run(platform_options, _progress)
        report.sections.extend(sections)
        report.comparisons.extend(comparisons)
        report.goals.extend(goals)
    if "storage" in selected:
        report.sections.extend(storage.run(storage_options, _progress))
    _progress(f"done in {time.monotonic() - began:.0f}s")

    sys.stdout.write(report.render())
    sys.stdout.flush()
    target = args.json
    if target is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = RESULTS_DIR / f"bench-{stamp}.json"
    report.write_json(target)
    _progress(f"figures written to {target}")
    return 0
