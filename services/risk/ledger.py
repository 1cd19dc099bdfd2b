"""The positions ledger: the newest version of each deployment's position that risk has seen.

Execution numbers every change of a (deployment, instrument) position; order intents and
settlements carry snapshots with that number. A snapshot moves the ledger only when its
version is higher than the stored one, in a single upsert guarded by the version, so a
stale or reordered message never undoes a newer one and no writer reads-modifies-writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.risk.checks import Position
from services.runtime.decimals import format_decimal

ZERO = Decimal(0)

positions = sa.table(
    "risk_positions",
    sa.column("tenant_id", sa.String),
    sa.column("deployment_id", sa.String),
    sa.column("instrument", sa.String),
    sa.column("account_id", sa.String),
    sa.column("quantity", sa.String),
    sa.column("price", sa.String),
    sa.column("version", sa.BigInteger),
    sa.column("updated_at", sa.DateTime),
)


@dataclass(frozen=True)
class Held:
    """A stored position: signed quantity and the price its snapshot carried."""

    deployment_id: str
    instrument: str
    quantity: Decimal
    price: Decimal | None
    version: int


def merge(
    conn: Connection,
    tenant_id: str,
    account_id: str,
    snapshots: Iterable[Position],
    now: datetime,
) -> None:
    """Stores each snapshot that is newer than what the ledger holds; ignores the rest."""
    rows = [
        {
            "tenant_id": tenant_id,
            "deployment_id": s.deployment_id,
            "instrument": s.instrument,
            "account_id": account_id,
            "quantity": format_decimal(s.quantity),
            "price": format_decimal(s.price) if s.price is not None else "",
            "version": s.version,
            "updated_at": now,
        }
        for s in snapshots
    ]
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(positions)
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "deployment_id", "instrument"],
        set_={
            "account_id": stmt.excluded.account_id,
            "quantity": stmt.excluded.quantity,
            "price": stmt.excluded.price,
            "version": stmt.excluded.version,
            "updated_at": stmt.excluded.updated_at,
        },
        where=positions.c.version < stmt.excluded.version,
    )
    conn.execute(stmt, rows)


def _held(row: sa.Row[tuple[object, ...]]) -> Held:
    m = row._mapping
    price = str(m["price"] or "")
    return Held(
        deployment_id=str(m["deployment_id"]),
        instrument=str(m["instrument"]),
        quantity=Decimal(str(m["quantity"])),
        price=Decimal(price) if price else None,
        version=int(m["version"]),
    )


def of_account(conn: Connection, tenant_id: str, account_id: str) -> list[Held]:
    """The account's positions, every deployment and instrument."""
    rows = conn.execute(
        sa.select(positions).where(
            positions.c.tenant_id == tenant_id, positions.c.account_id == account_id
        )
    ).all()
    return [_held(r) for r in rows]


def get(conn: Connection, tenant_id: str, deployment_id: str, instrument: str) -> Held | None:
    row = conn.execute(
        sa.select(positions).where(
            positions.c.tenant_id == tenant_id,
            positions.c.deployment_id == deployment_id,
            positions.c.instrument == instrument,
        )
    ).first()
    return _held(row) if row is not None else None
