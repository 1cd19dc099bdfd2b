"""Evidence collection for `gate4 incident capture`: everything the runbook's "Evidence
Capture" list asks for, read through the Platform API and the local trace store.

From the correlation ids given (requestIds, deployments, orders, sessions) it follows one hop:
the audit events of each id name the deployments, orders, sessions and accounts involved, whose
own events, state and traces are collected too. Then the tenant's kill switches, the policy
snapshot with its validation, the audit chain, the window's side effects and decisions (for
the fail-closed guardrail), the lane's decision tree (without probes: capture changes nothing
on the platform) and the lane's contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cli.incident import risk_checks
from cli.incident.contracts import ContractRun
from cli.incident.lanes import Lane
from cli.incident.platform import (
    Fetched,
    RequestTrace,
    parse_time,
    request_traces,
    rfc3339,
)
from cli.incident.reads import Options, Platform
from cli.incident.trees import TREES, Result
from cli.incident.triage import walk
from services.runtime import outcomes

#: Most requestIds found in the audit trail whose traces are collected too.
MAX_DISCOVERED_REQUESTS = 20
#: Most deployments, orders, sessions each whose state is read.
MAX_RESOURCES = 20
CORRELATION_FIELDS = {
    "requestId": "requestIds",
    "deploymentId": "deploymentIds",
    "orderId": "orderIds",
    "sessionId": "sessionIds",
    "accountId": "accountIds",
    "traceId": "traceIds",
}


@dataclass
class Collected:
    lane: Lane
    tenant_id: str
    user_id: str
    api_base: str
    now: datetime
    #: When the incident started (earliest of its requests and of the kill-switch engagements
    #: holding its scopes), or what --start-time said.
    start: datetime
    window_start: datetime
    given: dict[str, list[str]]
    readyz: Fetched
    events: list[dict[str, Any]]
    queries: list[Fetched]
    correlation: dict[str, list[str]]
    traces: dict[str, RequestTrace]
    resources: dict[str, dict[str, Fetched]]
    switches: Fetched
    policies: dict[str, dict[str, Fetched]]
    versions: Fetched
    chain: Fetched
    window: dict[str, Fetched]
    anomalies: Fetched
    switch_checks: list[risk_checks.SwitchCheck]
    trend: risk_checks.Trend | Fetched
    triage: Result
    contracts: ContractRun | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def engaged(self) -> list[dict[str, Any]]:
        """Engaged switches holding the incident's scopes (all of the tenant's when the
        evidence names no deployment or account)."""
        if not self.switches.ok:
            return []
        scopes = {("tenant", self.tenant_id)}
        scopes |= {("account", a) for a in self.correlation.get("accountIds", [])}
        scopes |= {("deployment", d) for d in self.correlation.get("deploymentIds", [])}
        switches = [s for s in self.switches.data.get("killSwitches", []) if s.get("engaged")]
        if len(scopes) == 1:
            return switches
        return [s for s in switches if (s.get("scope"), s.get("scopeId")) in scopes]


def _add(target: dict[str, list[str]], key: str, value: Any) -> None:
    if value and str(value) not in target.setdefault(key, []):
        target[key].append(str(value))


def collect(
    platform: Platform,
    lane: Lane,
    given: dict[str, list[str]],
    window: timedelta,
    start: datetime | None = None,
) -> Collected:
    api = platform.api
    now = platform.options.now
    queries: list[Fetched] = []
    events: dict[str, dict[str, Any]] = {}

    def gather(field_name: str, value: str) -> None:
        fetched = platform.events(**{field_name: value})
        queries.append(fetched)
        if fetched.ok:
            for event in fetched.data:
                events.setdefault(event["eventId"], event)

    for request_id in given["requestIds"]:
        gather("requestId", request_id)
    for key, field_name in (
        ("deploymentIds", "deploymentId"),
        ("orderIds", "orderId"),
        ("sessionIds", "sessionId"),
    ):
        for value in given[key]:
            gather(field_name, value)
    # One hop: the deployments, orders and sessions those events name, with their history.
    hop: dict[str, list[str]] = {}
    for event in list(events.values()):
        for field_name in ("deploymentId", "orderId", "sessionId"):
            _add(hop, field_name, event.get(field_name))
    for field_name, values in hop.items():
        plural = CORRELATION_FIELDS[field_name]
        for value in values[:MAX_RESOURCES]:
            if value not in given.get(plural, []):
                gather(field_name, value)

    ordered = sorted(events.values(), key=lambda e: int(e.get("sequence") or 0))
    correlation: dict[str, list[str]] = {k: list(v) for k, v in given.items()}
    for event in ordered:
        for field_name, plural in CORRELATION_FIELDS.items():
            _add(correlation, plural, event.get(field_name))
    for plural in CORRELATION_FIELDS.values():
        correlation.setdefault(plural, [])

    # Traces: the given requestIds (waiting for spans still being exported), then the most
    # recent others the audit trail names.
    traces = request_traces(
        given["requestIds"],
        platform.options.trace_sources,
        api.tenant_id,
        platform.options.span_wait,
    )
    others = [r for r in correlation["requestIds"] if r not in traces]
    if others:
        traces.update(
            request_traces(
                others[-MAX_DISCOVERED_REQUESTS:], platform.options.trace_sources, api.tenant_id
            )
        )
    for trace in traces.values():
        for span in trace.spans():
            _add(correlation, "traceIds", span.trace_id)

    resources: dict[str, dict[str, Fetched]] = {"deployments": {}, "orders": {}, "sessions": {}}
    for deployment_id in correlation["deploymentIds"][:MAX_RESOURCES]:
        resources["deployments"][deployment_id] = platform.fetch(
            f"gate4 deployments get {deployment_id}",
            partial(api.client.get_deployment, deployment_id),
            "execution",
        )
    for order_id in correlation["orderIds"][:MAX_RESOURCES]:
        resources["orders"][order_id] = platform.fetch(
            f"gate4 orders get {order_id}", partial(api.client.get_order, order_id), "execution"
        )
    for session_id in correlation["sessionIds"][:MAX_RESOURCES]:
        resources["sessions"][session_id] = platform.fetch(
            f"gate4 sessions get {session_id}",
            partial(api.client.get_session, session_id),
            "conversation",
        )
    for deployment in resources["deployments"].values():
        if deployment.ok:
            _add(correlation, "accountIds", deployment.data.get("accountId"))

    policies: dict[str, dict[str, Fetched]] = {}
    for account in ["", *correlation["accountIds"][:MAX_RESOURCES]]:
        option = f" --account {account}" if account else ""
        snapshot = platform.fetch(
            f"gate4 risk policy get{option}",
            partial(api.client.get_policy, account_id=account or None),
            "risk",
        )
        entry = {"snapshot": snapshot}
        if snapshot.ok:
            entry["validation"] = platform.validate(snapshot.data.get("policy") or {})
        policies[account or "tenant"] = entry
    versions = platform.policy_versions(None)
    chain = platform.fetch("gate4 audit verify", api.client.verify_audit_chain, "audit")

    switches = platform.fetch(
        "gate4 killswitch list", lambda: api.client.list_kill_switches(), "risk"
    )
    if start is None:
        start = incident_start(given, ordered, traces, switches, correlation, now)
    # The window of the fail-closed check: from a window before the start to now.
    window_start = start - window
    since = rfc3339(window_start)
    window_reads = {
        "sideEffects.order.accepted": platform.events(type="order.accepted", since=since),
        "sideEffects.deployment.created": platform.events(type="deployment.created", since=since),
        "decisions": platform.events(type="risk.decision", since=since),
        "switches.tripped": platform.events(type="killswitch.tripped", since=since),
        "switches.engaged": platform.events(type="killswitch.engaged", since=since),
        "switches.released": platform.events(type="killswitch.released", since=since),
        "refusals.order.rejected": platform.events(type="order.rejected", since=since),
        "refusals.deployment.rejected": platform.events(type="deployment.rejected", since=since),
    }
    anomalies = risk_checks.runtime_anomalies(platform, window_start)

    engaged = [
        s
        for s in (switches.data.get("killSwitches", []) if switches.ok else [])
        if s.get("engaged")
    ]
    checks = [risk_checks.check_switch(platform, s) for s in engaged]
    trend = risk_checks.rejection_trend(platform)
    triage = walk(TREES[lane.tree], platform)

    return Collected(
        lane=lane,
        tenant_id=api.tenant_id,
        user_id=api.user_id,
        api_base=api.api_base,
        now=now,
        start=start,
        window_start=window_start,
        given=given,
        readyz=platform.readyz,
        events=ordered,
        queries=queries,
        correlation=correlation,
        traces=traces,
        resources=resources,
        switches=switches,
        policies=policies,
        versions=versions,
        chain=chain,
        window=window_reads,
        anomalies=anomalies,
        switch_checks=checks,
        trend=trend,
        triage=triage,
    )


OK_OUTCOMES = frozenset(
    {
        outcomes.APPROVED,
        outcomes.ACCEPTED,
        outcomes.RUNNING,
        outcomes.STOPPED,
        outcomes.POLICY_ACTIVATED,
    }
)


def incident_start(
    given: dict[str, list[str]],
    events: list[dict[str, Any]],
    traces: dict[str, RequestTrace],
    switches: Fetched,
    correlation: dict[str, list[str]],
    now: datetime,
) -> datetime:
    """The earliest moment of the incident the evidence shows: the given requests (their
    audit events and spans), the kill-switch engagements holding the incident's scopes;
    failing those, the first refused or failed event."""
    moments: list[datetime] = []
    wanted = set(given["requestIds"])
    for event in events:
        if event.get("requestId") in wanted:
            moments.append(parse_time(event.get("occurredAt", "")) or now)
    for request_id in wanted:
        trace = traces.get(request_id)
        span = trace.gateway_span() if trace else None
        if span is not None and span.start:
            moments.append(datetime.fromtimestamp(span.start, tz=now.tzinfo))
    scopes = {("account", a) for a in correlation.get("accountIds", [])}
    scopes |= {("deployment", d) for d in correlation.get("deploymentIds", [])}
    for switch in switches.data.get("killSwitches", []) if switches.ok else []:
        tenant_wide = switch.get("scope") == "tenant"
        if switch.get("engaged") and (
            tenant_wide or (switch.get("scope"), switch.get("scopeId")) in scopes
        ):
            moments.append(parse_time(str(switch.get("engagedAt", ""))) or now)
    if not moments:
        moments = [
            parse_time(e.get("occurredAt", "")) or now
            for e in events
            if e.get("outcome") not in OK_OUTCOMES
        ][:1]
    return min(moments) if moments else now


def options_for(
    given: dict[str, list[str]],
    trace_sources: Any,
    span_wait: float,
    window: timedelta,
    now: datetime,
) -> Options:
    """The triage options of a capture: no probes (capture changes nothing on the platform)."""
    return Options(
        request_ids=list(given["requestIds"]),
        session_id=next(iter(given["sessionIds"]), None),
        deployment_id=next(iter(given["deploymentIds"]), None),
        trace_sources=list(trace_sources),
        span_wait=span_wait,
        probes=False,
        window=window,
        now=now,
    )
