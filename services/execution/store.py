"""Execution tables and their mapping to API messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gate4.execution.v1 import execution_pb2
from services.execution.positions import Position
from services.execution.positions import value as positions_value
from services.runtime import scopes
from services.runtime.decimals import format_decimal, stored_decimal
from services.runtime.pagination import NewestFirst
from services.runtime.timeutil import as_utc, to_timestamp


def _columns(names: str) -> list[sa.ColumnClause[object]]:
    return [sa.column(n, sa.String) for n in names.split()]


def _times() -> list[sa.ColumnClause[object]]:
    return [sa.column("created_at", sa.DateTime), sa.column("updated_at", sa.DateTime)]


deployments = sa.table(
    "execution_deployments",
    *_columns(
        "deployment_id tenant_id strategy_id account_id instruments capital_allocation mode "
        "state policy_version peak_equity degraded_reason state_reason enforced_switch"
    ),
    sa.column("degraded", sa.Boolean),
    sa.column("stop_flatten", sa.Boolean),
    sa.column("stop_lease_until", sa.DateTime),
    sa.column("stop_count", sa.Integer),
    *_times(),
)
orders = sa.table(
    "execution_orders",
    *_columns(
        "order_id tenant_id deployment_id account_id instrument side type quantity limit_price "
        "filled_quantity average_fill_price status client_order_id outcome reject_reason "
        "policy_version venue_state idempotency_key request_id decision_id"
    ),
    sa.column("reduce_only", sa.Boolean),
    sa.column("venue_attempts", sa.Integer),
    sa.column("lease_until", sa.DateTime),
    *_times(),
)
marks = sa.table(
    "execution_marks",
    *_columns("tenant_id instrument price"),
    sa.column("at", sa.DateTime),
)
fills = sa.table(
    "execution_fills",
    *_columns("fill_id tenant_id order_id deployment_id instrument side quantity price"),
    sa.column("at", sa.DateTime),
)
positions = sa.table(
    "execution_positions",
    *_columns("deployment_id instrument tenant_id account_id quantity average_price realized_pnl"),
    sa.column("version", sa.Integer),
    sa.column("updated_at", sa.DateTime),
)
paper_venue_orders = sa.table(
    "execution_paper_venue_orders",
    *_columns(
        "client_order_id tenant_id account_id instrument side type quantity limit_price status "
        "filled_quantity fills reason"
    ),
    *_times(),
)
idempotency = sa.table(
    "execution_idempotency",
    *_columns(
        "tenant_id route key request_digest status owner resource_id result_kind error_code "
        "error_detail error_outcome request_id"
    ),
    sa.column("response", sa.LargeBinary),
    sa.column("lease_until", sa.DateTime),
    sa.column("created_at", sa.DateTime),
    sa.column("completed_at", sa.DateTime),
    sa.column("expires_at", sa.DateTime),
)


def _set_times(
    msg: execution_pb2.Deployment | execution_pb2.Order, created: datetime, updated: datetime
) -> None:
    for field, value in (("created_at", created), ("updated_at", updated)):
        ts = to_timestamp(value)
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)


def lock(query: sa.Select[tuple[object, ...]]) -> sa.Select[tuple[object, ...]]:
    """FOR UPDATE on PostgreSQL (two processes serialise on the row); SQLite has one writer."""
    return query.with_for_update()


# -- marks -------------------------------------------------------------------------------------


def mark_price(
    conn: Connection, tenant_id: str, instrument: str
) -> tuple[Decimal, datetime] | None:
    row = conn.execute(
        sa.select(marks.c.price, marks.c.at).where(
            marks.c.tenant_id == tenant_id, marks.c.instrument == instrument
        )
    ).first()
    return (Decimal(str(row.price)), as_utc(row.at)) if row is not None else None


def mark_prices(conn: Connection, tenant_id: str) -> dict[str, Decimal]:
    rows = conn.execute(
        sa.select(marks.c.instrument, marks.c.price).where(marks.c.tenant_id == tenant_id)
    ).all()
    return {str(r.instrument): Decimal(str(r.price)) for r in rows}


def upsert_mark(
    conn: Connection, tenant_id: str, instrument: str, price: str, at: datetime
) -> None:
    key = (marks.c.tenant_id == tenant_id) & (marks.c.instrument == instrument)
    updated = conn.execute(sa.update(marks).where(key).values(price=price, at=at)).rowcount
    if not updated:
        conn.execute(
            sa.insert(marks).values(tenant_id=tenant_id, instrument=instrument, price=price, at=at)
        )


# -- positions ---------------------------------------------------------------------------------


def _position(row: sa.Row[tuple[object, ...]]) -> Position:
    m = row._mapping
    return Position(
        instrument=str(m["instrument"]),
        quantity=stored_decimal(str(m["quantity"])),
        average_price=stored_decimal(str(m["average_price"])),
        realized_pnl=stored_decimal(str(m["realized_pnl"])),
    )


@dataclass(frozen=True)
class Book:
    """A deployment's positions with their versions, and its tenant's marks: everything
    valuing the deployment and telling risk about it needs, read in two queries."""

    positions: list[Position]
    versions: dict[str, int]
    marks: dict[str, Decimal]
    mark_times: dict[str, datetime]

    def position(self, instrument: str) -> Position:
        return next((p for p in self.positions if p.instrument == instrument), Position(instrument))


_POSITIONS = (
    sa.select(positions)
    .where(positions.c.deployment_id == sa.bindparam("deployment_id"))
    .order_by(positions.c.instrument)
)
_MARKS = sa.select(marks.c.instrument, marks.c.price, marks.c.at).where(
    marks.c.tenant_id == sa.bindparam("tenant_id")
)


def book(conn: Connection, tenant_id: str, deployment_id: str) -> Book:
    rows = conn.execute(_POSITIONS, {"deployment_id": deployment_id}).all()
    priced = conn.execute(_MARKS, {"tenant_id": tenant_id}).all()
    return Book(
        positions=[_position(r) for r in rows],
        versions={str(r.instrument): int(r.version) for r in rows},
        marks={str(r.instrument): Decimal(str(r.price)) for r in priced},
        mark_times={str(r.instrument): as_utc(r.at) for r in priced},
    )


def marks_of(conn: Connection, tenant_id: str) -> dict[str, Decimal]:
    """The tenant's last mark of each instrument."""
    return {
        str(r.instrument): Decimal(str(r.price))
        for r in conn.execute(_MARKS, {"tenant_id": tenant_id})
    }


