"""Walking a decision tree: each decision's check answers it, from the root to a leaf."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from cli.incident import conversation_checks, risk_checks
from cli.incident.reads import Platform
from cli.incident.trees import INFO, Answer, Evidence, Result, Step, Tree

Check = Callable[[Platform], Answer]

CHECKS: dict[str, dict[str, Check]] = {
    "conversation": {
        "B": conversation_checks.routes_healthy,
        "D": conversation_checks.payload_valid,
        "F": conversation_checks.memory_notifications_valid,
    },
    "risk": {
        "B": risk_checks.killswitch_triggered,
        "C": risk_checks.breach_evidence_valid,
        "F": risk_checks.rejections_increasing,
    },
}


def walk(tree: Tree, platform: Platform) -> Result:
    steps: list[Step] = []
    node = tree.root
    result = Result(tree, steps, None, request_ids=list(platform.options.request_ids))
    while node in tree.decisions:
        decision = tree.decisions[node]
        answer = CHECKS[tree.name][node](platform)
        steps.append(Step(decision, answer))
        if answer.value is None:
            return result
        node = decision.yes if answer.value else decision.no
    result.leaf = tree.leaves[node]
    if tree.name == "risk" and node == "H":
        anomalies = risk_checks.runtime_anomalies(
            platform, platform.options.now - platform.options.window
        )
        if anomalies.ok:
            counts = Counter(f"{e.get('type')} {e.get('outcome')}" for e in anomalies.data)
            result.context.append(
                Evidence(
                    "execution path",
                    INFO,
                    ", ".join(f"{k} x{v}" for k, v in counts.items())
                    or "no degraded deployment, spent retry budget or failed enforcement "
                    "in the window",
                    [e.get("eventId") for e in anomalies.data][-20:],
                )
            )
    return result
