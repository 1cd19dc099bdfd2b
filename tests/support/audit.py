"""The audit service from a test's point of view: a running process, events, an outside verifier."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from cli.devstack import ManagedProcess, Stack
from gate4.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support import rpc, sql

GENESIS = "0" * 64


@dataclass
class RunningAudit:
    """One `python -m services.audit` process and a sync channel to it."""

    stack: Stack
    database_url: str
    channel: grpc.Channel
    stub: audit_pb2_grpc.AuditServiceStub

    @property
    def process(self) -> ManagedProcess:
        return self.stack.processes["audit"]

    def append(self, tenant: str, *events: audit_pb2.AuditEvent) -> list[audit_pb2.AuditEvent]:
        resp = self.stub.AppendBatch(
            audit_pb2.AppendBatchRequest(events=events),
            metadata=rpc.metadata(tenant, caller="execution"),
        )
        return list(resp.events)

    def query(self, tenant: str, **fields: Any) -> audit_pb2.QueryResponse:
        return self.stub.Query(audit_pb2.QueryRequest(**fields), metadata=rpc.metadata(tenant))

    def verify(self, tenant: str) -> audit_pb2.VerifyResponse:
        return self.stub.Verify(audit_pb2.VerifyRequest(), metadata=rpc.metadata(tenant))


@contextmanager
def running_audit(
    var_dir: Path, database_url: str | None = None, env: dict[str, str] | None = None
) -> Iterator[RunningAudit]:
    """Starts the real audit process; stops it (SIGTERM, then SIGKILL) however the test ends.

    Without database_url the service uses its default, a SQLite file under var_dir.
    """
    extra = dict(env or {})
    if database_url:
        extra["GATE4_AUDIT_DATABASE_URL"] = database_url
    stack = Stack(var_dir, names=["audit"], env=extra)
    try:
        stack.start(timeout=60)
        with rpc.channel(stack.ports["audit"]) as channel:
            yield RunningAudit(
                stack=stack,
                database_url=database_url or f"sqlite:///{var_dir / 'audit.db'}",
                channel=channel,
                stub=audit_pb2_grpc.AuditServiceStub(channel),
            )
    finally:
        stack.stop()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def event(type_: str = "risk.decision", **fields: Any) -> audit_pb2.AuditEvent:
    """An event with a fresh id; `data` may be a plain dict."""
    data = fields.pop("data", None)
    fields.setdefault("event_id", f"evt_{uuid.uuid4().hex}")
    evt = audit_pb2.AuditEvent(type=type_, **fields)
    if data is not None:
        evt.data.update(data)
    return evt


@contextmanager
def triggers_dropped(url: str) -> Iterator[Any]:
    """A transaction on the audit database with audit_events' triggers dropped.

    Yields the connection; the triggers are recreated from their stored definitions before
    the commit, so the store is append-only again for everyone else.
    """
    with sql.connect(url) as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
            ).all()
        else:
            rows = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'audit_events'"
            ).all()
        assert rows, "the audit store should have its append-only triggers"
        for name, _ in rows:
            on = " ON audit_events" if conn.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
        yield conn
        for _, definition in rows:
            conn.exec_driver_sql(definition)


# -- an outside verifier, written from services/audit/chain.py's docstring alone ---------------


def _json_number_form(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _json_number_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number_form(v) for v in value]
    return value


def _rfc3339_micro(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recompute_hash(evt: audit_pb2.AuditEvent) -> str:
    """The event's hash from its public fields, as an external verifier would compute it."""
    content = {
        "tenantId": evt.tenant_id,
        "sequence": evt.sequence,
        "eventId": evt.event_id,
        "type": evt.type,
        "source": evt.source,
        "occurredAt": _rfc3339_micro(evt.occurred_at),
        "recordedAt": _rfc3339_micro(evt.recorded_at),
        "requestId": evt.request_id,
        "traceId": evt.trace_id,
        "userId": evt.user_id,
        "channel": evt.channel,
        "accountId": evt.account_id,
        "deploymentId": evt.deployment_id,
        "orderId": evt.order_id,
        "sessionId": evt.session_id,
        "outcome": evt.outcome,
        "policyVersion": evt.policy_version,
        "reason": evt.reason,
        "data": _json_number_form(json_format.MessageToDict(evt.data)),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(evt.prev_hash.encode("ascii") + canonical.encode("utf-8")).hexdigest()
