"""The audit event's fields are declared once (services/runtime/auditfields.py): the table,
the wire message and what services may record must all agree with that declaration."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gate4.audit.v1 import audit_pb2
from services.audit import store
from services.runtime import outbox
from services.runtime.auditfields import FIELD_LIMITS, FIELDS, SUBJECT_FIELDS, EventContent

MIGRATION = Path(store.__file__).parent / "migrations" / "0001_audit_events.py"


class _Recorder:
    """Stands in for alembic's `op`: keeps the columns the migration creates."""

    def __init__(self) -> None:
        self.tables: dict[str, list[sa.Column[Any]]] = {}

    def create_table(self, name: str, *items: Any, **_: Any) -> None:
        self.tables[name] = [c for c in items if isinstance(c, sa.Column)]

    def get_bind(self) -> Any:
        return sa.create_engine("sqlite://")

    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None


def _migrated_columns() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("audit_migration_0001", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorder = _Recorder()
    setattr(module, "op", recorder)  # noqa: B010 - the migration reads the module global
    module.upgrade()
    return {c.name: repr(c.type) for c in recorder.tables["audit_events"] if c.name != "position"}


def test_the_table_derived_from_the_declaration_is_the_migrated_one() -> None:
    declared = {c.name: repr(c.type) for c in store.events.columns if c.name != "position"}
    assert declared == _migrated_columns()
    assert list(declared) == list(_migrated_columns())


def test_every_declared_field_is_on_the_wire_message() -> None:
    wire = {f.name for f in audit_pb2.AuditEvent.DESCRIPTOR.fields}
    declared = {f.name for f in FIELDS}
    assert declared <= wire
    # The rest of the message is the chain, the cursor and trace context, never hashed.
    assert wire - declared == {"position", "prev_hash", "hash", "traceparent"}
    assert [f.name for f in FIELDS] == [f.name for f in EventContent.__dataclass_fields__.values()]


def test_limits_cover_every_text_field_and_match_the_columns() -> None:
    for name, limit in FIELD_LIMITS.items():
        column = store.events.c[name]
        if isinstance(column.type, sa.String) and column.type.length is not None:
            assert column.type.length == limit, name
    assert FIELD_LIMITS["reason"] == 4096


def test_the_outbox_records_only_subject_fields() -> None:
    evt = outbox.event("test.event", source="test", order_id="o-1", outcome="APPROVED")
    assert (evt.order_id, evt.outcome, evt.source) == ("o-1", "APPROVED", "test")
    assert {
        "account_id",
        "deployment_id",
        "order_id",
        "session_id",
        "outcome",
        "policy_version",
        "reason",
    } == SUBJECT_FIELDS
    with pytest.raises(TypeError, match="orderid"):
        outbox.event("test.event", source="test", orderid="o-1")
    with pytest.raises(TypeError, match="tenant_id"):
        outbox.event("test.event", source="test", tenant_id="other")
