"""The audit service as a real process (cli.devstack), on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format, timestamp_pb2

from gate4.audit.v1 import audit_pb2
from services.runtime.errors import FieldError
from tests.support import rpc, sql
from tests.support.audit import (
    GENESIS,
    RunningAudit,
    event,
    new_tenant,
    recompute_hash,
    running_audit,
    triggers_dropped,
)

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def ids(events: Any) -> list[str]:
    return [e.event_id for e in events]


def appender(tenant: str) -> rpc.Metadata:
    """Metadata of a service that ships its outbox (only they may append)."""
    return rpc.metadata(tenant, caller="execution")


def subscriber(tenant: str, roles: tuple[str, ...] | list[str] = ()) -> rpc.Metadata:
    """Metadata of the notification feed (only conversation may subscribe)."""
    return rpc.metadata(tenant, roles=roles, caller="conversation")


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(grpc.RpcError) as excinfo:
        call(*args, **kwargs)
    return rpc.rpc_error(excinfo)


# -- append -----------------------------------------------------------------------------------


def test_append_assigns_chain_fields_and_reappend_is_idempotent(
    audit: RunningAudit, tenant: str
) -> None:
    sent = event(
        "risk.decision",
        source="risk",
        outcome="APPROVED",
        request_id="req_append_1",
        reason="within limits",
        data={"limit": 5, "ratio": 0.25, "tags": ["a", "b"], "nested": {"ok": True}},
    )
    first = audit.stub.Append(audit_pb2.AppendRequest(event=sent), metadata=appender(tenant))
    assert not first.duplicate
    stored = first.event
    assert (stored.tenant_id, stored.sequence, stored.prev_hash) == (tenant, 1, GENESIS)
    assert stored.position > 0 and len(stored.hash) == 64
    assert stored.HasField("occurred_at") and stored.HasField("recorded_at")
    assert json_format.MessageToDict(stored.data) == {
        "limit": 5,
        "ratio": 0.25,
        "tags": ["a", "b"],
        "nested": {"ok": True},
    }
    assert recompute_hash(stored) == stored.hash

    # The outbox retries: same id, even with other content, returns the stored event.
    retry = audit_pb2.AuditEvent()
    retry.CopyFrom(sent)
    retry.outcome = "CHANGED"
    again = audit.stub.Append(audit_pb2.AppendRequest(event=retry), metadata=appender(tenant))
    assert again.duplicate
    assert again.event == stored
    assert ids(audit.query(tenant).events) == [sent.event_id]


def test_append_keeps_occurred_at_and_defaults_it_to_now(audit: RunningAudit, tenant: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    given, defaulted = audit.append(tenant, event(occurred_at=ts(T0)), event(source="execution"))
    assert given.occurred_at.ToDatetime(tzinfo=UTC) == T0
    assert given.recorded_at.ToDatetime(tzinfo=UTC) >= before
    assert defaulted.occurred_at.ToDatetime(tzinfo=UTC) >= before


def test_append_batch_counts_duplicates_in_and_across_batches(
    audit: RunningAudit, tenant: str
) -> None:
    a, b, c = event(), event(), event()
    first = audit.stub.AppendBatch(
        audit_pb2.AppendBatchRequest(events=[a, b, a]), metadata=appender(tenant)
    )
    assert first.duplicates == 1
    assert [e.sequence for e in first.events] == [1, 2, 1]
    assert first.events[2] == first.events[0]

    second = audit.stub.AppendBatch(
        audit_pb2.AppendBatchRequest(events=[b, c]), metadata=appender(tenant)
    )
    assert second.duplicates == 1
    assert [e.sequence for e in second.events] == [2, 3]
    assert second.events[1].prev_hash == first.events[1].hash
    assert ids(audit.query(tenant).events) == ids([a, b, c])


def test_a_batch_of_a_thousand_events_is_one_chain(audit: RunningAudit, tenant: str) -> None:
    batch = [event("order.submitted", order_id=f"o-{i}") for i in range(1000)]
    stored = audit.append(tenant, *batch)
    assert [e.sequence for e in stored] == list(range(1, 1001))
    assert all(e.prev_hash == p.hash for p, e in itertools.pairwise(stored))
    audit.append(tenant, *(event() for _ in range(5)))
    # Verify reads the chain in pages of 1000; this one spans two.
    report = audit.verify(tenant)
    assert (report.valid, report.checked_events, report.head_sequence) == (True, 1005, 1005)


# -- validation -------------------------------------------------------------------------------


def field_names(err: Any) -> set[str]:
    return {f.field for f in err.field_errors}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event_id": ""}, "event.event_id"),
        ({"event_id": "short"}, "event.event_id"),
        ({"event_id": "evt with spaces"}, "event.event_id"),
        ({"event_id": "e" * 129}, "event.event_id"),
        ({"type": ""}, "event.type"),
        ({"type": "Risk.Decision"}, "event.type"),
        ({"type": "nodots"}, "event.type"),
        ({"type": "risk..decision"}, "event.type"),
        ({"outcome": "X" * 65}, "event.outcome"),
        ({"reason": "r" * 5000}, "event.reason"),
    ],
)
def test_invalid_events_are_refused_with_the_field_named(
    audit: RunningAudit, tenant: str, bad: dict[str, str], field: str
) -> None:
    fields: dict[str, Any] = {"event_id": "evt_valid_0001", "type": "risk.decision", **bad}
    code, err = refused(
        audit.stub.Append,
        audit_pb2.AppendRequest(event=audit_pb2.AuditEvent(**fields)),
        metadata=appender(tenant),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.error_code() == "VALIDATION_FAILED"
    assert field in field_names(err)
    assert audit.query(tenant).events == []


def test_batch_validation_names_every_bad_event_and_stores_none(
    audit: RunningAudit, tenant: str
) -> None:
    good = event()
    bad_type = event("NOT-DOTTED")
    no_id = event(event_id="")
    code, err = refused(
        audit.stub.AppendBatch,
        audit_pb2.AppendBatchRequest(events=[good, bad_type, no_id]),
        metadata=appender(tenant),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.error_code() == "VALIDATION_FAILED"
    assert field_names(err) == {"events[1].type", "events[2].event_id"}
    assert audit.query(tenant).events == []


def test_event_data_and_times_must_be_representable(audit: RunningAudit, tenant: str) -> None:
    not_finite = event(data={"ratio": float("nan")})
    year_10000 = event(occurred_at=timestamp_pb2.Timestamp(seconds=253_402_300_800))
    code, err = refused(audit.append, tenant, event(), not_finite, year_10000)
    assert (code, err.error_code()) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert field_names(err) == {"events[1].data", "events[2].occurred_at"}


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_is_bounded(audit: RunningAudit, tenant: str, size: int) -> None:
    code, err = refused(
        audit.stub.AppendBatch,
        audit_pb2.AppendBatchRequest(events=[event() for _ in range(size)]),
        metadata=appender(tenant),
    )
    assert (code, err.error_code()) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert err.field_errors == [FieldError("events", "must hold 1 to 1000 events")]


def test_append_without_an_event_is_refused(audit: RunningAudit, tenant: str) -> None:
    code, err = refused(audit.stub.Append, audit_pb2.AppendRequest(), metadata=appender(tenant))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field_names(err) == {"event"}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"limit": 501}, "limit"),
        ({"limit": -1}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "cDEyYQ"}, "cursor"),  # a cursor is a position: digits only
        ({"since": ts(T0), "until": ts(T0)}, "until"),
    ],
)
def test_invalid_queries_are_refused(
    audit: RunningAudit, tenant: str, request_fields: dict[str, Any], field: str
) -> None:
    code, err = refused(audit.query, tenant, **request_fields)
    assert (code, err.error_code()) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert field_names(err) == {field}


def test_calls_without_tenant_or_token_are_unauthenticated(audit: RunningAudit) -> None:
    no_tenant = tuple((k, v) for k, v in rpc.metadata() if k != "x-tenant-id")
    code, err = refused(audit.stub.Verify, audit_pb2.VerifyRequest(), metadata=no_tenant)
    assert (code, err.error_code()) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    bad_token = tuple(
        (k, "wrong" if k == "x-gate4-service-token" else v) for k, v in rpc.metadata()
    )
    code, _ = refused(audit.stub.Verify, audit_pb2.VerifyRequest(), metadata=bad_token)
    assert code == grpc.StatusCode.UNAUTHENTICATED


# -- query ------------------------------------------------------------------------------------


def test_every_query_filter_and_the_time_range(audit: RunningAudit, tenant: str) -> None:
    base = event("risk.decision", occurred_at=ts(T0))
    variants = {
        "request_id": event(request_id="req_filter_1", occurred_at=ts(T0 + timedelta(seconds=1))),
        "deployment_id": event(deployment_id="dep-1", occurred_at=ts(T0 + timedelta(seconds=2))),
        "order_id": event(order_id="ord-1", occurred_at=ts(T0 + timedelta(seconds=3))),
        "session_id": event(session_id="ses-1", occurred_at=ts(T0 + timedelta(seconds=4))),
        "account_id": event(account_id="acc-1", occurred_at=ts(T0 + timedelta(seconds=5))),
        "outcome": event(outcome="LIMIT_BREACHED", occurred_at=ts(T0 + timedelta(seconds=6))),
        "type": event("killswitch.tripped", occurred_at=ts(T0 + timedelta(seconds=7))),
    }
    audit.append(tenant, base, *variants.values())

    for name, evt in variants.items():
        value = getattr(evt, name)
        assert ids(audit.query(tenant, **{name: value}).events) == [evt.event_id], name
    both = audit.query(tenant, order_id="ord-1", outcome="LIMIT_BREACHED")
    assert both.events == []
    assert audit.query(tenant, request_id="req_unknown_1").events == []

    # since is inclusive, until exclusive, both on occurred_at.
    window = audit.query(
        tenant, since=ts(T0 + timedelta(seconds=2)), until=ts(T0 + timedelta(seconds=4))
    )
    assert ids(window.events) == ids([variants["deployment_id"], variants["order_id"]])
    assert ids(audit.query(tenant, until=ts(T0 + timedelta(seconds=1))).events) == [base.event_id]
    later = audit.query(tenant, since=ts(T0 + timedelta(seconds=7)))
    assert ids(later.events) == [variants["type"].event_id]
    # A bound between two microseconds rounds the right way: the event at T0 is before it.
    just_after = timestamp_pb2.Timestamp(seconds=ts(T0).seconds, nanos=ts(T0).nanos + 1)
    assert base.event_id not in ids(audit.query(tenant, since=just_after).events)


def test_cursor_pages_through_results_oldest_first(audit: RunningAudit, tenant: str) -> None:
    sent = [event("order.filled", deployment_id="dep-page") for _ in range(7)]
    audit.append(tenant, *sent)
    audit.append(tenant, event("order.filled", deployment_id="dep-other"))

    pages: list[list[str]] = []
    cursor = ""
    while True:
        page = audit.query(tenant, deployment_id="dep-page", limit=3, cursor=cursor)
        pages.append(ids(page.events))
        cursor = page.next_cursor
        if not cursor:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == ids(sent)

    everything = audit.query(tenant)  # limit 0 means the default page of 100
    assert len(everything.events) == 8 and everything.next_cursor == ""
    exact = audit.query(tenant, deployment_id="dep-page", limit=7)
    assert len(exact.events) == 7 and exact.next_cursor == ""


# -- tenancy ----------------------------------------------------------------------------------


def test_tenants_are_isolated(audit: RunningAudit) -> None:
    a, b = new_tenant(), new_tenant()
    a_event = event(request_id="req_tenant_a", deployment_id="dep-a")
    (a_stored,) = audit.append(a, a_event)
    (b_stored,) = audit.append(b, event())

    assert audit.query(b, request_id="req_tenant_a").events == []
    assert ids(audit.query(b).events) == [b_stored.event_id]
    b_report = audit.verify(b)
    assert (b_report.checked_events, b_report.head_sequence) == (1, 1)

    # B cannot write into A's chain, neither by naming A nor by reusing A's event id.
    foreign = event(tenant_id=a)
    code, err = refused(
        audit.stub.Append, audit_pb2.AppendRequest(event=foreign), metadata=appender(b)
    )
    assert (code, err.error_code()) == (grpc.StatusCode.PERMISSION_DENIED, "TENANT_MISMATCH")
    replay = audit_pb2.AuditEvent()
    replay.CopyFrom(a_event)
    code, err = refused(
        audit.stub.Append, audit_pb2.AppendRequest(event=replay), metadata=appender(b)
    )
    assert (code, err.error_code()) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_CONFLICT")
    assert "req_tenant_a" not in err.detail

    assert ids(audit.query(a).events) == [a_stored.event_id]
    assert audit.verify(a).valid and audit.verify(a).head_sequence == 1

    # B's stream starts at B's own event, although A's came first.
    stream = audit.stub.Subscribe(
        audit_pb2.SubscribeRequest(after_position=0), metadata=subscriber(b), timeout=10
    )
    try:
        assert next(stream).event_id == b_stored.event_id
    finally:
        stream.cancel()

    # Matching own tenant_id is fine.
    (own,) = audit.append(b, event(tenant_id=b))
    assert own.tenant_id == b and own.sequence == 2


# -- verify -----------------------------------------------------------------------------------


def test_verify_reports_an_intact_chain(audit: RunningAudit, tenant: str) -> None:
    empty = audit.verify(tenant)
    assert (empty.valid, empty.checked_events, empty.head_sequence) == (True, 0, 0)
    assert empty.head_hash == GENESIS

    stored = audit.append(tenant, *(event(outcome=f"O{i}") for i in range(5)))
    report = audit.verify(tenant)
    assert report.tenant_id == tenant
    assert (report.valid, report.checked_events, report.head_sequence) == (True, 5, 5)
    assert report.head_hash == stored[-1].hash
    assert (report.first_bad_sequence, report.problem) == (0, "")
    # An outside verifier reaches the same hashes from Query results alone.
    prev = GENESIS
    for evt in audit.query(tenant).events:
        assert evt.prev_hash == prev
        assert recompute_hash(evt) == evt.hash
        prev = evt.hash


def test_verify_finds_a_row_altered_behind_the_services_back(
    audit: RunningAudit, tenant: str
) -> None:
    audit.append(tenant, *(event(outcome="APPROVED") for _ in range(5)))
    with triggers_dropped(audit.database_url) as conn:
        changed = conn.execute(
            sa.text(
                "UPDATE audit_events SET outcome = 'BLOCKED' WHERE tenant_id = :t AND sequence = 3"
            ),
            {"t": tenant},
        ).rowcount
    assert changed == 1

    report = audit.verify(tenant)
    assert not report.valid
    assert report.first_bad_sequence == 3
    assert report.checked_events == 2
    assert report.problem == "sequence 3: stored hash does not match its content"
    # The service still returns the altered row: it reports tampering, it does not hide it.
    assert audit.query(tenant, outcome="BLOCKED").events[0].sequence == 3


def test_verify_finds_a_deleted_row(audit: RunningAudit, tenant: str) -> None:
    audit.append(tenant, *(event() for _ in range(4)))
    with triggers_dropped(audit.database_url) as conn:
        conn.execute(
            sa.text("DELETE FROM audit_events WHERE tenant_id = :t AND sequence = 2"),
            {"t": tenant},
        )
    report = audit.verify(tenant)
    assert (report.valid, report.first_bad_sequence) == (False, 2)
    assert report.problem.startswith("sequence 2: missing")


def test_the_store_refuses_update_and_delete(audit: RunningAudit, tenant: str) -> None:
    audit.append(tenant, event())
    for statement in (
        "UPDATE audit_events SET outcome = 'X' WHERE tenant_id = :t",
        "DELETE FROM audit_events WHERE tenant_id = :t",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            sql.execute(audit.database_url, statement, {"t": tenant})
    assert len(audit.query(tenant).events) == 1
    assert audit.verify(tenant).valid


# -- subscribe --------------------------------------------------------------------------------


def test_subscribe_streams_the_backlog_then_tails_new_events(
    audit: RunningAudit, tenant: str
) -> None:
    backlog = audit.append(tenant, event("order.submitted"), event("risk.decision"))
    stream = audit.stub.Subscribe(
        audit_pb2.SubscribeRequest(after_position=0), metadata=subscriber(tenant), timeout=15
    )
    try:
        assert [next(stream), next(stream)] == backlog
        started = time.monotonic()
        (tailed,) = audit.append(tenant, event("order.filled"))
        assert next(stream) == tailed
        # Woken by the commit, not by the one-second poll.
        assert time.monotonic() - started < 0.9
    finally:
        stream.cancel()

    # after_position skips what the caller has seen; types filters.
    filtered = audit.stub.Subscribe(
        audit_pb2.SubscribeRequest(
            after_position=backlog[0].position, types=["risk.decision", "order.filled"]
        ),
        metadata=subscriber(tenant),
        timeout=15,
    )
    try:
        assert [next(filtered).event_id, next(filtered).event_id] == [
            backlog[1].event_id,
            tailed.event_id,
        ]
    finally:
        filtered.cancel()


def test_subscribe_all_tenants_is_for_internal_callers_only(audit: RunningAudit) -> None:
    a, b = new_tenant(), new_tenant()
    (first,) = audit.append(a, event())
    (second,) = audit.append(b, event())
    request = audit_pb2.SubscribeRequest(after_position=first.position - 1, all_tenants=True)

    code, err = refused(lambda: next(audit.stub.Subscribe(request, metadata=subscriber(a))))
    assert (code, err.error_code()) == (grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN")

    stream = audit.stub.Subscribe(request, metadata=subscriber(a, roles=["internal"]), timeout=15)
    try:
        assert [next(stream).event_id, next(stream).event_id] == ids([first, second])
    finally:
        stream.cancel()

    code, _ = refused(
        lambda: next(
            audit.stub.Subscribe(
                audit_pb2.SubscribeRequest(after_position=-1), metadata=subscriber(a)
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# -- several processes, shutdown --------------------------------------------------------------


@pytest.mark.postgres
def test_two_audit_processes_on_one_database_keep_one_chain(
    postgres_url: str, tmp_path: Path
) -> None:
    tenant = new_tenant()
    with (
        running_audit(tmp_path / "one", postgres_url) as one,
        running_audit(tmp_path / "two", postgres_url) as two,
    ):
        # A subscriber on one process sees what the other commits (through the poll).
        stream = one.stub.Subscribe(
            audit_pb2.SubscribeRequest(), metadata=subscriber(tenant), timeout=30
        )
        try:
            errors: list[BaseException] = []

            def writer(service: RunningAudit, worker: int) -> None:
                try:
                    for i in range(15):
                        service.append(tenant, event(order_id=f"w{worker}-{i}"), event())
                except BaseException as exc:
                    errors.append(exc)

            threads = [
                threading.Thread(target=writer, args=(service, n))
                for n, service in enumerate([one, two, one, two])
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == []

            total = 4 * 15 * 2
            for service in (one, two):
                report = service.verify(tenant)
                assert (report.valid, report.checked_events, report.head_sequence) == (
                    True,
                    total,
                    total,
                ), report.problem
            streamed = [next(stream) for _ in range(total)]
            assert [e.sequence for e in streamed] == list(range(1, total + 1))
            positions = [e.position for e in streamed]
            assert positions == sorted(positions)
        finally:
            stream.cancel()


def test_sigterm_drains_and_exits_zero(database_url: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    with running_audit(tmp_path, database_url) as service:  # the default 10 s grace
        (stored,) = service.append(tenant, event())
        stream = service.stub.Subscribe(
            audit_pb2.SubscribeRequest(), metadata=subscriber(tenant), timeout=30
        )
        assert next(stream) == stored
        proc = service.process.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)

        # Draining ends the open stream at once, with the status clients retry on, and
        # does not wait out the grace period for it.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as excinfo:
            next(stream)
        code, err = rpc.rpc_error(excinfo)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert f"after position {stored.position}" in err.detail
        assert time.monotonic() - started < 4
        assert proc.wait(15) == 0
        log = service.process.log_path.read_text()
        assert '"draining"' in log and '"stopped"' in log
        assert "Traceback" not in log
    assert _count(database_url, tenant) == 1


def _count(url: str, tenant: str) -> int:
    """Counted straight from the database, after the service has exited."""
    rows = sql.execute(url, "SELECT count(*) FROM audit_events WHERE tenant_id = :t", {"t": tenant})
    return int(rows[0][0])
