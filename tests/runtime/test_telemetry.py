"""Local span files: the SDK's JSON lines, rolled over by size, the folder kept under its total."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from cli.trace import _from_sdk
from services.runtime.telemetry import ROLLED_RE, SpanFile, SpanLines

LINE = b"x" * 99 + b"\n"  # 100 bytes


def test_a_span_file_rolls_over_at_its_size_and_keeps_every_line(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path, "risk.42", max_bytes=1000, total_bytes=10_000)
    spans.write([LINE] * 7)  # a batch crossing the size is split at a line
    for _ in range(3):
        spans.write([LINE] * 6)
    spans.flush()
    spans.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["risk.42.jsonl", "risk.42.r1.jsonl", "risk.42.r2.jsonl"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    lines = sum(len(p.read_text().splitlines()) for p in tmp_path.iterdir())
    assert lines == 25


def test_the_oldest_closed_files_go_first_and_open_files_stay(tmp_path: Path) -> None:
    live, gone, own = os.getppid(), _exited_pid(), f"risk.{os.getpid()}"
    # A live process's file, an old rolled-over file and the file of a process that is gone.
    other = tmp_path / f"audit.{live}.jsonl"
    other.write_bytes(LINE * 5)
    old = tmp_path / "gateway.3.r1.jsonl"
    old.write_bytes(LINE * 5)
    os.utime(old, (1, 1))
    dead = tmp_path / f"risk.{gone}.jsonl"
    dead.write_bytes(LINE * 5)
    os.utime(dead, (2, 2))
    export = tmp_path / "collector.json"  # not a span file of ours: never touched
    export.write_bytes(LINE * 5)
    spans = SpanFile(tmp_path, own, max_bytes=500, total_bytes=1600)
    for _ in range(15):
        spans.write([LINE])
    spans.close()
    names = {p.name for p in tmp_path.iterdir()}
    assert old.name not in names and dead.name not in names  # the oldest closed ones first
    open_files = {other.name, f"{own}.jsonl"}
    assert open_files | {export.name} <= names  # open files and foreign ones stay
    span_files = [p for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    assert sum(p.stat().st_size for p in span_files) <= 1600 + 500
    assert all(ROLLED_RE.search(p.name) for p in span_files if p.name not in open_files)


def _exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _spans() -> list[ReadableSpan]:
    """Spans with what the platform's spans carry: kinds, parents, events, links, statuses."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "gate4-risk", "service.instance.id": "risk-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    attributes: dict[str, AttributeValue] = {
        "gate4.request_id": "req-lines-0001",
        "http.status_code": 404,
        "ok": True,
    }
    with tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER) as root:
        root.set_attributes({**attributes, "sizes": (1.5, 2.0), "caf\u00e9": "\u2028"})
        root.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span(
            "/gate4.risk.v1.RiskService/CheckOrder",
            kind=SpanKind.CLIENT,
            links=[Link(root.get_span_context(), {"why": "test"})],
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "risk unavailable"))
            try:
                raise ValueError("boom")
            except ValueError as exc:
                child.record_exception(exc)
        with tracer.start_as_current_span("huge") as huge:
            huge.set_attribute("n", 1 << 70)  # beyond 64 bits: orjson cannot write it
    return list(memory.get_finished_spans())


def test_span_lines_are_the_sdks_json_documents(tmp_path: Path) -> None:
    spans = _spans()
    out = SpanFile(tmp_path, "risk.1", max_bytes=1 << 20, total_bytes=1 << 30)
    SpanLines(out).export(spans)
    out.close()
    lines = (tmp_path / "risk.1.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(spans) + 1
    for line, span in zip(lines, spans, strict=False):
        ours, sdk = json.loads(line), json.loads(span.to_json(indent=None))
        assert ours == sdk and list(ours) == list(sdk)
        # What `gate4 trace` and the incident capture read of it is the same.
        assert _from_sdk(ours) == _from_sdk(sdk)


def test_span_times_are_the_sdks_to_the_microsecond(tmp_path: Path) -> None:
    lines = SpanLines(SpanFile(tmp_path, "risk.1", max_bytes=4096, total_bytes=4096))
    start = 1_796_045_986 * 10**9
    for nanoseconds in [0, 999, 1_499, 1_500, 2_500, 999_999_499, 999_999_500, 999_999_999]:
        for second in (start, start + 17 * 10**9):
            assert lines._time(second + nanoseconds) == ns_to_iso_str(second + nanoseconds)
    for step in range(0, 10**9, 7_919_111):
        assert lines._time(start + step) == ns_to_iso_str(start + step)
