"""handoff.md: the runbook's "On-Call Handoff Template", filled in from the report.

The template's fields come first, in the template's order and with its names, so the file
can be pasted into the incident ticket as is. The root cause and the prevention action
(required with `--status resolved`: the runbook's incident summary names both) follow them;
then the decision-tree walk, the containment actions and the list of bundle files.
"""

from __future__ import annotations

from cli.incident.platform import rfc3339
from cli.incident.report import Report

TEMPLATE_FIELDS = (
    "Incident ID",
    "Severity",
    "Affected lane",
    "Start time (UTC)",
    "Current status",
    "Correlation IDs",
    "Impact summary",
    "Guardrails confirmed",
    "Verification commands executed",
    "Remaining risks",
    "Owner team",
    "Review handoff target issue(s)",
    "Next decision checkpoint time (UTC)",
)


def _list(items: list[str], indent: str = "  ") -> list[str]:
    return [f"{indent}- {item}" for item in items]


def render(report: Report) -> str:
    c = report.collected
    corr = c.correlation
    correlation = [f"tenant_id: {c.tenant_id}", f"user_id: {c.user_id}"]
    channels = sorted({str(e.get("channel")) for e in c.events if e.get("channel")})
    if channels:
        correlation.append(f"channel: {', '.join(channels)}")
    for label, key in (
        ("requestId", "requestIds"),
        ("deploymentId", "deploymentIds"),
        ("orderId", "orderIds"),
        ("sessionId", "sessionIds"),
        ("accountId", "accountIds"),
        ("traceId", "traceIds"),
    ):
        values = corr.get(key, [])
        given = c.given.get(key, [])
        if not values:
            continue
        shown = given + [v for v in values if v not in given]
        more = f" (+{len(shown) - 12} more in evidence.json)" if len(shown) > 12 else ""
        correlation.append(f"{label}: {', '.join(shown[:12])}{more}")
    owner = report.escalation.owner
    lines = [
        "# Gate4 Incident Handoff",
        "",
        f"- Incident ID: {report.incident_id}",
        f"- Severity: {report.severity.line()}",
        f"- Affected lane: {c.lane.name}",
        f"- Start time (UTC): {rfc3339(c.start)}",
        f"- Current status: {report.status}",
        "- Correlation IDs:",
        *_list(correlation),
        "- Impact summary:",
        *_list(report.impact),
        "- Guardrails confirmed:",
        *_list([g.line for g in report.guardrails]),
        "- Verification commands executed:",
        *_list([f"`{command}`: {result}" for command, result in report.verification]),
        "- Remaining risks:",
        *_list(report.risks),
        f"- Owner team: {owner.primary_team} (secondary: {owner.secondary_team}; "
        f"condition: {owner.condition})",
        f"- Review handoff target issue(s): {', '.join(report.escalation.targets)}",
        f"- Next decision checkpoint time (UTC): {rfc3339(report.checkpoint)} "
        f"({report.checkpoint_reason})",
    ]
    for name, text in (("Root cause", report.root_cause), ("Prevention action", report.prevention)):
        if text:
            first, *rest = text.splitlines()
            lines += [f"- {name}: {first}", *(f"  {line}" for line in rest)]
    lines.append("")
    also = report.escalation.also
    if also:
        lines += [
            "Also escalated (signals in the evidence: "
            + ", ".join(report.escalation.signals)
            + "):",
            *_list(
                [
                    f"{row.condition}: {row.primary_team} (secondary: {row.secondary_team}); "
                    f"{', '.join(row.escalate_to)}"
                    for row in also
                ],
                indent="",
            ),
            "",
        ]
    triage = c.triage
    lines += [f"## Decision tree: {triage.tree.title}", "", f"Branch: {triage.branch}", ""]
    for step in triage.steps:
        answer = step.as_json()["answer"]
        lines.append(f"- {step.decision.id} {step.decision.question} **{answer}**")
        lines += [f"  - {e.result}: {e.check}: {e.detail}" for e in step.answer.evidence]
    if triage.leaf is not None:
        lines.append(f"- {triage.leaf.id} {triage.leaf.action}")
    lines += ["", "Containment (runbook):", *_list(list(triage.containment), indent=""), ""]
    lines += [
        "## Evidence",
        "",
        "- `evidence.json`: audit events, trace spans, policy snapshot and its validation, "
        "kill-switch state, contract-test output, the decision-tree walk (this folder)",
        "- `repro.sh`: the reproduction commands; secrets are variable names "
        "(`source var/dev-credentials.env` first)",
        f"- escalation matrix: {report.escalation.source}",
        f"- captured at {rfc3339(c.now)} by {c.user_id} through {c.api_base}",
        "",
    ]
    return "\n".join(lines)
