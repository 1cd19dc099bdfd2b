"""The runbook's two decision trees as data, and what walking one produces.

Runbook A (conversation and OpenClaw) and Runbook B (risk runtime and kill switch) each have
a flowchart in docs/runbooks/gate4-incident-runbooks.md; `CONVERSATION` and `RISK` below are
the same trees (tests/docs checks that the runbook's arrows are `edges()` of these). Each
decision is answered by one small check (cli/incident/conversation_checks.py,
cli/incident/risk_checks.py) from evidence read through the Platform API and the local trace
store, and every answer carries its evidence (`Evidence`). A decision the platform cannot
answer stops the walk: the result is undetermined, and its containment is the runbook's
fail-closed advice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# -- the trees --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    id: str
    question: str
    yes: str
    no: str


@dataclass(frozen=True)
class Leaf:
    id: str
    #: The runbook's text for the leaf.
    action: str
    #: The runbook's containment actions that apply, made concrete for this platform.
    containment: tuple[str, ...]
    #: Commands to run next.
    next_steps: tuple[str, ...]


@dataclass(frozen=True)
class Tree:
    name: str
    title: str
    start: str
    root: str
    decisions: Mapping[str, Decision]
    leaves: Mapping[str, Leaf]


KEEP_PLATFORM_API = "Keep traffic on Platform API paths; do not introduce provider-direct fallback."
PRESERVE_FAIL_CLOSED = "Preserve fail-closed behavior; do not bypass risk gates to force execution."
KEEP_BLOCKED = "Keep side-effecting operations blocked while policy validity is uncertain."

CONVERSATION = Tree(
    name="conversation",
    title="Runbook A: Conversation and OpenClaw",
    start="Conversation/OpenClaw incident detected",
    root="B",
    decisions={
        "B": Decision("B", "Platform API contract routes healthy?", yes="D", no="C"),
        "D": Decision("D", "Contract payload/headers valid?", yes="F", no="E"),
        "F": Decision("F", "Runtime memory/notification semantics valid?", yes="H", no="G"),
    },
    leaves={
        "C": Leaf(
            "C",
            "Escalate API availability incident and contain client traffic",
            (
                "Escalate the API availability incident with the request IDs to the owner "
                "team of the escalation matrix (gate4 incident capture fills it in).",
                KEEP_PLATFORM_API,
                "If the OpenClaw skill lane is degraded, fail over to the CLI-mediated lane "
                "(gate4 ... --lane cli), still Platform API only.",
            ),
            (
                "curl -sS $PLATFORM_API_BASE/readyz",
                ".venv/bin/gate4 incident capture --lane conversation --request-id REQUEST_ID",
            ),
        ),
        "E": Leaf(
            "E",
            "Fix client payload/header contract mismatch and retest",
            (
                "Fix the client payload or header named in the evidence, then retest with the "
                "runbook's minimal repro (POST /v2/conversations/sessions).",
                KEEP_PLATFORM_API,
            ),
            (
                ".venv/bin/gate4 triage conversation --payload FILE",
                ".venv/bin/gate4 trace REQUEST_ID",
            ),
        ),
        "G": Leaf(
            "G",
            "Contain by disabling proactive notifications and patch conversation runtime",
            (
                "Force notificationsOptIn=false at the client feature flag until recovery "
                "(GATE4_NOTIFICATIONS_OPT_IN=false for the gate4 lanes); per session: "
                "gate4 turns send SESSION_ID --message 'notifications off'.",
                "Patch the conversation runtime (notification feed, context memory), then "
                "re-run the conversation contract tests.",
                KEEP_PLATFORM_API,
            ),
            (
                ".venv/bin/gate4 turns send SESSION_ID --message 'notifications off'",
                "curl -sS $PLATFORM_API_BASE/readyz",
            ),
        ),
        "H": Leaf(
            "H",
            "Escalate downstream platform dependency issue with request IDs",
            (
                "Escalate the downstream platform dependency issue with the request IDs "
                "(the bundle of gate4 incident capture carries them).",
                KEEP_PLATFORM_API,
            ),
            (".venv/bin/gate4 incident capture --lane conversation --request-id REQUEST_ID",),
        ),
    },
)

RISK = Tree(
    name="risk",
    title="Runbook B: Risk Runtime and Kill-Switch",
    start="Risk incident detected",
    root="B",
    decisions={
        "B": Decision("B", "Kill-switch currently triggered?", yes="C", no="F"),
        "C": Decision("C", "Drawdown breach evidence valid?", yes="D", no="E"),
        "F": Decision("F", "Pre-trade rejections increasing?", yes="G", no="H"),
    },
    leaves={
        "D": Leaf(
            "D",
            "Maintain block and execute controlled recovery plan",
            (
                "Maintain the block: release no kill switch until the recovery plan is agreed.",
                PRESERVE_FAIL_CLOSED,
                "Controlled recovery through the Platform API: stop (and flatten) what must "
                "stop, then release each scope with a reason naming the incident (risk-officer).",
            ),
            (
                ".venv/bin/gate4 killswitch list --engaged-only --output table",
                ".venv/bin/gate4 deployments stop DEPLOYMENT_ID --flatten --reason INCIDENT",
                ".venv/bin/gate4 killswitch release SCOPE SCOPE_ID --reason INCIDENT",
            ),
        ),
        "E": Leaf(
            "E",
            "Treat as false positive, roll back invalid policy input, revalidate",
            (
                "Treat the trip as a false positive: roll back the invalid policy input "
                "(validate the candidate first), then revalidate the breach evidence.",
                KEEP_BLOCKED,
                "Release the switch only after revalidation, with a reason naming the incident.",
                PRESERVE_FAIL_CLOSED,
            ),
            (
                ".venv/bin/gate4 risk policy versions --output table",
                ".venv/bin/gate4 risk policy validate --file FILE",
                ".venv/bin/gate4 risk policy put --file FILE --reason INCIDENT",
            ),
        ),
        "G": Leaf(
            "G",
            "Inspect policy limits and audit outcomes, fix policy/config drift",
            (
                "Inspect the policy limits against the rejection outcomes, fix policy or "
                "configuration drift (validate before put).",
                "Limit blast radius by tenant/account where configuration isolation is "
                "available (an account's own policy: gate4 risk policy put --account ...).",
                PRESERVE_FAIL_CLOSED,
            ),
            (
                ".venv/bin/gate4 audit events --type risk.decision --since SINCE --output table",
                ".venv/bin/gate4 risk policy versions --output table",
            ),
        ),
        "H": Leaf(
            "H",
            "Investigate execution/orchestrator path and retry budget handling",
            (
                "Investigate the execution/orchestrator path and retry budget handling "
                "(docs/portal/operations/gate4-orchestrator-controls.md).",
                PRESERVE_FAIL_CLOSED,
            ),
            (
                ".venv/bin/gate4 audit events --outcome VENUE_RETRY_BUDGET_EXHAUSTED "
                "--output table",
                ".venv/bin/gate4 deployments get DEPLOYMENT_ID",
            ),
        ),
    },
)

TREES = {tree.name: tree for tree in (CONVERSATION, RISK)}

#: When a decision cannot be answered (the platform did not respond).
UNDETERMINED_CONTAINMENT = (
    "Side-effecting commands stay refused while risk cannot decide: preserve fail-closed "
    "behavior and do not bypass risk gates.",
    "Escalate the API availability incident (GET /readyz) with the request IDs.",
)


def edges(tree: Tree) -> set[tuple[str, str, str, str]]:
    """(from, label, to, text of to) for every arrow of the flowchart, A's included."""

    def text(node_id: str) -> str:
        if node_id in tree.decisions:
            return tree.decisions[node_id].question
        return tree.leaves[node_id].action

    found = {("A", "", tree.root, text(tree.root))}
    for decision in tree.decisions.values():
        found.add((decision.id, "Yes", decision.yes, text(decision.yes)))
        found.add((decision.id, "No", decision.no, text(decision.no)))
    return found


