"""Drawdown tracking from equity reports, and the daily loss that pre-trade checks read.

Execution reports each deployment's equity (capital allocation + realised + unrealised
P&L) after every mark or fill. Risk keeps, per scope, the latest equity, its peak and how
many consecutive reports breached the policy's maxDrawdownPct; the switch trips when that
count reaches `confirmations`, so one bad tick does not trip it.

- deployment: its own equity. Peak = max(previous peak + capital inflow, equity); the
  first report's inflow is the whole capital, so a first report below capital already
  counts as drawdown.
- account / tenant: the sum of the latest equity of every deployment ever reported in the
  scope (a stopped deployment keeps its last equity: its capital is still the account's).
  Peak = max(previous peak + capital inflow, summed equity): a new deployment's capital
  raises the peak and the equity together, so adding capital is never mistaken for a
  gain, and a loss elsewhere is not hidden by it.

Capital = equity - realised - unrealised of the report, so inflow needs no extra field.
Everything depends only on the reports and their `at`, so replaying the same reports
gives the same transitions; a report older than the deployment's last one is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gate4.risk.v1 import risk_pb2
from services.risk import killswitch, locks, versions
from services.risk.checks import pct
from services.risk.policy import Policy
from services.runtime import outbox, outcomes, scopes
from services.runtime.decimals import format_decimal
from services.runtime.outbox import Outbox
from services.runtime.timeutil import as_utc, to_timestamp

if TYPE_CHECKING:
    from services.risk.books import Books

ZERO = Decimal(0)
HUNDRED = Decimal(100)

equity_table = sa.table(
    "risk_equity",
    sa.column("tenant_id", sa.String),
    sa.column("scope", sa.String),
    sa.column("scope_id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("capital", sa.String),
    sa.column("equity", sa.String),
    sa.column("peak_equity", sa.String),
    sa.column("breaches", sa.Integer),
    sa.column("reported_at", sa.DateTime),
    sa.column("day", sa.String),
    sa.column("day_start_equity", sa.String),
)


@dataclass(frozen=True)
class Track:
    """One scope's equity curve, as far as drawdown needs it."""

    equity: Decimal
    peak: Decimal
    #: Consecutive reports whose drawdown exceeded the threshold.
    breaches: int

    @property
    def drawdown_pct(self) -> Decimal:
        if self.peak <= 0:
            return ZERO
        return max(ZERO, (self.peak - self.equity) / self.peak * HUNDRED)


def advance(
    previous: Track | None, equity: Decimal, inflow: Decimal, threshold: Decimal | None
) -> tuple[Track, bool]:
    """The next state after one report, and whether the report breached the threshold."""
    peak = max((previous.peak if previous else ZERO) + inflow, equity)
    track = Track(equity, peak, 0)
    breached = threshold is not None and track.drawdown_pct > threshold
    count = (previous.breaches if previous else 0) + 1 if breached else 0
    return Track(equity, peak, count), breached


@dataclass(frozen=True)
class EquityReport:
    account_id: str
    deployment_id: str
    equity: Decimal
    capital: Decimal
    at: datetime


@dataclass
class Result:
    applied: bool
    states: list[risk_pb2.DrawdownState]
    tripped: list[risk_pb2.KillSwitch]


@dataclass(frozen=True)
class _Row:
    account_id: str
    capital: Decimal
    track: Track
    reported_at: datetime | None
    day: str
    day_start: Decimal


def _where(tenant_id: str, scope: str, scope_id: str) -> tuple[Any, ...]:
    return (
        equity_table.c.tenant_id == tenant_id,
        equity_table.c.scope == scope,
        equity_table.c.scope_id == scope_id,
    )


def _load(conn: Connection, tenant_id: str, scope: str, scope_id: str) -> _Row | None:
    row = conn.execute(sa.select(equity_table).where(*_where(tenant_id, scope, scope_id))).first()
    if row is None:
        return None
    m = row._mapping
    return _Row(
        account_id=str(m["account_id"]),
        capital=Decimal(str(m["capital"])),
        track=Track(Decimal(str(m["equity"])), Decimal(str(m["peak_equity"])), int(m["breaches"])),
        reported_at=as_utc(m["reported_at"]) if m["reported_at"] is not None else None,
        day=str(m["day"]),
        day_start=Decimal(str(m["day_start_equity"])),
    )


