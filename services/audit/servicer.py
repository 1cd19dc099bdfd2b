"""The AuditService RPCs: validation, tenant scoping and proto conversion around the store."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC
from typing import Any, Literal

import grpc
from google.protobuf import json_format, timestamp_pb2
from opentelemetry import trace

from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from services.audit.chain import ceil_to_microsecond, format_timestamp, parse_timestamp
from services.audit.store import (
    EQUALITY_FILTERS,
    MAX_DATA_BYTES,
    Appended,
    AuditStore,
    QueryFilters,
    StoredEvent,
)
from services.runtime import correlation, errors, pagination, roles
from services.runtime.auditfields import FIELD_LIMITS, FIELDS, EventContent, Kind, Origin
from services.runtime.canonical import canonical_json
from services.runtime.errors import FieldError
from services.runtime.telemetry import remote_parent
from services.runtime.timeutil import utcnow
from services.runtime.validation import Checker

Context = grpc.aio.ServicerContext[Any, Any]

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)+$")
MAX_BATCH = 1000
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
SUBSCRIBE_PAGE = 500
# Field errors reported per call at most; more would only bloat the status.
_MAX_FIELD_ERRORS = 50

# What a writer sets, copied from the request event: plain text checked against FIELD_LIMITS
# (event_id and type have their own forms, checked first).
_WRITTEN = tuple(f for f in FIELDS if f.origin is not Origin.STORE)
_TEXT_FIELDS = tuple(f.name for f in _WRITTEN if f.is_text and f.name not in ("event_id", "type"))


class CommitSignal:
    """Wakes Subscribe streams after a commit in this process.

    A stream takes `waiter()` before reading, then waits on it: a commit that lands while the
    stream reads has already set that event, so no wake-up is lost.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self, store: AuditStore, signal: CommitSignal | None = None, poll_seconds: float = 1.0
    ) -> None:
        self._store = store
        self._signal = signal or CommitSignal()
        # Streams also poll, so events committed by another audit process sharing the database
        # arrive too.
        self._poll_seconds = poll_seconds
        self._closing = False

    def close(self) -> None:
        """Ends every Subscribe stream (at shutdown), so none holds the drain period."""
        self._closing = True
        self._signal.notify()

    async def Append(
        self, request: audit_pb2.AppendRequest, context: Context
    ) -> audit_pb2.AppendResponse:
        tenant = correlation.current().tenant_id
        if not request.HasField("event"):
            raise errors.ValidationFailed(
                "an event is required", field_errors=[FieldError("event", "required")]
            )
        drafts = _drafts([request.event], tenant, lambda _: "event")
        started = time.time_ns()
        appended = await self._append(tenant, drafts)
        join_traces([request.event], appended, started)
        (result,) = appended
        return audit_pb2.AppendResponse(event=to_proto(result.event), duplicate=result.duplicate)

    async def AppendBatch(
        self, request: audit_pb2.AppendBatchRequest, context: Context
    ) -> audit_pb2.AppendBatchResponse:
        tenant = correlation.current().tenant_id
        count = len(request.events)
        if not 1 <= count <= MAX_BATCH:
            raise errors.ValidationFailed(
                f"a batch holds 1 to {MAX_BATCH} events, not {count}",
                field_errors=[FieldError("events", f"must hold 1 to {MAX_BATCH} events")],
            )
        drafts = _drafts(request.events, tenant, lambda i: f"events[{i}]")
        started = time.time_ns()
        appended = await self._append(tenant, drafts)
        join_traces(request.events, appended, started)
        return audit_pb2.AppendBatchResponse(
            events=[to_proto(a.event) for a in appended],
            duplicates=sum(a.duplicate for a in appended),
        )

    async def _append(self, tenant: str, drafts: list[EventContent]) -> list[Appended]:
        appended = await self._store.append(tenant, drafts)
        if not all(a.duplicate for a in appended):
            self._signal.notify()
        return appended

    async def Query(
        self, request: audit_pb2.QueryRequest, context: Context
    ) -> audit_pb2.QueryResponse:
        tenant = correlation.current().tenant_id
        check = Checker()
        limit = check.limit("limit", request.limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        after = 0
        if request.cursor:
            # Any position is a place to continue from: only the cursor's form is checked.
            decoded = pagination.parse_position(request.cursor)
            if decoded is None:
                check.fail("cursor", "the nextCursor of an earlier page")
            else:
                after = decoded
        since = _query_time(request, "since", check)
        until = _query_time(request, "until", check)
        if since and until and since >= until:
            check.fail("until", "must be later than since")
        for name in EQUALITY_FILTERS:
            check.text(name, getattr(request, name), max_length=FIELD_LIMITS[name])
        check.done("invalid audit query")

        filters = QueryFilters(
            equals={n: getattr(request, n) for n in EQUALITY_FILTERS if getattr(request, n)},
            since=since,
            until=until,
        )
        # One row more than the page tells whether another page exists.
        rows = await self._store.query(tenant, filters, after, limit + 1)
        page = rows[:limit]
        next_cursor = pagination.position_cursor(page[-1].position) if len(rows) > limit else ""
        return audit_pb2.QueryResponse(events=[to_proto(e) for e in page], next_cursor=next_cursor)

    async def Verify(
        self, request: audit_pb2.VerifyRequest, context: Context
    ) -> audit_pb2.VerifyResponse:
        report = await self._store.verify(correlation.current().tenant_id)
        return audit_pb2.VerifyResponse(
            tenant_id=report.tenant_id,
            valid=report.valid,
            checked_events=report.checked_events,
            head_sequence=report.head_sequence,
            head_hash=report.head_hash,
            first_bad_sequence=report.first_bad_sequence,
            problem=report.problem,
        )

    async def Subscribe(
        self, request: audit_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[audit_pb2.AuditEvent]:
        corr = correlation.current()
        if request.all_tenants and roles.INTERNAL not in corr.roles:
            raise errors.Forbidden("all_tenants is reserved for internal consumers")
        if request.after_position < 0:
            raise errors.ValidationFailed(
                "after_position must not be negative",
                field_errors=[FieldError("after_position", "must be 0 or more")],
            )
        tenant = None if request.all_tenants else corr.tenant_id
        types = tuple(dict.fromkeys(request.types))
        after = request.after_position
        while not self._closing:
            wake = self._signal.waiter()
            page = await self._store.events_after(tenant, after, types, SUBSCRIBE_PAGE)
            for stored in page:
                yield to_proto(stored)
                after = stored.position
            if len(page) < SUBSCRIBE_PAGE:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll_seconds)
        # UNAVAILABLE is the status clients retry: subscribe again (to another replica, or to
        # this one after its restart) from the last position received.
        raise errors.DependencyUnavailable(
            f"the audit service is shutting down; subscribe again after position {after}"
        )


def join_traces(
    events: Sequence[audit_pb2.AuditEvent], appended: list[Appended], started_ns: int
) -> None:
    """Records each append in the trace of the request that made the event: a span that is
    a child of the span that recorded it (the event's traceparent), under the event's own
    requestId, linked to this call. So `gate4 trace <requestId>` shows the audit hop,
    although the outbox shipped the event later, in a call of its own."""
    shipment = trace.get_current_span().get_span_context()
    links = [trace.Link(shipment)] if shipment.is_valid else []
    stored = {a.event.content.event_id: a for a in appended}
    tracer = trace.get_tracer("gate4.audit")
    for evt in events:
        parent = remote_parent(evt.traceparent)
        result = stored.get(evt.event_id)
        if parent is None or result is None:
            continue
        owner = correlation.current().with_changes(
            request_id=evt.request_id, user_id=evt.user_id, channel=evt.channel
        )
        with correlation.bound(owner):
            span = tracer.start_span(
                "audit.append",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                links=links,
                start_time=started_ns,
                attributes={
                    "gate4.audit.event_id": evt.event_id,
                    "gate4.audit.event_type": evt.type,
                    "gate4.audit.source": evt.source,
                    "gate4.audit.sequence": result.event.content.sequence,
                    "gate4.audit.duplicate": result.duplicate,
                },
            )
            span.end()


# -- conversion ---------------------------------------------------------------------------------


def to_proto(stored: StoredEvent) -> audit_pb2.AuditEvent:
    evt = audit_pb2.AuditEvent(
        position=stored.position, prev_hash=stored.prev_hash, hash=stored.hash
    )
    for f in FIELDS:
        value = getattr(stored.content, f.name)
        if f.kind is Kind.TIMESTAMP:
            getattr(evt, f.name).CopyFrom(_timestamp(value))
        elif f.kind is Kind.JSON:
            if value:
                getattr(evt, f.name).update(value)
        else:
            setattr(evt, f.name, value)
    return evt


def _timestamp(value: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(parse_timestamp(value))
    return ts


def _drafts(
    items: Sequence[audit_pb2.AuditEvent], tenant: str, path: Callable[[int], str]
) -> list[EventContent]:
    """Validates request events into drafts for the store; every problem in one error."""
    check = Checker()
    drafts: list[EventContent] = []
    now = format_timestamp(utcnow())
    for index, evt in enumerate(items):
        prefix = path(index)
        if evt.tenant_id and evt.tenant_id != tenant:
            raise errors.TenantMismatch(f"{prefix}.tenant_id names another tenant than the caller")
        before = len(check.problems)
        draft = _draft(evt, now, prefix, check)
        if len(check.problems) == before:
            drafts.append(draft)
        if len(check.problems) >= _MAX_FIELD_ERRORS:
            break
    check.done("invalid audit event")
    return drafts


def _draft(evt: audit_pb2.AuditEvent, now: str, prefix: str, check: Checker) -> EventContent:
    if not evt.event_id:
        check.fail(f"{prefix}.event_id", "required")
    elif not EVENT_ID_RE.match(evt.event_id):
        check.fail(f"{prefix}.event_id", "8 to 128 characters of A-Z a-z 0-9 . _ : -")
    if not evt.type:
        check.fail(f"{prefix}.type", "required")
    elif len(evt.type) > FIELD_LIMITS["type"] or not EVENT_TYPE_RE.match(evt.type):
        check.fail(f"{prefix}.type", "a dotted lower-case name such as risk.decision")
    for name in _TEXT_FIELDS:
        check.text(f"{prefix}.{name}", getattr(evt, name), max_length=FIELD_LIMITS[name])
    occurred_at = now
    if evt.HasField("occurred_at"):
        try:
            occurred_at = format_timestamp(evt.occurred_at.ToDatetime(tzinfo=UTC))
        except (ValueError, OverflowError):
            check.fail(f"{prefix}.occurred_at", "not a valid timestamp")
    data: dict[str, Any] = {}
    if evt.HasField("data"):
        try:
            data = json_format.MessageToDict(evt.data)
            size = len(canonical_json(data))
        except (ValueError, TypeError):  # NaN and infinities have no JSON form
            check.fail(f"{prefix}.data", "numbers must be finite")
        else:
            if size > MAX_DATA_BYTES:
                check.fail(f"{prefix}.data", f"at most {MAX_DATA_BYTES} bytes of JSON")
    # The store's fields (tenant, sequence, recorded_at) are its to assign.
    text = {f.name: getattr(evt, f.name) for f in _WRITTEN if f.is_text}
    return EventContent(**text, occurred_at=occurred_at, data=data)


def _query_time(
    request: audit_pb2.QueryRequest, name: Literal["since", "until"], check: Checker
) -> str:
    if not request.HasField(name):
        return ""
    ts = request.since if name == "since" else request.until
    try:
        return format_timestamp(ceil_to_microsecond(ts.seconds, ts.nanos))
    except (ValueError, OverflowError):
        check.fail(name, "not a valid timestamp")
        return ""
