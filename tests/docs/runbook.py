"""Reading docs/runbooks/gate4-incident-runbooks.md: its sections, code blocks and tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbooks" / "gate4-incident-runbooks.md"


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    section: str


def text() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


def blocks(source: str | None = None) -> list[Block]:
    """Fenced code blocks in order, with the `## ` section each sits in."""
    found: list[Block] = []
    section = ""
    lines = (source if source is not None else text()).splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            indent, language = fence.group(1), fence.group(2)
            body: list[str] = []
            start = index + 1
            index += 1
            while not lines[index].strip().startswith("```"):
                body.append(
                    lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index]
                )
                index += 1
            found.append(Block(language, "\n".join(body), start, section))
        index += 1
    return found


def shell_blocks() -> list[Block]:
    return [b for b in blocks() if b.language == "sh"]


def section(title: str) -> str:
    body = text().split(f"\n## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def table(title: str) -> list[list[str]]:
    """The first markdown table of a section, header excluded."""
    rows: list[list[str]] = []
    for line in section(title).splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not re.match(r"^\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]


def mermaid_edges(source: str) -> set[tuple[str, str, str, str]]:
    """(from, label, to, text of to) of every arrow of a flowchart."""
    node = r'(\w+)(?:\{"([^"]*)"\}|\["([^"]*)"\])?'
    edges = set()
    texts: dict[str, str] = {}
    for line in source.splitlines():
        match = re.match(rf"^\s*{node}\s*-->(?:\|(\w+)\|)?\s*{node}\s*$", line)
        if not match:
            continue
        a, a_q, a_t, label, b, b_q, b_t = match.groups()
        for name, question, leaf in ((a, a_q, a_t), (b, b_q, b_t)):
            if question or leaf:
                texts[name] = question or leaf
        edges.add((a, label or "", b))
    return {(a, label, b, texts.get(b, "")) for a, label, b in edges}


def pytest_files(command: str) -> list[str]:
    return re.findall(r"tests/contracts/test_\w+\.py", command)
