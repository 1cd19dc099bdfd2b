"""`gate4 incident`: the runbook's "audit evidence capture and review handoff".

The package holds the runbook's domain as the SRE tooling sees it: the lanes and their
contract tests (lanes.py), the two decision trees (trees.py) and their checks
(conversation_checks.py, risk_checks.py, walked by triage.py over reads.py), evidence
collection (evidence.py, platform.py), guardrail confirmations (guardrails.py), severity
(severity.py), the escalation matrix (escalation.py, cli/incident/escalation-matrix.yaml),
redaction (redact.py) and the bundle's three files (handoff.py, repro.py, capture.py).
`gate4 triage` (cli/triage.py) walks the same trees.
"""

from __future__ import annotations

import argparse

from cli.incident import capture

NAME = "incident"
HELP = "incident evidence: capture a redacted bundle and the on-call handoff"


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    capture.register(commands)
