"""How the incident tooling reads the platform: the Platform API (through gate4_client) and the
local trace store (through cli.trace), nothing else.

Every read is wrapped in a `Fetched`: the document or the problem that came back, plus the
`gate4` command a person would type for the same read, so evidence and handoffs can say what
was executed and with which result.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from cli.apicommand import UNREACHABLE, build_context
from cli.errors import DEPENDENCY_DOWN
from cli.trace import Span, build_tree, spans_for
from gate4_client import ROUTES, ApiError, Gate4Client, Gate4ClientError, TransportError
from gate4_client.models import AuditFilters
from services.runtime.config import TRACES_DIR, Settings

T = TypeVar("T")

#: The processes of the platform; any other service name on a span is a client's.
PLATFORM_PROCESSES = ("gateway", "audit", "risk", "execution", "conversation")
#: Most audit events one query collects (pages of 500).
AUDIT_CAP = 5000


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """The Platform API options of cli.apicommand that make sense for the SRE commands."""
    opts = parser.add_argument_group("Platform API options")
    opts.add_argument(
        "--api-base",
        metavar="URL",
        help="gateway URL (default: $GATE4_API_BASE); only the credentials' own",
    )
    opts.add_argument("--tenant-id", metavar="ID", help="tenant (default: $GATE4_TENANT_ID)")
    opts.add_argument("--user-id", metavar="ID", help="user (default: $GATE4_USER_ID)")
    # Short: during an outage a read that does not answer is evidence, not something to wait
    # for (a service /readyz shows down is not even asked: cli/incident/reads.py).
    opts.add_argument(
        "--timeout", type=float, default=3.0, metavar="SECONDS", help="per read (default 3)"
    )
    opts.add_argument(
        "--retries", type=int, default=0, metavar="N", help="retries of a read (default 0)"
    )


def add_trace_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spans",
        type=Path,
        action="append",
        default=None,
        metavar="PATH",
        help="span files or folders (local JSON lines, or OTLP JSON from a collector's file "
        "exporter) instead of <var dir>/traces; repeatable",
    )
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="var dir whose traces/ to read (default: GATE4_VAR_DIR or ./var)",
    )
    parser.add_argument(
        "--span-wait",
        type=float,
        default=6.0,
        metavar="SECONDS",
        help="how long to wait for spans of a requestId not exported yet (default 6)",
    )


@dataclass
class Api:
    """A Platform API client plus who it acts as."""

    client: Gate4Client
    tenant_id: str
    user_id: str
    api_base: str


def open_api(args: argparse.Namespace) -> Api:
    """A client from GATE4_* and the options (cli.apicommand's rules: secrets from the
    environment only)."""
    namespace = argparse.Namespace(
        api_base=args.api_base,
        tenant_id=args.tenant_id,
        user_id=args.user_id,
        timeout=args.timeout,
        retries=args.retries,
        lane=None,
        channel=None,
        client_request_id=None,
    )
    ctx = build_context(namespace)
    creds = ctx.client.config.credentials
    return Api(
        client=ctx.client,
        tenant_id=ctx.tenant_id,
        user_id=creds.user_id if creds else "",
        api_base=ctx.client.config.base_url,
    )


@dataclass
class Fetched:
    """One read: what a person would type, and the document or the error it got."""

    command: str
    ok: bool
    data: Any = None
    status: int | None = None
    code: str = ""
    detail: str = ""
    request_id: str = ""

    @property
    def unavailable(self) -> bool:
        """No answer, or 5xx/429: the platform could not say."""
        return not self.ok and (self.status is None or self.status >= 500 or self.status == 429)

    def result(self) -> str:
        if self.ok:
            return "ok"
        if self.code == DEPENDENCY_DOWN:
            return f"{self.code}: {self.detail}"
        if self.status is None:
            return f"unreachable: {self.detail}"
        return f"{self.status} {self.code}" + (f": {self.detail}" if self.detail else "")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "ok": self.ok}
        if self.ok:
            out["data"] = self.data
        else:
            out["error"] = {
                "status": self.status,
                "code": self.code,
                "detail": self.detail,
                "requestId": self.request_id,
            }
        return out


def fetch(command: str, call: Callable[[], T]) -> Fetched:
    try:
        data = call()
    except ApiError as exc:
        return Fetched(
            command,
            False,
            status=exc.status,
            code=exc.code,
            detail=exc.detail,
            request_id=exc.request_id,
        )
    except TransportError as exc:
        return Fetched(
            command,
            False,
            code=UNREACHABLE,
            detail=exc.message,
            request_id=exc.request_id,
        )
    except Gate4ClientError as exc:
        return Fetched(command, False, code="CLIENT_ERROR", detail=str(exc))
    return Fetched(command, True, data=data)


def audit_events(api: Api, filters: dict[str, str], command: str, cap: int = AUDIT_CAP) -> Fetched:
    """Every audit event matching the filters, oldest first (all pages up to `cap`)."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    query = cast(AuditFilters, filters)
    while True:
        page = fetch(
            command, partial(api.client.query_audit_events, query, limit=500, cursor=cursor)
        )
        if not page.ok:
            return page
        events += page.data["events"]
        cursor = page.data.get("nextCursor") or None
        if not cursor or len(events) >= cap:
            return Fetched(command, True, data=events[:cap])


