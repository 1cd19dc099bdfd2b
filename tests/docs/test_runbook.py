"""The runbook and the code agree: decision trees, severity table, escalation matrix,
handoff template, contract-test lists, traceability pages, and every `gate4` command it shows
parses. (tests/docs/test_runbook_commands.py runs the commands.)"""

from __future__ import annotations

import shlex

from cli.incident.escalation import load_matrix
from cli.incident.handoff import TEMPLATE_FIELDS
from cli.incident.lanes import CONVERSATION_CONTRACTS, RISK_CONTRACTS
from cli.incident.severity import LEVELS
from cli.incident.trees import CONVERSATION, RISK, edges, mermaid
from cli.main import build_parser
from tests.docs import runbook
from tests.docs.runbook import ROOT


def test_the_decision_trees_are_the_ones_triage_walks() -> None:
    charts = [b.text for b in runbook.blocks() if b.language == "mermaid"]
    assert len(charts) == 2
    assert runbook.mermaid_edges(charts[0]) == edges(CONVERSATION)
    assert runbook.mermaid_edges(charts[1]) == edges(RISK)
    # And the trees drawn from the code are the same charts.
    for tree, chart in ((CONVERSATION, charts[0]), (RISK, charts[1])):
        assert runbook.mermaid_edges(mermaid(tree)) == runbook.mermaid_edges(chart)


def test_the_severity_table_is_the_one_capture_uses() -> None:
    rows = runbook.table("Severity Levels")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (level.name, level.trigger, level.sla) for level in LEVELS.values()
    ]


def test_the_escalation_table_is_the_yaml_capture_reads() -> None:
    rows = runbook.table("Escalation Matrix")
    assert [
        (row.condition, row.primary_team, row.secondary_team, ", ".join(row.escalate_to))
        for row in load_matrix()
    ] == [tuple(r) for r in rows]


def test_the_handoff_template_is_the_one_capture_fills_in() -> None:
    (template,) = [b.text for b in runbook.blocks() if b.section == "On-Call Handoff Template"]
    fields = [
        line.strip()[2:].split(":", 1)[0] for line in template.splitlines() if line.startswith("- ")
    ]
    assert tuple(fields) == TEMPLATE_FIELDS
    for guardrail in (
        "Platform API only",
        "No provider-direct client calls",
        "Risk fail-closed preserved",
    ):
        assert f"  - {guardrail}: yes/no" in template


def test_the_contract_commands_name_each_lanes_files() -> None:
    commands = [b.text for b in runbook.shell_blocks() if "python -m pytest" in b.text]
    assert [runbook.pytest_files(c) for c in commands] == [
        list(CONVERSATION_CONTRACTS),
        list(RISK_CONTRACTS),
    ]
    for command in commands:
        assert command.startswith(".venv/bin/python -m pytest")
        assert " -q " in command


def test_every_contract_file_the_runbook_names_exists() -> None:
    named = {f for b in runbook.shell_blocks() for f in runbook.pytest_files(b.text)}
    missing = sorted(f for f in named if not (ROOT / f).is_file())
    assert not missing, f"the runbook names contract tests that do not exist: {missing}"


def test_the_traceability_pages_exist() -> None:
    links = [
        line.split("](", 1)[1].split(")", 1)[0]
        for line in runbook.section("Traceability").splitlines()
        if "](" in line
    ]
    assert len(links) == 5
    for link in links:
        assert (runbook.RUNBOOK.parent / link).resolve().is_file(), link
    assert "`cli/incident/escalation-matrix.yaml`" in runbook.RUNBOOK.read_text()
    assert (ROOT / "cli" / "incident" / "escalation-matrix.yaml").is_file()


def test_every_gate4_command_shown_parses() -> None:
    parser = build_parser()
    shown = 0
    for block in runbook.shell_blocks():
        script = block.text.replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if not line.startswith(".venv/bin/gate4 "):
                continue
            words = shlex.split(line.split(" > ", 1)[0].split(" || ", 1)[0])[1:]
            parser.parse_args(words)
            shown += 1
    assert shown >= 25
