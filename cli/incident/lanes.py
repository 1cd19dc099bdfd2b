"""The runbook's lanes: which runbook (A or B), decision tree and contract tests each one has.

The contract-test files are the ones the runbook's triage checklists name
(docs/runbooks/gate4-incident-runbooks.md), in the runbook's order; tests/docs checks that
the two lists stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The repository root (cli/incident/lanes.py -> ../..): tests/, docs/ and deploy/ live there.
REPO_ROOT = Path(__file__).resolve().parents[2]

CONVERSATION_CONTRACTS = (
    "tests/contracts/test_platform_api_v2_handlers.py",
    "tests/contracts/test_conversation_context_memory.py",
    "tests/contracts/test_conversation_proactive_notifications.py",
    "tests/contracts/test_openclaw_client_integration.py",
    "tests/contracts/test_openclaw_e2e_flow.py",
)
RISK_CONTRACTS = (
    "tests/contracts/test_risk_policy_schema.py",
    "tests/contracts/test_risk_pretrade_checks.py",
    "tests/contracts/test_risk_killswitch_drawdown.py",
    "tests/contracts/test_risk_audit_trail.py",
    "tests/contracts/test_execution_command_layer.py",
    "tests/contracts/test_execution_command_idempotency.py",
)


@dataclass(frozen=True)
class Lane:
    name: str
    #: "A" (conversation and OpenClaw) or "B" (risk runtime and kill switch).
    runbook: str
    #: The decision tree `gate4 triage` walks for this lane.
    tree: str
    contract_tests: tuple[str, ...]


LANES: dict[str, Lane] = {
    "conversation": Lane("conversation", "A", "conversation", CONVERSATION_CONTRACTS),
    "openclaw": Lane("openclaw", "A", "conversation", CONVERSATION_CONTRACTS),
    "risk": Lane("risk", "B", "risk", RISK_CONTRACTS),
    "runtime": Lane("runtime", "B", "risk", RISK_CONTRACTS),
}


def contract_command(files: tuple[str, ...] | list[str]) -> str:
    """The runbook's contract-check command for these files, as typed at the repo root."""
    return ".venv/bin/python -m pytest " + " ".join(files) + " -q"