# -- time ----------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the trace store -------------------------------------------------------------------------


def trace_sources(args: argparse.Namespace) -> list[Path]:
    if args.spans:
        return list(args.spans)
    var_dir = args.var_dir or Settings().var_dir
    return [var_dir / TRACES_DIR]


@dataclass
class RequestTrace:
    """The spans of one requestId (every trace a span of it is in), for one tenant."""

    request_id: str
    roots: list[Span] = field(default_factory=list)
    #: Spans left out because they belong to another tenant.
    foreign: int = 0

    def spans(self) -> list[Span]:
        out: list[Span] = []

        def walk(span: Span) -> None:
            out.append(span)
            for child in span.children:
                walk(child)

        for root in self.roots:
            walk(root)
        return out

    def gateway_span(self) -> Span | None:
        """The gateway's server span that carries this requestId (the inbound request)."""
        for span in self.spans():
            if (
                span.service == "gateway"
                and span.kind == "SERVER"
                and span.attributes.get("gate4.request_id") == self.request_id
            ):
                return span
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "traces": [r.as_json() for r in self.roots],
            "spanCount": len(self.spans()),
            "services": sorted({s.service for s in self.spans()}),
            "foreignTenantSpansDropped": self.foreign,
        }


def _prune(span: Span, tenant_id: str) -> tuple[Span | None, int]:
    """The span without subtrees of another tenant (spans with no tenant stay: an
    unauthenticated request has none)."""
    owner = span.attributes.get("gate4.tenant_id")
    if owner and owner != tenant_id:
        return None, 1 + sum(_prune(c, "")[1] for c in span.children)
    dropped = 0
    kept = []
    for child in span.children:
        pruned, count = _prune(child, tenant_id)
        dropped += count
        if pruned is not None:
            kept.append(pruned)
    span.children = kept
    return span, dropped


def request_traces(
    request_ids: Iterable[str], sources: list[Path], tenant_id: str, wait: float = 0.0
) -> dict[str, RequestTrace]:
    """Trace trees per requestId from the span files; waits up to `wait` seconds for a
    requestId whose spans are not exported yet (processes export in batches)."""
    wanted = list(dict.fromkeys(request_ids))
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        found: dict[str, RequestTrace] = {}
        for request_id in wanted:
            trace = RequestTrace(request_id)
            for root in build_tree(request_id, spans_for(request_id, sources)):
                pruned, dropped = _prune(root, tenant_id)
                trace.foreign += dropped
                if pruned is not None:
                    trace.roots.append(pruned)
            found[request_id] = trace
        missing = [r for r, t in found.items() if not t.roots]
        if not missing or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)


# -- the Platform API's routes --------------------------------------------------------------


def _route_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


#: (method, path pattern, operationId) of every Platform API operation (gate4_client.ROUTES).
PLATFORM_ROUTES = [
    (method, _route_pattern(template), operation)
    for operation, (method, template) in ROUTES.items()
]


def platform_operation(span_name: str) -> str | None:
    """The operationId of a gateway span named `METHOD /path`, None when it is no Platform
    API route."""
    method, _, path = span_name.partition(" ")
    path = path.split("?", 1)[0]
    for route_method, pattern, operation in PLATFORM_ROUTES:
        if route_method == method and pattern.match(path):
            return operation
    return None
