"""The transactional outbox ships to the real audit service, at least once and never stuck."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gate4.audit.v1 import audit_pb2
from services.runtime import correlation, errors, outbox
from services.runtime.clients import channel
from services.runtime.config import Settings
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate
from tests.support.audit import RunningAudit, new_tenant, running_audit
from tests.support.migrations import write_revision

CREATE_OUTBOX = "from services.runtime import outbox\noutbox.create_table('probe')\n"


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAudit]:
    with running_audit(tmp_path_factory.mktemp("outbox-audit")) as service:
        yield service


def _database(tmp_path: Path, url: str) -> Database:
    versions = tmp_path / "versions"
    write_revision(versions, "0001", CREATE_OUTBOX, message="probe outbox")
    db = Database(url, name="probe")
    migrate(db, versions, "probe")
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
    admitted = outbox.RESERVE_ADMISSIONS.labels("probe")

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
        assert outbox.BACKLOG.labels("probe")._value.get() == 4
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
