"""Risk's state as Prometheus gauges, read from the database at scrape time: engaged kill
switches, and each deployment's drawdown next to its policy's limit."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from services.risk import drawdown, killswitch
from services.runtime import metrics, scopes
from services.runtime.storage import Database

Sample = tuple[tuple[str, ...], float]


def engaged_switches(conn: sa.Connection) -> list[Sample]:
    s = killswitch.switches.c
    rows = conn.execute(
        sa.select(s.tenant_id, s.scope, s.scope_id).where(s.engaged.is_(True))
    ).all()
    return [((str(t), str(scope), str(i)), 1.0) for t, scope, i in rows]


def deployment_drawdowns(conn: sa.Connection) -> list[Sample]:
    e = drawdown.equity_table.c
    rows = conn.execute(
        sa.select(e.tenant_id, e.scope_id, e.equity, e.peak_equity).where(
            e.scope == scopes.DEPLOYMENT
        )
    ).all()
    return [
        (
            (str(t), str(d)),
            float(drawdown.Track(Decimal(str(eq)), Decimal(str(pk)), 0).drawdown_pct),
        )
        for t, d, eq, pk in rows
    ]


def deployment_drawdown_limits(conn: sa.Connection) -> list[Sample]:
    e = drawdown.equity_table.c
    rows = conn.execute(
        sa.select(e.tenant_id, e.scope_id, e.account_id).where(e.scope == scopes.DEPLOYMENT)
    ).all()
    limits: dict[tuple[str, str], Decimal | None] = {}
    out: list[Sample] = []
    for t, d, account in rows:
        key = (str(t), str(account))
        if key not in limits:
            limits[key] = drawdown.rule_for(conn, *key).threshold(scopes.DEPLOYMENT)
        limit = limits[key]
        if limit is not None:
            out.append(((str(t), str(d)), float(limit)))
    return out


def register(db: Database) -> None:
    metrics.register_gauge_callback(
        "gate4_risk_kill_switch_engaged",
        "1 for each engaged kill switch (latched until released).",
        ["tenant", "scope", "scope_id"],
        lambda: db.read_sync(engaged_switches),
    )
    metrics.register_gauge_callback(
        "gate4_risk_drawdown_pct",
        "The deployment's drawdown from its peak equity, in percent.",
        ["tenant", "deployment"],
        lambda: db.read_sync(deployment_drawdowns),
    )
    metrics.register_gauge_callback(
        "gate4_risk_drawdown_limit_pct",
        "The policy's maxDrawdownPct for the deployment.",
        ["tenant", "deployment"],
        lambda: db.read_sync(deployment_drawdown_limits),
    )
