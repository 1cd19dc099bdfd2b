"""risk-policy.v1 versions: the active policy of a tenant (or one of its accounts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.runtime.timeutil import as_utc

SCHEMA_ID = "risk-policy.v1"

versions = sa.table(
    "risk_policy_versions",
    sa.column("tenant_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("digest", sa.String),
    sa.column("author", sa.String),
    sa.column("reason", sa.String),
    sa.column("document", sa.Text),
    sa.column("active", sa.Boolean),
    sa.column("created_at", sa.DateTime),
)


@dataclass(frozen=True)
class PolicyRecord:
    tenant_id: str
    account_id: str
    version: int
    digest: str
    author: str
    reason: str
    document: dict[str, Any]
    active: bool
    created_at: datetime

    @property
    def label(self) -> str:
        """How decisions and audit events name the version, e.g. "risk-policy.v1@3"."""
        return f"{SCHEMA_ID}@{self.version}"


def _record(row: sa.Row[tuple[object, ...]]) -> PolicyRecord:
    m = row._mapping
    return PolicyRecord(
        tenant_id=str(m["tenant_id"]),
        account_id=str(m["account_id"]),
        version=int(m["version"]),
        digest=str(m["digest"]),
        author=str(m["author"]),
        reason=str(m["reason"]),
        document=json.loads(str(m["document"])),
        active=bool(m["active"]),
        created_at=as_utc(m["created_at"]),
    )


def active_policy(conn: Connection, tenant_id: str, account_id: str = "") -> PolicyRecord | None:
    """The account's active policy, else the tenant-wide one."""
    for scope in dict.fromkeys((account_id, "")):
        row = conn.execute(
            sa.select(versions).where(
                versions.c.tenant_id == tenant_id,
                versions.c.account_id == scope,
                versions.c.active.is_(True),
            )
        ).first()
        if row is not None:
            return _record(row)
    return None


def list_versions(
    conn: Connection, tenant_id: str, account_id: str, limit: int
) -> list[PolicyRecord]:
    rows = conn.execute(
        sa.select(versions)
        .where(versions.c.tenant_id == tenant_id, versions.c.account_id == account_id)
        .order_by(versions.c.version.desc())
        .limit(limit)
    ).all()
    return [_record(r) for r in rows]
