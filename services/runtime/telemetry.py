"""One telemetry setup for every process: traces, correlation attributes and JSON logs.

Spans go to OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific variable) is
set; otherwise to JSON lines under var/traces/, one file per process, so `gate4 trace` can
follow a requestId with no collector. A process rolls its file over at
GATE4_TRACE_FILE_MAX_BYTES and keeps the folder under GATE4_TRACES_MAX_BYTES by deleting the
oldest rolled-over files. Sampling follows OTEL_TRACES_SAMPLER (default: parent-based
always-on).

The local lines are the SDK's own span JSON (`ReadableSpan.to_json`, what `gate4 trace` and
the incident capture read), built by `SpanLines` with orjson on the batch processor's
thread: the SDK's formatter costs several times more, and that thread shares the GIL with
every request the process serves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import orjson
from opentelemetry import baggage, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pythonjsonlogger.json import JsonFormatter

from services.runtime import correlation
from services.runtime.config import TRACES_DIR, Settings

_provider: TracerProvider | None = None
_trace_file: SpanFile | None = None
#: A span file closed by its roll-over: `<service>.<pid>.r<n>.jsonl`, safe for anyone to delete.
ROLLED_RE = re.compile(r"\.r\d+\.jsonl$")
#: A process's current span file: `<service>.<pid>.jsonl`.
CURRENT_RE = re.compile(r"^[a-z]+\.(\d+)\.jsonl$")


class CorrelationSpanProcessor(SpanProcessor):
    """Puts requestId, tenant, user and channel on every span a process starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attrs = correlation.current().span_attributes()
        for key, value in baggage.get_all(parent_context).items():
            if key.startswith("gate4.") and isinstance(value, str):
                attrs.setdefault(key, value)
        if attrs:
            span.set_attributes(attrs)

    def on_end(self, span: ReadableSpan) -> None:
        return None


def _otlp_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def traces_dir(settings: Settings) -> Path:
    return settings.var_dir / TRACES_DIR


class SpanFile:
    """The process's span file, rolled over by size.

    At `max_bytes` the file is renamed `<stem>.r<n>.jsonl` and a new one started; then the
    oldest closed files of the folder (rolled over, or of processes that are gone) are
    deleted until the folder holds at most `total_bytes` of span files. Written by the batch
    processor's thread only, a batch of whole lines at a time (one write per file it goes
    to, not one per span); the lock keeps a flush from racing a roll-over.
    """

    def __init__(self, folder: Path, stem: str, max_bytes: int, total_bytes: int) -> None:
        self.folder = folder
        self.stem = stem
        self.path = folder / f"{stem}.jsonl"
        self.max_bytes = max_bytes
        self.total_bytes = total_bytes
        self._lock = threading.Lock()
        self._rolls = 0
        self._size = 0
        self._handle: IO[bytes] = self._open()

    def _open(self) -> IO[bytes]:
        handle = open(self.path, "ab")  # noqa: SIM115 - owned until close()
        self._size = self.path.stat().st_size
        return handle

    def write(self, lines: Iterable[bytes]) -> None:
        """Appends lines (each ending in a newline), rolling over before a line that would
        take the file past `max_bytes`."""
        with self._lock:
            pending: list[bytes] = []
            size = self._size
            for line in lines:
                if size and size + len(line) > self.max_bytes:
                    self._append(pending)
                    pending = []
                    self._roll()
                    size = self._size
                pending.append(line)
                size += len(line)
            self._append(pending)

    def _append(self, lines: list[bytes]) -> None:
        if lines:
            data = b"".join(lines)
            self._handle.write(data)
            self._handle.flush()
            self._size += len(data)

    def flush(self) -> None:
        with self._lock:
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    def _roll(self) -> None:
        self._handle.close()
        while True:
            self._rolls += 1
            target = self.folder / f"{self.stem}.r{self._rolls}.jsonl"
            if not target.exists():
                break
        self.path.rename(target)
        self._handle = self._open()
        prune_span_files(self.folder, self.total_bytes)


_KINDS = {kind: str(kind) for kind in SpanKind}


