"""One telemetry setup for every process: traces, correlation attributes and JSON logs.

Spans go to OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific variable) is
set; otherwise to JSON lines under var/traces/, one file per process, so `gate4 trace` can
follow a requestId with no collector. Sampling follows OTEL_TRACES_SAMPLER (default:
parent-based always-on).
"""

from __future__ import annotations

import logging
import os
import sys
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
from pythonjsonlogger.json import JsonFormatter

from services.runtime import correlation
from services.runtime.config import Settings

TRACES_DIR = "traces"
_provider: TracerProvider | None = None
_trace_file: IO[str] | None = None


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
        _trace_file = open(  # noqa: SIM115 - closed in shutdown_telemetry
            folder / f"{service}.{os.getpid()}.jsonl", "a", encoding="utf-8", buffering=1
        )
        exporter = ConsoleSpanExporter(
            service_name=f"gate4-{service}", out=_trace_file, formatter=_span_line
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
