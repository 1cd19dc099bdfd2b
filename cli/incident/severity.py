"""Severity: the runbook's severity table, and the rules that suggest a level from evidence.

`LEVELS` is the runbook's table (trigger and SLA target) plus the decision checkpoint each
SLA implies. `RULES` are named after the table's triggers; the first rule that matches,
SEV-1's before SEV-2's, gives the suggestion and its reason. Nothing matching is SEV-3. The
on-call engineer can override the suggestion (`--severity`); the handoff then shows both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Level:
    name: str
    trigger: str
    sla: str
    #: Time from the incident's start by which the SLA target is due.
    due: timedelta


LEVELS = {
    "SEV-1": Level(
        "SEV-1",
        "Side effects blocked across tenants or wrong-side execution risk",
        "Immediate containment, 30-minute review handoff",
        timedelta(minutes=30),
    ),
    "SEV-2": Level(
        "SEV-2",
        "Single-tenant contract failures, degraded suggestions, repeated kill-switch false "
        "positives",
        "2-hour mitigation",
        timedelta(hours=2),
    ),
    "SEV-3": Level(
        "SEV-3",
        "Isolated payload/client defects with known workaround",
        "Next planned release",
        timedelta(days=1),
    ),
}
#: When a level's SLA target is already past, the next checkpoint is this soon.
OVERDUE_CHECKPOINT = timedelta(minutes=30)


@dataclass
class Facts:
    """What the severity rules look at, computed once from the evidence."""

    gateway_reachable: bool = True
    #: Services /readyz reports as not SERVING.
    not_serving: list[str] = field(default_factory=list)
    #: Engaged switches (in the incident's scopes) with the validity of their evidence.
    engaged: list[dict[str, Any]] = field(default_factory=list)
    invalid_switches: list[str] = field(default_factory=list)
    enforcement_failed: list[str] = field(default_factory=list)
    deployments_failed: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    contract_failed: bool = False
    #: requestId -> (status, code) of the incident's requests at the gateway.
    responses: dict[str, tuple[int, str]] = field(default_factory=dict)
    rising_rejections: bool = False
    conversation_leaf: str = ""
    chain_valid: bool | None = True


Rule = Callable[[Facts], str | None]


def side_effects_blocked_across_tenants(facts: Facts) -> str | None:
    if not facts.gateway_reachable:
        return "the gateway does not answer: every tenant's commands are refused"
    down = [s for s in facts.not_serving if s in ("risk", "execution")]
    if down:
        return (
            f"{', '.join(down)} not SERVING (GET /readyz): side effects fail closed for every "
            "tenant"
        )
    return None


def wrong_side_execution_risk(facts: Facts) -> str | None:
    if facts.enforcement_failed:
        return (
            "kill-switch enforcement failed (open orders or positions may survive the trip): "
            + "; ".join(facts.enforcement_failed[:3])
        )
    if facts.deployments_failed:
        return (
            "deployment failed with its flatten incomplete (exposure left in place): "
            + ", ".join(facts.deployments_failed[:3])
        )
    return None


def repeated_kill_switch_false_positives(facts: Facts) -> str | None:
    if facts.invalid_switches:
        return "kill switch engaged without valid breach evidence: " + "; ".join(
            facts.invalid_switches[:3]
        )
    return None


def single_tenant_contract_failures(facts: Facts) -> str | None:
    if facts.contract_failed:
        return "the lane's contract tests fail"
    failed = [f"{rid} {s} {c}" for rid, (s, c) in facts.responses.items() if s >= 500]
    if failed:
        return "the tenant's requests fail on the platform side: " + ", ".join(failed[:3])
    if facts.chain_valid is False:
        return "the tenant's audit chain does not verify"
    return None


def single_tenant_side_effects_blocked(facts: Facts) -> str | None:
    tenant = [s for s in facts.engaged if s.get("scope") == "tenant"]
    if tenant:
        return (
            f"the tenant kill switch holds tenant {tenant[0].get('scopeId')} "
            f"({tenant[0].get('trigger')}): the tenant's side effects are blocked"
        )
    if facts.rising_rejections:
        return "pre-trade rejections are rising for the tenant"
    return None


def degraded_suggestions(facts: Facts) -> str | None:
    if facts.conversation_leaf == "G":
        return "conversation memory/notification semantics are broken (Runbook A, leaf G)"
    if facts.degraded:
        return "deployments degraded (retry budget spent): " + ", ".join(facts.degraded[:3])
    return None


def isolated_payload_client_defect(facts: Facts) -> str | None:
    refused = [f"{rid} {s} {c}" for rid, (s, c) in facts.responses.items() if 400 <= s < 500]
    if refused:
        return "isolated client-side refusals with a known workaround: " + ", ".join(refused[:3])
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("SEV-1", side_effects_blocked_across_tenants),
    ("SEV-1", wrong_side_execution_risk),
    ("SEV-2", repeated_kill_switch_false_positives),
    ("SEV-2", single_tenant_contract_failures),
    ("SEV-2", single_tenant_side_effects_blocked),
    ("SEV-2", degraded_suggestions),
    ("SEV-3", isolated_payload_client_defect),
)


@dataclass
class Severity:
    suggested: str
    rule: str
    reason: str
    chosen: str

    @property
    def overridden(self) -> bool:
        return self.chosen != self.suggested

    @property
    def level(self) -> Level:
        return LEVELS[self.chosen]

    def line(self) -> str:
        text = f"{self.chosen} (SLA: {self.level.sla})"
        if self.overridden:
            return text + f"; set by on-call, suggested {self.suggested}: {self.reason}"
        return text + f"; suggested from the evidence: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.chosen,
            "suggested": self.suggested,
            "rule": self.rule,
            "reason": self.reason,
            "overridden": self.overridden,
            "trigger": self.level.trigger,
            "sla": self.level.sla,
        }


def suggest(facts: Facts, override: str | None = None) -> Severity:
    for level, rule in RULES:
        reason = rule(facts)
        if reason:
            return Severity(level, rule.__name__, reason, override or level)
    return Severity(
        "SEV-3",
        "no_trigger_matched",
        "no SEV-1 or SEV-2 trigger in the evidence",
        override or "SEV-3",
    )


def next_checkpoint(severity: Severity, start: datetime, now: datetime) -> tuple[datetime, str]:
    """The next decision checkpoint: the SLA target of the level, counted from the start;
    once it has passed, half an hour from now."""
    level = severity.level
    due = start + level.due
    if due > now:
        return _ceil_minute(due), f"{level.name} target: {level.sla}"
    return _ceil_minute(now + OVERDUE_CHECKPOINT), f"{level.name} target ({level.sla}) passed"


def _ceil_minute(moment: datetime) -> datetime:
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment
