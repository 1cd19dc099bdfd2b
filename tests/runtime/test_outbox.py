"""The transactional outbox ships to the real audit service, at least once and never stuck;
shippers sharing one outbox (replicas) claim rows, so each event ships once per attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gate4.audit.v1 import audit_pb2
from services.runtime import correlation, errors, metrics, outbox
from services.runtime.clients import channel
from services.runtime.config import Settings
from services.runtime.outbox import Outbox
from services.runtime.resilience import ManualClock
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from tests.support.audit import RunningAudit, new_tenant, running_audit
from tests.support.migrations import write_revision

CREATE_OUTBOX = "from services.runtime import outbox\noutbox.create_table('probe')\n"
CLAIM_COLUMNS = "from services.runtime import outbox\noutbox.add_claim_columns('probe')\n"


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAudit]:
    with running_audit(tmp_path_factory.mktemp("outbox-audit")) as service:
        yield service


def _database(tmp_path: Path, url: str) -> Database:
    versions = tmp_path / "versions"
    write_revision(versions, "0001", CREATE_OUTBOX, message="probe outbox")
    write_revision(versions, "0002", CLAIM_COLUMNS, down_revision="0001", message="claims")
    db = Database(url, name="probe")
    migrate(db, versions, "probe")
    db.start()
    return db


def _replica(url: str) -> Database:
    """A second process's handle on the same database (its own engines and writer)."""
    db = Database(url, name="probe")
    db.start()
    return db


async def _record(db: Database, box: Outbox, tenant: str, types: list[str]) -> list[str]:
    ids: list[str] = []
    with correlation.bound(correlation.Correlation(request_id="req_outbox_test", tenant_id=tenant)):
        for type_ in types:
            evt = outbox.event(type_, source="probe", outcome="APPROVED")
            ids.append(evt.event_id)

            def op(conn: sa.Connection, evt: audit_pb2.AuditEvent = evt) -> None:
                box.ensure_capacity(conn)
                box.add(conn, evt)

            await db.write(op)
    return ids


def test_events_ship_and_leave_the_outbox(
    tmp_path: Path, database_url: str, audit: RunningAudit
) -> None:
    db = _database(tmp_path, database_url)
    tenant = new_tenant()
    settings = Settings(audit_addr=f"127.0.0.1:{audit.stack.ports['audit']}")

    async def scenario() -> int:
        box = Outbox(db, "probe", max_backlog=100)
        await _record(db, box, tenant, ["risk.decision", "deployment.created"])
        ch = channel(settings, "audit", identity="risk")
        box.start(ch)
        box.notify()
        for _ in range(200):
            if await box.backlog() == 0:
                break
            await asyncio.sleep(0.05)
        await box.stop()
        await ch.close()
        return await box.backlog()

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        db.close()
    events = audit.query(tenant, request_id="req_outbox_test").events
    assert [e.type for e in events] == ["risk.decision", "deployment.created"]
    assert all(e.tenant_id == tenant and e.source == "probe" for e in events)


def test_a_refused_event_is_set_aside_and_the_rest_still_ship(
    tmp_path: Path, audit: RunningAudit
) -> None:
    db = _database(tmp_path, f"sqlite:///{tmp_path / 'probe.db'}")
    tenant = new_tenant()
    settings = Settings(audit_addr=f"127.0.0.1:{audit.stack.ports['audit']}")

    async def scenario() -> list[tuple[str, str]]:
        box = Outbox(db, "probe", max_backlog=100)
        ids = await _record(db, box, tenant, ["risk.decision", "NotDotted", "risk.decision"])
        ch = channel(settings, "audit", identity="risk")
        from gate4.audit.v1 import audit_pb2_grpc

        assert await box.ship_once(audit_pb2_grpc.AuditServiceStub(ch)) == 3
        await ch.close()
        rows = await db.read(
            lambda c: c.execute(sa.select(box.table.c.event_id, box.table.c.reject_reason)).all()
        )
        assert [r[0] for r in rows] == [ids[1]]
        return [(str(r[0]), str(r[1])) for r in rows]

    try:
        rejected = asyncio.run(scenario())
    finally:
        db.close()
    assert rejected and "type" in rejected[0][1]
    assert len(audit.query(tenant).events) == 2


