"""Stored risk-policy.v1 versions: one active version per tenant, and optionally per account.

Versions are never changed or deleted: putting a policy adds version n+1 with its digest,
author and reason and makes it the active one; the previous one stays readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.risk import policy, stamps
from services.runtime.timeutil import as_utc

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
    document_json: str
    active: bool
    created_at: datetime

    @property
    def document(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.document_json)
        return loaded

    @property
    def label(self) -> str:
        """How decisions and audit events name the version: "risk-policy.v1@3" for the
        tenant-wide policy, "risk-policy.v1/acc-1@2" for an account's own."""
        scope = f"/{self.account_id}" if self.account_id else ""
        return f"{policy.SCHEMA_ID}{scope}@{self.version}"

    def parsed(self) -> policy.Policy | policy.PolicyProblems:
        """The typed policy, or why the stored document no longer validates (fail closed)."""
        return policy.parse_stored(self.document_json)


def _record(row: sa.Row[tuple[object, ...]]) -> PolicyRecord:
    m = row._mapping
    return PolicyRecord(
        tenant_id=str(m["tenant_id"]),
        account_id=str(m["account_id"]),
        version=int(m["version"]),
        digest=str(m["digest"]),
        author=str(m["author"]),
        reason=str(m["reason"]),
        document_json=str(m["document"]),
        active=bool(m["active"]),
        created_at=as_utc(m["created_at"]),
    )


def active_policies(
    conn: Connection, tenant_id: str, account_id: str = ""
) -> tuple[PolicyRecord | None, PolicyRecord | None]:
    """The policy governing the account (its own active one, else the tenant-wide one) and
    the tenant-wide one, in one query."""
    rows = conn.execute(
        sa.select(versions).where(
            versions.c.tenant_id == tenant_id,
            versions.c.account_id.in_({account_id, ""}),
            versions.c.active.is_(True),
        )
    ).all()
    by_scope = {str(r._mapping["account_id"]): _record(r) for r in rows}
    tenant_wide = by_scope.get("")
    return by_scope.get(account_id, tenant_wide), tenant_wide


def active_policy(conn: Connection, tenant_id: str, account_id: str = "") -> PolicyRecord | None:
    """The account's own active policy, else the tenant-wide one."""
    return active_policies(conn, tenant_id, account_id)[0]


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


def put_version(
    conn: Connection,
    *,
    tenant_id: str,
    account_id: str,
    document: dict[str, Any],
    author: str,
    reason: str,
    now: datetime,
) -> tuple[PolicyRecord, PolicyRecord | None]:
    """Adds the next version as the active one; returns it and the version it replaced.

    The caller holds the tenant's lock (services.risk.locks), so two processes never pick
    the same version number.
    """
    scope = (versions.c.tenant_id == tenant_id, versions.c.account_id == account_id)
    previous_row = conn.execute(
        sa.select(versions).where(*scope, versions.c.active.is_(True))
    ).first()
    previous = _record(previous_row) if previous_row is not None else None
    latest = conn.execute(sa.select(sa.func.max(versions.c.version)).where(*scope)).scalar()
    number = int(latest or 0) + 1
    doc = policy.normalise(document)
    conn.execute(sa.update(versions).where(*scope).values(active=False))
    stamps.touch(conn, tenant_id)  # a tenant's policy governs every account without its own
    values = {
        "tenant_id": tenant_id,
        "account_id": account_id,
        "version": number,
        "digest": policy.digest(doc),
        "author": author,
        "reason": reason,
        "document": json.dumps(doc, sort_keys=True, separators=(",", ":")),
        "active": True,
        "created_at": now,
    }
    conn.execute(sa.insert(versions).values(**values))
    record = PolicyRecord(
        tenant_id=tenant_id,
        account_id=account_id,
        version=number,
        digest=str(values["digest"]),
        author=author,
        reason=reason,
        document_json=str(values["document"]),
        active=True,
        created_at=now,
    )
    return record, previous