def deployment_positions(conn: Connection, deployment_id: str) -> list[Position]:
    rows = conn.execute(
        sa.select(positions)
        .where(positions.c.deployment_id == deployment_id)
        .order_by(positions.c.instrument)
    ).all()
    return [_position(r) for r in rows]


def get_position(conn: Connection, deployment_id: str, instrument: str) -> Position:
    row = conn.execute(
        sa.select(positions).where(
            positions.c.deployment_id == deployment_id, positions.c.instrument == instrument
        )
    ).first()
    return _position(row) if row is not None else Position(instrument)


def account_position(conn: Connection, tenant_id: str, account_id: str, instrument: str) -> Decimal:
    rows = conn.execute(
        sa.select(positions.c.quantity).where(
            positions.c.tenant_id == tenant_id,
            positions.c.account_id == account_id,
            positions.c.instrument == instrument,
        )
    ).all()
    return sum((stored_decimal(str(r.quantity)) for r in rows), Decimal(0))


def position_versions(conn: Connection, deployment_id: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(positions.c.instrument, positions.c.version).where(
            positions.c.deployment_id == deployment_id
        )
    ).all()
    return {str(r.instrument): int(r.version) for r in rows}


def save_position(
    conn: Connection,
    tenant_id: str,
    account_id: str,
    deployment_id: str,
    position: Position,
    now: datetime,
) -> int:
    """Writes the position and counts one more version of it; returns that version.

    The caller holds the deployment's row lock, under which the position was read, so
    the new values cannot overwrite a concurrent change; the upsert (rather than update,
    then insert) cannot fail on a first fill that another process inserted meanwhile.
    """
    values = {
        "quantity": format_decimal(position.quantity),
        "average_price": format_decimal(position.average_price),
        "realized_pnl": format_decimal(position.realized_pnl),
        "updated_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(positions).values(
        deployment_id=deployment_id,
        instrument=position.instrument,
        tenant_id=tenant_id,
        account_id=account_id,
        version=1,
        **values,
    )
    return int(
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["deployment_id", "instrument"],
                set_={**values, "version": positions.c.version + 1},
            ).returning(positions.c.version)
        ).scalar_one()
    )


# -- deployments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillSwitchView:
    engaged: bool = False
    scope: str = ""
    scope_id: str = ""
    reason: str = ""