class SpanLines(SpanExporter):
    """Exports spans to a SpanFile as JSON lines in the SDK's format (`ReadableSpan.to_json`:
    the same keys and values), encoded with orjson.

    Readers (`gate4 trace`, the incident capture, tests/support/stack.py) get the same
    documents, but for a NaN or infinite attribute, which reads null (the SDK wrote `NaN`,
    which is not JSON). The resource, the same for every span of the process, is encoded
    once. A span orjson cannot encode (an integer attribute beyond 64 bits) is written by
    the SDK's own formatter.
    """

    def __init__(self, out: SpanFile) -> None:
        self.out = out
        self._resource: tuple[Resource, orjson.Fragment] | None = None
        self._second = -1
        self._second_text = ""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.out.write([self._line(span) for span in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.out.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.out.flush()
        return True

    def _line(self, span: ReadableSpan) -> bytes:
        parent = span.parent
        status = span.status
        record = {
            "name": span.name,
            "context": _context(span.context) if span.context else None,
            "kind": _KINDS[span.kind],
            "parent_id": f"0x{parent.span_id:016x}" if parent is not None else None,
            "start_time": self._time(span.start_time) if span.start_time else None,
            "end_time": self._time(span.end_time) if span.end_time else None,
            "status": (
                {"status_code": status.status_code.name, "description": status.description}
                if status.description
                else {"status_code": status.status_code.name}
            ),
            "attributes": _attributes(span.attributes),
            "events": [
                {
                    "name": event.name,
                    "timestamp": self._time(event.timestamp),
                    "attributes": _attributes(event.attributes),
                }
                for event in span.events
            ],
            "links": [_link(link) for link in span.links],
            "resource": self._resource_json(span.resource),
        }
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return f"{span.to_json(indent=None)}\n".encode()

    def _resource_json(self, resource: Resource) -> orjson.Fragment:
        if self._resource is None or self._resource[0] is not resource:
            # The SDK's Resource.to_json, read back (tuples become lists) and kept encoded.
            self._resource = (
                resource,
                orjson.Fragment(orjson.dumps(json.loads(resource.to_json()))),
            )
        return self._resource[1]

    def _time(self, nanoseconds: int) -> str:
        """`opentelemetry.sdk.util.ns_to_iso_str`, to the same microsecond (the float
        seconds, rounded half to even, as `datetime.fromtimestamp` does), at a fraction of
        its cost: the spans of a batch mostly share their second."""
        fraction, whole = math.modf(nanoseconds / 1e9)
        second, micros = int(whole), round(fraction * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{micros:06d}Z"


def _context(context: SpanContext) -> dict[str, str]:
    return {
        "trace_id": f"0x{context.trace_id:032x}",
        "span_id": f"0x{context.span_id:016x}",
        "trace_state": repr(context.trace_state),
    }


def _attributes(attributes: Any) -> dict[str, Any] | None:
    if attributes is None:
        return None
    # A span's attributes (a mappingproxy over BoundedAttributes) and an event's copy their
    # dict in C: several times quicker than dict(), which reads them key by key.
    if isinstance(attributes, MappingProxyType | BoundedAttributes):
        attributes = attributes.copy()
    return attributes if isinstance(attributes, dict) else dict(attributes)


def _link(link: Link) -> dict[str, Any]:
    return {"context": _context(link.context), "attributes": _attributes(link.attributes)}


def prune_span_files(folder: Path, total_bytes: int) -> None:
    """Deletes the oldest closed span files (rolled over, or of a process that is gone)
    until the folder's span files fit."""
    files = []
    for path in folder.glob("*.jsonl"):
        try:
            files.append((path.stat().st_mtime, path.stat().st_size, path))
        except FileNotFoundError:  # another process pruned it meanwhile
            continue
    used = sum(size for _, size, _ in files)
    for _, size, path in sorted(f for f in files if _closed(f[2].name)):
        if used <= total_bytes:
            return
        path.unlink(missing_ok=True)
        used -= size


def _closed(name: str) -> bool:
    if ROLLED_RE.search(name):
        return True
    current = CURRENT_RE.match(name)
    if current is None:
        return False  # not a file of ours (a collector's export, say): left alone
    try:
        os.kill(int(current.group(1)), 0)
    except ProcessLookupError:
        return True  # its process is gone
    except PermissionError:
        return False  # another user's live process
    return False


def setup_telemetry(service: str, settings: Settings) -> TracerProvider:
    """Installs the tracer provider and JSON logging for this process; idempotent."""
    global _provider, _trace_file
    setup_logging(service, settings.log_level)
    if _provider is not None:
        return _provider
    resource = Resource.create(
        {SERVICE_NAME: f"gate4-{service}", SERVICE_INSTANCE_ID: f"{service}-{os.getpid()}"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(CorrelationSpanProcessor())
    exporter: SpanExporter
    if _otlp_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        folder = traces_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        # One file per process: concurrent writers never interleave lines.
        _trace_file = SpanFile(
            folder,
            f"{service}.{os.getpid()}",
            settings.trace_file_max_bytes,
            settings.traces_max_bytes,
        )
        exporter = SpanLines(_trace_file)
    # The SDK's schedule (OTEL_BSP_*: every 5 s, or at once when 512 spans wait; 2048 queued
    # at most) suits both exporters: at a few thousand spans a second the worker wakes a few
    # times a second, and a batch is one write to the span file.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    global _provider, _trace_file
    if _provider is not None:
        _provider.shutdown()
        _provider = None
    if _trace_file is not None:
        _trace_file.close()
        _trace_file = None


class _CorrelationLogFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        corr = correlation.current()
        values = {
            "service": self.service,
            "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else "",
            "span_id": format(ctx.span_id, "016x") if ctx.is_valid else "",
            "request_id": corr.request_id,
            "tenant_id": corr.tenant_id,
            "user_id": corr.user_id,
            "channel": corr.channel,
        }
        # Values passed explicitly with `extra=` win over the ambient ones.
        for key, value in values.items():
            if not getattr(record, key, ""):
                setattr(record, key, value)
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CorrelationLogFilter(service))
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s "
            "%(span_id)s %(request_id)s %(tenant_id)s %(user_id)s %(channel)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


_TRACE_CONTEXT = TraceContextTextMapPropagator()


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" outside one), to record with an event."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return carrier.get("traceparent", "")


def remote_parent(traceparent: str) -> Context | None:
    """The context of a span another process recorded, to start a child of it; None when
    the traceparent is missing or malformed."""
    if not traceparent:
        return None
    context = _TRACE_CONTEXT.extract({"traceparent": traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context
