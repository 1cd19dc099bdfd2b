"""The handoff's three guardrail confirmations, each computed from evidence, never assumed.

- Platform API only: every trace of the incident's requests enters the platform at the
  gateway, on a route of the Platform API (gate4_client.ROUTES); no platform service shows an
  inbound (SERVER) span that did not come through the gateway.
- No provider-direct client calls: no span of a client process (any service that is not one
  of the platform's five) calls anything but the gateway; the platform's own outbound calls
  are gRPC between its services (providers are reached by services, behind adapters).
- Risk fail-closed preserved: in the audit trail of the incident window, every executed side
  effect (order accepted, deployment created) carries an APPROVED risk decision (or is a
  reduce-only flatten, which the design lets through), nothing new executed in a scope while
  its kill switch held it, and refusals for RISK_UNAVAILABLE / undecided executed nothing.

Each answer is `yes`, `no` (with the offending evidence) or `unconfirmed` when the evidence to
decide is missing (no spans exported, audit trail unreadable): never `yes` by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cli.incident.platform import (
    PLATFORM_PROCESSES,
    RequestTrace,
    parse_time,
    platform_operation,
)
from cli.trace import Span
from services.runtime import outcomes

YES = "yes"
NO = "no"
UNCONFIRMED = "unconfirmed"

SIDE_EFFECTS = ("order.accepted", "deployment.created")
#: Outcomes recorded when risk could not decide (the platform refuses, or for a flatten,
#: proceeds by design: docs/portal/operations/gate4-orchestrator-controls.md).
UNDECIDED = frozenset({outcomes.RISK_UNAVAILABLE, outcomes.RISK_UNDECIDED})


@dataclass
class Confirmation:
    name: str
    value: str
    reason: str
    details: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{self.name}: {self.value} ({self.reason})"

    def as_json(self) -> dict[str, Any]:
        return {
            "guardrail": self.name,
            "value": self.value,
            "reason": self.reason,
            "details": self.details,
        }


def _walk(span: Span) -> Iterable[Span]:
    yield span
    for child in span.children:
        yield from _walk(child)


def platform_api_only(traces: dict[str, RequestTrace]) -> Confirmation:
    name = "Platform API only"
    traced = {rid: t for rid, t in traces.items() if t.roots}
    untraced = sorted(set(traces) - set(traced))
    violations: list[str] = []
    incomplete: list[str] = []
    routes: set[str] = set()
    for request_id, trace in traced.items():
        for root in trace.roots:
            for span in _walk(root):
                inbound = span.kind == "SERVER" and span.service in PLATFORM_PROCESSES
                if not inbound:
                    continue
                if span.service == "gateway":
                    operation = platform_operation(span.name)
                    if operation is None:
                        violations.append(
                            f"{request_id}: gateway served {span.name}, not a Platform API route"
                        )
                    else:
                        routes.add(operation)
                elif span is root and not span.parent_id:
                    violations.append(
                        f"{request_id}: {span.service} served {span.name} with no gateway "
                        "span above it (called directly)"
                    )
                elif span is root:
                    incomplete.append(
                        f"{request_id}: the span above {span.service} {span.name} is not in "
                        "the trace store"
                    )
    if violations:
        return Confirmation(name, NO, violations[0], violations)
    if not traced:
        return Confirmation(
            name, UNCONFIRMED, "no spans of the incident's requests in the trace store", untraced
        )
    reason = (
        f"{len(traced)} traced request(s) all enter at the gateway on Platform API operations "
        f"({', '.join(sorted(routes))}); no service was called around it"
    )
    if untraced or incomplete:
        missing = [f"no spans for {', '.join(untraced)}"] if untraced else []
        gaps = missing + incomplete
        return Confirmation(name, UNCONFIRMED, reason + "; " + "; ".join(gaps), gaps)
    return Confirmation(name, YES, reason)


def _target(span: Span) -> str:
    attrs = span.attributes
    for key in ("http.url", "url.full"):
        if attrs.get(key):
            parts = urlsplit(str(attrs[key]))
            return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    host = attrs.get("server.address") or attrs.get("net.peer.name") or attrs.get("http.host")
    port = attrs.get("server.port") or attrs.get("net.peer.port")
    return f"{host}:{port}" if host else ""


def no_provider_direct_calls(traces: dict[str, RequestTrace], gateway_address: str) -> Confirmation:
    name = "No provider-direct client calls"
    traced = {rid: t for rid, t in traces.items() if t.roots}
    if not traced:
        return Confirmation(
            name, UNCONFIRMED, "no spans of the incident's requests in the trace store"
        )
    violations: list[str] = []
    client_spans = 0
    platform_calls = 0
    for request_id, trace in traced.items():
        for span in trace.spans():
            if span.kind != "CLIENT":
                continue
            if span.service in PLATFORM_PROCESSES:
                if str(span.attributes.get("rpc.service", "")).startswith("gate4."):
                    platform_calls += 1
                continue
            client_spans += 1
            target = _target(span)
            if target != gateway_address:
                violations.append(
                    f"{request_id}: client {span.service} called {target or span.name} "
                    "directly, not the gateway"
                )
    if violations:
        return Confirmation(name, NO, violations[0], violations)
    return Confirmation(
        name,
        YES,
        f"{len(traced)} traced request(s) reach the platform through the gateway and no "
        f"client-side span calls anything else ({client_spans} client span(s)); the "
        f"platform's {platform_calls} outbound call(s) are gRPC between its own services",
    )


def _scope_hits(event: dict[str, Any], tenant_id: str) -> set[tuple[str, str]]:
    hits = {("tenant", tenant_id)}
    if event.get("accountId"):
        hits.add(("account", str(event["accountId"])))
    if event.get("deploymentId"):
        hits.add(("deployment", str(event["deploymentId"])))
    return hits


def _holds(
    events: list[dict[str, Any]], switches: list[dict[str, Any]]
) -> dict[tuple[str, str], list[tuple[datetime, datetime | None]]]:
    """When each scope's kill switch held it: from trip/engage and release events, plus the
    switches engaged now."""
    holds: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = {}
    ordered = sorted(events, key=lambda e: int(e.get("sequence") or 0))
    open_at: dict[tuple[str, str], datetime] = {}
    for event in ordered:
        data = event.get("data") or {}
        scope = (str(data.get("scope", "")), str(data.get("scopeId", "")))
        at = parse_time(str(event.get("occurredAt", "")))
        if at is None:
            continue
        if event.get("outcome") in ("KILL_SWITCH_TRIPPED", "ENGAGED") and scope not in open_at:
            open_at[scope] = at
        elif event.get("outcome") == "RELEASED" and scope in open_at:
            holds.setdefault(scope, []).append((open_at.pop(scope), at))
    for switch in switches:
        scope = (str(switch.get("scope")), str(switch.get("scopeId")))
        at = parse_time(str(switch.get("engagedAt", "")))
        if switch.get("engaged") and at is not None:
            start = min(at, open_at.pop(scope, at))
            holds.setdefault(scope, []).append((start, None))
    for scope, at in open_at.items():
        holds.setdefault(scope, []).append((at, None))
    return holds


def risk_fail_closed(
    tenant_id: str,
    side_effects: list[dict[str, Any]] | None,
    decisions: list[dict[str, Any]] | None,
    switch_events: list[dict[str, Any]] | None,
    switches: list[dict[str, Any]],
    refusals: list[dict[str, Any]] | None,
) -> Confirmation:
    """From the audit trail of the window: side effects, risk decisions, switch transitions
    and refusals (None: that part of the trail could not be read)."""
    name = "Risk fail-closed preserved"
    if side_effects is None or decisions is None or switch_events is None or refusals is None:
        return Confirmation(name, UNCONFIRMED, "the audit trail of the window could not be read")
    approved = {
        str((d.get("data") or {}).get("decisionId")): d
        for d in decisions
        if d.get("outcome") == outcomes.APPROVED and (d.get("data") or {}).get("approved") is True
    }
    holds = _holds(switch_events, switches)
    violations: list[str] = []
    flatten = 0
    for event in side_effects:
        data = event.get("data") or {}
        subject = event.get("orderId") or event.get("deploymentId")
        label = f"{event.get('type')} {subject} (requestId {event.get('requestId')})"
        reduce_only = data.get("reduceOnly") is True
        if event.get("outcome") in UNDECIDED or data.get("riskDecided") is False:
            if reduce_only and data.get("flatten"):
                flatten += 1
                continue
            violations.append(
                f"{label} executed while risk could not decide ({event.get('outcome')})"
            )
            continue
        decision = approved.get(str(data.get("decisionId")))
        if decision is None:
            violations.append(f"{label} executed without an APPROVED risk decision in the trail")
            continue
        if reduce_only:
            continue
        at = parse_time(str(event.get("occurredAt", "")))
        for scope in _scope_hits(event, tenant_id):
            for start, end in holds.get(scope, []):
                if at is not None and start <= at and (end is None or at < end):
                    violations.append(
                        f"{label} executed while the kill switch held {scope[0]} {scope[1]}"
                    )
    if violations:
        return Confirmation(name, NO, violations[0], violations)
    undecided = [r for r in refusals if r.get("outcome") in UNDECIDED]
    blocked = [r for r in refusals if r.get("outcome") == outcomes.KILL_SWITCH_ENGAGED]
    parts = [
        f"{len(side_effects)} side effect(s) in the window, each with an APPROVED risk decision"
        + (f" or a reduce-only flatten ({flatten})" if flatten else ""),
        f"{len(blocked)} command(s) refused by a kill switch",
        f"{len(undecided)} refused as RISK_UNAVAILABLE/undecided with nothing executed",
        "nothing new executed in a scope while its kill switch held it",
    ]
    return Confirmation(name, YES, "; ".join(parts))