def test_backlog_bound_refuses_new_side_effects(tmp_path: Path) -> None:
    db = _database(tmp_path, f"sqlite:///{tmp_path / 'probe.db'}")

    async def scenario() -> None:
        box = Outbox(db, "probe", max_backlog=2)
        await _record(db, box, "acme", ["a.b", "a.b"])
        with pytest.raises(errors.DependencyUnavailable, match="audit backlog is full"):
            await _record(db, box, "acme", ["a.b"])
        assert await box.backlog() == 2

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_an_event_without_tenant_is_a_programming_error(tmp_path: Path) -> None:
    db = _database(tmp_path, f"sqlite:///{tmp_path / 'probe.db'}")

    async def scenario() -> None:
        box = Outbox(db, "probe", max_backlog=2)
        with pytest.raises(ValueError, match="has no tenant"):
            await db.write(lambda c: box.add(c, outbox.event("a.b", source="probe")))

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_risk_reducing_writes_use_a_bounded_reserve_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _database(tmp_path, f"sqlite:///{tmp_path / 'probe.db'}")
    admitted = metrics.OUTBOX_RESERVE_ADMISSIONS.labels("probe")

    async def reducing(box: Outbox, count: int) -> None:
        with correlation.bound(correlation.Correlation(request_id="req_reserve", tenant_id="t")):
            for _ in range(count):
                evt = outbox.event("deployment.stopping", source="probe")

                def op(conn: sa.Connection, evt: audit_pb2.AuditEvent = evt) -> None:
                    box.ensure_capacity(conn, outbox.Headroom.RESERVE)
                    box.add(conn, evt)

                await db.write(op)

    async def scenario() -> None:
        box = Outbox(db, "probe", max_backlog=2, reserve=3)
        await _record(db, box, "t", ["a.b", "a.b"])
        before = admitted._value.get()
        with caplog.at_level("WARNING", logger="gate4.outbox"):
            await reducing(box, 3)
        assert admitted._value.get() - before == 3
        # One line for the three (rate-limited); the metric counts each.
        lines = [r for r in caplog.records if "outbox reserve" in r.getMessage()]
        assert len(lines) == 1 and lines[0].backlog == 2  # type: ignore[attr-defined]
        assert metrics.OUTBOX_BACKLOG.labels("probe")._value.get() == 4
        assert metrics.OUTBOX_RESERVE_IN_USE.labels("probe")._value.get() == 2
        with pytest.raises(errors.DependencyUnavailable, match="its reserve"):
            await reducing(box, 1)
        # What adds risk was refused at the bound all along.
        with pytest.raises(errors.DependencyUnavailable, match="new risk is refused"):
            await _record(db, box, "t", ["a.b"])
        assert await box.backlog() == 5

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_an_event_carries_the_traceparent_of_the_span_that_recorded_it() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("probe")
    with (
        correlation.bound(correlation.Correlation(request_id="req_tp_probe", tenant_id="t")),
        tracer.start_as_current_span("probe") as span,
    ):
        evt = outbox.event("a.b", source="probe")
    ctx = span.get_span_context()
    assert evt.traceparent == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert evt.trace_id == f"{ctx.trace_id:032x}"
    assert outbox.event("a.b", source="probe").traceparent == ""


# -- several shippers on one outbox -------------------------------------------------------


class RecordingAudit:
    """Stands in for audit's stub: records what arrives, in arrival order, and takes a
    little while to answer so two shippers' shipments overlap."""

    def __init__(
        self, delay: float = 0.02, appended: list[audit_pb2.AuditEvent] | None = None
    ) -> None:
        self.delay = delay
        #: What audit received, shared by the stubs of several shippers.
        self.appended = [] if appended is None else appended
        self.calls = 0

    async def AppendBatch(self, request: audit_pb2.AppendBatchRequest, **_: Any) -> None:
        self.calls += 1
        self.appended.extend(request.events)
        await asyncio.sleep(self.delay)

    async def Append(self, request: audit_pb2.AppendRequest, **_: Any) -> None:
        self.calls += 1
        self.appended.append(request.event)
        await asyncio.sleep(self.delay)


async def _record_mixed(db: Database, box: Outbox, tenants: list[str]) -> list[str]:
    """One event per tenant in turn, each in its own write; returns their ids in order."""
    ids: list[str] = []
    for tenant in tenants:
        ids += await _record(db, box, tenant, ["risk.decision"])
    return ids


async def _drain(box: Outbox, stub: Any, until: float = 20.0) -> None:
    deadline = time.monotonic() + until
    while await box.backlog() and time.monotonic() < deadline:
        if not await box.ship_once(stub):
            await asyncio.sleep(0.005)


def test_two_shippers_ship_each_event_once_in_each_tenants_order(
    tmp_path: Path, database_url: str
) -> None:
    db = _database(tmp_path, database_url)
    other = _replica(database_url)
    stub = RecordingAudit()
    other_stub = RecordingAudit(appended=stub.appended)
    tenants = ["t-a", "t-b", "t-c", "t-d"] * 12 + ["t-e"] * 10

    async def scenario() -> list[str]:
        first = Outbox(db, "probe", max_backlog=1_000, ship_batch=5)
        second = Outbox(other, "probe", max_backlog=1_000, ship_batch=5)
        ids = await _record_mixed(db, first, tenants)
        await asyncio.gather(_drain(first, stub), _drain(second, other_stub))
        assert await first.backlog() == 0
        return ids

    try:
        ids = asyncio.run(scenario())
    finally:
        other.close()
        db.close()
    assert stub.calls and other_stub.calls  # both shipped a share
    shipped = [e.event_id for e in stub.appended]
    assert sorted(shipped) == sorted(ids)  # every event, none twice
    for tenant in set(tenants):
        recorded = [i for i, t in zip(ids, tenants, strict=True) if t == tenant]
        assert [e.event_id for e in stub.appended if e.tenant_id == tenant] == recorded


def test_a_claim_skips_the_tenants_another_shipper_holds(tmp_path: Path, database_url: str) -> None:
    db = _database(tmp_path, database_url)
    other = _replica(database_url)

    async def scenario() -> None:
        first = Outbox(db, "probe", max_backlog=100, ship_batch=3)
        second = Outbox(other, "probe", max_backlog=100, ship_batch=3)
        ids = await _record_mixed(db, first, ["x", "y", "x", "y", "z", "z"])
        assert [row_id for row_id, _ in await first._claim()] == [1, 2, 3]
        # x and y have events under `first`'s claim: their later ones wait; z is free.
        claimed = await second._claim()
        assert [audit_pb2.AuditEvent.FromString(p).event_id for _, p in claimed] == ids[4:]
        assert await second._claim() == claimed  # its own rows, claimed again
        stub = RecordingAudit(delay=0)
        await asyncio.gather(_drain(first, stub), _drain(second, stub))
        assert sorted(e.event_id for e in stub.appended) == sorted(ids)

    try:
        asyncio.run(scenario())
    finally:
        other.close()
        db.close()


def test_an_expired_lease_is_taken_over(tmp_path: Path, database_url: str) -> None:
    db = _database(tmp_path, database_url)
    other = _replica(database_url)
    taken = metrics.OUTBOX_TAKEOVERS.labels("probe")

    async def scenario() -> None:
        # Both replicas read one clock; the test moves it past the lease.
        clock = ManualClock()
        crashed = Outbox(db, "probe", max_backlog=100, lease_seconds=0.5, clock=clock)
        survivor = Outbox(other, "probe", max_backlog=100, clock=clock)
        ids = await _record_mixed(db, crashed, ["t", "u", "t"])
        assert len(await crashed._claim()) == 3  # ... and the shipper dies holding them
        stub: Any = RecordingAudit(delay=0)
        assert await survivor.ship_once(stub) == 0  # the lease still holds
        before = taken._value.get()
        clock.advance(0.5)
        assert await survivor.ship_once(stub) == 0  # a lease is held up to its end
        clock.advance(0.001)
        assert await survivor.ship_once(stub) == 3
        assert taken._value.get() - before == 3
        # One batch per tenant, each in its order.
        assert [e.event_id for e in stub.appended] == [ids[0], ids[2], ids[1]]
        assert await survivor.backlog() == 0

    try:
        asyncio.run(scenario())
    finally:
        other.close()
        db.close()


def test_a_shipper_short_of_lease_gives_back_what_it_did_not_ship(tmp_path: Path) -> None:
    db = _database(tmp_path, f"sqlite:///{tmp_path / 'probe.db'}")

    async def scenario() -> None:
        # Two tenants; the first shipment uses up the lease, so the second is not started.
        box = Outbox(
            db,
            "probe",
            max_backlog=100,
            lease_seconds=outbox.SETTLE_MARGIN_SECONDS + outbox.MIN_CALL_SECONDS + 0.3,
        )
        ids = await _record_mixed(db, box, ["t", "u"])
        stub: Any = RecordingAudit(delay=0.4)
        assert await box.ship_once(stub) == 1
        assert [e.event_id for e in stub.appended] == ids[:1]
        held = await db.read(
            lambda c: c.execute(sa.select(box.table.c.claimed_by, box.table.c.claimed_until)).all()
        )
        assert held == [(None, None)]  # given back for anyone to take
        stub.delay = 0
        assert await box.ship_once(stub) == 1
        assert [e.event_id for e in stub.appended] == ids

    try:
        asyncio.run(scenario())
    finally:
        db.close()