def mermaid(tree: Tree) -> str:
    """The tree as the runbook's mermaid flowchart."""

    def shape(node_id: str, label: str) -> str:
        return f'{node_id}{{"{label}"}}' if node_id in tree.decisions else f'{node_id}["{label}"]'

    lines = ["flowchart TD"]
    drawn = {"A", tree.root}
    root = tree.decisions[tree.root]
    lines.append(f'    A["{tree.start}"] --> {shape(root.id, root.question)}')
    for source, label, target, text in sorted(
        (e for e in edges(tree) if e[0] != "A"), key=lambda e: (e[0], e[1] == "Yes")
    ):
        node = target if target in drawn else shape(target, text)
        drawn.add(target)
        lines.append(f"    {source} -->|{label}| {node}")
    return "\n".join(lines)


# -- evidence and results ---------------------------------------------------------------------

PASS = "pass"  # noqa: S105 - a result name, not a secret
FAIL = "fail"
INFO = "info"
UNKNOWN = "unknown"


@dataclass
class Evidence:
    """One observation behind a decision: `pass`/`fail` count towards the answer."""

    check: str
    result: str
    detail: str
    data: Any = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "result": self.result, "detail": self.detail}
        if self.data is not None:
            out["data"] = self.data
        return out


def answer_text(value: bool | None) -> str:
    return "undetermined" if value is None else ("yes" if value else "no")


@dataclass
class Answer:
    #: True (yes), False (no) or None (the platform could not say).
    value: bool | None
    evidence: list[Evidence]


@dataclass
class Step:
    decision: Decision
    answer: Answer

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.decision.id,
            "question": self.decision.question,
            "answer": answer_text(self.answer.value),
            "evidence": [e.as_json() for e in self.answer.evidence],
        }


@dataclass
class Result:
    tree: Tree
    steps: list[Step]
    leaf: Leaf | None
    context: list[Evidence] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    @property
    def branch(self) -> str:
        """`B=yes > C=yes > D` style path."""
        parts = []
        for step in self.steps:
            parts.append(f"{step.decision.id}={answer_text(step.answer.value)}")
        parts.append(self.leaf.id if self.leaf else "undetermined")
        return " > ".join(parts)

    @property
    def summary(self) -> str:
        if self.leaf is None:
            return f"{self.tree.title}: undetermined at {self.steps[-1].decision.question}"
        return f"{self.tree.title}: leaf {self.leaf.id}: {self.leaf.action}"

    @property
    def containment(self) -> tuple[str, ...]:
        return self.leaf.containment if self.leaf else UNDETERMINED_CONTAINMENT

    def as_json(self) -> dict[str, Any]:
        return {
            "tree": self.tree.name,
            "runbook": self.tree.title,
            "branch": self.branch,
            "leaf": self.leaf.id if self.leaf else None,
            "action": self.leaf.action if self.leaf else "undetermined",
            "steps": [s.as_json() for s in self.steps],
            "containment": list(self.containment),
            "nextSteps": list(self.leaf.next_steps) if self.leaf else [],
            "context": [e.as_json() for e in self.context],
            "requestIds": self.request_ids,
        }
