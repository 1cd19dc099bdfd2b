"""One list of codes: the OpenAPI document and the docs name the codes the services use.

Error codes are the error hierarchy (services/runtime/errors.py), outcome codes the outcome
list (services/runtime/outcomes.py). Everything here is read from the document and the pages
as they are, so a new route, code or page is held to the same lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cli.errors import CLI_CODES
from gateway.openapi import ApiContract
from gateway.problems import problem_type
from services.runtime import errors, outcomes

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ApiContract()
QUICKSTART = ROOT / "docs" / "portal" / "platform" / "gate4-platform-quickstart.md"
RISK_PAGE = ROOT / "docs" / "portal" / "operations" / "gate4-risk-policy-controls.md"
ORCHESTRATOR_PAGE = ROOT / "docs" / "portal" / "operations" / "gate4-orchestrator-controls.md"
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "deploy" / "local" / "README.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
)

#: A code in a table of codes; in running text only words with an underscore look like one.
TABLE_CODE_RE = re.compile(r"`([A-Z][A-Z0-9_]+)`")
CODE_RE = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")
#: Names of settings and shell variables share the shape of a code; they are not codes.
SETTING_PREFIXES = ("GATE4_", "OTEL_", "OPENCLAW_")
ERROR_CODES = {cls.code: cls for cls in errors.public_errors()}


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first markdown table after `heading`, header row excluded."""
    rows: list[list[str]] = []
    for line in text.split(heading, 1)[1].splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not re.fullmatch(r"\|[-| :]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]


def _codes_by_status(rows: list[list[str]]) -> dict[str, int]:
    return {code: int(row[0]) for row in rows for code in TABLE_CODE_RE.findall(row[1])}


def _public_codes() -> dict[str, int]:
    return {code: cls.http_status for code, cls in ERROR_CODES.items()}


def test_the_documents_error_table_is_the_error_hierarchy() -> None:
    description = CONTRACT.document["info"]["description"]
    assert _codes_by_status(_table(description, "## Errors")) == _public_codes()


def test_the_quickstart_error_table_is_the_error_hierarchy() -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    assert _codes_by_status(_table(text, "## 5. Handle errors")) == _public_codes()


def _problem_examples(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if {"type", "title", "status", "code"} <= node.keys():
            yield node
        for value in node.values():
            yield from _problem_examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from _problem_examples(value)


def test_every_problem_example_of_the_document_is_what_the_gateway_would_answer() -> None:
    examples = list(_problem_examples(CONTRACT.document["components"]["responses"]))
    examples += _problem_examples(CONTRACT.document["paths"])
    assert len(examples) >= len({"BadRequest", "NotFound", "PayloadTooLarge"})
    for example in examples:
        cls = ERROR_CODES.get(example["code"])
        assert cls is not None, f"{example['code']} is no error code"
        assert example["status"] == cls.http_status, example
        assert example["type"] == problem_type(cls.code), example
        assert example["title"] == cls.title, example


def test_problem_responses_name_codes_of_their_own_status() -> None:
    for name, response in CONTRACT.document["components"]["responses"].items():
        content = response.get("content", {}).get("application/problem+json")
        if content is None:
            continue
        status = content["example"]["status"]
        for code in TABLE_CODE_RE.findall(response["description"]):
            if code in ERROR_CODES:
                assert ERROR_CODES[code].http_status == status, (name, code)
            else:
                assert code in outcomes.ALL, (name, code)


def _backticked(text: str) -> set[str]:
    return set(CODE_RE.findall(text))


def test_a_risk_refusal_names_one_of_the_refusal_outcomes() -> None:
    rejected = CONTRACT.document["components"]["responses"]["RiskRejected"]["description"]
    named = _backticked(rejected) - ERROR_CODES.keys()
    assert named == set(outcomes.REFUSALS)


def test_an_order_names_one_of_the_order_outcomes() -> None:
    described = CONTRACT.document["components"]["schemas"]["Order"]["properties"]["outcome"]
    assert _backticked(described["description"]) | {outcomes.APPROVED} == set(
        outcomes.ORDER_OUTCOMES
    )


def test_the_operator_pages_list_every_refusal_and_order_outcome() -> None:
    risk_page = _backticked(RISK_PAGE.read_text(encoding="utf-8"))
    assert set(outcomes.REFUSALS) - {outcomes.REDUCE_ONLY_VIOLATION} <= risk_page
    orchestrator = _backticked(ORCHESTRATOR_PAGE.read_text(encoding="utf-8"))
    assert set(outcomes.ORDER_OUTCOMES) - {outcomes.APPROVED} <= orchestrator
    # The reduce-only rule is one rule with one code, on both pages.
    assert outcomes.REDUCE_ONLY_VIOLATION in risk_page & orchestrator


def _shell_variables() -> set[str]:
    found: set[str] = set()
    for path in DOCS:
        found |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_name_only_codes_of_the_lists(path: Path) -> None:
    # gRPC status codes (the metrics' grpc_code label) are a vocabulary of their own.
    grpc_codes = {code.name for code in grpc.StatusCode}
    known = set(ERROR_CODES) | set(outcomes.ALL) | CLI_CODES | _shell_variables() | grpc_codes
    named = {
        code
        for code in CODE_RE.findall(path.read_text(encoding="utf-8"))
        if not code.startswith(SETTING_PREFIXES)
    }
    assert named <= known, f"codes in no list: {sorted(named - known)}"


def test_the_documents_descriptions_name_only_codes_of_the_lists() -> None:
    known = set(ERROR_CODES) | set(outcomes.ALL)

    def descriptions(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "description" and isinstance(value, str):
                    yield value
                else:
                    yield from descriptions(value)
        elif isinstance(node, list):
            for value in node:
                yield from descriptions(value)

    named = {code for text in descriptions(CONTRACT.document) for code in CODE_RE.findall(text)}
    named = {code for code in named if not code.startswith(SETTING_PREFIXES)}
    assert named <= known, f"codes in no list: {sorted(named - known)}"
