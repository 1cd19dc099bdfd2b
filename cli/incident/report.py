"""What the handoff says, computed from the collected evidence: facts for the severity rules,
signals for the escalation matrix, the guardrail confirmations, the impact summary, the
verification commands executed with their results, and the remaining risks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from cli.incident import guardrails, severity
from cli.incident.escalation import Escalation
from cli.incident.evidence import Collected
from cli.incident.platform import Fetched, rfc3339
from cli.incident.reads import SERVING
from cli.incident.risk_checks import Trend
from cli.incident.trees import TREES
from services.runtime import outcomes

STATUSES = ("triage", "contained", "recovering", "resolved")
#: Side-effecting methods: their requests must leave audit records once they reach a service.
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Report:
    incident_id: str
    status: str
    collected: Collected
    severity: severity.Severity
    guardrails: list[guardrails.Confirmation]
    escalation: Escalation
    checkpoint: datetime
    checkpoint_reason: str
    impact: list[str] = field(default_factory=list)
    verification: list[tuple[str, str]] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    #: What caused the incident and what prevents it next time (required once resolved).
    root_cause: str = ""
    prevention: str = ""


def _events(fetched: Fetched | None) -> list[dict[str, Any]] | None:
    return fetched.data if fetched is not None and fetched.ok else None


def responses(c: Collected) -> dict[str, tuple[int, str, str]]:
    """requestId -> (HTTP status, code, route) at the gateway, for the given requestIds."""
    out: dict[str, tuple[int, str, str]] = {}
    for request_id in c.given["requestIds"]:
        trace = c.traces.get(request_id)
        span = trace.gateway_span() if trace else None
        if span is not None and span.http_status is not None:
            out[request_id] = (span.http_status, span.error_code, span.name)
    return out


def facts(c: Collected) -> severity.Facts:
    ready = c.readyz
    services = ready.data.get("services", {}) if ready.ok else {}
    invalid = [
        f"{check.label}: {'; '.join(check.problems)}"
        for check in c.switch_checks
        if check.valid is False and check.switch in c.engaged
    ]
    anomalies = c.anomalies.data if c.anomalies.ok else []
    failed_enforcement = [
        f"{s.get('scope')} {s.get('scopeId')}: {s.get('enforcementDetail')}"
        for s in c.engaged
        if s.get("enforcement") == "failed"
    ] + [
        f"{e.get('type')} {e.get('outcome')}: {e.get('reason')}"
        for e in anomalies
        if e.get("outcome") in ("ENFORCEMENT_FAILED", "ENFORCED_WITH_PROBLEMS")
    ]
    trend = c.trend
    return severity.Facts(
        gateway_reachable=ready.status is not None or ready.ok,
        not_serving=sorted(k for k, v in services.items() if v != SERVING),
        engaged=c.engaged,
        invalid_switches=invalid,
        enforcement_failed=failed_enforcement,
        deployments_failed=[
            str(e.get("deploymentId")) for e in anomalies if e.get("type") == "deployment.failed"
        ],
        degraded=[
            str(e.get("deploymentId")) for e in anomalies if e.get("type") == "deployment.degraded"
        ],
        contract_failed=c.contracts is not None and c.contracts.status == "failed",
        responses={rid: (s, code) for rid, (s, code, _) in responses(c).items()},
        rising_rejections=isinstance(trend, Trend) and trend.increasing and len(trend.current) >= 3,
        conversation_leaf=c.triage.leaf.id
        if c.triage.tree.name == "conversation" and c.triage.leaf
        else "",
        chain_valid=bool(c.chain.data.get("valid")) if c.chain.ok else None,
    )


def audit_gaps(c: Collected) -> list[str]:
    gaps: list[str] = []
    if not c.chain.ok:
        gaps.append(f"the audit chain could not be verified ({c.chain.result()})")
    elif not c.chain.data.get("valid"):
        gaps.append(
            f"the audit chain is broken at sequence {c.chain.data.get('firstBadSequence')}: "
            f"{c.chain.data.get('problem')}"
        )
    gaps += [f"{q.command}: {q.result()}" for q in c.queries if not q.ok]
    recorded = {e.get("requestId") for e in c.events}
    unread = {q.command.rsplit(" ", 1)[-1] for q in c.queries if not q.ok}
    for request_id in c.given["requestIds"]:
        if request_id in unread:
            continue
        trace = c.traces.get(request_id)
        spans = trace.spans() if trace else []
        if request_id in recorded:
            continue
        if not spans:
            gaps.append(f"{request_id}: no audit event and no span")
            continue
        gateway = trace.gateway_span() if trace else None
        reached = any(s.kind == "SERVER" and s.service != "gateway" for s in spans)
        if gateway is not None and gateway.name.split(" ", 1)[0] in WRITES and reached:
            gaps.append(
                f"{request_id}: {gateway.name} reached the services but left no audit event"
            )
    return gaps


def signals(c: Collected, f: severity.Facts, gaps: list[str]) -> list[str]:
    found: list[str] = []
    if gaps:
        found.append("audit-evidence-gap")
    lane_a = c.lane.runbook == "A"
    conversation_e = (
        c.triage.tree.name == "conversation"
        and c.triage.leaf is not None
        and (c.triage.leaf.id == "E")
    )
    if (lane_a and f.contract_failed) or conversation_e:
        found.append("contract-drift")
    risk_h = c.triage.tree.name == "risk" and c.triage.leaf is not None and c.triage.leaf.id == "H"
    if f.enforcement_failed or f.deployments_failed or f.degraded or risk_h:
        found.append("runtime-anomaly")
    if f.engaged or f.invalid_switches or f.rising_rejections or "risk" in f.not_serving:
        found.append("risk-uncertainty")
    return found


def confirmations(c: Collected) -> list[guardrails.Confirmation]:
    parts = urlsplit(c.api_base)
    gateway = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    side_effects: list[dict[str, Any]] | None = []
    for key in ("sideEffects.order.accepted", "sideEffects.deployment.created"):
        events = _events(c.window.get(key))
        side_effects = None if events is None or side_effects is None else side_effects + events
    switch_events: list[dict[str, Any]] | None = []
    for key in ("switches.tripped", "switches.engaged", "switches.released"):
        events = _events(c.window.get(key))
        switch_events = None if events is None or switch_events is None else switch_events + events
    refusals: list[dict[str, Any]] | None = []
    for key in ("refusals.order.rejected", "refusals.deployment.rejected"):
        events = _events(c.window.get(key))
        refusals = None if events is None or refusals is None else refusals + events
    switches = c.switches.data.get("killSwitches", []) if c.switches.ok else []
    return [
        guardrails.platform_api_only(c.traces),
        guardrails.no_provider_direct_calls(c.traces, gateway),
        guardrails.risk_fail_closed(
            c.tenant_id,
            side_effects,
            _events(c.window.get("decisions")),
            switch_events,
            switches,
            refusals,
        ),
    ]


def impact(c: Collected, given_text: str | None) -> list[str]:
    lines = [given_text] if given_text else []
    for request_id, (status, code, route) in responses(c).items():
        lines.append(f"{request_id}: {route} answered {status}" + (f" {code}" if code else ""))
    engaged = c.engaged
    if engaged:
        first = min(engaged, key=lambda s: str(s.get("engagedAt", "")))
        scopes = ", ".join(f"{s.get('scope')} {s.get('scopeId')}" for s in engaged)
        lines.append(
            f"Kill switch engaged on {scopes} since {first.get('engagedAt')} "
            f"({first.get('trigger')}: {first.get('reason')}): new orders and deployments in "
            "these scopes are refused with 423; stop, cancel and reduce-only orders still pass."
        )
        enforcement = Counter(str(s.get("enforcement") or "n/a") for s in engaged)
        details = sorted(
            {str(s.get("enforcementDetail")) for s in engaged if s.get("enforcementDetail")}
        )
        lines.append(
            "Enforcement: "
            + ", ".join(f"{k} x{v}" for k, v in enforcement.items())
            + (f" ({'; '.join(details)})" if details else "")
        )
    refusals = Counter(
        str(e.get("outcome"))
        for e in (_events(c.window.get("decisions")) or [])
        if e.get("outcome") != outcomes.APPROVED
        and (e.get("data") or {}).get("approved") is not True
    )
    if refusals:
        lines.append(
            f"Risk refusals since {rfc3339(c.window_start)}: "
            + ", ".join(f"{k} x{v}" for k, v in refusals.most_common())
        )
    for deployment_id, fetched in c.resources["deployments"].items():
        if fetched.ok:
            d = fetched.data
            lines.append(
                f"Deployment {deployment_id} ({d.get('accountId')}): {d.get('state')}, equity "
                f"{d.get('equity')} of capital {d.get('capitalAllocation')}, drawdown "
                f"{_percent(d.get('drawdown'))}, open positions {_open_positions(d)}"
            )
    ready = c.readyz
    if not ready.ok and ready.status is None:
        lines.append(f"The gateway does not answer: {ready.result()}.")
    elif ready.ok:
        down = {k: v for k, v in ready.data.get("services", {}).items() if v != SERVING}
        if down:
            lines.append(
                "Services not SERVING: " + ", ".join(f"{k} {v}" for k, v in down.items()) + "."
            )
    if c.triage.leaf is not None:
        lines.append(f"Decision tree: {c.triage.summary} ({c.triage.branch}).")
    return lines or ["No impact found in the evidence."]


def _percent(fraction: Any) -> str:
    """The API's drawdown is a fraction of the peak (0.13); people read 13%."""
    try:
        return f"{(Decimal(str(fraction)) * 100).normalize():f}%"
    except InvalidOperation:
        return str(fraction)


