"""The lane's contract tests, as the runbook's verification step runs them.

Three ways to get their result into the evidence:

- run them (the default): `python -m pytest <the lane's files> -q` from the repository root,
  with this interpreter (what `.venv/bin/python -m pytest ...` runs);
- attach a run already made: `--contract-results FILE`, the JUnit XML that the runbook's
  command wrote with `--junitxml FILE` (no second run of the same suite);
- skip them: `--skip-contract-tests`, recorded in the evidence with the reason.

Files the lane names but the repository does not have are reported as missing, never
silently dropped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cli.errors import UsageError
from cli.incident.lanes import REPO_ROOT, Lane, contract_command
from cli.incident.redact import SECRET_VARIABLES

DEFAULT_TIMEOUT_SECONDS = 1800.0
#: Lines of pytest output kept in the evidence (the summary is always among them).
OUTPUT_TAIL_LINES = 60
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error|errors|skipped|deselected).*?)\s*=*$")


@dataclass
class ContractRun:
    """What the evidence says about the lane's contract tests."""

    status: str  # passed | failed | skipped | unavailable
    source: str  # run | junit | skipped
    command: str
    files: list[str]
    missing: list[str] = field(default_factory=list)
    exit_code: int | None = None
    summary: str = ""
    reason: str = ""
    started_at: str = ""
    duration_seconds: float | None = None
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
    output: str = ""

    @property
    def line(self) -> str:
        """One line for the handoff's "Verification commands executed"."""
        if self.source == "skipped":
            return f"not executed: {self.reason}"
        text = self.summary or self.status
        if self.exit_code is not None:
            text += f" (exit {self.exit_code})"
        if self.source == "junit":
            text += f"; attached from {self.reason}"
        if self.missing:
            text += f"; missing: {', '.join(self.missing)}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "source": self.source,
            "command": self.command,
            "files": self.files,
            "missingFiles": self.missing,
            "exitCode": self.exit_code,
            "summary": self.summary,
            "reason": self.reason,
            "startedAt": self.started_at,
            "durationSeconds": self.duration_seconds,
            "perFile": self.per_file,
            "output": self.output,
        }


def split_files(lane: Lane, root: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    present = [f for f in lane.contract_tests if (root / f).is_file()]
    missing = [f for f in lane.contract_tests if f not in present]
    return present, missing


def skipped(lane: Lane, reason: str) -> ContractRun:
    present, missing = split_files(lane)
    return ContractRun(
        status="skipped",
        source="skipped",
        command=contract_command(list(lane.contract_tests)),
        files=present,
        missing=missing,
        reason=reason,
    )


def run(
    lane: Lane, timeout: float = DEFAULT_TIMEOUT_SECONDS, root: Path = REPO_ROOT
) -> ContractRun:
    """Runs the lane's contract tests that exist; the output goes into the evidence."""
    present, missing = split_files(lane, root)
    command = contract_command(present)
    if not present:
        reason = f"none of the lane's contract tests exist under {root}"
        return ContractRun("unavailable", "run", command, present, missing, reason=reason)
    # The tests start their own platform; the operator's credentials have no business there.
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        proc = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "pytest", *present, "-q", "-p", "no:cacheprovider"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ContractRun(
            status="failed",
            source="run",
            command=command,
            files=present,
            missing=missing,
            summary=f"timed out after {timeout:.0f}s",
            started_at=_iso(started),
            duration_seconds=round(time.monotonic() - clock, 1),
        )
    output = (proc.stdout + proc.stderr).strip()
    tail = output.splitlines()[-OUTPUT_TAIL_LINES:]
    summary = next((m.group(1) for m in map(SUMMARY.match, reversed(tail)) if m), "")
    return ContractRun(
        status="passed" if proc.returncode == 0 else "failed",
        source="run",
        command=command,
        files=present,
        missing=missing,
        exit_code=proc.returncode,
        summary=summary or f"pytest exited {proc.returncode}",
        started_at=_iso(started),
        duration_seconds=round(time.monotonic() - clock, 1),
        output="\n".join(tail),
    )


def from_junit(lane: Lane, path: Path) -> ContractRun:
    """The result of a run already made: the JUnit XML the runbook's command wrote with
    `--junitxml`. It must cover every lane file that exists."""
    present, missing = split_files(lane)
    try:
        tree = ElementTree.parse(path)  # noqa: S314 - a local file pytest wrote
    except (OSError, ElementTree.ParseError) as exc:
        raise UsageError(
            f"--contract-results {path}: not a readable JUnit XML file ({exc})"
        ) from exc
    suites = (
        [tree.getroot()]
        if tree.getroot().tag == "testsuite"
        else tree.getroot().findall("testsuite")
    )
    per_file: dict[str, Counter[str]] = {}
    started = ""
    duration = 0.0
    for suite in suites:
        started = started or suite.get("timestamp", "")
        duration += float(suite.get("time", "0") or 0)
        for case in suite.iter("testcase"):
            path_of = _file_of(case.get("classname", ""))
            counts = per_file.setdefault(path_of, Counter())
            if case.find("failure") is not None:
                counts["failed"] += 1
            elif case.find("error") is not None:
                counts["errors"] += 1
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    uncovered = [f for f in present if f not in per_file]
    if uncovered:
        raise UsageError(
            f"--contract-results {path} does not cover the lane's contract tests "
            f"{', '.join(uncovered)}: run the runbook's command for the lane with --junitxml"
        )
    totals: Counter[str] = Counter()
    for counts in per_file.values():
        totals.update(counts)
    failed = totals["failed"] + totals["errors"]
    summary = ", ".join(
        f"{totals[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if totals[k]
    )
    return ContractRun(
        status="failed" if failed or not totals["passed"] else "passed",
        source="junit",
        command=contract_command(present),
        files=present,
        missing=missing,
        exit_code=1 if failed else 0,
        summary=f"{summary} in {duration:.2f}s",
        reason=str(path),
        started_at=started,
        duration_seconds=round(duration, 2),
        per_file={k: dict(v) for k, v in sorted(per_file.items())},
    )


def _file_of(classname: str) -> str:
    """tests.contracts.test_x.TestClass -> tests/contracts/test_x.py"""
    parts = classname.split(".")
    for index, part in enumerate(parts):
        if part.startswith("test_"):
            return "/".join(parts[: index + 1]) + ".py"
    return "/".join(parts) + ".py"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
