"""Runbook B's decisions (risk runtime and kill switch): B kill switch triggered, C breach
evidence valid, F pre-trade rejections increasing; plus the execution-side context of H."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cli.incident.platform import Fetched, parse_time, rfc3339
from cli.incident.reads import Platform
from cli.incident.trees import FAIL, INFO, PASS, UNKNOWN, Answer, Evidence
from services.runtime import outcomes
from services.runtime.decimals import parse_decimal

POLICY_LABEL = re.compile(r"^risk-policy\.v1(?:/(?P<account>[^@]+))?@(?P<version>\d+)$")
#: Outcomes of a 422 pre-trade refusal are every refusal but the kill switch's 423.
NOT_PRETRADE = frozenset({outcomes.APPROVED, outcomes.KILL_SWITCH_ENGAGED})
RUNTIME_ANOMALIES = {
    "type": ("deployment.degraded", "deployment.failed"),
    "outcome": ("VENUE_RETRY_BUDGET_EXHAUSTED", "ENFORCEMENT_FAILED", "ENFORCED_WITH_PROBLEMS"),
}


def scopes_of(p: Platform) -> set[tuple[str, str]] | None:
    """The scopes that hold --deployment (tenant, its account, itself); None: every scope."""
    if p.deployment is None:
        return None
    scopes = {("tenant", p.api.tenant_id), ("deployment", str(p.options.deployment_id))}
    if p.deployment.ok:
        scopes.add(("account", str(p.deployment.data.get("accountId", ""))))
    return scopes


def killswitch_triggered(p: Platform) -> Answer:
    """B: an engaged kill switch holds the tenant (or the scopes of --deployment)."""
    fetched = p.engaged_switches
    if not fetched.ok:
        return Answer(
            None, [Evidence("kill switches", UNKNOWN, f"{fetched.command}: {fetched.result()}")]
        )
    engaged = relevant_switches(p, fetched.data.get("killSwitches", []))
    if not engaged:
        return Answer(False, [Evidence("kill switches", PASS, "no kill switch is engaged", [])])
    # Switches a single event engaged together (a drawdown trips every scope) read as one.
    groups: dict[tuple[str, ...], list[str]] = {}
    for s in engaged:
        key = tuple(str(s.get(k)) for k in ("trigger", "engagedAt", "engagedBy", "reason"))
        groups.setdefault(key, []).append(f"{s['scope']} {s['scopeId']}")
    lines = [
        f"{', '.join(scopes)}: {key[0]} since {key[1]} by {key[2]} ({key[3]})"
        for key, scopes in groups.items()
    ]
    return Answer(True, [Evidence("kill switches", INFO, "; ".join(lines), engaged)])


def relevant_switches(p: Platform, switches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    scopes = scopes_of(p)
    return [
        s
        for s in switches
        if s.get("engaged") and (scopes is None or (s.get("scope"), s.get("scopeId")) in scopes)
    ]


@dataclass
class SwitchCheck:
    """The verdict on one engaged switch's breach evidence."""

    switch: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool | None:
        if self.problems:
            return False
        return None if self.unknown else True

    @property
    def label(self) -> str:
        return f"{self.switch.get('scope')} {self.switch.get('scopeId')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "scope": self.switch.get("scope"),
            "scopeId": self.switch.get("scopeId"),
            "trigger": self.switch.get("trigger"),
            "valid": self.valid,
            "problems": self.problems,
            "facts": self.facts,
            "unknown": self.unknown,
            "evidence": self.switch.get("evidence", {}),
        }


def check_switch(p: Platform, switch: dict[str, Any]) -> SwitchCheck:
    """Is this switch's breach evidence valid? Arithmetic, threshold, the policy version it
    names (exists, still active, valid, same threshold and confirmations), and, for a
    drawdown trip, its record in the audit trail with the confirmations before it."""
    check = SwitchCheck(switch)
    evidence = switch.get("evidence") or {}
    trigger = switch.get("trigger")
    peak, equity = (
        parse_decimal(evidence.get("peakEquity")),
        parse_decimal(evidence.get("equity")),
    )
    drawdown, threshold = (
        parse_decimal(evidence.get("drawdown")),
        parse_decimal(evidence.get("threshold")),
    )
    confirmations = int(evidence.get("confirmations") or 0)
    label = str(evidence.get("policyVersion") or "")
    if drawdown is None or threshold is None:
        check.problems.append(
            f"{trigger} engagement without drawdown evidence (drawdown "
            f"{evidence.get('drawdown') or 'none'}, "
            f"threshold {evidence.get('threshold') or 'none'})"
        )
    elif drawdown <= threshold:
        check.problems.append(
            f"{trigger} engagement by {switch.get('engagedBy')} ({switch.get('reason')}): its "
            f"evidence shows drawdown {drawdown}% within maxDrawdownPct {threshold}: no breach"
        )
    else:
        check.facts.append(f"drawdown {drawdown}% > maxDrawdownPct {threshold}")
    if trigger == "drawdown" and peak is not None and equity is not None and drawdown is not None:
        if peak <= 0:
            check.problems.append(f"peak equity {peak} is not positive")
        else:
            recomputed = ((peak - equity) / peak * 100).quantize(Decimal("0.0001"))
            if abs(recomputed - drawdown) > Decimal("0.0001"):
                check.problems.append(
                    f"evidence drawdown {drawdown}% does not follow from peak {peak} and "
                    f"equity {equity} ({recomputed}%)"
                )
            else:
                check.facts.append(
                    f"({peak} - {equity}) / {peak} x 100 = {recomputed.normalize():f}%"
                )
    if label:
        _check_policy_version(p, check, label, threshold, confirmations, trigger)
    else:
        check.problems.append("the evidence names no policy version")
    if trigger == "drawdown":
        _check_trip_record(p, check, confirmations)
    return check