def _open_positions(deployment: dict[str, Any]) -> str:
    positions = [
        f"{p.get('instrument')} {p.get('quantity')}"
        for p in deployment.get("positions") or []
        if Decimal(str(p.get("quantity") or 0)) != 0
    ]
    return ", ".join(positions) if positions else "none"


def verification(c: Collected) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    ready = c.readyz
    if ready.ok:
        services = ", ".join(f"{k} {v}" for k, v in ready.data.get("services", {}).items())
        out.append((ready.command, f"{ready.data.get('status')} ({services})"))
    else:
        out.append((ready.command, ready.result()))
    for request_id in c.given["requestIds"]:
        trace = c.traces.get(request_id)
        spans = trace.spans() if trace else []
        services_seen = sorted({s.service for s in spans})
        out.append(
            (
                f"gate4 trace {request_id}",
                f"{len(spans)} spans across {', '.join(services_seen)}" if spans else "no spans",
            )
        )
    for query in c.queries:
        out.append((query.command, f"{len(query.data)} events" if query.ok else query.result()))
    switches = c.switches
    if switches.ok:
        engaged = [
            f"{s.get('scope')} {s.get('scopeId')}"
            for s in switches.data.get("killSwitches", [])
            if s.get("engaged")
        ]
        out.append(
            (
                switches.command,
                f"{len(engaged)} engaged" + (f": {', '.join(engaged)}" if engaged else ""),
            )
        )
    else:
        out.append((switches.command, switches.result()))
    for scope, entry in c.policies.items():
        snapshot = entry["snapshot"]
        if not snapshot.ok:
            result = snapshot.result()
            if snapshot.status == 404:
                result += " (no active policy: every side effect is refused)"
            out.append((snapshot.command, result))
            continue
        data = snapshot.data
        label = f"risk-policy.v1@{data.get('version')}"
        schema = (data.get("policy") or {}).get("schema")
        digest = str(data.get("digest"))[:12]
        out.append((snapshot.command, f"{label}, schema {schema}, digest {digest}"))
        validation = entry.get("validation")
        if validation is not None and validation.ok:
            valid = validation.data.get("valid")
            same = validation.data.get("digest") == data.get("digest")
            problems = "; ".join(
                f"{p.get('path')}: {p.get('message')}" for p in validation.data.get("problems", [])
            )
            result = "valid" if valid else f"INVALID: {problems}"
            result += ", digest matches" if same else ", digest differs from the snapshot"
            out.append((f"gate4 risk policy validate ({scope} {label})", result))
        elif validation is not None:
            out.append((validation.command, validation.result()))
    chain = c.chain
    if chain.ok:
        data = chain.data
        if data.get("valid"):
            result = f"valid: {data.get('checkedEvents')} events, head {data.get('headSequence')}"
        else:
            result = (
                f"BROKEN: first bad link at sequence {data.get('firstBadSequence')}: "
                f"{data.get('problem')}"
            )
        out.append((chain.command, result))
    else:
        out.append((chain.command, chain.result()))
    tree = c.triage.tree.name
    command = f"gate4 triage {tree}" + (" --no-probes" if tree == "conversation" else "")
    out.append((command, f"{c.triage.branch}: {c.triage.summary}"))
    if c.contracts is not None:
        out.append((c.contracts.command, c.contracts.line))
    return out


