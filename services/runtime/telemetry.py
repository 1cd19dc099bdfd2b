"""One telemetry setup for every process: traces, correlation attributes and JSON logs.

Spans go to OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific variable) is
set; otherwise to JSON lines under var/traces/, one file per process, so `gate4 trace` can
follow a requestId with no collector. A process rolls its file over at
GATE4_TRACE_FILE_MAX_BYTES and keeps the folder under GATE4_TRACES_MAX_BYTES by deleting the
oldest rolled-over files. Sampling follows OTEL_TRACES_SAMPLER (default: parent-based
always-on).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import IO

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
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


def _span_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def traces_dir(settings: Settings) -> Path:
    return settings.var_dir / TRACES_DIR


class SpanFile:
    """The process's span file, rolled over by size.

    At `max_bytes` the file is renamed `<stem>.r<n>.jsonl` and a new one started; then the
    oldest closed files of the folder (rolled over, or of processes that are gone) are
    deleted until the folder holds at most `total_bytes` of span files. Written by the batch
    processor's thread only; the lock keeps a flush from racing a roll-over.
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
        self._handle: IO[str] = self._open()

    def _open(self) -> IO[str]:
        handle = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - owned
        self._size = self.path.stat().st_size
        return handle

    def write(self, text: str) -> int:
        with self._lock:
            if self._size and self._size + len(text) > self.max_bytes:
                self._roll()
            self._size += len(text)
            return self._handle.write(text)

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
        exporter = ConsoleSpanExporter(
            service_name=f"gate4-{service}",
            out=_trace_file,  # type: ignore[arg-type]
            formatter=_span_line,
        )
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