def _check_policy_version(
    p: Platform,
    check: SwitchCheck,
    label: str,
    threshold: Decimal | None,
    confirmations: int,
    trigger: Any,
) -> None:
    match = POLICY_LABEL.match(label)
    if match is None:
        check.problems.append(f"policy version {label!r} is not a risk-policy.v1 version")
        return
    account = match.group("account")
    number = int(match.group("version"))
    fetched = p.policy_versions(account)
    if not fetched.ok:
        check.unknown.append(f"{fetched.command}: {fetched.result()}")
        return
    versions = fetched.data.get("versions", [])
    record = next((v for v in versions if v.get("version") == number), None)
    if record is None:
        check.problems.append(f"policy version {label} does not exist")
        return
    policy = record.get("policy") or {}
    rule = policy.get("killSwitch") or {}
    limit = parse_decimal(rule.get("maxDrawdownPct"))
    if threshold is not None and limit is not None and limit != threshold:
        check.problems.append(f"{label} sets maxDrawdownPct {limit}, the evidence used {threshold}")
    required = int(rule.get("confirmations") or 0)
    if trigger == "drawdown" and confirmations < required:
        check.problems.append(
            f"{confirmations} confirmation(s) recorded, {label} requires {required}"
        )
    elif trigger == "drawdown":
        check.facts.append(f"{confirmations} of {required} confirmations under {label}")
    if not record.get("active"):
        active = next((v for v in versions if v.get("active")), None)
        now = f"{label.split('@')[0]}@{active['version']}" if active else "none"
        check.problems.append(
            f"{label} is no longer the active policy (active: {now}): the block rests on "
            "policy input that has been replaced"
        )
    else:
        check.facts.append(f"{label} is the active policy")
    validation = p.validate(policy)
    if not validation.ok:
        check.unknown.append(f"{validation.command}: {validation.result()}")
    elif not validation.data.get("valid"):
        problems = "; ".join(
            f"{x.get('path')}: {x.get('message')}" for x in validation.data.get("problems", [])
        )
        check.problems.append(f"{label} does not validate: {problems}")
    else:
        check.facts.append(f"{label} validates (risk-policy.v1, limits coherent, enums valid)")


def _check_trip_record(p: Platform, check: SwitchCheck, confirmations: int) -> None:
    scope, scope_id = check.switch.get("scope"), check.switch.get("scopeId")
    engaged_at = parse_time(str(check.switch.get("engagedAt", "")))
    since = rfc3339(engaged_at - timedelta(days=1)) if engaged_at else ""
    filters = {"type": "killswitch.tripped", **({"since": since} if since else {})}
    trips = p.events(**filters)
    if not trips.ok:
        check.unknown.append(f"{trips.command}: {trips.result()}")
        return
    mine = [
        e
        for e in trips.data
        if (e.get("data") or {}).get("scope") == scope
        and (e.get("data") or {}).get("scopeId") == scope_id
    ]
    if not mine:
        check.problems.append(
            f"no killswitch.tripped event for {scope} {scope_id} in the audit trail"
        )
        return
    trip = mine[-1]
    check.facts.append(
        f"audit: killswitch.tripped #{trip.get('sequence')} ({trip.get('outcome')}, "
        f"requestId {trip.get('requestId')})"
    )
    if confirmations <= 1:
        return
    streak = p.events(**{"type": "risk.drawdown", **({"since": since} if since else {})})
    if not streak.ok:
        check.unknown.append(f"{streak.command}: {streak.result()}")
        return
    before = [
        e
        for e in streak.data
        if e.get("outcome") == "DRAWDOWN_BREACH"
        and (e.get("data") or {}).get("scope") == scope
        and (e.get("data") or {}).get("scopeId") == scope_id
        and int((e.get("data") or {}).get("confirmations") or 0) == confirmations - 1
        and int(e.get("sequence") or 0) < int(trip.get("sequence") or 0)
    ]
    if not before:
        check.problems.append(
            f"the audit trail lacks DRAWDOWN_BREACH confirmation {confirmations - 1} of "
            f"{confirmations} for {scope} {scope_id} before the trip"
        )
    else:
        check.facts.append(
            f"audit: DRAWDOWN_BREACH confirmation {confirmations - 1} of {confirmations} "
            f"(#{before[-1].get('sequence')}) before the trip"
        )


