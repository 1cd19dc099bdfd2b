"""`gate4 trace <requestId>`: the whole trace of one request, across every process, as a tree.

Spans come from the local span files every process writes under <var dir>/traces/ when no
OTLP endpoint is configured, or from files an OpenTelemetry Collector wrote with its file
exporter (OTLP JSON, `--spans PATH`, see deploy/otel/collector.yaml). A span belongs to the
request when its `gate4.request_id` attribute says so; the tree holds every span of the
traces those spans are in.

The files are never loaded whole: they are memory-mapped and searched for the requestId,
then for the ids of its traces, and only the lines that mention them are parsed, so a
lookup stays quick and small with a hundred thousand spans on disk (rolled-over files
included: services/runtime/telemetry.py).
"""

from __future__ import annotations

import argparse
import json
import mmap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.errors import EXIT_NOT_FOUND, EXIT_OK, TRACE_NOT_FOUND, CliError, UsageError
from services.runtime.config import TRACES_DIR, Settings
from services.runtime.correlation import valid_request_id

NAME = "trace"
HELP = "show the trace of a requestId across gateway and services (read only)"


class TraceNotFound(CliError):
    exit_code = EXIT_NOT_FOUND
    code = TRACE_NOT_FOUND


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    start: float
    end: float
    status: str
    attributes: dict[str, Any]
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return round((self.end - self.start) * 1000, 3)

    @property
    def error_code(self) -> str:
        return str(self.attributes.get("gate4.error_code", ""))

    @property
    def http_status(self) -> int | None:
        value = self.attributes.get(
            "http.status_code", self.attributes.get("http.response.status_code")
        )
        return int(value) if value is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "parentId": self.parent_id,
            "service": self.service,
            "name": self.name,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "durationMs": self.duration_ms,
            "status": self.status,
            "errorCode": self.error_code,
            "attributes": self.attributes,
            "children": [c.as_json() for c in self.children],
        }


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the requestId to follow")
    parser.add_argument(
        "--spans",
        type=Path,
        action="append",
        default=None,
        metavar="PATH",
        help="span files or folders to read instead of <var dir>/traces (repeatable); reads "
        "the local JSON lines and OTLP JSON written by a collector's file exporter",
    )
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="var dir (default: GATE4_VAR_DIR or ./var)",
    )
    parser.add_argument(
        "--output", choices=("tree", "json"), default="tree", help="tree (default) or json"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep looking this long for spans still being exported (processes export in batches)",
    )
    parser.set_defaults(handler=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    if not valid_request_id(args.request_id):
        raise UsageError("REQUEST_ID must be 8-128 characters of A-Z a-z 0-9 . _ : -")
    sources = args.spans or [(args.var_dir or Settings().var_dir) / TRACES_DIR]
    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        roots = build_tree(args.request_id, spans_for(args.request_id, sources))
        if roots or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not roots:
        where = ", ".join(str(s) for s in sources)
        raise TraceNotFound(
            f"no span carries requestId {args.request_id} in {where} (spans are exported "
            "every few seconds; retry with --wait 5, or check OTEL_TRACES_SAMPLER)"
        )
    if args.output == "json":
        print(
            json.dumps(
                {"requestId": args.request_id, "traces": [r.as_json() for r in roots]}, indent=2
            )
        )
    else:
        for root in roots:
            print(render(root, args.request_id))
    return EXIT_OK


# -- reading ---------------------------------------------------------------------------------


def _files(sources: Iterable[Path]) -> Iterator[Path]:
    for source in sources:
        if source.is_dir():
            yield from sorted(
                p for p in source.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")
            )
        elif source.is_file():
            yield source


def spans_for(request_id: str, sources: Iterable[Path]) -> list[Span]:
    """Every span of the traces in which a span carries the requestId."""
    files = list(_files(sources))
    carriers = [
        span
        for span in _mentioning(files, [request_id])
        if span.attributes.get("gate4.request_id") == request_id
    ]
    traces = sorted({span.trace_id for span in carriers})
    if not traces:
        return []
    return [span for span in _mentioning(files, traces) if span.trace_id in traces]


def _mentioning(files: list[Path], needles: list[str]) -> Iterator[Span]:
    """The spans of every line that contains one of the needles; the other lines are only
    searched (in the mapped file), never decoded."""
    wanted = [needle.encode() for needle in needles]
    for path in files:
        for line in _lines_with(path, wanted):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a line still being written
            if "resourceSpans" in record:
                yield from _from_otlp(record)
            elif "context" in record:
                yield _from_sdk(record)


def _lines_with(path: Path, needles: list[bytes]) -> list[bytes]:
    try:
        with path.open("rb") as handle:
            if handle.seek(0, 2) == 0:
                return []
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                starts: dict[int, bytes] = {}
                for needle in needles:
                    at = mapped.find(needle)
                    while at != -1:
                        start = mapped.rfind(b"\n", 0, at) + 1
                        end = mapped.find(b"\n", at)
                        end = len(mapped) if end == -1 else end
                        starts.setdefault(start, mapped[start:end])
                        at = mapped.find(needle, end)
                return [starts[start] for start in sorted(starts)]
    except (FileNotFoundError, ValueError):  # pruned meanwhile, or emptied while mapping
        return []


def _time(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _from_sdk(record: dict[str, Any]) -> Span:
    """One line of the SDK's JSON span format (what the processes write locally)."""
    ctx = record["context"]
    resource = record.get("resource", {}).get("attributes", {})
    status = record.get("status", {}).get("status_code", "UNSET")
    return Span(
        trace_id=str(ctx["trace_id"]).removeprefix("0x"),
        span_id=str(ctx["span_id"]).removeprefix("0x"),
        parent_id=str(record.get("parent_id") or "").removeprefix("0x"),
        name=str(record.get("name", "")),
        kind=str(record.get("kind", "")).removeprefix("SpanKind."),
        service=str(resource.get("service.name", "?")).removeprefix("gate4-"),
        start=_time(record.get("start_time")),
        end=_time(record.get("end_time")),
        status=str(status),
        attributes=dict(record.get("attributes", {})),
    )


def _otlp_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return json.dumps(value)


_OTLP_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_OTLP_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _from_otlp(record: dict[str, Any]) -> Iterator[Span]:
    """OTLP JSON (the collector's file exporter): ids are hex, times are nanoseconds."""
    for resource_spans in record["resourceSpans"]:
        resource = {
            a["key"]: _otlp_value(a["value"])
            for a in resource_spans.get("resource", {}).get("attributes", [])
        }
        for scope in resource_spans.get("scopeSpans", []):
            for s in scope.get("spans", []):
                yield Span(
                    trace_id=s["traceId"],
                    span_id=s["spanId"],
                    parent_id=s.get("parentSpanId", ""),
                    name=s.get("name", ""),
                    kind=_OTLP_KINDS.get(int(s.get("kind", 0)), "UNSPECIFIED"),
                    service=str(resource.get("service.name", "?")).removeprefix("gate4-"),
                    start=int(s.get("startTimeUnixNano", 0)) / 1e9,
                    end=int(s.get("endTimeUnixNano", 0)) / 1e9,
                    status=_OTLP_STATUS.get(int(s.get("status", {}).get("code", 0)), "UNSET"),
                    attributes={a["key"]: _otlp_value(a["value"]) for a in s.get("attributes", [])},
                )


# -- the tree ----------------------------------------------------------------------------------


def build_tree(request_id: str, spans: list[Span]) -> list[Span]:
    """Root spans (one per trace) of every trace in which a span carries the requestId."""
    traces = {s.trace_id for s in spans if s.attributes.get("gate4.request_id") == request_id}
    members: dict[str, Span] = {}
    for span in spans:
        if span.trace_id in traces:
            members.setdefault(span.span_id, span)  # the same span read twice counts once
    roots: list[Span] = []
    for span in sorted(members.values(), key=lambda s: s.start):
        parent = members.get(span.parent_id)
        if parent is None:
            roots.append(span)
        else:
            parent.children.append(span)
    return roots


def _label(span: Span) -> str:
    parts = [f"{span.service:<12}", span.name, f"[{span.kind}]", f"{span.duration_ms:.1f} ms"]
    if span.http_status is not None:
        parts.append(f"HTTP {span.http_status}")
    grpc_code = span.attributes.get("rpc.grpc.status_code")
    if grpc_code is not None and int(grpc_code) != 0:
        parts.append(f"gRPC {grpc_code}")
    if span.status == "ERROR" or span.error_code:
        parts.append("ERROR")
    if span.error_code:
        parts.append(span.error_code)
    return "  ".join(parts)


def render(root: Span, request_id: str) -> str:
    services = set()
    count = 0

    def walk(span: Span, prefix: str, last: bool, top: bool) -> list[str]:
        nonlocal count
        count += 1
        services.add(span.service)
        branch = "" if top else ("└─ " if last else "├─ ")
        lines = [f"{prefix}{branch}{_label(span)}"]
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(span.children):
            lines += walk(child, child_prefix, i == len(span.children) - 1, False)
        return lines

    body = walk(root, "", True, True)
    header = (
        f"trace {root.trace_id}  requestId {request_id}  {count} spans  "
        f"{len(services)} services  {root.duration_ms:.1f} ms"
    )
    return "\n".join([header, *body])