# The hot path's statements are built once, with bound parameters: each call then skips
# building the statement and computing its cache key.
_DEPLOYMENT = sa.select(deployments).where(
    deployments.c.tenant_id == sa.bindparam("tenant_id"),
    deployments.c.deployment_id == sa.bindparam("deployment_id"),
)
_DEPLOYMENT_LOCKED = lock(_DEPLOYMENT)


def deployment_row(
    conn: Connection, tenant_id: str, deployment_id: str, *, for_update: bool = False
) -> sa.RowMapping | None:
    row = conn.execute(
        _DEPLOYMENT_LOCKED if for_update else _DEPLOYMENT,
        {"tenant_id": tenant_id, "deployment_id": deployment_id},
    ).first()
    return row._mapping if row is not None else None


def deployment_message(
    conn: Connection, row: sa.RowMapping, switch: KillSwitchView | None = None
) -> execution_pb2.Deployment:
    """The deployment as the API shows it: positions marked to the last marks, P&L, equity."""
    tenant_id = str(row["tenant_id"])
    held = deployment_positions(conn, str(row["deployment_id"]))
    prices = mark_prices(conn, tenant_id)
    peak = str(row["peak_equity"])
    valuation = positions_value(
        stored_decimal(str(row["capital_allocation"])),
        held,
        prices,
        Decimal(peak) if peak else None,
    )
    if switch is None:
        switch = stored_switch(str(row["enforced_switch"]))
    msg = execution_pb2.Deployment(
        deployment_id=row["deployment_id"],
        tenant_id=tenant_id,
        strategy_id=row["strategy_id"],
        account_id=row["account_id"],
        instruments=json.loads(row["instruments"]),
        capital_allocation=row["capital_allocation"],
        mode=row["mode"],
        state=row["state"],
        positions=[
            execution_pb2.Position(
                instrument=p.instrument,
                quantity=format_decimal(p.quantity),
                average_price=format_decimal(p.average_price) if p.quantity else "",
                mark_price=format_decimal(prices[p.instrument]) if p.instrument in prices else "",
                realized_pnl=format_decimal(p.realized_pnl),
                unrealized_pnl=format_decimal(p.unrealized_pnl(prices.get(p.instrument))),
            )
            for p in held
        ],
        realized_pnl=format_decimal(valuation.realized_pnl),
        unrealized_pnl=format_decimal(valuation.unrealized_pnl),
        equity=format_decimal(valuation.equity),
        peak_equity=format_decimal(valuation.peak_equity),
        drawdown=format_decimal(valuation.drawdown),
        kill_switch=execution_pb2.DeploymentKillSwitch(
            engaged=switch.engaged,
            scope=switch.scope,
            scope_id=switch.scope_id,
            reason=switch.reason,
        ),
        policy_version=row["policy_version"],
        degraded=bool(row["degraded"]),
        degraded_reason=row["degraded_reason"],
        state_reason=row["state_reason"],
    )
    _set_times(msg, row["created_at"], row["updated_at"])
    return msg


def stored_switch(text: str) -> KillSwitchView:
    """The last kill switch enforced on the deployment, as recorded by EnforceKillSwitch."""
    if not text:
        return KillSwitchView()
    data = json.loads(text)
    return KillSwitchView(True, data["scope"], data["scopeId"], data["reason"])


def get_deployment(
    conn: Connection, tenant_id: str, deployment_id: str, switch: KillSwitchView | None = None
) -> execution_pb2.Deployment | None:
    row = deployment_row(conn, tenant_id, deployment_id)
    return deployment_message(conn, row, switch) if row is not None else None


def list_deployments(
    conn: Connection,
    tenant_id: str,
    account_id: str,
    state: str,
    after: NewestFirst | None,
    limit: int,
) -> list[execution_pb2.Deployment]:
    """Newest first, by (created_at desc, deployment_id desc), continuing after `after`."""
    query = sa.select(deployments).where(deployments.c.tenant_id == tenant_id)
    if account_id:
        query = query.where(deployments.c.account_id == account_id)
    if state:
        query = query.where(deployments.c.state == state)
    created, key = deployments.c.created_at, deployments.c.deployment_id
    if after is not None:
        query = query.where(_before(created, key, after))
    rows = conn.execute(query.order_by(created.desc(), key.desc()).limit(limit)).all()
    return [deployment_message(conn, r._mapping) for r in rows]