def _save(
    conn: Connection, tenant_id: str, scope: str, scope_id: str, exists: bool, **values: Any
) -> None:
    values = {k: format_decimal(v) if isinstance(v, Decimal) else v for k, v in values.items()}
    if exists:
        conn.execute(
            sa.update(equity_table).where(*_where(tenant_id, scope, scope_id)).values(**values)
        )
    else:
        conn.execute(
            sa.insert(equity_table).values(
                tenant_id=tenant_id, scope=scope, scope_id=scope_id, **values
            )
        )


def _booked(
    conn: Connection,
    books: Books,
    tenant_id: str,
    report: EquityReport,
    before: _Row | None,
    today: DayEquity,
) -> None:
    """The deployment's equity day, in its account's book (and out of the account it
    reported under before, if another)."""
    if before is not None and before.account_id not in ("", report.account_id):
        books.changed(conn, tenant_id, before.account_id)
    books.changed(
        conn, tenant_id, report.account_id, lambda b: b.reported(report.deployment_id, today)
    )


def _sum(conn: Connection, tenant_id: str, account_id: str | None) -> Decimal:
    query = sa.select(equity_table.c.equity).where(
        equity_table.c.tenant_id == tenant_id, equity_table.c.scope == scopes.DEPLOYMENT
    )
    if account_id is not None:
        query = query.where(equity_table.c.account_id == account_id)
    return sum((Decimal(str(v)) for (v,) in conn.execute(query).all()), ZERO)


@dataclass(frozen=True)
class Rule:
    """The policy that governs a scope's drawdown, when a valid one does."""

    label: str
    policy: Policy | None

    def threshold(self, scope: str) -> Decimal | None:
        if self.policy is None or scope not in self.policy.kill_switch.scopes:
            return None
        return self.policy.kill_switch.max_drawdown_pct

    @property
    def confirmations(self) -> int:
        return self.policy.kill_switch.confirmations if self.policy else 0

    @property
    def flatten(self) -> bool:
        return self.policy.kill_switch.flatten_on_trip if self.policy else False


def _rule(record: versions.PolicyRecord | None) -> Rule:
    if record is None:
        return Rule("", None)
    parsed = record.parsed()
    return Rule(record.label, parsed if isinstance(parsed, Policy) else None)


def rule_for(conn: Connection, tenant_id: str, account_id: str) -> Rule:
    """The drawdown rule of the account's active policy (the tenant-wide one for "")."""
    return _rule(versions.active_policy(conn, tenant_id, account_id))