def breach_evidence_valid(p: Platform) -> Answer:
    """C: every engaged switch (in scope) has valid breach evidence."""
    fetched = p.engaged_switches
    switches = relevant_switches(p, fetched.data.get("killSwitches", []) if fetched.ok else [])
    checks = [check_switch(p, s) for s in switches]
    evidence = []
    for c in checks:
        if c.valid is False:
            evidence.append(Evidence(f"switch {c.label}", FAIL, "; ".join(c.problems), c.as_json()))
        elif c.valid is None:
            evidence.append(
                Evidence(f"switch {c.label}", UNKNOWN, "; ".join(c.unknown), c.as_json())
            )
        else:
            evidence.append(Evidence(f"switch {c.label}", PASS, "; ".join(c.facts), c.as_json()))
    if any(c.valid is False for c in checks):
        return Answer(False, evidence)
    if any(c.valid is None for c in checks):
        return Answer(None, evidence)
    return Answer(True, evidence)


def is_pretrade_rejection(event: dict[str, Any]) -> bool:
    return (
        event.get("type") == "risk.decision"
        and event.get("outcome") not in NOT_PRETRADE
        and (event.get("data") or {}).get("approved") is not True
    )


@dataclass
class Trend:
    window: timedelta
    current: list[dict[str, Any]]
    previous: list[dict[str, Any]]
    decisions: int

    @property
    def increasing(self) -> bool:
        return len(self.current) > len(self.previous)

    def as_json(self) -> dict[str, Any]:
        return {
            "windowMinutes": self.window.total_seconds() / 60,
            "current": len(self.current),
            "previous": len(self.previous),
            "decisions": self.decisions,
            "byOutcome": dict(Counter(str(e.get("outcome")) for e in self.current)),
            "byPolicyVersion": dict(Counter(str(e.get("policyVersion")) for e in self.current)),
            "requestIds": [e.get("requestId") for e in self.current][-10:],
        }


def rejection_trend(p: Platform) -> Fetched | Trend:
    window = p.options.window
    start = p.options.now - 2 * window
    fetched = p.events(type="risk.decision", since=rfc3339(start))
    if not fetched.ok:
        return fetched
    boundary = p.options.now - window
    rejections = [e for e in fetched.data if is_pretrade_rejection(e)]
    current = [e for e in rejections if (parse_time(e.get("occurredAt", "")) or start) >= boundary]
    previous = [e for e in rejections if e not in current]
    return Trend(window, current, previous, len(fetched.data))


def rejections_increasing(p: Platform) -> Answer:
    """F: at least --min-rejections pre-trade 422s in the last window, more than in the
    window before it."""
    trend = rejection_trend(p)
    if isinstance(trend, Fetched):
        return Answer(None, [Evidence("pre-trade rejections", UNKNOWN, trend.result())])
    minutes = int(trend.window.total_seconds() // 60)
    detail = (
        f"{len(trend.current)} pre-trade rejection(s) in the last {minutes} min vs "
        f"{len(trend.previous)} in the {minutes} min before (of {trend.decisions} decisions)"
    )
    outcomes = trend.as_json()["byOutcome"]
    if outcomes:
        detail += "; outcomes " + ", ".join(f"{k} x{v}" for k, v in outcomes.items())
    rising = len(trend.current) >= p.options.min_rejections and trend.increasing
    return Answer(rising, [Evidence("pre-trade rejections", INFO, detail, trend.as_json())])


def runtime_anomalies(p: Platform, since: datetime) -> Fetched:
    """Execution-side trouble in the audit trail since `since`: degraded or failed
    deployments, spent retry budgets, failed kill-switch enforcement."""
    found: list[dict[str, Any]] = []
    commands = []
    for key, values in RUNTIME_ANOMALIES.items():
        for value in values:
            fetched = p.events(**{key: value, "since": rfc3339(since)})
            commands.append(fetched.command)
            if not fetched.ok:
                return fetched
            found += fetched.data
    unique = {e["eventId"]: e for e in found}
    ordered = sorted(unique.values(), key=lambda e: int(e.get("sequence") or 0))
    return Fetched("; ".join(commands), True, data=ordered)
