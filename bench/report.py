"""Figures, same-run ratios, the stdout table and the JSON document."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import Sample

Extra = dict[str, int | float | str]


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Figures:
    """One scenario's measurement: throughput of the expected outcomes and latency of all."""

    name: str
    description: str
    requests: int
    errors: int
    elapsed_s: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ratio: float | None = None
    stopped_by_time: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    extra: Extra = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_sample(
        cls, name: str, description: str, sample: Sample, extra: Extra | None = None
    ) -> Figures:
        ordered = sorted(sample.latencies)
        elapsed = sample.elapsed
        return cls(
            name=name,
            description=description,
            requests=sample.finished,
            errors=sample.errors,
            elapsed_s=round(elapsed, 4),
            rate=round(sample.ok / elapsed, 1) if elapsed > 0 else 0.0,
            p50_ms=round(percentile(ordered, 50) * 1000, 2),
            p90_ms=round(percentile(ordered, 90) * 1000, 2),
            p99_ms=round(percentile(ordered, 99) * 1000, 2),
            max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 2),
            stopped_by_time=sample.stopped_by_time,
            error_kinds=dict(sample.error_kinds),
            extra=dict(extra or {}),
        )


@dataclass
class Section:
    """One table: scenarios measured together, each compared with the baseline row."""

    benchmark: str
    title: str
    unit: str
    baseline: str
    rows: list[Figures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def apply_ratios(self) -> None:
        base = next((row for row in self.rows if row.name == self.baseline), None)
        for row in self.rows:
            if base is not None and base.rate > 0:
                row.ratio = round(row.rate / base.rate, 3)
            else:
                row.ratio = None

    def row(self, name: str) -> Figures | None:
        return next((row for row in self.rows if row.name == name), None)


@dataclass
class ComparisonRow:
    name: str
    left: float
    right: float
    ratio: float | None


@dataclass
class Comparison:
    """The same scenarios under two configurations: ratio = left / right."""

    benchmark: str
    title: str
    unit: str
    left_label: str
    right_label: str
    rows: list[ComparisonRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare(
    benchmark: str,
    title: str,
    left: Section,
    right: Section,
    *,
    left_label: str,
    right_label: str,
    notes: list[str] | None = None,
) -> Comparison:
    out = Comparison(benchmark, title, left.unit, left_label, right_label, notes=list(notes or []))
    for row in left.rows:
        other = right.row(row.name)
        if other is None:
            continue
        ratio = round(row.rate / other.rate, 3) if other.rate > 0 else None
        out.rows.append(ComparisonRow(row.name, row.rate, other.rate, ratio))
    return out


@dataclass
class Report:
    started_at: str
    host: dict[str, str | int]
    settings: dict[str, int | float | str | bool]
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    #: The goals the platform is held to, each with what the run measured (never asserted).
    goals: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, settings: dict[str, int | float | str | bool]) -> Report:
        return cls(
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            host={
                "cpus": os.cpu_count() or 0,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            settings=settings,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def render(self) -> str:
        lines = [
            f"Gate4 benchmarks, {self.started_at}, {self.host['cpus']} CPUs, "
            f"Python {self.host['python']}",
        ]
        lines.extend(f"note: {note}" for note in self.notes)
        for section in self.sections:
            lines.append("")
            lines.extend(render_section(section))
        for comparison in self.comparisons:
            lines.append("")
            lines.extend(render_comparison(comparison))
        if self.goals:
            lines.append("")
            lines.append("== goals (printed, never asserted)")
            lines.extend(f"   {goal}" for goal in self.goals)
        return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render_section(section: Section) -> list[str]:
    lines = [f"== {section.title}"]
    if section.skipped is not None:
        return [*lines, f"   skipped: {section.skipped}"]
    header = [
        "scenario",
        "requests",
        "errors",
        section.unit,
        "p50 ms",
        "p99 ms",
        f"vs {section.baseline}",
    ]
    rows = [
        [
            row.name,
            str(row.requests),
            str(row.errors),
            f"{row.rate:,.0f}",
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            _ratio(row.ratio),
        ]
        for row in section.rows
    ]
    lines.extend(_table(header, rows))
    for row in section.rows:
        details = [row.description]
        if row.extra:
            details.append(", ".join(f"{k}={v}" for k, v in row.extra.items()))
        if row.error_kinds:
            details.append("errors: " + ", ".join(f"{k}={v}" for k, v in row.error_kinds.items()))
        if row.stopped_by_time:
            details.append("stopped by the time bound")
        lines.append(f"   {row.name}: " + "; ".join(details))
        lines.extend(f"   {row.name}: warning: {warning}" for warning in row.warnings)
    lines.extend(f"   note: {note}" for note in section.notes)
    return lines


def render_comparison(comparison: Comparison) -> list[str]:
    lines = [f"== {comparison.title}"]
    header = [
        "scenario",
        f"{comparison.unit} {comparison.left_label}",
        f"{comparison.unit} {comparison.right_label}",
        "ratio",
    ]
    rows = [
        [row.name, f"{row.left:,.0f}", f"{row.right:,.0f}", _ratio(row.ratio)]
        for row in comparison.rows
    ]
    lines.extend(_table(header, rows))
    lines.extend(f"   note: {note}" for note in comparison.notes)
    return lines