def record(
    conn: Connection, box: Outbox, books: Books, tenant_id: str, report: EquityReport
) -> Result:
    """Applies one equity report to the deployment, its account and the tenant; trips
    the switch of each scope whose breach is confirmed. Runs inside a write op; the
    account's book (its daily loss) changes with it."""
    locks.hold(conn, locks.tenant_key(tenant_id))
    deployment = _load(conn, tenant_id, scopes.DEPLOYMENT, report.deployment_id)
    if deployment is not None and deployment.reported_at and report.at < deployment.reported_at:
        return Result(applied=False, states=[], tripped=[])

    inflow = report.capital - (deployment.capital if deployment else ZERO)
    day = report.at.date().isoformat()
    if deployment is None:
        day_start = report.capital
    elif deployment.day != day:
        # The last equity before this day began is where today's loss is counted from.
        day_start = deployment.track.equity + inflow
    else:
        day_start = deployment.day_start + inflow

    for_account, for_tenant = versions.active_policies(conn, tenant_id, report.account_id)
    account_rule, tenant_rule = _rule(for_account), _rule(for_tenant)
    tracked = (
        (scopes.DEPLOYMENT, report.deployment_id, account_rule),
        (scopes.ACCOUNT, report.account_id, account_rule),
        (scopes.TENANT, tenant_id, tenant_rule),
    )
    switch_states = {
        (s.scope, s.scope_id): s
        for s in killswitch.states_of(conn, tenant_id, [(s, i) for s, i, _ in tracked])
    }
    result = Result(applied=True, states=[], tripped=[])
    # The deployment comes first: the account's and tenant's sums include its new equity.
    for scope, scope_id, rule in tracked:
        stored = (
            deployment if scope == scopes.DEPLOYMENT else _load(conn, tenant_id, scope, scope_id)
        )
        previous = stored.track if stored else None
        if scope == scopes.DEPLOYMENT:
            equity = report.equity
        else:
            equity = _sum(conn, tenant_id, report.account_id if scope == scopes.ACCOUNT else None)
        threshold = rule.threshold(scope)
        track, breached = advance(previous, equity, inflow, threshold)
        values: dict[str, Any] = {
            "equity": track.equity,
            "peak_equity": track.peak,
            "breaches": track.breaches,
            "reported_at": report.at,
        }
        if scope == scopes.DEPLOYMENT:
            values.update(
                account_id=report.account_id,
                capital=report.capital,
                day=day,
                day_start_equity=day_start,
            )
        elif stored is None:
            values.update(account_id="", capital=ZERO, day="", day_start_equity=ZERO)
        _save(conn, tenant_id, scope, scope_id, stored is not None, **values)
        if scope == scopes.DEPLOYMENT:
            _booked(
                conn, books, tenant_id, report, deployment, DayEquity(day, day_start, track.equity)
            )
        state = switch_states.get((scope, scope_id)) or killswitch.get(
            conn, tenant_id, scope, scope_id
        )
        if threshold is not None and not state.engaged:
            if breached and track.breaches >= rule.confirmations:
                state = _trip(
                    conn, box, tenant_id, scope, scope_id, rule, track, threshold, report.at
                )
                result.tripped.append(state)
            elif breached:
                _audit(conn, box, scope, scope_id, rule, track, threshold, outcomes.DRAWDOWN_BREACH)
            elif previous is not None and previous.breaches > 0:
                _audit(
                    conn, box, scope, scope_id, rule, track, threshold, outcomes.DRAWDOWN_RECOVERED
                )
        result.states.append(
            risk_pb2.DrawdownState(
                scope=scope,
                scope_id=scope_id,
                equity=format_decimal(track.equity),
                peak_equity=format_decimal(track.peak),
                drawdown=pct(track.drawdown_pct),
                threshold=format_decimal(threshold) if threshold is not None else "",
                confirmations=track.breaches,
                required_confirmations=rule.confirmations if threshold is not None else 0,
                engaged=state.engaged,
                policy_version=rule.label,
            )
        )
    return result


def _evidence(
    track: Track, threshold: Decimal | None, label: str, at: datetime
) -> risk_pb2.BreachEvidence:
    evidence = risk_pb2.BreachEvidence(
        peak_equity=format_decimal(track.peak),
        equity=format_decimal(track.equity),
        drawdown=pct(track.drawdown_pct),
        threshold=format_decimal(threshold) if threshold is not None else "",
        policy_version=label,
        confirmations=track.breaches,
    )
    ts = to_timestamp(at)
    if ts is not None:
        evidence.at.CopyFrom(ts)
    return evidence


def _trip(
    conn: Connection,
    box: Outbox,
    tenant_id: str,
    scope: str,
    scope_id: str,
    rule: Rule,
    track: Track,
    threshold: Decimal,
    at: datetime,
) -> risk_pb2.KillSwitch:
    reason = (
        f"drawdown {pct(track.drawdown_pct)}% from peak {format_decimal(track.peak)} (equity "
        f"{format_decimal(track.equity)}) exceeded maxDrawdownPct {format_decimal(threshold)} "
        f"on {track.breaches} "
        "consecutive equity reports"
    )
    state, _ = killswitch.engage(
        conn,
        box,
        tenant_id,
        scope,
        scope_id,
        trigger=killswitch.DRAWDOWN,
        reason=reason,
        by="risk",
        evidence=_evidence(track, threshold, rule.label, at),
        flatten=rule.flatten,
        at=at,
    )
    return state


