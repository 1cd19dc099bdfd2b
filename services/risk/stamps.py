"""Stamps: what lets a risk process trust the state it holds in memory (services.risk.books).

Every account has a stamp, and so has its tenant (the row with account_id ""): a random
token that every write of what a decision reads rewrites, in the write's own transaction.

- The account's stamp: its reservations (decisions, settlements), its positions ledger,
  its deployments' equity.
- The tenant's stamp: policy versions and kill switches, which reach every account.

A process that loaded an account's state keeps the stamps it saw. Its next decision
rewrites the account's stamp only where both are still the ones it saw, in one statement:
a process (or a rolled-back transaction) that changed anything since leaves a stamp that
no longer matches, and the state is loaded again. Random rather than counted, so a stamp
written by a transaction that rolled back can never come back and match a later state.

Each stamp is written under its key's lock (services.risk.locks), so a write never waits
on another process's row lock inside a group-committed batch.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.risk import locks

#: The account id of a tenant's own stamp.
TENANT = ""

stamps = sa.table(
    "risk_stamps",
    sa.column("tenant_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("token", sa.String),
)

_TENANT_ROW = sa.alias(stamps, "tenant_row")
# Built once: the decision path runs it for every order.
_ADVANCE = (
    sa.update(stamps)
    .where(
        stamps.c.tenant_id == sa.bindparam("t"),
        stamps.c.account_id == sa.bindparam("a"),
        stamps.c.token == sa.bindparam("seen"),
        sa.exists()
        .where(
            _TENANT_ROW.c.tenant_id == sa.bindparam("t"),
            _TENANT_ROW.c.account_id == TENANT,
            _TENANT_ROW.c.token == sa.bindparam("tenant_seen"),
        )
        .correlate_except(_TENANT_ROW),
    )
    .values(token=sa.bindparam("new"))
)
_READ = sa.select(stamps.c.account_id, stamps.c.token).where(
    stamps.c.tenant_id == sa.bindparam("t"),
    stamps.c.account_id.in_([sa.bindparam("a"), TENANT]),
)


def new() -> str:
    return secrets.token_hex(12)


def _key(tenant_id: str, account_id: str) -> str:
    if account_id == TENANT:
        return locks.tenant_key(tenant_id)
    return locks.account_key(tenant_id, account_id)


def touch(conn: Connection, tenant_id: str, account_id: str = TENANT) -> str:
    """Marks the account's (or, by default, the tenant's) state as changed: every copy held
    in memory is stale from this transaction's commit. Returns the new stamp."""
    locks.hold(conn, _key(tenant_id, account_id))
    token = new()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(stamps).values(tenant_id=tenant_id, account_id=account_id, token=token)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id", "account_id"], set_={"token": token}
        )
    )
    return token


def advance(
    conn: Connection, tenant_id: str, account_id: str, *, seen: str, tenant_seen: str
) -> str | None:
    """Rewrites the account's stamp if it and its tenant's are still `seen` and
    `tenant_seen`; the new stamp, or None when either moved on (reload). The caller holds
    the account's lock."""
    token = new()
    result = conn.execute(
        _ADVANCE,
        {"t": tenant_id, "a": account_id, "seen": seen, "tenant_seen": tenant_seen, "new": token},
    )
    return token if result.rowcount == 1 else None


def read(conn: Connection, tenant_id: str, account_id: str) -> tuple[str, str]:
    """The tenant's and the account's stamps ("" for one never written). Read before the
    state they stamp, so that state is never older than the stamps kept with it."""
    found = {
        str(r.account_id): str(r.token)
        for r in conn.execute(_READ, {"t": tenant_id, "a": account_id})
    }
    return found.get(TENANT, ""), found.get(account_id, "")