def remaining_risks(
    c: Collected,
    f: severity.Facts,
    gaps: list[str],
    confirmations_: list[guardrails.Confirmation],
) -> list[str]:
    risks: list[str] = []
    for switch in f.engaged:
        risks.append(
            f"Kill switch on {switch.get('scope')} {switch.get('scopeId')} stays engaged: side "
            "effects in scope are blocked until a risk-officer releases it with a reason."
        )
    risks += [f"Breach evidence not valid: {line}" for line in f.invalid_switches]
    risks += [f"Enforcement: {line}" for line in f.enforcement_failed]
    risks += [f"Deployment failed: {d}" for d in f.deployments_failed]
    risks += [f"Deployment degraded: {d}" for d in f.degraded]
    if f.not_serving:
        risks.append(f"Not SERVING: {', '.join(f.not_serving)} (GET /readyz).")
    if not f.gateway_reachable:
        risks.append("The gateway does not answer.")
    if f.rising_rejections:
        risks.append("Pre-trade rejections are rising: policy or configuration drift.")
    for check in c.switch_checks:
        if check.valid is None and check.switch in c.engaged:
            risks.append(
                f"Breach evidence of {check.label} could not be checked: {'; '.join(check.unknown)}"
            )
    for entry in c.policies.values():
        validation = entry.get("validation")
        if validation is not None and validation.ok and not validation.data.get("valid"):
            risks.append("The active policy does not validate.")
        if entry["snapshot"].status == 404:
            risks.append("No active risk policy: every side effect is refused.")
    contracts = c.contracts
    if contracts is not None:
        if contracts.status == "failed":
            risks.append(f"Contract tests fail: {contracts.summary}.")
        elif contracts.status in ("skipped", "unavailable"):
            risks.append(f"Contract tests not executed: {contracts.reason}.")
        if contracts.missing:
            risks.append(
                "Contract tests the runbook names are missing from the repository: "
                + ", ".join(contracts.missing)
                + "."
            )
    risks += [f"Audit evidence gap: {gap}" for gap in gaps]
    for confirmation in confirmations_:
        if confirmation.value != guardrails.YES:
            risks.append(f"Guardrail {confirmation.line}.")
    if c.triage.leaf is None:
        risks.append(f"Decision tree undetermined: {c.triage.summary}.")
    return risks or ["None found in the evidence."]


def tree_for(lane_tree: str) -> str:
    return TREES[lane_tree].title