def _audit(
    conn: Connection,
    box: Outbox,
    scope: str,
    scope_id: str,
    rule: Rule,
    track: Track,
    threshold: Decimal,
    outcome: str,
) -> None:
    if outcome == outcomes.DRAWDOWN_BREACH:
        reason = (
            f"drawdown {pct(track.drawdown_pct)}% above maxDrawdownPct "
            f"{format_decimal(threshold)}: "
            f"confirmation {track.breaches} of {rule.confirmations}"
        )
    else:
        reason = (
            f"drawdown {pct(track.drawdown_pct)}% back within maxDrawdownPct "
            f"{format_decimal(threshold)}"
        )
    ids = {scopes.DEPLOYMENT: {"deployment_id": scope_id}, scopes.ACCOUNT: {"account_id": scope_id}}
    box.add(
        conn,
        outbox.event(
            "risk.drawdown",
            source="risk",
            outcome=outcome,
            reason=reason,
            policy_version=rule.label,
            **ids.get(scope, {}),
            data={
                "scope": scope,
                "scopeId": scope_id,
                "equity": format_decimal(track.equity),
                "peakEquity": format_decimal(track.peak),
                "drawdown": pct(track.drawdown_pct),
                "threshold": format_decimal(threshold),
                "confirmations": track.breaches,
                "requiredConfirmations": rule.confirmations,
            },
        ),
    )


# -- reads and resets -----------------------------------------------------------------------


def evidence_now(
    conn: Connection, tenant_id: str, scope: str, scope_id: str, rule: Rule, now: datetime
) -> risk_pb2.BreachEvidence:
    """The scope's drawdown as it stands at `now`, for a manual engagement's record."""
    threshold = rule.threshold(scope)
    stored = _load(conn, tenant_id, scope, scope_id)
    if stored is None:
        evidence = risk_pb2.BreachEvidence(
            policy_version=rule.label,
            threshold=format_decimal(threshold) if threshold is not None else "",
        )
        ts = to_timestamp(now)
        if ts is not None:
            evidence.at.CopyFrom(ts)
        return evidence
    return _evidence(stored.track, threshold, rule.label, now)


def rebase(conn: Connection, tenant_id: str, scope: str, scope_id: str) -> None:
    """On release: the peak restarts at the current equity and the confirmation count at
    zero, so the switch does not re-trip on the drawdown it was just released from."""
    conn.execute(
        sa.update(equity_table)
        .where(*_where(tenant_id, scope, scope_id))
        .values(peak_equity=equity_table.c.equity, breaches=0)
    )


@dataclass(frozen=True)
class DayEquity:
    """A deployment's equity day: where today's loss is counted from, and where it is."""

    day: str
    start: Decimal
    equity: Decimal


def deployment_days(conn: Connection, tenant_id: str, account_id: str) -> dict[str, DayEquity]:
    """The equity day of each deployment that reported under the account."""
    rows = conn.execute(
        sa.select(
            equity_table.c.scope_id,
            equity_table.c.day,
            equity_table.c.day_start_equity,
            equity_table.c.equity,
        ).where(
            equity_table.c.tenant_id == tenant_id,
            equity_table.c.scope == scopes.DEPLOYMENT,
            equity_table.c.account_id == account_id,
        )
    ).all()
    return {
        str(dep): DayEquity(str(day), Decimal(str(start)), Decimal(str(now)))
        for dep, day, start, now in rows
    }


def loss_of_day(days: Iterable[DayEquity], day: str) -> Decimal:
    """What the account has lost since the UTC day began: its deployments' day-start
    equity minus their latest equity, netted; deployments not reported today lost nothing."""
    net = sum((d.start - d.equity for d in days if d.day == day), ZERO)
    return max(ZERO, net)


def account_of(conn: Connection, tenant_id: str, deployment_id: str) -> str:
    """The account a deployment reported equity under; "" when it never reported."""
    value = conn.execute(
        sa.select(equity_table.c.account_id).where(
            *_where(tenant_id, scopes.DEPLOYMENT, deployment_id)
        )
    ).scalar()
    return str(value) if value is not None else ""