def _before(
    created: sa.ColumnClause[object], key: sa.ColumnClause[object], after: NewestFirst
) -> sa.ColumnElement[bool]:
    """Rows that sort after `after` in (created_at desc, id desc) order."""
    return sa.or_(
        created < after.created_at,
        sa.and_(created == after.created_at, key < after.item_id),
    )


def page_cursor(created_at: timestamp_pb2.Timestamp, item_id: str) -> str:
    """The cursor of the page that follows the item (its created_at and id, as stored)."""
    return NewestFirst(created_at.ToDatetime(tzinfo=UTC), item_id).cursor()


def deployments_in_scope(
    conn: Connection, tenant_id: str, scope: str, scope_id: str
) -> list[sa.RowMapping]:
    query = sa.select(deployments).where(deployments.c.tenant_id == tenant_id)
    if scope == scopes.ACCOUNT:
        query = query.where(deployments.c.account_id == scope_id)
    elif scope == scopes.DEPLOYMENT:
        query = query.where(deployments.c.deployment_id == scope_id)
    elif scope_id != tenant_id:
        return []
    return [r._mapping for r in conn.execute(query.order_by(deployments.c.deployment_id)).all()]


# -- orders ------------------------------------------------------------------------------------

_ORDER_FIELDS = (
    "order_id",
    "tenant_id",
    "deployment_id",
    "account_id",
    "instrument",
    "side",
    "type",
    "quantity",
    "limit_price",
    "filled_quantity",
    "average_fill_price",
    "status",
    "client_order_id",
    "outcome",
    "reject_reason",
    "policy_version",
)


_ORDER = sa.select(orders).where(
    orders.c.tenant_id == sa.bindparam("tenant_id"), orders.c.order_id == sa.bindparam("order_id")
)
_ORDER_LOCKED = lock(_ORDER)
_FILLS = (
    sa.select(fills)
    .where(
        fills.c.tenant_id == sa.bindparam("tenant_id"), fills.c.order_id == sa.bindparam("order_id")
    )
    .order_by(fills.c.at, fills.c.fill_id)
)


def order_row(
    conn: Connection, tenant_id: str, order_id: str, *, for_update: bool = False
) -> sa.RowMapping | None:
    row = conn.execute(
        _ORDER_LOCKED if for_update else _ORDER, {"tenant_id": tenant_id, "order_id": order_id}
    ).first()
    return row._mapping if row is not None else None


@dataclass(frozen=True)
class FillRow:
    """A fill as stored (decimals as their stored text)."""

    fill_id: str
    quantity: str
    price: str
    at: datetime


def order_message(
    conn: Connection, m: Mapping[Any, Any], fills: Sequence[FillRow] | None = None
) -> execution_pb2.Order:
    """The order as the API shows it; `fills`: all of its fills, when the caller just wrote
    them (else they are read)."""
    msg = execution_pb2.Order(
        **{k: m[k] for k in _ORDER_FIELDS},
        reduce_only=bool(m["reduce_only"]),
        venue_attempts=int(m["venue_attempts"]),
    )
    rows: Sequence[Any] = (
        sorted(fills, key=lambda f: (f.at, f.fill_id))
        if fills is not None
        else conn.execute(_FILLS, {"tenant_id": m["tenant_id"], "order_id": m["order_id"]}).all()
    )
    for r in rows:
        fill = msg.fills.add(fill_id=r.fill_id, quantity=r.quantity, price=r.price)
        ts = to_timestamp(r.at)
        if ts is not None:
            fill.at.CopyFrom(ts)
    _set_times(msg, m["created_at"], m["updated_at"])
    return msg


def get_order(conn: Connection, tenant_id: str, order_id: str) -> execution_pb2.Order | None:
    row = order_row(conn, tenant_id, order_id)
    return order_message(conn, row) if row is not None else None


def list_orders(
    conn: Connection,
    tenant_id: str,
    deployment_id: str,
    status: str,
    after: NewestFirst | None,
    limit: int,
) -> list[execution_pb2.Order]:
    """Newest first, by (created_at desc, order_id desc), continuing after `after`."""
    query = sa.select(orders).where(orders.c.tenant_id == tenant_id)
    if deployment_id:
        query = query.where(orders.c.deployment_id == deployment_id)
    if status:
        query = query.where(orders.c.status == status)
    created, key = orders.c.created_at, orders.c.order_id
    if after is not None:
        query = query.where(_before(created, key, after))
    rows = conn.execute(query.order_by(created.desc(), key.desc()).limit(limit)).all()
    return [order_message(conn, r._mapping) for r in rows]
